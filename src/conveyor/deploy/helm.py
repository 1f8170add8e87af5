"""The Helm chart ``deploy/helm/conveyor``: its values made from the spec, rendered by Helm's
own engine, and every manifest checked before anything reaches a cluster.

::

    from conveyor.deploy import helm

    values = helm.values_for(spec, image="registry.example.com/fraud:3f2c1a9e", environment="prod")
    manifests = helm.render(values, release="fraud", namespace="prod")
    errors = helm.validate(manifests)             # the Kubernetes OpenAPI schemas, strict
    violations = helm.policy_violations(manifests)  # resources, probes, tags, non-root, PDB

:func:`render` checks the values against the chart's ``values.schema.json`` first (a
violation is an :class:`~conveyor.errors.InvalidInputError` naming the value's path),
then hands them to Helm's Go engine through ``helm_python`` (the Helm v4 SDK: no ``helm``
binary, no cluster) and returns the parsed manifests, hooks included, in the order Helm
installs them. :func:`validate` checks each one with ``kubernetes-validate`` against
every Kubernetes version asked for; :func:`policy_violations` holds them to the rules a
cluster's admission policies usually enforce.

The chart ships in the wheel (``conveyor/deploy/chart``); :func:`chart_dir` finds it in a
checkout or in an installed package. ``helm_python``, ``kubernetes_validate`` and
``jsonschema`` are imported when used: ``pip install 'conveyor[deploy]'``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.deploy.settings import deploy_of, section_or_none
from conveyor.errors import ConfigError, InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = [
    "CRD_KINDS",
    "KUBERNETES_VERSIONS",
    "chart_dir",
    "check_values",
    "lint",
    "policy_violations",
    "render",
    "validate",
    "values_for",
]

#: The Kubernetes versions :func:`validate` checks against by default.
KUBERNETES_VERSIONS = ("1.29.0", "1.31.0")
#: Custom resources of the Prometheus Operator: not in the Kubernetes schemas, checked
#: against the partial schemas below instead.
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})
#: Where the secret environment variables are read from, unless the values name another.
SECRET_SUFFIX = "-secrets"
#: The variable the CLI reads its API key from (jobs, the controller and consumers need one
#: once the project has keys).
API_KEY_ENV = "CONVEYOR_API_KEY"

_INSTALL = "pip install 'conveyor[deploy]'"
# The order Helm installs kinds in (pkg/release/util/kind_sorter.go); others come last.
_INSTALL_ORDER = [
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
]
_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
_LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
# user:password@ in a URL (postgresql://app:pw@db, sql:postgresql://..., nats://u:p@nats)
_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@")
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


# -- the chart ----------------------------------------------------------------------------


def chart_dir() -> Path:
    """The chart: ``deploy/helm/conveyor`` in a checkout, else the wheel's copy
    (``conveyor/deploy/chart``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[2] / "deploy" / "helm" / "conveyor", here / "chart"):
        if (candidate / "Chart.yaml").is_file():
            return candidate
    raise ConfigError(
        f"the Helm chart is missing: neither {here.parents[2] / 'deploy/helm/conveyor'} (a "
        f"checkout) nor {here / 'chart'} (an installed wheel) holds a Chart.yaml",
        field="chart",
    )


def _helm() -> Any:
    try:
        import helm_python
    except ImportError as exc:
        raise MissingDependencyError(
            f"rendering the Helm chart needs helm-python-sdk (Helm's Go SDK): {_INSTALL}",
            package="helm-python-sdk",
        ) from exc
    return helm_python


def _schema(chart: Path) -> dict[str, Any]:
    path = chart / "values.schema.json"
    try:
        found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: the chart has no values schema", file=str(path)) from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}", file=str(path)) from None
    return found


