"""``conveyor rag``: build, list, show, search, eval, alias and delete collections.

::

    conveyor rag build docs                       # a new version; live moves if its gate passes
    conveyor rag list
    conveyor rag show docs                        # versions, aliases, counts; docs@3 for one
    conveyor rag search docs "roll back a model" -k 5 --filter section=Aliases
    conveyor rag eval docs --set evals/docs.jsonl # nDCG@10, recall@k, MRR, per-stage latency
    conveyor rag alias docs 2                     # live -> version 2; --rollback to undo
    conveyor rag delete docs --doc guide/old.md   # or --subject KEY (GDPR)
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    authorized,
    check_failed,
    console,
    echo_json,
    echo_list,
    errors,
    open_project,
    when,
)

__all__ = ["rag_app"]

rag_app = typer.Typer(
    help="RAG collections: build versions, move aliases, search, evaluate, delete documents."
)


def _split_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition("@")
    return name, version or None


@rag_app.command("build")
@errors
def build_cmd(
    collection: Annotated[str, typer.Argument(help="The collection (rag.collections.NAME).")],
    force: Annotated[
        bool, typer.Option(help="Move the alias even when the gate refuses (needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (recorded with --force).")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a new version of COLLECTION: only new or changed documents are chunked and
    embedded; the alias (live) moves to it when its gate passes. Exit 3 when refused."""
    from conveyor.rag.builder import build_collection

    with open_project(project) as proj:
        who = authorized(proj, "rag.build")
        result = build_collection(proj, collection, actor=who, force=force, reason=reason)
    if as_json:
        echo_json(result.to_dict())
    else:
        v = result.version
        c = result.counts
        typer.echo(
            f"{v.ref} {v.status}: {c['documents']} documents, {c['chunks']} chunks "
            f"({c['embedded_chunks']} embedded, {c['reused_chunks']} reused; "
            f"{c['new_documents']} new, {c['changed_documents']} changed, "
            f"{c['removed_documents']} removed documents), {c['parse_failures']} parse failures"
        )
        for source, why in result.failures:
            typer.echo(f"  skipped {source}: {why}")
        if result.gate is not None:
            base = result.gate["baseline_ndcg@10"]
            against = (
                "no baseline (the first version)"
                if base is None
                else f"{base:.4f} of version {result.gate['baseline_version']}"
            )
            typer.echo(
                f"gate: nDCG@10 {result.gate['ndcg@10']:.4f} against {against} "
                f"(tolerance {result.gate['tolerance']}): {_verdict(result.gate)}"
            )
        moved = "moved to it" if result.moved else "not moved"
        typer.echo(f"alias {result.alias}: {moved}")
    if result.version.status == "refused" and not result.moved:
        check_failed()


