"""Conveyor's own operations as MCP tools: the built-in server ``conveyor`` of the gateway.

An agent investigating an alert can look (models, versions, gate reports, comparisons,
drift, alerts, a RAG search) and act (deploy, canary, roll back), each tool gated by the
caller's role exactly as the same operation is over HTTP and in the CLI (the same
governance action), and each mutation recorded by the same code, with the caller's key as
its actor: an agent's rollback is in ``conveyor models history`` and the audit events as
anyone's is.

==================  ================================================  =================
tool                what it does                                      action (role)
==================  ================================================  =================
list_models         every registered model, its latest version and    models.read
                    its live route                                    (viewer)
list_versions       a model's newest versions: metrics, status        models.read
gate_report         a version's newest gate report (each check)       models.read
compare_versions    two versions' metrics side by side                models.read
drift_report        a model's newest drift checks                     monitoring.read
list_alerts         open (or all) alert incidents                     alerts.read
rag_search          the best chunks of a RAG collection for a query   rag.search
deploy              all of a model's traffic to a version             serving.deploy
                                                                      (deployer)
canary              a share of a model's traffic to a version         serving.deploy
rollback            a model's previous route back                     serving.rollback
==================  ================================================  =================

``mcp.conveyor_tools: false`` leaves them out. Results are small JSON objects (an LLM reads
them), never whole artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = ["SERVER", "ToolDef", "conveyor_tools"]

#: The built-in server's name in the catalogue (tools are ``conveyor__list_models``...).
SERVER = "conveyor"


@dataclass(frozen=True)
class ToolDef:
    """One of Conveyor's operations as a tool."""

    name: str
    description: str
    input_schema: dict[str, Any]
    action: str
    run: Callable[[Project, dict[str, Any], str], dict[str, Any]]
    read_only: bool = True
    destructive: bool = False

    def tool(self) -> Any:
        """The MCP Tool, with its annotations."""
        from mcp.types import Tool, ToolAnnotations

        return Tool(
            name=self.name,
            description=self.description,
            input_schema=self.input_schema,
            annotations=ToolAnnotations(
                readOnlyHint=self.read_only,
                destructiveHint=self.destructive,
                idempotentHint=self.read_only,
            ),
        )