def _value_path(parts: Sequence[Any]) -> str:
    """``server.replicas``, ``cronJobs[0].schedule``; the whole values: ``(values)``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(values)"


def _schema_problems(values: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    try:
        import jsonschema
    except ImportError as exc:
        raise MissingDependencyError(
            f"checking the chart's values needs jsonschema: {_INSTALL}", package="jsonschema"
        ) from exc
    validator = jsonschema.Draft7Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.path))):
        message = error.message
        if error.validator == "not":
            message = f"{error.instance!r} is not allowed here"
        elif error.validator in ("oneOf", "anyOf") and error.context:
            message = "; ".join(sorted({c.message for c in error.context}))
        problems.append(f"{_value_path(list(error.absolute_path))}: {message}")
    return problems


def check_values(values: Mapping[str, Any], chart: Path | None = None) -> dict[str, Any]:
    """``values`` coalesced with the chart's defaults (as Helm does), checked against
    ``values.schema.json``; a violation raises InvalidInputError naming each value."""
    chart = chart or chart_dir()
    helm = _helm()
    with helm.Chart.load(str(chart)) as loaded:
        try:
            merged: dict[str, Any] = loaded.merge_values(dict(values))
        except helm.HelmError as exc:
            raise InvalidInputError(f"the chart's values: {exc}", field="values") from None
    problems = _schema_problems(merged, _schema(chart))
    if problems:
        raise InvalidInputError(
            "the chart's values do not match its schema (values.schema.json): "
            + "; ".join(problems),
            field=problems[0].split(":", 1)[0],
            problems=problems,
        )
    return merged


def render(
    values: dict[str, Any], *, release: str, namespace: str, chart: Path | None = None
) -> list[dict[str, Any]]:
    """The chart's manifests for ``values``, hooks included, in Helm's install order.

    The values are checked against ``values.schema.json`` first (InvalidInputError naming
    the path, ``server.replicas: -1 is less than the minimum of 1``), then rendered by
    Helm's engine offline (``lookup`` finds nothing); a template's ``fail`` is an
    InvalidInputError with its message.
    """
    chart = chart or chart_dir()
    check_values(values, chart)
    helm = _helm()
    try:
        helm.validate_release_name(release)
    except helm.HelmError as exc:
        raise InvalidInputError(f"release name {release!r}: {exc}", field="release") from None
    with helm.Chart.load(str(chart)) as loaded:
        try:
            rendered: dict[str, str] = loaded.render(
                values, name=release, namespace=namespace, is_install=True
            )
        except helm.HelmError as exc:
            raise InvalidInputError(
                f"the chart did not render: {_render_error(str(exc))}", field="values"
            ) from None
    return _ordered(_parse(rendered))


def _render_error(message: str) -> str:
    # execution error at (conveyor/templates/ingress.yaml:3:4): ingress.host: ...
    return re.sub(r"^.*?execution error at \([^)]*\): ", "", message.strip())


def _parse(rendered: Mapping[str, str]) -> list[dict[str, Any]]:
    import yaml

    manifests = []
    for name in sorted(rendered):
        if not name.endswith((".yaml", ".yml", ".json")):
            continue  # NOTES.txt
        try:
            documents = list(yaml.safe_load_all(rendered[name]))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name} rendered to invalid YAML: {exc}", file=name) from None
        for document in documents:
            if not document:
                continue
            if not isinstance(document, dict) or "kind" not in document:
                raise ConfigError(f"{name} rendered something that is not an object", file=name)
            manifests.append(document)
    return manifests


def _hook_weight(manifest: Mapping[str, Any]) -> int | None:
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    if "helm.sh/hook" not in annotations:
        return None
    try:
        return int(annotations.get("helm.sh/hook-weight", 0))
    except ValueError:
        return 0


def _ordered(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hooks first (by weight, then kind), then the release's objects in Helm's kind order:
    what ``kubectl apply`` of the list does is then close to what Helm does."""
    rank = {kind: index for index, kind in enumerate(_INSTALL_ORDER)}

    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, int, int, int]:
        index, manifest = item
        weight = _hook_weight(manifest)
        kind_rank = rank.get(str(manifest.get("kind")), len(rank))
        return (0 if weight is not None else 1, weight or 0, kind_rank, index)

    return [m for _, m in sorted(enumerate(manifests), key=key)]


