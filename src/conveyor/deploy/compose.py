"""``conveyor build --compose``: the project on one host with docker compose.

The server is built from the Dockerfile beside it and started once PostgreSQL (the store),
NATS with JetStream (the event log), and Redis (cache, rate limits, online features) answer
their healthchecks; Prometheus scrapes its ``/metrics``. The server's ``CONVEYOR_*``
variables point every seam at those services (they win over ``conveyor.yaml``, the
foundation's rule), so the spec itself is unchanged. Images are pinned by tag, state is
on named volumes, the server runs read-only as in a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = [
    "IMAGES",
    "METRICS_KEY_FILE",
    "compose_document",
    "prepare_secrets",
    "prometheus_document",
    "render_compose",
    "render_prometheus",
]

#: Every image but the server's, pinned by tag (never ``latest``).
IMAGES = {
    "postgres": "postgres:16.4-bookworm",
    "redis": "redis:7.4.1-bookworm",
    "nats": "nats:2.10.22-alpine",
    "prometheus": "prom/prometheus:v2.54.1",
}
#: The API key Prometheus sends (a viewer's: ``conveyor keys create prometheus --role
#: viewer``); an empty file until one is written there.
METRICS_KEY_FILE = "docker/secrets/prometheus.key"
#: The server's artifact store when the spec's is on local disk: a named volume.
ARTIFACTS_DIR = "/var/lib/conveyor/artifacts"

_DB = "conveyor"
_PASSWORD = "${POSTGRES_PASSWORD:-conveyor}"
#: Each seam's URL on this host, by the scheme its seam must support.
_SERVICE_URLS = {
    "store": ("postgresql", f"postgresql://{_DB}:{_PASSWORD}@postgres:5432/{_DB}"),
    "events": ("nats", "nats://nats:4222"),
    "cache": ("redis", "redis://redis:6379/0"),
    "ratelimit": ("redis", "redis://redis:6379/1"),
    "online": ("redis", "redis://redis:6379/2"),
}


def server_environment(spec: ProjectSpec, *, bake: bool) -> dict[str, str]:
    """The server's ``CONVEYOR_*`` variables: each seam on this host's service."""
    from conveyor.capability import seams

    env: dict[str, str] = {}
    known = seams()
    for seam, (scheme, url) in _SERVICE_URLS.items():
        if seam in known and scheme in known[seam].schemes():
            env[f"CONVEYOR_{seam.upper()}"] = url
    artifacts = spec.url("artifacts")
    if not bake and artifacts.scheme in ("file", "memory"):
        env["CONVEYOR_ARTIFACTS"] = f"file://{ARTIFACTS_DIR}"
    if spec.environment:
        env["CONVEYOR_ENV"] = spec.environment
    return env


def compose_document(spec: ProjectSpec, *, image: str, bake: bool) -> dict[str, Any]:
    """The compose file's document (compose-spec)."""
    from conveyor.deploy.image import PROMETHEUS_FILE, STATE_VOLUME
    from conveyor.serving.settings import serving_of

    serving = serving_of(spec)
    port = serving.port
    scheme = "https" if serving.ssl_certfile else "http"
    probe = (
        "import ssl, urllib.request; urllib.request.urlopen("
        f"'{scheme}://127.0.0.1:{port}/v2/health/live', timeout=3"
        + (", context=ssl._create_unverified_context()" if scheme == "https" else "")
        + ")"
    )
    volumes: dict[str, dict[str, Any]] = {
        "state": {},
        "postgres": {},
        "redis": {},
        "nats": {},
        "prometheus": {},
    }
    server_volumes = [f"state:{STATE_VOLUME}"]
    env = server_environment(spec, bake=bake)
    if "CONVEYOR_ARTIFACTS" in env:
        volumes["artifacts"] = {}
        server_volumes.append(f"artifacts:{ARTIFACTS_DIR}")
    server: dict[str, Any] = {
        "build": {"context": ".", "dockerfile": "Dockerfile"},
        "image": image,
        "restart": "unless-stopped",
        "read_only": True,
        "tmpfs": ["/tmp"],
        "environment": env,
        "ports": [f"{port}:{port}"],
        "volumes": server_volumes,
        "healthcheck": {
            "test": ["CMD", "python", "-c", probe],
            "interval": "15s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "60s",
        },
        # the server drains for serving.drain.graceful_s before it stops
        "stop_grace_period": f"{int(serving.drain.graceful_s) + 15}s",
        "depends_on": {
            name: {"condition": "service_healthy"} for name in ("postgres", "redis", "nats")
        },
    }
    services: dict[str, Any] = {
        "server": server,
        "postgres": {
            "image": IMAGES["postgres"],
            "restart": "unless-stopped",
            "environment": {
                "POSTGRES_USER": _DB,
                "POSTGRES_DB": _DB,
                "POSTGRES_PASSWORD": _PASSWORD,
            },
            "volumes": ["postgres:/var/lib/postgresql/data"],
            "healthcheck": {
                "test": ["CMD", "pg_isready", "-U", _DB, "-d", _DB],
                "interval": "5s",
                "timeout": "5s",
                "retries": 10,
            },
        },
        "redis": {
            "image": IMAGES["redis"],
            "restart": "unless-stopped",
            "command": ["redis-server", "--appendonly", "yes"],
            "volumes": ["redis:/data"],
            "healthcheck": {
                "test": ["CMD", "redis-cli", "ping"],
                "interval": "5s",
                "timeout": "5s",
                "retries": 10,
            },
        },
        "nats": {
            "image": IMAGES["nats"],
            "restart": "unless-stopped",
            "command": ["--jetstream", "--store_dir", "/data", "--http_port", "8222"],
            "volumes": ["nats:/data"],
            "healthcheck": {
                "test": [
                    "CMD",
                    "wget",
                    "-q",
                    "--spider",
                    "http://127.0.0.1:8222/healthz?js-enabled-only=true",
                ],
                "interval": "5s",
                "timeout": "5s",
                "retries": 10,
            },
        },
        "prometheus": {
            "image": IMAGES["prometheus"],
            "restart": "unless-stopped",
            "command": [
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
            ],
            "ports": ["127.0.0.1:9090:9090"],
            "volumes": [
                f"./{PROMETHEUS_FILE}:/etc/prometheus/prometheus.yml:ro",
                "prometheus:/prometheus",
            ],
            "healthcheck": {
                "test": ["CMD", "wget", "-q", "--spider", "http://127.0.0.1:9090/-/healthy"],
                "interval": "10s",
                "timeout": "5s",
                "retries": 5,
            },
            "depends_on": {"server": {"condition": "service_healthy"}},
        },
    }
    document: dict[str, Any] = {"name": spec.project.lower(), "services": services}
    if serving.auth == "required":
        services["prometheus"]["secrets"] = [
            {"source": "metrics_key", "target": "/etc/prometheus/conveyor.key"}
        ]
        document["secrets"] = {"metrics_key": {"file": f"./{METRICS_KEY_FILE}"}}
    document["volumes"] = volumes
    return document


