"""The Helm chart, rendered by Helm's own engine (helm-python-sdk) and checked against the
Kubernetes schemas of two versions (kubernetes-validate) and the policy rules: with its
defaults, with everything on, and with values made from a project's spec."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.config import deep_merged, load_spec
from conveyor.deploy import helm
from conveyor.errors import ConfigError, InvalidInputError

VERSIONS = ("1.29.0", "1.31.0")
IMAGE = "registry.example.com/fraud:3f2c1a9e"
PASSWORD = "hunter2-not-in-any-configmap"
PROD_STORE = f"postgresql://fraud:{PASSWORD}@db.prod:5432/conveyor"

# The brief's environments, and everything a full deployment uses: scheduled scoring,
# retraining and drift checks, rollouts, an Ingress host, and chart values that turn on
# autoscaling on CPU and the queue depth, a stream consumer, jobs workers, ServiceMonitor
# and PrometheusRule.
SPEC = f"""
project: fraud
backends:
  store: sqlite:///.conveyor/dev.db
datasets:
  tx: {{}}
models:
  fraud:
    train: fraud_model:fit
    dataset: tx
    features: [amount, age]
    target: label
    retrain: {{cron: "0 3 * * *"}}
scoring:
  jobs:
    - name: nightly
      model: fraud@champion
      input: s3://lake/customers/
      output: "s3://lake/scores/{{date}}/"
      cron: "0 2 * * *"
monitoring:
  drift: {{cron: "0 * * * *", models: [fraud], window: 1d}}
rollouts:
  defaults: {{interval: 5m}}
jobs:
  url: nats://jobs:{PASSWORD}@nats:4222
  callback_secret: also-{PASSWORD}
deploy:
  kubernetes:
    ingress_host: fraud.example.com
    values:
      autoscaling: {{enabled: true, queueDepth: {{enabled: true}}}}
      serviceMonitor:
        enabled: true
        authorization: {{secretName: fraud-metrics, key: viewer-key}}
        monitors: {{enabled: true}}
      prometheusRule: {{enabled: true, labels: {{release: kube-prometheus-stack}}}}
      jobsWorker: {{autoscaling: {{enabled: true}}}}
      streamConsumers:
        - name: orders
          replicas: 2
          args: [score, stream, fraud, --source, "nats://nats:4222/ORDERS?subject=orders.>",
                 --output, scores.fraud]
environments:
  staging: {{replicas: 2, resources: {{cpu: "1", memory: 2Gi}}}}
  prod:
    replicas: 4
    backends: {{store: "{PROD_STORE}"}}
"""

BRIEF_SPEC = """
project: shop
environments:
  staging: {replicas: 2, resources: {cpu: "1", memory: 2Gi}}
  prod: {replicas: 4}