def lint(chart: Path | None = None, values: dict[str, Any] | None = None) -> list[str]:
    """Helm's own lint of the chart (``helm lint --strict``: Chart.yaml, the templates
    rendered with ``values``, the values against the schema): its warnings and errors as
    ``WARNING templates/x.yaml: ...``; empty when it has nothing to say beyond information."""
    helm = _helm()
    report = helm.lint(str(chart or chart_dir()), values, strict=True)
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    found = [
        f"{names.get(m.get('severity', 0), 'UNKNOWN')} {m.get('path', '')}: {m.get('error', '')}"
        for m in report.get("messages", [])
        if m.get("severity", 0) != 1
    ]
    found += [f"ERROR {e}" for e in report.get("errors", []) if not any(e in f for f in found)]
    return found


# -- validation against the Kubernetes schemas -------------------------------------------


def _name(manifest: Mapping[str, Any]) -> str:
    return f"{manifest.get('kind', '?')}/{(manifest.get('metadata') or {}).get('name', '?')}"


def validate(
    manifests: list[dict[str, Any]], kubernetes_versions: tuple[str, ...] = KUBERNETES_VERSIONS
) -> list[str]:
    """Every manifest against the strict OpenAPI schema of each Kubernetes version
    (kubernetes-validate: unknown fields are errors); the problems, empty when all are valid.

    The Prometheus Operator's kinds (:data:`CRD_KINDS`) are in no Kubernetes schema: they
    are checked once against partial schemas written here from the operator's API (the
    fields the chart writes, strictly; duration and rule shapes), not the operator's full
    CRD schema; a cluster without the operator refuses them whatever they hold. A kind
    none of them knows is an error.
    """
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
        from kubernetes_validate.utils import (  # type: ignore[import-untyped]
            SchemaNotFoundError,
            ValidationError,
            VersionNotSupportedError,
        )
    except ImportError as exc:
        raise MissingDependencyError(
            f"validating manifests needs kubernetes-validate: {_INSTALL}",
            package="kubernetes-validate",
        ) from exc
    problems: list[str] = []
    for manifest in manifests:
        if manifest.get("kind") in CRD_KINDS:
            problems += _crd_problems(manifest)
            continue
        for version in kubernetes_versions:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except ValidationError as exc:
                where = ".".join(str(p) for p in exc.path) or "(object)"
                problems.append(f"{_name(manifest)} (Kubernetes {version}): {where}: {exc.message}")
            except SchemaNotFoundError as exc:
                problems.append(f"{_name(manifest)} (Kubernetes {version}): {exc.message}")
            except VersionNotSupportedError:
                raise InvalidInputError(
                    f"kubernetes-validate {kubernetes_validate.__version__} has no schemas of "
                    f"Kubernetes {version}",
                    field="kubernetes_versions",
                ) from None
    return problems


_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_SECRET_KEY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "key"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "key": {"type": "string", "minLength": 1},
        "optional": {"type": "boolean"},
    },
}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
            "maxLength": 253,
        },
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": _STRINGS,
        "annotations": _STRINGS,
    },
}
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": _STRINGS, "matchExpressions": {"type": "array"}},
}
_ENDPOINT_FIELDS = [
    "port",
    "targetPort",
    "path",
    "scheme",
    "params",
    "interval",
    "scrapeTimeout",
    "tlsConfig",
    "bearerTokenFile",
    "bearerTokenSecret",
    "authorization",
    "honorLabels",
    "honorTimestamps",
    "trackTimestampsStaleness",
    "basicAuth",
    "oauth2",
    "metricRelabelings",
    "relabelings",
    "proxyUrl",
    "noProxy",
    "proxyFromEnvironment",
    "proxyConnectHeader",
    "followRedirects",
    "enableHttp2",
    "filterRunning",
]


def _crd(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A Prometheus Operator object of ``kind`` (monitoring.coreos.com/v1) whose spec is
    ``spec``."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": _META,
            "spec": spec,
        },
    }


_CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _crd(
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["endpoints", "selector"],
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "selector": _SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "sampleLimit": {"type": "integer", "minimum": 0},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "propertyNames": {"enum": _ENDPOINT_FIELDS},
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "targetPort": {"type": ["integer", "string"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": _SECRET_KEY,
                                },
                            },
                            "bearerTokenSecret": _SECRET_KEY,
                        },
                    },
                },
            },
            "propertyNames": {
                "enum": [
                    "jobLabel",
                    "targetLabels",
                    "podTargetLabels",
                    "selector",
                    "namespaceSelector",
                    "sampleLimit",
                    "endpoints",
                    "targetLimit",
                    "labelLimit",
                    "attachMetadata",
                    "scrapeClass",
                ]
            },
        },
    ),
    "PrometheusRule": _crd(
        "PrometheusRule",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "query_offset": _DURATION,
                            "limit": {"type": "integer", "minimum": 0},
                            "labels": _STRINGS,
                            "partial_response_strategy": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [
                                        {
                                            "required": ["record"],
                                            "not": {"required": ["alert"]},
                                        },
                                        {
                                            "required": ["alert"],
                                            "not": {"required": ["record"]},
                                        },
                                    ],
                                    "properties": {
                                        "record": {"type": "string", "minLength": 1},
                                        "alert": {"type": "string", "minLength": 1},
                                        "expr": {"type": ["string", "integer"], "minLength": 1},
                                        "for": _DURATION,
                                        "keep_firing_for": _DURATION,
                                        "labels": _STRINGS,
                                        "annotations": _STRINGS,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    ),
}


def _crd_problems(manifest: Mapping[str, Any]) -> list[str]:
    import jsonschema

    schema = _CRD_SCHEMAS[str(manifest["kind"])]
    problems = [
        f"{_name(manifest)} (partial schema): {_value_path(list(e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(manifest)
    ]
    if manifest.get("kind") == "PrometheusRule":
        names = [g.get("name") for g in (manifest.get("spec") or {}).get("groups") or []]
        problems += [
            f"{_name(manifest)}: spec.groups: the group name {n!r} is used twice"
            for n in sorted({n for n in names if names.count(n) > 1})
        ]
    return problems


# -- policy -------------------------------------------------------------------------------