@rag_app.command("list")
@errors
def list_cmd(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Every collection: declared or built, its newest version and its aliases."""
    from conveyor.rag.collections import Collections

    with open_project(project) as proj:
        rag = proj.service("rag", Collections)
        items: list[dict[str, Any]] = []
        for name in rag.names():
            versions = rag.versions(name)
            items.append(
                {
                    "collection": name,
                    "declared": name in rag.spec.collections,
                    "versions": len(versions),
                    "latest": versions[0].number if versions else None,
                    "aliases": rag.aliases(name),
                    "chunks": versions[0].counts.get("chunks") if versions else None,
                }
            )
    if as_json:
        echo_list(items)
        return
    from rich.table import Table

    table = Table("collection", "versions", "latest", "aliases", "chunks")
    for item in items:
        aliases = ", ".join(f"{a}={n}" for a, n in item["aliases"].items()) or "-"
        table.add_row(
            item["collection"],
            str(item["versions"]),
            str(item["latest"] or "-"),
            aliases,
            str(item["chunks"] if item["chunks"] is not None else "-"),
        )
    console().print(table)


@rag_app.command("show")
@errors
def show_cmd(
    ref: Annotated[str, typer.Argument(help="COLLECTION (every version) or COLLECTION@N|ALIAS.")],
    documents: Annotated[
        bool,
        typer.Option(help="With @N: its lineage, each document's content hash and chunk ids."),
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A collection's versions, or one version with its parameters, counts, gate and parse
    failures."""
    from conveyor.rag.collections import Collections

    name, version = _split_ref(ref)
    with open_project(project) as proj:
        rag = proj.service("rag", Collections)
        if not rag.versions(name):
            rag.declared(name)
        if version is None:
            versions = rag.versions(name)
            if as_json:
                echo_list([v.to_dict() for v in versions])
                return
            from rich.table import Table

            table = Table("version", "status", "aliases", "documents", "chunks", "created", "gate")
            for v in versions:
                gate = v.gate or {}
                table.add_row(
                    str(v.number),
                    v.status,
                    ", ".join(v.aliases) or "-",
                    str(v.counts.get("documents", "-")),
                    str(v.counts.get("chunks", "-")),
                    when(v.created_at),
                    "-" if not gate else f"{gate.get('ndcg@10')} ({_verdict(gate)})",
                )
            console().print(table)
            return
        found = rag.version(name, version)
        body = found.to_dict()
        body["parse_failures"] = [
            {"source": s, "reason": r} for s, r in rag.parse_failures(found.id)
        ]
        body["alias_history"] = [m.to_dict() for m in rag.alias_history(name)[:20]]
        if documents:
            body["documents"] = rag.version_documents(found.id)
    echo_json(body)


@rag_app.command("search")
@errors
def search_cmd(
    collection: Annotated[str, typer.Argument(help="COLLECTION or COLLECTION@N|ALIAS.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many chunks.")] = 5,
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", help="FIELD=VALUE on the chunks' metadata (repeatable)."),
    ] = None,
    budget_tokens: Annotated[
        int | None, typer.Option(help="Pack a prompt's context within this many tokens.")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection in this process: the best chunks with their citations and
    per-stage scores (with --budget-tokens: the packed context)."""
    from conveyor.rag.api import service_for

    name, version = _split_ref(collection)
    filters: dict[str, Any] = {}
    for item in filter_ or []:
        field, sep, value = item.partition("=")
        if not sep:
            from conveyor.errors import InvalidInputError

            raise InvalidInputError(f"--filter {item!r}: expected FIELD=VALUE", field="filter")
        filters[field] = _value(value)
    with open_project(project) as proj:
        authorized(proj, "rag.search")
        service = service_for(proj)
        try:
            if budget_tokens is None:
                answer = service.search(name, query, k=k, filters=filters, version=version)
            else:
                answer = service.context(
                    name, query, k=k, filters=filters, version=version, budget_tokens=budget_tokens
                )
        finally:
            service.close()
    if as_json:
        echo_json(answer)
        return
    for warning in answer.get("warnings", []):
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    if budget_tokens is not None:
        echo_json(answer)
        return
    typer.echo(f"{name}@{answer['version']}  ({answer['latency_ms'].get('total', 0):.1f} ms)")
    for rank, hit in enumerate(answer["hits"], start=1):
        cite = hit["citation"]
        section = f" > {cite['section']}" if cite.get("section") else ""
        typer.echo(
            f"{rank:>2}. {hit['score']:.4f}  {cite['source']}{section} "
            f"[{cite['start']}:{cite['end']}]"
        )
        text = " ".join(hit["text"].split())
        typer.echo(f"    {text[:200]}{'...' if len(text) > 200 else ''}")


def _verdict(gate: Any) -> str:
    return "passed" if gate.get("passed") else "refused"


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@rag_app.command("eval")
@errors
def eval_cmd(
    collection: Annotated[str, typer.Argument(help="COLLECTION or COLLECTION@N|ALIAS.")],
    set_: Annotated[
        str | None,
        typer.Option(
            "--set",
            help="A JSONL file of {query, relevant}, or 'docstrings' (the built-in known-item "
            "set, indexed in memory with the collection's settings); default: the "
            "collection's gate.eval_set.",
        ),
    ] = None,
    size: Annotated[int, typer.Option(help="Docstrings in the built-in set.")] = 300,
    by: Annotated[
        str | None, typer.Option(help="What the relevant ids are: doc (default) or chunk.")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="The recall and MRR cut-off.")] = 10,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """nDCG@10, recall@k, MRR and per-stage latency of a version on a labelled set."""
    from pathlib import Path

    from conveyor.rag.api import evaluate_docstrings, evaluate_version
    from conveyor.rag.collections import Collections
    from conveyor.rag.evaluation import load_queries

    name, version = _split_ref(collection)
    with open_project(project) as proj:
        authorized(proj, "rag.search")
        rag = proj.service("rag", Collections)
        spec = rag.declared(name)
        if set_ == "docstrings":
            result = evaluate_docstrings(proj, name, size=size, k=k)
            label, number = f"{name} settings on the docstring set", None
        else:
            found = rag.version(name, version)
            queries = None
            if set_ is not None:
                file = Path(set_)
                queries = load_queries(file if file.is_absolute() else Path.cwd() / file)
            result = evaluate_version(proj, found, queries=queries, by=by or spec.gate.by, k=k)
            label, number = found.ref, found.number
    body = {"collection": name, "version": number, "set": set_, **result.to_dict()}
    if as_json:
        echo_json(body)
        return
    typer.echo(f"{label}: {result.n_queries} queries")
    typer.echo(f"  nDCG@10    {result.ndcg_at_10:.4f}")
    typer.echo(f"  recall@{k:<3} {result.recall_at_k:.4f}")
    typer.echo(f"  MRR@{k:<6} {result.mrr:.4f}")
    for stage, summary in result.latency_ms.items():
        typer.echo(f"  {stage:<10} median {summary['median']:.2f} ms, p95 {summary['p95']:.2f} ms")


@rag_app.command("alias")
@errors
def alias_cmd(
    collection: Annotated[str, typer.Argument(help="The collection.")],
    version: Annotated[
        int | None, typer.Argument(help="The version to point the alias at.")
    ] = None,
    alias: Annotated[str, typer.Option(help="The alias.")] = "live",
    rollback: Annotated[
        bool, typer.Option(help="Move the alias back to where it was before its last move.")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Point at a version its gate refused (needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move ALIAS (live) of COLLECTION to VERSION, or roll it back; servers answer from the
    new version at once (this process) or within rag.alias_poll_s, and the retrieval cache
    of the old one is not used again."""
    from conveyor.errors import InvalidInputError
    from conveyor.rag.collections import Collections

    if (version is None) == (not rollback):
        raise InvalidInputError("give a VERSION, or --rollback", field="version")
    with open_project(project) as proj:
        who = authorized(proj, "rag.alias")
        rag = proj.service("rag", Collections)
        rag.declared(collection)
        if rollback:
            move = rag.rollback_alias(collection, alias, actor=who, reason=reason)
        else:
            assert version is not None
            move = rag.move_alias(
                collection, alias, version, actor=who, reason=reason, forced=force
            )
    if as_json:
        echo_json(move.to_dict())
    else:
        typer.echo(
            f"{collection}@{alias}: {move.from_version or '-'} -> {move.to_version}"
            + (" (forced)" if move.forced else "")
        )


@rag_app.command("delete")
@errors
def delete_cmd(
    collection: Annotated[str, typer.Argument(help="The collection.")],
    doc: Annotated[
        list[str] | None, typer.Option("--doc", help="A document id to delete (repeatable).")
    ] = None,
    subject: Annotated[
        str | None, typer.Option(help="Delete every document of this subject key (GDPR).")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete documents and their chunks and vectors from every version of COLLECTION, by
    id or by subject key; cached retrievals are not served again. Irreversible."""
    from conveyor.rag.collections import Collections
    from conveyor.rag.deletion import delete_documents

    with open_project(project) as proj:
        who = authorized(proj, "rag.delete")
        proj.service("rag", Collections).declared(collection)
        deleted = delete_documents(
            proj, collection, doc_ids=list(doc or []), subject=subject, actor=who
        )
    if as_json:
        echo_json(deleted.to_dict())
    else:
        typer.echo(
            f"deleted {deleted.documents} documents ({deleted.chunks} chunks) from "
            f"{len(deleted.versions)} versions of {collection}"
        )