def _schema(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_MODEL = {"type": "string", "description": "The model's name."}
_VERSION = {"type": "integer", "minimum": 1, "description": "A version number."}
_REASON = {"type": "string", "description": "Why (recorded with the change)."}


def _routes(project: Project) -> Any:
    from conveyor.serving.route_store import RouteStore

    return RouteStore(project.store, project.events, project.registry)


def _list_models(project: Project, args: dict[str, Any], actor: str) -> dict[str, Any]:
    routes = {s.model: s for s in _routes(project).all()}
    models = []
    for model in project.registry.models():
        route = routes.get(model["name"])
        models.append(
            {
                "name": model["name"],
                "latest_version": model["latest_version"],
                "route": None
                if route is None
                else {
                    "revision": route.revision,
                    "mode": route.policy.mode,
                    "versions": [
                        {"version": a.version, "weight": a.weight, "arm": a.arm}
                        for a in route.policy.versions
                    ],
                },
            }
        )
    return {"models": models}


def _version_summary(version: Any) -> dict[str, Any]:
    return {
        "ref": version.ref,
        "number": version.number,
        "status": version.status,
        "created_at": version.created_at.isoformat(),
        "metrics": version.metrics,
        "tags": version.tags,
    }


def _list_versions(project: Project, args: dict[str, Any], actor: str) -> dict[str, Any]:
    page = project.registry.list(args["model"], limit=int(args.get("limit", 10)))
    if not page.items:
        from conveyor.errors import NotFoundError

        raise NotFoundError(f"no model {args['model']!r}", model=args["model"])
    return {"versions": [_version_summary(v) for v in page.items]}


def _gate_report(project: Project, args: dict[str, Any], actor: str) -> dict[str, Any]:
    ref = f"{args['model']}@{args['version']}"
    report = project.registry.gate_report(ref)
    if report is None:
        return {"ref": ref, "report": None, "note": "no gate report: its gates never ran"}
    return {
        "ref": ref,
        "verdict": str(report.verdict),
        "created_at": report.created_at.isoformat(),
        "checks": [
            {
                "name": c.name,
                "passed": c.passed,
                "severity": c.severity,
                "observed": c.observed,
                "threshold": c.threshold,
                "detail": c.detail,
            }
            for c in report.checks
        ],
    }


def _compare(project: Project, args: dict[str, Any], actor: str) -> dict[str, Any]:
    a = project.registry.get(args["model"], int(args["a"]))
    b = project.registry.get(args["model"], int(args["b"]))
    names = sorted(set(a.metrics) | set(b.metrics))
    return {
        "model": args["model"],
        "a": a.number,
        "b": b.number,
        "metrics": [
            {
                "metric": n,
                "a": a.metrics.get(n),
                "b": b.metrics.get(n),
                "b_minus_a": None
                if a.metrics.get(n) is None or b.metrics.get(n) is None
                else round(b.metrics[n] - a.metrics[n], 6),
            }
            for n in names
        ],
    }


def _drift_report(project: Project, args: dict[str, Any], actor: str) -> dict[str, Any]:
    project.events.flush()
    found = project.events.query(
        kind="drift.checked",
        subject=args["model"],
        limit=int(args.get("limit", 5)),
        descending=True,
    ).items
    return {
        "model": args["model"],
        "checks": [
            {
                "at": e.time.isoformat(),
                **{
                    k: e.payload.get(k)
                    for k in ("verdict", "version_id", "metrics", "drifted", "compared")
                    if k in e.payload
                },
            }
            for e in found
        ],
    }


def _list_alerts(project: Project, args: dict[str, Any], actor: str) -> dict[str, Any]:
    from conveyor.monitoring.alerts.store import SqlStore

    state = args.get("state", "open")
    incidents = SqlStore(project.store).incidents(
        state=None if state == "all" else state, model=args.get("model"), limit=20
    )
    return {
        "alerts": [
            {
                "id": i.id,
                "rule": i.rule,
                "metric": i.metric,
                "model": i.model,
                "state": i.state,
                "severity": i.severity,
                "value": i.value,
                "threshold": i.threshold,
                "started_at": i.started_at.isoformat(),
            }
            for i in incidents
        ]
    }


def _rag_search(project: Project, args: dict[str, Any], actor: str) -> dict[str, Any]:
    from conveyor.rag.api import search

    found = search(args["collection"], args["query"], k=int(args.get("k", 5)), project=project)
    hits = []
    for hit in found.get("hits") or []:
        text = str(hit.get("text", ""))
        citation = hit.get("citation") or {}
        hits.append(
            {
                "source": citation.get("source"),
                "section": citation.get("section"),
                "score": hit.get("score"),
                "text": text[:600] + (" ..." if len(text) > 600 else ""),
            }
        )
    return {"collection": args["collection"], "version": found.get("version"), "hits": hits}


def _state(state: Any) -> dict[str, Any]:
    document = state.to_dict()
    return {
        k: document[k] for k in ("model", "revision", "policy", "actor", "reason") if k in document
    }


def _deploy(project: Project, args: dict[str, Any], actor: str) -> dict[str, Any]:
    from conveyor.serving.routes import RoutePolicy

    routes = _routes(project)
    version = project.registry.get(args["model"], int(args["version"]))
    current = _current(routes, version.model)
    options = _kept(current)
    state = routes.set(
        version.model,
        RoutePolicy.fixed(version.number, **options),
        actor=actor,
        reason=args.get("reason"),
        expected_revision=0 if current is None else current.revision,
    )
    return {"deployed": _state(state)}


def _canary(project: Project, args: dict[str, Any], actor: str) -> dict[str, Any]:
    from conveyor.errors import InvalidInputError
    from conveyor.serving.routes import RoutePolicy

    routes = _routes(project)
    version = project.registry.get(args["model"], int(args["version"]))
    current = _current(routes, version.model)
    if current is None:
        raise InvalidInputError(
            f"model {version.model!r} has no route to take a canary from: deploy it first",
            field="model",
        )
    arms = current.policy.versions
    stable = next((a.version for a in arms if a.arm == "stable"), None)
    stable = stable if stable is not None else max(arms, key=lambda a: a.weight).version
    state = routes.set(
        version.model,
        RoutePolicy.canary(stable, version.number, float(args["percent"]), **_kept(current)),
        actor=actor,
        reason=args.get("reason"),
        expected_revision=current.revision,
    )
    return {"canary": _state(state)}


def _rollback(project: Project, args: dict[str, Any], actor: str) -> dict[str, Any]:
    state = _routes(project).rollback(args["model"], actor=actor, reason=args.get("reason"))
    return {"rolled_back": _state(state)}


def _current(routes: Any, model: str) -> Any:
    from conveyor.errors import NotFoundError

    try:
        return routes.get(model)
    except NotFoundError:
        return None


def _kept(current: Any) -> dict[str, Any]:
    if current is None:
        return {}
    kept = current.policy
    return {"sticky_header": kept.sticky_header, "flags": kept.flags, "cache": kept.cache}


def conveyor_tools() -> list[ToolDef]:
    """The built-in tools (see the module)."""
    return [
        ToolDef(
            "list_models",
            "Every registered model: its latest version and where its traffic goes now "
            "(the route: versions and weights).",
            _schema([]),
            "models.read",
            _list_models,
        ),
        ToolDef(
            "list_versions",
            "A model's newest versions, newest first: number, status, metrics, tags.",
            _schema(
                ["model"],
                model=_MODEL,
                limit={"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
            ),
            "models.read",
            _list_versions,
        ),
        ToolDef(
            "gate_report",
            "The newest gate report of a model version: whether it passed, and each check "
            "(observed value, threshold, detail).",
            _schema(["model", "version"], model=_MODEL, version=_VERSION),
            "models.read",
            _gate_report,
        ),
        ToolDef(
            "compare_versions",
            "Two versions of a model side by side: each metric of both and the difference.",
            _schema(["model", "a", "b"], model=_MODEL, a=_VERSION, b=_VERSION),
            "models.read",
            _compare,
        ),
        ToolDef(
            "drift_report",
            "A model's newest drift checks against its training data: verdict, the columns "
            "that drifted, the metrics.",
            _schema(
                ["model"],
                model=_MODEL,
                limit={"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
            ),
            "monitoring.read",
            _drift_report,
        ),
        ToolDef(
            "list_alerts",
            "Alert incidents, newest first: open ones by default (pending and firing).",
            _schema(
                [],
                state={"type": "string", "enum": ["open", "pending", "firing", "resolved", "all"]},
                model=_MODEL,
            ),
            "alerts.read",
            _list_alerts,
        ),
        ToolDef(
            "rag_search",
            "Search a RAG collection: the best chunks for a query, with their source.",
            _schema(
                ["collection", "query"],
                collection={"type": "string"},
                query={"type": "string", "minLength": 1},
                k={"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
            ),
            "rag.search",
            _rag_search,
        ),
        ToolDef(
            "deploy",
            "Send all of a model's traffic to a version (its route's other settings kept).",
            _schema(["model", "version"], model=_MODEL, version=_VERSION, reason=_REASON),
            "serving.deploy",
            _deploy,
            read_only=False,
            destructive=True,
        ),
        ToolDef(
            "canary",
            "Send a share of a model's traffic (percent, 0-100) to a version; the rest stays "
            "on the stable version.",
            _schema(
                ["model", "version", "percent"],
                model=_MODEL,
                version=_VERSION,
                percent={"type": "number", "minimum": 0, "maximum": 100},
                reason=_REASON,
            ),
            "serving.deploy",
            _canary,
            read_only=False,
            destructive=True,
        ),
        ToolDef(
            "rollback",
            "Restore a model's previous route (a new revision; the history is kept).",
            _schema(["model"], model=_MODEL, reason=_REASON),
            "serving.rollback",
            _rollback,
            read_only=False,
            destructive=True,
        ),
    ]
