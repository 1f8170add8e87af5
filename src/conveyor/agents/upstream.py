"""One upstream MCP server, kept connected: a local one started (isolated) as a subprocess
on stdio, a remote one over streamable HTTP, both through the official SDK's ``Client``.

The connection lives in a task of its own (an SDK client is entered and left in the same
task): it connects, lists the server's tools, resources and prompts, and stays until it
is told to stop or the connection breaks (the process crashed, wrote garbage on stdout,
the remote went away). Then the calls in flight fail at once with :class:`ServerDown`
naming the server and why, and the task connects again after ``restart_backoff_s``
(doubling to 30 s while it keeps failing). A server that announces a changed tool list
(``notifications/tools/list_changed``) is listed again, and ``on_change`` tells the
gateway, which tells its own clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import BackendUnavailableError

if TYPE_CHECKING:
    from conveyor.agents.settings import ServerSpec

__all__ = ["ServerDown", "Upstream"]

log = logging.getLogger("conveyor.agents")


class ServerDown(BackendUnavailableError):
    """The tool server is not connected (starting, crashed, restarting, unreachable)."""


class Upstream:
    """A tool server's connection, its catalogue, and its state (see the module)."""

    def __init__(
        self,
        name: str,
        spec: ServerSpec,
        root: Path,
        *,
        environ: dict[str, str] | None = None,
        on_change: Callable[[Upstream], None] | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.root = root
        self.environ = environ
        self.on_change = on_change
        self.client: Any = None
        self.tools: list[Any] = []
        self.resources: list[Any] = []
        self.prompts: list[Any] = []
        self.state = "stopped"  # starting, ready, down, stopped
        self.last_error: str | None = None
        self.restarts = 0
        self.connected_at: float | None = None
        #: What the isolation applies (a local server), for doctor and `mcp servers`.
        self.applied: dict[str, Any] = {}
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._broken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._relist = False
        self._errlog: Any = None
        #: Where a local server's stderr goes.
        self.stderr_path: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mcp:{self.name}")

    async def stop(self) -> None:
        self._stop.set()
        self._broken.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(task, 10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self.state = "stopped"
        self._close_errlog()
        for controller in self.applied.get("cgroups") or ():  # the server's, now empty
            with contextlib.suppress(OSError):
                (Path("/sys/fs/cgroup") / controller / self._cgroup_name()).rmdir()

    def _cgroup_name(self) -> str:
        import os

        return f"conveyor-mcp-{self.name}-{os.getpid()}"

    async def ready(self, timeout_s: float) -> bool:
        """Wait until connected (True) or ``timeout_s`` passes (False)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        return self._ready.is_set()

    def _target(self) -> Any:
        from mcp import StdioServerParameters

        spec = self.spec
        if spec.url is not None:
            if spec.headers:
                import httpx2  # the SDK's HTTP client
                from mcp.client.streamable_http import streamable_http_client

                client = httpx2.AsyncClient(headers=spec.headers, timeout=spec.timeout_s + 5)
                return streamable_http_client(spec.url, http_client=client)
            return spec.url
        from conveyor.agents.isolation import wrap

        assert spec.command is not None
        launch = wrap(
            spec.isolation,
            self.name,
            spec.command[0],
            list(spec.command[1:]),
            dict(spec.env),
            self.root,
            granted={k: v for k, v in self._environ().items() if k in spec.secrets},
        )
        self.applied = dict(launch.applied)
        params = StdioServerParameters(
            command=launch.command, args=launch.args, env=launch.env, cwd=str(launch.cwd)
        )
        from mcp.client.stdio import stdio_client

        # what the server writes on stderr goes to a log of its own, not the gateway's
        # terminal (`conveyor mcp servers` names it); one file for all its processes
        if self._errlog is None or self._errlog.closed:
            log_dir = self.root / ".conveyor" / "mcp"
            log_dir.mkdir(parents=True, exist_ok=True)
            self.stderr_path = log_dir / f"{self.name}.stderr.log"
            self._errlog = self.stderr_path.open("a", buffering=1)
        return stdio_client(params, errlog=self._errlog)

    def _close_errlog(self) -> None:
        errlog, self._errlog = self._errlog, None
        if errlog is not None:
            errlog.close()

    def _environ(self) -> dict[str, str]:
        if self.environ is not None:
            return self.environ
        import os

        return dict(os.environ)

    async def _run(self) -> None:
        backoff = self.spec.restart_backoff_s
        while not self._stop.is_set():
            self.state = "starting"
            started = time.monotonic()
            try:
                await self._connected_once()
            except Exception as exc:  # the server failed: say so, retry
                self.last_error = _describe(exc)
                log.warning("MCP server %s: %s", self.name, self.last_error)
            finally:
                self._ready.clear()
                self.client = None
            if self._stop.is_set():
                break
            self.state = "down"
            if time.monotonic() - started > 30:  # it had been up a while: start over quickly
                backoff = self.spec.restart_backoff_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, 30.0)
            self.restarts += 1

    async def _connected_once(self) -> None:
        from mcp import Client

        self._broken.clear()
        async with Client(
            self._target(),
            read_timeout_seconds=self.spec.connect_timeout_s,
            message_handler=self._message,
            cache=None,
        ) as client:
            await self._list(client)
            if self.spec.lifetime == "per_call":  # listed: this process goes, each call
                self.client = _PerCall(self)  # starts one of its own
                self._ready_now()
                await self._stop.wait()
                return
            self.client = client
            self._ready_now()
            listening = asyncio.get_running_loop().create_task(self._listen(client))
            try:
                await self._follow(client)
            finally:
                listening.cancel()
                with contextlib.suppress(BaseException):
                    await listening

    async def _listen(self, client: Any) -> None:
        """Changes the server announces on a ``subscriptions/listen`` stream (the
        2026-07-28 protocol; an older server sends notifications: :meth:`_message`)."""
        from mcp.client.subscriptions import ListenNotSupportedError

        try:
            async with client.listen(
                tools_list_changed=True, prompts_list_changed=True, resources_list_changed=True
            ) as changes:
                async for _ in changes:
                    self._relist = True
                    self._broken.set()
        except ListenNotSupportedError:
            return
        except Exception as exc:  # a server that cannot listen: its lists stay as they were
            log.info("MCP server %s: no change stream (%s)", self.name, _describe(exc))

    async def _follow(self, client: Any) -> None:
        """Until stopped or broken: list the server again when it says its lists changed."""
        while not self._stop.is_set():
            await self._broken.wait()
            if self._stop.is_set() or not self._relist:
                return  # broken (or stopping): the caller connects again
            self._relist = False
            self._broken.clear()
            await self._list(client)
            if self.on_change is not None:
                self.on_change(self)

    def _ready_now(self) -> None:
        self.state = "ready"
        self.last_error = None
        self.connected_at = time.time()
        self._ready.set()
        if self.on_change is not None:
            self.on_change(self)

    async def _list(self, client: Any) -> None:
        caps = client.server_capabilities
        self.tools = list((await client.list_tools()).tools) if caps.tools else []
        self.resources = list((await client.list_resources()).resources) if caps.resources else []
        self.prompts = list((await client.list_prompts()).prompts) if caps.prompts else []

    async def _message(self, message: Any) -> None:
        """The SDK's message handler: a tool list change, or the transport failing."""
        if isinstance(message, Exception):  # the transport failed: connect again
            self.broken(_describe(message))
            return
        method = getattr(getattr(message, "root", message), "method", None)
        if method in (
            "notifications/tools/list_changed",
            "notifications/resources/list_changed",
            "notifications/prompts/list_changed",
        ):
            self._relist = True
            self._broken.set()

    def broken(self, why: str) -> None:
        """A call found the connection dead: no call goes to it any more, and the
        connection's task starts the server again (a per-call server: only that call's
        process died; the next call starts another)."""
        self.last_error = why
        if self.spec.lifetime == "per_call":
            return
        self.client = None
        self.state = "down"
        self._ready.clear()
        self._broken.set()

    # -- calls -------------------------------------------------------------------------

    def connected(self) -> Any:
        """The SDK client, or ServerDown naming why there is none."""
        if self.client is None:
            why = f": {self.last_error}" if self.last_error else ""
            raise ServerDown(
                f"MCP server {self.name!r} is {self.state}{why}",
                seam="mcp",
                server=self.name,
                state=self.state,
            )
        return self.client

    def status(self) -> dict[str, Any]:
        return {
            "server": self.name,
            "transport": self.spec.transport,
            "state": self.state,
            "tools": len(self.tools),
            "resources": len(self.resources),
            "prompts": len(self.prompts),
            "restarts": self.restarts,
            "last_error": self.last_error,
            "isolation": self.applied or None,
            "stderr": str(self.stderr_path) if self.stderr_path else None,
        }


class _PerCall:
    """A per-call server's client: each call, resource read or prompt starts the server,
    asks, and lets it go (its isolation applies to each process)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def _ask(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from mcp import Client

        upstream = self.upstream
        try:
            async with Client(
                upstream._target(),
                read_timeout_seconds=upstream.spec.connect_timeout_s,
                cache=None,
            ) as client:
                return await getattr(client, method)(*args, **kwargs)
        except BaseExceptionGroup as group:  # the client's task group: the error within
            raise _first(group) from None

    async def call_tool(self, name: str, arguments: Any, **kwargs: Any) -> Any:
        return await self._ask("call_tool", name, arguments, **kwargs)

    async def read_resource(self, uri: str) -> Any:
        return await self._ask("read_resource", uri)

    async def get_prompt(self, name: str, arguments: Any) -> Any:
        return await self._ask("get_prompt", name, arguments)


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first exception of a (nested) group."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup) and found.exceptions:
        found = found.exceptions[0]
    return found


def _describe(exc: BaseException) -> str:
    """An exception (or a group of them, as anyio raises) in one line."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