"""


def _project(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "conveyor.yaml").write_text(text)
    return root


def _one(manifests: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, [(m["kind"], m["metadata"]["name"]) for m in found]
    return found[0]


def _pod(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]
    if manifest["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(manifest)["containers"][0]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("fraud"), SPEC)


@pytest.fixture(scope="module")
def full_values(root: Path) -> dict[str, Any]:
    spec = load_spec(root, env={}, environment="prod")
    return helm.values_for(spec, image=IMAGE, environment="prod")


@pytest.fixture(scope="module")
def full(full_values: dict[str, Any]) -> list[dict[str, Any]]:
    return helm.render(full_values, release="fraud", namespace="prod")


@pytest.fixture(scope="module")
def defaults() -> list[dict[str, Any]]:
    return helm.render({}, release="demo", namespace="default")


# The chart's other branches: an existing service account, a Secret per variable, TLS on
# the Ingress, the queue depth as a Pods metric, a percentage budget, restricted egress,
# peers allowed in, a CronJob of its own, no migrations.
VARIANTS: dict[str, Any] = {
    "fullnameOverride": "fraud",
    "image": {"repository": "ghcr.io/acme/fraud", "tag": "v1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "ghcr"}],
    "serviceAccount": {"create": False, "name": "fraud-runtime"},
    "env": [{"name": "LOG_LEVEL", "value": "debug"}],
    "secrets": {
        "existingSecret": "fraud-env",
        "env": [{"name": "OPENAI_API_KEY", "secret": "llm-keys", "key": "openai"}],
    },
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "ml", "operator": "Exists", "effect": "NoSchedule"}],
    "podLabels": {"team": "risk"},
    "server": {"replicas": 2, "topologySpread": {"enabled": False}},
    "ingress": {"enabled": True, "host": "fraud.example.com", "tls": {"enabled": True}},
    "autoscaling": {
        "enabled": True,
        "minReplicas": 3,
        "maxReplicas": 6,
        "queueDepth": {"enabled": True, "type": "Pods"},
    },
    "podDisruptionBudget": {"maxUnavailable": "25%"},
    "migrations": {"enabled": False},
    "cronJobs": [
        {
            "name": "nightly",
            "schedule": "@daily",
            "args": ["pipeline", "run", "flows:nightly"],
            "suspend": True,
            "resources": {
                "requests": {"cpu": "2", "memory": "4Gi"},
                "limits": {"cpu": "4", "memory": "4Gi"},
            },
        }
    ],
    "networkPolicy": {
        "ingressFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
        ],
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "egress": {
            "restrict": True,
            "rules": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432}]}],
        },
    },
}


@pytest.fixture(scope="module")
def variants() -> list[dict[str, Any]]:
    return helm.render(VARIANTS, release="fraud", namespace="risk")


# -- the chart itself ---------------------------------------------------------------------


def test_the_chart_is_the_checkouts_and_its_defaults_match_its_schema() -> None:
    import jsonschema

    chart = helm.chart_dir()
    assert chart == Path(helm.__file__).resolve().parents[3] / "deploy" / "helm" / "conveyor"
    schema = json.loads((chart / "values.schema.json").read_text())
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    # every value of values.yaml is declared (additionalProperties is false throughout)
    assert list(jsonschema.Draft7Validator(schema).iter_errors(defaults)) == []
    assert schema["additionalProperties"] is False
    assert set(defaults) <= set(schema["properties"])
    assert helm.lint() == []


def test_the_defaults_render_a_valid_server_with_its_migrations(
    defaults: list[dict[str, Any]],
) -> None:
    kinds = sorted({m["kind"] for m in defaults})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Job",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
    ]
    # one replica: no disruption budget is needed, and none of the optional parts is on
    assert not [m for m in defaults if m["kind"] in ("PodDisruptionBudget", "Ingress", "CronJob")]
    assert helm.validate(defaults, VERSIONS) == []
    assert helm.policy_violations(defaults) == []
    server = _container(_one(defaults, "Deployment", "-server"))
    assert server["image"] == "conveyor/app:0.1.0"  # the chart's appVersion, never latest


def test_everything_on_renders_and_every_manifest_validates_against_two_versions(
    full: list[dict[str, Any]],
) -> None:
    names = {(m["kind"], m["metadata"]["name"]) for m in full}
    for wanted in [
        ("Deployment", "fraud-conveyor-server"),
        ("Deployment", "fraud-conveyor-stream-orders"),
        ("Deployment", "fraud-conveyor-rollout-controller"),
        ("Deployment", "fraud-conveyor-jobs-worker"),
        ("Service", "fraud-conveyor"),
        ("Ingress", "fraud-conveyor"),
        ("HorizontalPodAutoscaler", "fraud-conveyor-server"),
        ("HorizontalPodAutoscaler", "fraud-conveyor-jobs-worker"),
        ("PodDisruptionBudget", "fraud-conveyor-server"),
        ("PodDisruptionBudget", "fraud-conveyor-stream-orders"),
        ("ConfigMap", "fraud-conveyor-spec"),
        ("CronJob", "fraud-conveyor-score-nightly"),
        ("CronJob", "fraud-conveyor-retrain-fraud"),
        ("CronJob", "fraud-conveyor-drift-fraud"),
        ("NetworkPolicy", "fraud-conveyor-server"),
        ("NetworkPolicy", "fraud-conveyor-workers"),
        ("ServiceMonitor", "fraud-conveyor"),
        ("PrometheusRule", "fraud-conveyor"),
    ]:
        assert wanted in names
    assert {m["metadata"]["namespace"] for m in full} == {"prod"}
    assert helm.validate(full, VERSIONS) == []
    assert helm.policy_violations(full) == []


def test_the_other_branches_of_the_chart_are_valid_too(variants: list[dict[str, Any]]) -> None:
    assert helm.validate(variants, VERSIONS) == []
    assert helm.policy_violations(variants) == []
    assert helm.lint(values=VARIANTS) == []
    assert not [m for m in variants if m["kind"] in ("Job", "ServiceAccount")]
    server = _one(variants, "Deployment", "-server")
    assert _pod(server)["serviceAccountName"] == "fraud-runtime"
    assert _env(_container(server))["OPENAI_API_KEY"]["secretKeyRef"] == {
        "name": "llm-keys",
        "key": "openai",
        "optional": False,
    }
    metrics = _one(variants, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metrics[1]["pods"]["metric"]["name"] == "conveyor_jobs_queue_depth"
    assert _one(variants, "PodDisruptionBudget")["spec"]["maxUnavailable"] == "25%"
    assert _one(variants, "Ingress")["spec"]["tls"][0]["secretName"] == "fraud-tls"
    policy = _one(variants, "NetworkPolicy", "-server")["spec"]
    assert policy["egress"] == [  # DNS, and the rule given
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432}]},
    ]
    assert len(policy["ingress"][0]["from"]) == 2  # the callers and the scrapers
    cron = _one(variants, "CronJob")
    assert cron["spec"]["suspend"] is True
    assert _container(cron)["resources"]["limits"] == {"cpu": "4", "memory": "4Gi"}


def test_the_server_runs_conveyor_serve_probed_drained_and_locked_down(
    full: list[dict[str, Any]], full_values: dict[str, Any]
) -> None:
    deployment = _one(full, "Deployment", "-server")
    pod = _pod(deployment)
    server = _container(deployment)
    assert server["command"] == ["conveyor"]
    assert server["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "1"]
    assert server["image"] == IMAGE
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # the pod outlives its drain: preStop, then Conveyor's own drain, requests, shut-down
    drain = full_values["server"]["drain"]
    env = _env(server)
    assert env["CONVEYOR_SERVING__DRAIN__MAX_S"] == "10"
    assert env["CONVEYOR_SERVING__DRAIN__GRACEFUL_S"] == "30"
    assert "time.sleep(5)" in server["lifecycle"]["preStop"]["exec"]["command"][-1]
    stop = 5 + drain["maxSeconds"] + drain["gracefulSeconds"] + drain["shutdownSeconds"]
    assert pod["terminationGracePeriodSeconds"] > stop
    # non-root, read-only, no capability, the runtime's seccomp profile
    context = server["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/app/conveyor.yaml"]["readOnly"] is True
    assert {"/tmp", "/app/.conveyor"} <= set(mounts)
    assert env["CONVEYOR_PROJECT_DIR"] == "/app" and env["CONVEYOR_ENV"] == "prod"
    # the environment says 4 replicas: autoscaling starts there
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    hpa = _one(full, "HorizontalPodAutoscaler", "-server")
    assert hpa["spec"]["minReplicas"] == 4
    spread = pod["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    assert server["resources"]["limits"]["memory"] == "1Gi"


def test_secrets_come_from_secret_references_never_from_the_values(
    full: list[dict[str, Any]],
) -> None:
    rendered = yaml.safe_dump_all(full)
    assert PASSWORD not in rendered
    env = _env(_container(_one(full, "Deployment", "-server")))
    for variable in (
        "CONVEYOR_BACKENDS__STORE",
        "CONVEYOR_JOBS__URL",
        "CONVEYOR_JOBS__CALLBACK_SECRET",
    ):
        ref = env[variable]["secretKeyRef"]
        assert ref == {"name": "fraud-secrets", "key": variable, "optional": False}
    assert env["CONVEYOR_API_KEY"]["secretKeyRef"]["optional"] is True


def test_the_autoscaler_scales_on_cpu_and_the_queue_depth(full: list[dict[str, Any]]) -> None:
    for suffix in ("-server", "-jobs-worker"):
        metrics = _one(full, "HorizontalPodAutoscaler", suffix)["spec"]["metrics"]
        assert metrics[0]["resource"]["name"] == "cpu"
        queue = metrics[1]["external"]["metric"]
        assert queue == {
            "name": "conveyor_jobs_queue_depth",
            "selector": {"matchLabels": {"state": "queued"}},
        }


def test_the_other_workloads(full: list[dict[str, Any]]) -> None:
    controller = _container(_one(full, "Deployment", "-rollout-controller"))
    assert controller["args"][:2] == ["rollout", "run"]
    consumer = _one(full, "Deployment", "-stream-orders")
    assert consumer["spec"]["replicas"] == 2
    assert _container(consumer)["args"][:3] == ["score", "stream", "fraud"]
    worker = _container(_one(full, "Deployment", "-jobs-worker"))
    assert worker["args"][:2] == ["jobs", "worker"]
    # the spec's schedules, in UTC as the scheduler reads them
    crons = {m["metadata"]["name"]: m for m in full if m["kind"] == "CronJob"}
    nightly = crons["fraud-conveyor-score-nightly"]
    assert nightly["spec"]["schedule"] == "0 2 * * *"
    assert nightly["spec"]["timeZone"] == "Etc/UTC"
    assert _container(nightly)["args"] == [
        "score",
        "batch",
        "fraud@champion",
        "--input",
        "s3://lake/customers/",
        "--output",
        "s3://lake/scores/{date}/",
    ]
    assert _container(crons["fraud-conveyor-retrain-fraud"])["args"] == ["train", "fraud"]
    assert _container(crons["fraud-conveyor-drift-fraud"])["args"][:3] == [
        "monitor",
        "drift",
        "fraud",
    ]
    ingress = _one(full, "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "fraud.example.com"


def test_the_migrations_run_as_a_pre_install_and_pre_upgrade_hook_before_anything(
    full: list[dict[str, Any]],
) -> None:
    job = _one(full, "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    script = _container(job)["command"][-1]
    assert "project.store.migrate()" in script
    # its spec and service account exist before the release's own objects do
    pod = _pod(job)
    hooks = [m for m in full if "helm.sh/hook" in m["metadata"].get("annotations", {})]
    assert full[: len(hooks)] == hooks  # hooks come first
    hook_names = {(m["kind"], m["metadata"]["name"]) for m in hooks}
    assert ("ConfigMap", pod["volumes"][0]["configMap"]["name"]) in hook_names
    assert ("ServiceAccount", pod["serviceAccountName"]) in hook_names


def test_the_prometheus_rules_are_the_monitoring_generators(
    full: list[dict[str, Any]], root: Path
) -> None:
    from conveyor.monitoring.interop.prometheus import rules_document

    document, _ = rules_document(load_spec(root, env={}, environment="prod"))
    rule = _one(full, "PrometheusRule")
    assert rule["spec"]["groups"] == document["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # the rules select job="conveyor": the Service's label the ServiceMonitor takes it from
    monitor = _one(full, "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "conveyor.dev/job"
    assert _one(full, "Service")["metadata"]["labels"]["conveyor.dev/job"] == "conveyor"
    paths = [e["path"] for e in monitor["spec"]["endpoints"]]
    assert paths == ["/metrics", "/v1/monitor/metrics"]


def test_the_configmap_holds_a_spec_load_spec_accepts(
    full: list[dict[str, Any]], root: Path, tmp_path: Path
) -> None:
    text = _one(full, "ConfigMap", "-conveyor-spec")["data"]["conveyor.yaml"]
    assert PASSWORD not in text
    folder = _project(tmp_path / "pod", text)
    # as the pod loads it: its plain variables, and the Secret's value of the store's
    server = _container(_one(full, "Deployment", "-server"))
    env = {e["name"]: e["value"] for e in server["env"] if "value" in e}
    env["CONVEYOR_BACKENDS__STORE"] = PROD_STORE
    env["CONVEYOR_JOBS__URL"] = f"nats://jobs:{PASSWORD}@nats:4222"
    env["CONVEYOR_JOBS__CALLBACK_SECRET"] = f"also-{PASSWORD}"
    loaded = load_spec(folder, env=env)
    # the pod's spec is the one deployed: every section but the other environments
    original = load_spec(root, env={}, environment="prod")
    for name in type(original).model_fields:
        if name not in ("environments", "root"):
            assert getattr(loaded, name) == getattr(original, name), name
    secret = loaded.section("jobs").callback_secret
    assert secret is not None and secret.get_secret_value() == f"also-{PASSWORD}"
    assert loaded.project == "fraud"
    assert loaded.environment == "prod"
    assert loaded.environment_spec().replicas == 4
    assert loaded.url("store").password == PASSWORD
    assert loaded.url("store").host == "db.prod"
    assert loaded.section("scoring").jobs[0].name == "nightly"
    assert loaded.section("serving").drain.max_s == 10


# -- the checks find what is wrong --------------------------------------------------------


def _doctored(full: list[dict[str, Any]], change: Callable[[dict[str, Any]], None]) -> list[str]:
    manifests = copy.deepcopy(full)
    change(_one(manifests, "Deployment", "-server"))
    return helm.policy_violations(manifests)


def test_policy_checks_name_each_violation(full: list[dict[str, Any]]) -> None:
    def latest(server: dict[str, Any]) -> None:
        _container(server)["image"] = "registry.example.com/fraud:latest"

    def untagged(server: dict[str, Any]) -> None:
        _container(server)["image"] = "registry.example.com/fraud"

    def no_probe(server: dict[str, Any]) -> None:
        del _container(server)["readinessProbe"]

    def root_user(server: dict[str, Any]) -> None:
        _container(server)["securityContext"]["runAsUser"] = 0

    def may_be_root(server: dict[str, Any]) -> None:
        del _container(server)["securityContext"]["runAsNonRoot"]
        del _pod(server)["securityContext"]["runAsNonRoot"]

    def no_limit(server: dict[str, Any]) -> None:
        del _container(server)["resources"]["limits"]

    where = "Deployment/fraud-conveyor-server: container server: "
    assert _doctored(full, latest) == [
        where + "image 'registry.example.com/fraud:latest' is tagged 'latest', which names "
        "no one build"
    ]
    assert "has no tag" in _doctored(full, untagged)[0]
    assert _doctored(full, no_probe) == [where + "no readinessProbe (a long-running container)"]
    assert _doctored(full, root_user) == [where + "runs as root: runAsUser is 0"]
    assert _doctored(full, may_be_root) == [where + "may run as root: runAsNonRoot is not true"]
    assert _doctored(full, no_limit) == [where + "no resources limits.memory"]


def test_three_replicas_without_a_disruption_budget_is_a_violation(
    full: list[dict[str, Any]],
) -> None:
    manifests = [
        copy.deepcopy(m)
        for m in full
        if m["kind"] not in ("PodDisruptionBudget", "HorizontalPodAutoscaler")
    ]
    _one(manifests, "Deployment", "-server")["spec"]["replicas"] = 3
    found = helm.policy_violations(manifests)
    assert (
        "Deployment/fraud-conveyor-server: 3 replicas and no PodDisruptionBudget selects its pods"
        in found
    )
    assert any(v.startswith("Deployment/fraud-conveyor-stream-orders: 2 replicas") for v in found)


def test_validation_finds_an_unknown_field_and_a_wrong_type_in_each_version(
    full: list[dict[str, Any]],
) -> None:
    manifests = copy.deepcopy(full)
    _container(_one(manifests, "Deployment", "-server"))["livenesProbe"] = {}
    _one(manifests, "Service")["spec"]["ports"][0]["port"] = "eighty"
    _one(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["interval"] = "often"
    found = helm.validate(manifests, VERSIONS)
    for version in VERSIONS:
        assert any(
            f"Deployment/fraud-conveyor-server (Kubernetes {version}): "
            "spec.template.spec.containers.0"
            in p
            and "'livenesProbe' was unexpected" in p
            for p in found
        ), found
        assert any(
            f"Service/fraud-conveyor (Kubernetes {version}): spec.ports.0.port" in p for p in found
        )
    assert any(p.startswith("ServiceMonitor/fraud-conveyor (partial schema): ") for p in found)
    assert len(found) == 5


# -- the values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"server": {"replicas": -1}}, "server.replicas: -1 is less than the minimum of 1"),
        ({"server": {"replica": 3}}, "server: Additional properties are not allowed ('replica'"),
        ({"image": {"tag": "latest"}}, "image.tag: 'latest' is not allowed here"),
        (
            {"cronJobs": [{"name": "nightly", "schedule": "at two", "args": ["train", "x"]}]},
            "cronJobs[0].schedule: 'at two' does not match",
        ),
        (
            # null removes a default, as in Helm
            {"server": {"resources": {"limits": {"memory": None}}}},
            "server.resources.limits: 'memory' is a required property",
        ),
    ],
)
def test_values_breaking_the_schema_are_refused_naming_the_path(
    full_values: dict[str, Any], override: dict[str, Any], message: str
) -> None:
    values = deep_merged(full_values, override)
    with pytest.raises(InvalidInputError) as caught:
        helm.render(values, release="fraud", namespace="prod")
    assert message in str(caught.value)
    assert str(caught.value).startswith("the chart's values do not match its schema")


def test_a_grace_period_shorter_than_the_drain_is_refused() -> None:
    values = {"server": {"terminationGracePeriodSeconds": 30}}
    with pytest.raises(
        InvalidInputError,
        match=r"server\.terminationGracePeriodSeconds: 30 is not longer than the drain",
    ):
        helm.render(values, release="demo", namespace="default")


def test_values_for_an_environment_give_its_replicas_resources_and_a_budget(
    tmp_path: Path,
) -> None:
    root = _project(tmp_path / "shop", BRIEF_SPEC)
    prod = load_spec(root, env={}, environment="prod")
    values = helm.values_for(prod, image="registry.example.com/shop@sha256:" + "a" * 64)
    assert values["server"]["replicas"] == 4
    assert values["namespaceOverride"] == "prod"
    manifests = helm.render(values, release="shop", namespace="prod")
    server = _one(manifests, "Deployment", "-server")
    assert server["spec"]["replicas"] == 4
    budget = _one(manifests, "PodDisruptionBudget", "-server")
    assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    assert _container(server)["image"] == "registry.example.com/shop@sha256:" + "a" * 64
    assert helm.policy_violations(manifests) == []

    staging = load_spec(root, env={}, environment="staging")
    values = helm.values_for(staging, image="registry.example.com/shop:v1", environment="staging")
    assert values["server"]["replicas"] == 2
    assert values["server"]["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "2Gi"},
    }
    with pytest.raises(InvalidInputError, match=r"loaded for staging, not for 'prod'"):
        helm.values_for(staging, image="registry.example.com/shop:v1", environment="prod")
    with pytest.raises(ConfigError, match="unknown environment 'qa'"):
        helm.values_for(staging, image="registry.example.com/shop:v1", environment="qa")
    for image in ("registry.example.com/shop", "registry.example.com/shop:latest"):
        with pytest.raises(InvalidInputError, match="image"):
            helm.values_for(staging, image=image)