def _pod_spec(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = manifest.get("spec") or {}
    kind = manifest.get("kind")
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return (spec.get("template") or {}).get("spec") if kind in _WORKLOADS else None


def _pod_labels(manifest: Mapping[str, Any]) -> Mapping[str, str]:
    if manifest.get("kind") == "Pod":
        return (manifest.get("metadata") or {}).get("labels") or {}
    return ((manifest.get("spec") or {}).get("template") or {}).get("metadata", {}).get(
        "labels"
    ) or {}


def _image_problem(image: str) -> str | None:
    if not image:
        return "has no image"
    if "@" in image:
        return None  # by digest
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (it means 'latest'): give a version or a digest"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} is tagged 'latest', which names no one build"
    return None


def _container_problems(
    container: Mapping[str, Any], pod: Mapping[str, Any], *, long_running: bool, init: bool
) -> Iterator[str]:
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    missing = [f"requests.{r}" for r in ("cpu", "memory") if r not in requests]
    if "memory" not in limits:
        missing.append("limits.memory")
    if missing:
        yield f"no resources {', '.join(missing)}"
    problem = _image_problem(str(container.get("image") or ""))
    if problem:
        yield problem
    mine = container.get("securityContext") or {}
    theirs = pod.get("securityContext") or {}
    non_root = mine.get("runAsNonRoot", theirs.get("runAsNonRoot"))
    user = mine.get("runAsUser", theirs.get("runAsUser"))
    if non_root is not True:
        yield "may run as root: runAsNonRoot is not true"
    elif user == 0:
        yield "runs as root: runAsUser is 0"
    if long_running and not init:
        for probe in ("livenessProbe", "readinessProbe"):
            if not container.get(probe):
                yield f"no {probe} (a long-running container)"


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    match = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return bool(match or selector.get("matchExpressions"))


def policy_violations(manifests: list[dict[str, Any]]) -> list[str]:
    """What the cluster's policies would refuse, one line each (empty: none):

    - every container (init containers too) requests CPU and memory and has a memory limit;
    - every image is pinned: a tag other than ``latest``, or a digest;
    - every container runs as non-root (``runAsNonRoot: true``, its own or its pod's, and
      never ``runAsUser: 0``);
    - every container of a long-running workload (Deployment, StatefulSet, DaemonSet) has
      a liveness and a readiness probe;
    - a Deployment or StatefulSet with more than one replica (or scaled by an HPA) has a
      PodDisruptionBudget selecting its pods.
    """
    found: list[str] = []
    budgets = [
        (m.get("spec") or {}).get("selector") or {}
        for m in manifests
        if m.get("kind") == "PodDisruptionBudget"
    ]
    scaled = {
        ((m.get("spec") or {}).get("scaleTargetRef") or {}).get("name"): m
        for m in manifests
        if m.get("kind") == "HorizontalPodAutoscaler"
    }
    for manifest in manifests:
        kind = manifest.get("kind")
        pod = _pod_spec(manifest)
        if pod is None:
            continue
        long_running = kind in _LONG_RUNNING
        for field, init in (("initContainers", True), ("containers", False)):
            for container in pod.get(field) or []:
                for problem in _container_problems(
                    container, pod, long_running=long_running, init=init
                ):
                    found.append(f"{_name(manifest)}: container {container.get('name')}: {problem}")
        if kind in ("Deployment", "StatefulSet"):
            name = (manifest.get("metadata") or {}).get("name")
            hpa = scaled.get(name)
            replicas = (manifest.get("spec") or {}).get("replicas", 1)
            if hpa is not None:
                replicas = max(replicas or 1, (hpa.get("spec") or {}).get("maxReplicas", 1))
            labels = _pod_labels(manifest)
            if replicas > 1 and not any(_selects(b, labels) for b in budgets):
                how = "autoscaled" if hpa is not None else f"{replicas} replicas"
                found.append(
                    f"{_name(manifest)}: {how} and no PodDisruptionBudget selects its pods"
                )
    return found


# -- values from the spec -----------------------------------------------------------------


def _image(image: str) -> dict[str, str]:
    """``repo:tag`` or ``repo@sha256:...`` as the chart's ``image`` values."""
    if "@" in image:
        repository, _, digest = image.partition("@")
        if not repository or not re.fullmatch(r"sha256:[a-f0-9]{64}", digest):
            raise InvalidInputError(
                f"image {image!r}: expected REPOSITORY@sha256:<64 hex digits>", field="image"
            )
        return {"repository": repository, "digest": digest}
    head, slash, last = image.rpartition("/")
    if ":" not in last:
        raise InvalidInputError(
            f"image {image!r} has no tag: give REPOSITORY:TAG or REPOSITORY@sha256:...",
            field="image",
        )
    name, _, tag = last.rpartition(":")
    if tag == "latest":
        raise InvalidInputError(
            f"image {image!r}: the tag 'latest' names no one build: use the commit or a version",
            field="image",
        )
    return {"repository": f"{head}{slash}{name}", "tag": tag}


def release_of(spec: ProjectSpec) -> str:
    """The Helm release: ``deploy.kubernetes.release``, else the project, as a DNS label."""
    return _dns(deploy_of(spec).kubernetes.release or spec.project)


def namespace_of(spec: ProjectSpec, environment: str) -> str:
    """Where the chart goes: ``deploy.kubernetes.namespace``, else the environment's
    namespace, else its name."""
    declared = spec.environments.get(environment)
    return (
        deploy_of(spec).kubernetes.namespace
        or (declared.namespace if declared is not None else None)
        or environment
    )


def server_deployment(release: str) -> str:
    """The server Deployment's name, as the chart's ``conveyor.componentName`` makes it."""
    full = release if "conveyor" in release else f"{release}-conveyor"
    return f"{full[:63].rstrip('-')}-server"[:63].rstrip("-")


def _dns(name: str) -> str:
    return _NOT_DNS.sub("-", name.lower()).strip("-")[:40].strip("-") or "job"


def _secret_fields(spec: ProjectSpec) -> Iterator[tuple[str, ...]]:
    """(spec path, what) of every value that must not be written in a ConfigMap: URLs
    with a password, secret strings; a secret inside a list names the whole list."""
    from pydantic import BaseModel, SecretStr

    from conveyor.backends import BackendURL

    def walk(value: Any, path: tuple[str, ...], in_list: bool) -> Iterator[tuple[str, ...]]:
        if isinstance(value, BaseModel):
            for name, field in type(value).model_fields.items():
                if not field.exclude:
                    yield from walk(getattr(value, name), (*path, name), in_list)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                yield from walk(item, path if in_list else (*path, str(key)), in_list)
        elif isinstance(value, list | tuple):
            for item in value:
                yield from walk(item, path, True)
        elif isinstance(value, SecretStr):
            yield path
        elif isinstance(value, BackendURL):
            if value.password is not None:
                yield path
        elif isinstance(value, str) and _CREDENTIALS.search(value):
            yield path

    for name in type(spec).model_fields:
        if name in ("environments", "environment", "root"):
            continue
        seen: set[tuple[str, ...]] = set()
        for path in walk(getattr(spec, name), (name,), False):
            if path not in seen:
                seen.add(path)
                yield path


def _env_named_fields(spec: ProjectSpec) -> Iterator[tuple[str, str, bool]]:
    """(variable, spec path, defaulted) of each ``*_env`` field: the variable holding a
    secret the spec names (api_key_env, routing_key_env, password_env, key_env...)."""
    from pydantic import BaseModel

    def walk(value: Any, path: tuple[str, ...]) -> Iterator[tuple[str, str, bool]]:
        if isinstance(value, BaseModel):
            for name, field in type(value).model_fields.items():
                if field.exclude:
                    continue
                item = getattr(value, name)
                if name.endswith("_env") and isinstance(item, str) and item:
                    yield item, ".".join((*path, name)), item == field.default
                else:
                    yield from walk(item, (*path, name))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                yield from walk(item, (*path, str(key)))
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                yield from walk(item, (*path, str(index)))

    for name in type(spec).model_fields:
        if name not in ("environments", "environment", "root"):
            yield from walk(getattr(spec, name), (name,))


def _remove(document: dict[str, Any], path: tuple[str, ...]) -> None:
    """Remove ``path`` from ``document``, and the mappings it leaves empty."""
    parents: list[tuple[dict[str, Any], str]] = []
    node: Any = document
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        parents.append((node, key))
        node = node[key]
    if not isinstance(node, dict) or node.pop(path[-1], None) is None:
        return
    for parent, key in reversed(parents):
        if parent[key] == {}:
            del parent[key]


def _spec_document(
    spec: ProjectSpec, environment: str | None, secret_paths: list[tuple[str, ...]]
) -> str:
    """The spec for the ConfigMap: what differs from the defaults, the environment already
    merged (only its declaration kept, so that CONVEYOR_ENV names it), no secret."""
    import yaml

    document: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    document.pop("environments", None)
    if environment is not None:
        declared = spec.environment_spec(environment).model_dump(
            mode="json",
            exclude_defaults=True,
            exclude={"backends", "slos", "settings"},
        )
        document["environments"] = {environment: declared}
    for path in secret_paths:
        _remove(document, path)
    header = (
        f"# conveyor.yaml of {spec.project}"
        + (f", environment {environment} merged in" if environment else "")
        + " (conveyor deploy: conveyor.deploy.helm.values_for).\n"
        + "# Credentials are not here: they come from a Secret, as CONVEYOR_* variables.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _resources(spec: ProjectSpec, environment: str | None) -> dict[str, Any] | None:
    if environment is None:
        return None
    wanted = spec.environment_spec(environment).resources
    limits = {"memory": wanted.memory_limit or wanted.memory}
    if wanted.cpu_limit:
        limits["cpu"] = wanted.cpu_limit
    return {"requests": {"cpu": wanted.cpu, "memory": wanted.memory}, "limits": limits}


def _server(spec: ProjectSpec, environment: str | None) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if environment is not None:
        server["replicas"] = spec.environment_spec(environment).replicas
        server["resources"] = _resources(spec, environment)
    serving = section_or_none(spec, "serving")
    if serving is not None:
        if serving.port:
            server["port"] = serving.port
        server["workers"] = serving.workers
        if serving.ssl_certfile:
            server["scheme"] = "HTTPS"
        drain = serving.drain
        server["drain"] = {
            "minSeconds": drain.min_s,
            "quietSeconds": drain.quiet_s,
            "maxSeconds": drain.max_s,
            "gracefulSeconds": drain.graceful_s,
            "shutdownSeconds": drain.shutdown_s,
        }
    return server


def _cron_jobs(spec: ProjectSpec) -> list[dict[str, Any]]:
    """The spec's scheduled work as CronJobs (cron expressions are UTC, as the scheduler's):
    ``scoring.jobs`` (conveyor score batch), each model's ``retrain.cron`` (conveyor train),
    ``monitoring.drift.cron`` (conveyor monitor drift, per model),
    ``monitoring.compaction.cron`` (conveyor events compact) and
    ``features.materialize.cron`` (conveyor features materialize)."""
    jobs: list[dict[str, Any]] = []

    def add(name: str, cron: str, args: list[str], description: str) -> None:
        jobs.append(
            {
                "name": _dns(name),
                "schedule": cron,
                "timeZone": "Etc/UTC",
                "args": args,
                "description": description,
            }
        )

    scoring = section_or_none(spec, "scoring")
    for job in getattr(scoring, "jobs", None) or []:
        args = ["score", "batch", job.model, "--input", job.input, "--output", job.output]
        for option in ("query", "table", "key", "engine", "workers"):
            value = getattr(job, option)
            if value is not None:
                args += [f"--{option}", str(value)]
        add(f"score-{job.name}", job.cron, args, f"scoring.jobs {job.name}")
    models = section_or_none(spec, "models") or {}
    for name, model in models.items():
        retrain = getattr(model, "retrain", None)
        if retrain is not None and retrain.cron:
            add(f"retrain-{name}", retrain.cron, ["train", name], f"models.{name}.retrain.cron")
    monitoring = section_or_none(spec, "monitoring")
    drift = getattr(monitoring, "drift", None)
    if drift is not None and drift.cron:
        for name in drift.models if drift.models is not None else list(models):
            args = ["monitor", "drift", name, "--window", drift.window]
            args += ["--max-rows", str(drift.max_rows)]
            reference = drift.reference
            if not isinstance(reference, str):
                window = f"{reference.since.isoformat()}/{reference.until.isoformat()}"
                args += ["--reference-window", window]
            add(f"drift-{name}", drift.cron, args, "monitoring.drift.cron")
    compaction = getattr(monitoring, "compaction", None)
    if compaction is not None and compaction.cron:
        add("compact-events", compaction.cron, ["events", "compact"], "monitoring.compaction")
    features = section_or_none(spec, "features")
    materialize = getattr(features, "materialize", None)
    if materialize is not None and materialize.cron:
        args = ["features", "materialize", *materialize.views]
        if materialize.full:
            args.append("--full")
        add("features-materialize", materialize.cron, args, "features.materialize.cron")
    return jobs


def _prometheus_groups(spec: ProjectSpec) -> list[dict[str, Any]]:
    try:
        from conveyor.monitoring.interop.prometheus import rules_document
    except ImportError:
        return []
    document, _ = rules_document(spec)
    groups: list[dict[str, Any]] = document["groups"]
    return groups


def values_for(spec: ProjectSpec, *, image: str, environment: str | None = None) -> dict[str, Any]:
    """The chart's values for ``spec``, loaded for ``environment`` (default: the one it was
    loaded for), with ``deploy.kubernetes.values`` deep-merged over them:

    - ``image``: ``repo:tag`` or ``repo@sha256:...`` (untagged or ``latest``: refused);
    - the environment's replicas, resources and namespace (``deploy.kubernetes.namespace``,
      else the environment's, else its name), and ``CONVEYOR_ENV`` in every pod;
    - ``spec.content``: the spec with the environment merged, what differs from the
      defaults, for the ConfigMap; every credential (a URL with a password, a secret string)
      left out of it and read instead from the Secret ``<release>-secrets`` as the
      ``CONVEYOR_*`` variable that overrides its field, as are the variables the spec names
      in ``*_env`` fields (API keys) and ``CONVEYOR_API_KEY`` (optional);
    - the server's port, workers and drain (``serving:``), the Ingress host
      (``deploy.kubernetes.ingress_host``);
    - CronJobs of the spec's schedules, the rollout controller when the spec has a
      ``rollouts:`` section, the jobs workers when it has a ``jobs:`` section, and the
      Prometheus rule groups of ``conveyor monitor prometheus-rules`` (the PrometheusRule
      and ServiceMonitor are rendered once ``deploy.kubernetes.values`` enables them).
    """
    from conveyor.config import deep_merged

    if environment is None:
        environment = spec.environment
    elif spec.environment != environment:
        if environment not in spec.environments:
            spec.environment_spec(environment)  # unknown: a ConfigError naming the declared
        raise InvalidInputError(
            f"the spec was loaded for {spec.environment or 'no environment'}, not for "
            f"{environment!r}: load it with load_spec(root, environment={environment!r}) so "
            "that the environment's backends and settings are merged in",
            field="environment",
        )
    if environment is not None:
        spec.environment_spec(environment)  # declared, or a ConfigError
    deploy = deploy_of(spec)
    release = release_of(spec)
    secret = f"{release}{SECRET_SUFFIX}"

    secret_paths = list(_secret_fields(spec))
    secret_env: dict[str, dict[str, Any]] = {}
    for path in secret_paths:
        variable = "CONVEYOR_" + "__".join(part.upper() for part in path)
        secret_env[variable] = {
            "name": variable,
            "key": variable,
            "optional": False,
            "field": ".".join(path),
        }
    for variable, field, defaulted in _env_named_fields(spec):
        entry = secret_env.setdefault(
            variable, {"name": variable, "key": variable, "optional": defaulted, "field": field}
        )
        entry["optional"] = entry["optional"] and defaulted
    secret_env.setdefault(
        API_KEY_ENV,
        {"name": API_KEY_ENV, "key": API_KEY_ENV, "optional": True, "field": "(the CLI's key)"},
    )

    values: dict[str, Any] = {
        "image": _image(image),
        "environment": environment or "",
        "spec": {"content": _spec_document(spec, environment, secret_paths)},
        "secrets": {"existingSecret": secret, "env": list(secret_env.values())},
        "server": _server(spec, environment),
        "cronJobs": _cron_jobs(spec),
    }
    if values["server"].get("resources") is None:
        values["server"].pop("resources", None)
    namespace = (
        namespace_of(spec, environment) if environment is not None else deploy.kubernetes.namespace
    )
    if namespace:
        values["namespaceOverride"] = namespace
    if deploy.kubernetes.ingress_host:
        values["ingress"] = {"enabled": True, "host": deploy.kubernetes.ingress_host}
    declared = spec.model_dump(exclude_defaults=True, include={"rollouts", "jobs"})
    if "rollouts" in declared:
        values["rolloutController"] = {"enabled": True}
    if "jobs" in declared:
        values["jobsWorker"] = {"enabled": True}
        jobs = section_or_none(spec, "jobs")
        if jobs is not None:
            values["jobsWorker"]["concurrency"] = jobs.concurrency
    groups = _prometheus_groups(spec)
    if groups:
        values["prometheusRule"] = {"groups": groups}
    merged = deep_merged(values, deploy.kubernetes.values)
    scaling = merged.get("autoscaling") or {}
    asked = deploy.kubernetes.values.get("autoscaling") or {}
    if scaling.get("enabled") and "minReplicas" not in asked and environment is not None:
        # the environment's replicas are the floor the autoscaler scales from
        floor = spec.environment_spec(environment).replicas
        scaling["minReplicas"] = max(floor, 2)
        scaling["maxReplicas"] = max(scaling.get("maxReplicas", 10), scaling["minReplicas"])
    return merged
