"""``conveyor jobs submit | get | status | worker``.

::

    conveyor jobs submit fraud --data rows.json [--callback-url https://...]   # prints the job
    conveyor jobs get 0193a0e4c1b27f3e9d...
    conveyor jobs status                          # queue depth (the autoscaling signal)
    conveyor jobs worker --concurrency 32         # one worker; run N of them

``submit`` queues a native request body (``{"records": [...]}``) straight onto
the queue, checked as the server checks it (the model's route, the rows
against each routed version's signature); the key (``CONVEYOR_API_KEY``) is
the job's owner. ``get`` shows a job to its owner or an admin.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, authorized, echo_json, errors, open_project

__all__ = ["jobs_app"]

jobs_app = typer.Typer(
    help="Asynchronous predictions: submit a job, read it, the queue's depth, run a worker."
)


@jobs_app.command("submit")
@errors
def submit_cmd(
    model: Annotated[str, typer.Argument(help="The model (its live route scores the job).")],
    data: Annotated[
        Path, typer.Option("--data", "-d", help='A JSON file: {"records": [...]} or columns.')
    ],
    callback_url: Annotated[
        str | None, typer.Option(help="POSTed the finished job, signed (jobs.callback_secret).")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a prediction request for MODEL; prints the job id (read it with `jobs get`)."""
    import asyncio

    from conveyor.jobs.http import check_callback_url
    from conveyor.jobs.queue import JobQueue, Submission
    from conveyor.jobs.settings import jobs_of

    with open_project(project) as proj:
        who = authorized(proj, "jobs.submit")
        body = _read(data)
        spec = jobs_of(proj.spec)
        _check(proj, model, body)
        job = Submission(
            model=model,
            version=None,
            protocol="native",
            owner=who,
            callback_url=check_callback_url(callback_url, spec),
        )

        async def run() -> dict[str, Any]:
            queue = JobQueue(spec)
            try:
                return await queue.submit(job, body)
            finally:
                await queue.close()

        record = asyncio.run(run())
    if as_json:
        echo_json({"job_id": job.id, "status": record["status"], "model": model})
    else:
        typer.echo(f"job {job.id}: queued for {model}")


def _read(path: Path) -> bytes:
    from conveyor.errors import InvalidInputError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"--data {path}: {exc.strerror}", field="data") from exc


def _check(proj: Any, model: str, body: bytes) -> None:
    """What the server checks at submission: the body, the route, each routed signature."""
    from conveyor.registry.signature import Signature
    from conveyor.serving.native import decode_native_request
    from conveyor.serving.route_store import RouteStore

    decoded = decode_native_request(body)
    state = RouteStore(proj.store, proj.events, proj.registry).get(model)
    for number in state.policy.serving_versions():
        version = proj.registry.get(model, number)
        if version.signature:
            Signature.from_dict(version.signature).enforce(decoded.table)


@jobs_app.command("get")
@errors
def get_cmd(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A job: its status, its result or error, its timing (its owner's key or an admin)."""
    import asyncio

    from conveyor.governance.keys import ApiKeys
    from conveyor.jobs.queue import JobQueue
    from conveyor.jobs.records import check_reader, public
    from conveyor.jobs.settings import jobs_of

    with open_project(project) as proj:
        who = authorized(proj, "jobs.read")
        key = _key(ApiKeys, proj)
        spec = jobs_of(proj.spec)

        async def run() -> dict[str, Any]:
            queue = JobQueue(spec)
            try:
                record, _ = await queue.get(job_id)
                return record
            finally:
                await queue.close()

        record = asyncio.run(run())
        check_reader(record, who, key)
    shown = public(record)
    if as_json:
        echo_json(shown)
        return
    timing = shown["timing"]
    typer.echo(
        f"job {shown['id']}: {shown['status']} ({shown['model']}, attempts {shown['attempts']}, "
        f"queued {timing['queued_ms']} ms, ran {timing['run_ms']} ms)"
    )
    if shown.get("error"):
        typer.echo(f"error: {shown['error'].get('code')}: {shown['error'].get('message')}")
    if shown.get("result") is not None:
        echo_json(shown["result"])


def _key(api_keys: Any, proj: Any) -> Any:
    import os

    from conveyor.cli.common import API_KEY_ENV

    token = os.environ.get(API_KEY_ENV)
    if not token:
        return None
    return api_keys(proj.store, proj.events, cache_ttl=0).verify(token)


@jobs_app.command("status")
@errors
def status_cmd(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The queue: requests pending (no worker yet), in flight, and in all (the depth)."""
    import asyncio

    from conveyor.jobs.queue import JobQueue
    from conveyor.jobs.settings import jobs_of

    with open_project(project) as proj:
        authorized(proj, "jobs.status")
        spec = jobs_of(proj.spec)

        async def run() -> dict[str, Any]:
            queue = JobQueue(spec)
            try:
                return await queue.depth()
            finally:
                await queue.close()

        depth = asyncio.run(run())
    shown = {"stream": spec.stream, "url": queue_url(spec.url), **depth}
    if as_json:
        echo_json(shown)
    else:
        typer.echo(
            f"{spec.stream} at {shown['url']}: {depth['queued']} queued "
            f"({depth['pending']} pending, {depth['in_flight']} in flight, "
            f"{depth['redelivered']} redelivered)"
        )


def queue_url(url: str) -> str:
    from conveyor.backends import redact

    return redact(url)


@jobs_app.command("worker")
@errors
def worker_cmd(
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs scored at once (default: jobs.concurrency).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics (queue depth, jobs finished) on this port."),
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option(help="Stop after finishing this many jobs.")
    ] = None,
    project: ProjectOpt = None,
) -> None:
    """Score queued jobs until stopped (SIGTERM or Ctrl-C finish the jobs in hand)."""
    import asyncio
    import logging

    from conveyor.jobs.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with open_project(project) as proj:
        authorized(proj, "jobs.work")
        worker = Worker(proj, concurrency=concurrency, metrics_port=metrics_port)

        async def run() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stop)
            await worker.run(max_jobs=max_jobs)

        asyncio.run(run())
    typer.echo(f"worker stopped: {worker.done} done, {worker.failed} failed")