def prometheus_document(spec: ProjectSpec) -> dict[str, Any]:
    """Prometheus's configuration: the server's ``/metrics`` every 15 s (with the viewer key
    ``/etc/prometheus/conveyor.key`` when the server requires one)."""
    from conveyor.serving.settings import serving_of

    serving = serving_of(spec)
    job: dict[str, Any] = {
        "job_name": "conveyor",
        "metrics_path": "/metrics",
        "scheme": "https" if serving.ssl_certfile else "http",
        "static_configs": [
            {"targets": [f"server:{serving.port}"], "labels": {"project": spec.project}}
        ],
    }
    if serving.ssl_certfile:
        job["tls_config"] = {"insecure_skip_verify": True}
    if serving.auth == "required":
        job["authorization"] = {
            "type": "Bearer",
            "credentials_file": "/etc/prometheus/conveyor.key",
        }
    return {"global": {"scrape_interval": "15s"}, "scrape_configs": [job]}


def render_compose(spec: ProjectSpec, *, image: str, bake: bool) -> str:
    import yaml

    header = (
        f"# {spec.project} on one host: docker compose up -d --build\n"
        "# PostgreSQL's password: POSTGRES_PASSWORD in the environment or .env (the default\n"
        "# suits a machine nobody else reaches: no database port is published).\n"
    )
    if serving_auth(spec) == "required":
        header += (
            "# Prometheus scrapes with a viewer's key: once the server is up,\n"
            "#   docker compose exec server conveyor keys create prometheus --role viewer\n"
            f"# and write the key into {METRICS_KEY_FILE} (read at every scrape).\n"
        )
    document = compose_document(spec, image=image, bake=bake)
    return header + yaml.safe_dump(document, sort_keys=False, width=100)


def serving_auth(spec: ProjectSpec) -> str:
    from conveyor.serving.settings import serving_of

    return serving_of(spec).auth


def render_prometheus(spec: ProjectSpec) -> str:
    import yaml

    return yaml.safe_dump(prometheus_document(spec), sort_keys=False)


def prepare_secrets(spec: ProjectSpec, output: Path) -> list[Path]:
    """The metrics key's file, empty until a key is written into it (compose mounts it),
    when the server requires keys."""
    path = output / METRICS_KEY_FILE
    if serving_auth(spec) != "required" or path.exists():
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    # Prometheus runs as its own user and reads it through a bind mount
    path.chmod(0o644)
    return [path]
