"""Isolation of local tool servers, proven by a server that tries to get out
(``conveyor.testing.mcp_tools_server``) through the MCP gateway: past its memory an
allocation fails; past its CPU time it is killed (and restarted); past its processes a
fork fails; it sees only the variables granted and works in a directory of its own; in the
sandbox it has no network, a read-only filesystem but for its directory, a private /tmp.
What is applied is reported, and ``conveyor doctor`` says so."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor.agents.gateway import Caller, McpGateway, ToolError
from conveyor.agents.isolation import machine
from conveyor.agents.settings import McpSpec

SERVER = [sys.executable, "-m", "conveyor.testing.mcp_tools_server"]
CALLER = Caller(key="test")


def _run(root: Path, isolation: dict[str, Any], work: Any, **server: Any) -> Any:
    spec = McpSpec.model_validate(
        {
            "servers": {
                "t": {"command": SERVER, "isolation": isolation, "restart_backoff_s": 0.1, **server}
            },
            "naming": "collision",
        }
    )
    environ = {"PATH": "/usr/bin:/bin", "VISIBLE": "granted-value", "HIDDEN": "not-for-tools"}
    gateway = McpGateway(spec, root, environ=environ)

    async def main() -> Any:
        await gateway.start()
        try:
            return await work(gateway)
        finally:
            await gateway.stop()

    return asyncio.run(main())


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def test_process_limits_hold(tmp_path: Path) -> None:
    async def work(gateway: McpGateway) -> Any:
        small = await gateway.call("memory", {"mb": 16}, CALLER)
        big = await gateway.call("memory", {"mb": 1024}, CALLER)
        forks = await gateway.call("fork", {"n": 80}, CALLER)
        env = [await gateway.call("env", {"name": n}, CALLER) for n in ("VISIBLE", "HIDDEN")]
        cwd = await gateway.call("cwd", {}, CALLER)
        with pytest.raises(ToolError) as spun:
            await gateway.call("spin", {"seconds": 30}, CALLER)
        status = gateway.status()[0]
        return small, big, forks, env, cwd, spun.value, status

    small, big, forks, env, cwd, spun, status = _run(
        tmp_path,
        # 5 CPU seconds: the tool server's own start-up (Python, the MCP SDK) counts too, and
        # with 2 a full suite on a slow host killed it before its second call; the 30 s
        # spin still runs out of them well within the 20 s timeout
        {"level": "process", "memory_mb": 384, "cpu_s": 5, "processes": 60},
        work,
        secrets=["VISIBLE"],
        timeout_s=20,
        retries=0,
    )
    assert _text(small) == "allocated 16 MiB"
    assert big.is_error and _text(big) == "Error executing tool memory"  # it failed there

    async def unconfined(gateway: McpGateway) -> Any:
        return _text(await gateway.call("memory", {"mb": 1024}, CALLER))

    # the same allocation without the limit works: the limit is what refused it
    assert _run(tmp_path / "free", {"level": "none"}, unconfined) == "allocated 1024 MiB"
    applied_processes = status["isolation"]["processes"]
    if applied_processes["limit"] is not None:  # a pids cgroup, or RLIMIT_NPROC (not root)
        assert "started, then:" in _text(forks)  # the limit stopped the forks
        assert int(_text(forks).split()[0]) < 60
    else:  # root without a pids cgroup: not enforceable here, and said so
        assert "root" in applied_processes["why"]
    assert [_text(e) for e in env] == ["'granted-value'", "None"]
    assert _text(cwd) == str(tmp_path / ".conveyor" / "mcp" / "t")
    assert spun.code == "server_down"  # SIGXCPU: killed past its CPU time
    applied = status["isolation"]
    assert applied["level"] == "process" and applied["memory_mb"] == 384
    assert applied["processes"]["limit"] in (60, None)


@pytest.mark.skipif(not machine()["bwrap"], reason="bubblewrap cannot run here")
def test_the_sandbox_confines_network_and_filesystem(tmp_path: Path) -> None:
    outside = Path(sys.prefix) / f"outside-{tmp_path.name}.txt"  # the host's, read-only there
    shared = tmp_path / "shared"
    shared.mkdir()

    async def work(gateway: McpGateway) -> Any:
        calls = [
            ("connect", {"port": 6379}),  # Redis runs on the host
            ("write", {"path": str(outside)}),
            ("write", {"path": "inside.txt"}),
            ("write", {"path": "/tmp/scratch"}),
            ("write", {"path": str(shared / "out.txt")}),
        ]
        return [_text(await gateway.call(n, a, CALLER)) for n, a in calls], gateway.status()[0]

    found, status = _run(tmp_path, {"level": "sandbox", "writable": [str(shared)]}, work)
    network, out, inside, scratch, allowed = found
    assert network.startswith("refused")
    assert out == "refused: Read-only file system" and not outside.exists()
    assert inside == "written" and (tmp_path / ".conveyor" / "mcp" / "t" / "inside.txt").exists()
    assert scratch == "written" and not Path("/tmp/scratch").exists()  # a private /tmp
    assert allowed == "written" and (shared / "out.txt").exists()
    assert status["isolation"]["sandbox"] == {
        "applied": True,
        "network": "none",
        "filesystem": f"read-only root; writable: {tmp_path / '.conveyor' / 'mcp' / 't'}, "
        f"{shared}, /tmp (private)",
    }


def test_with_the_network_the_sandbox_connects(tmp_path: Path) -> None:
    if not machine()["bwrap"]:
        pytest.skip("bubblewrap cannot run here")

    async def work(gateway: McpGateway) -> Any:
        return _text(await gateway.call("connect", {"port": 6379}, CALLER))

    assert _run(tmp_path, {"level": "sandbox", "network": True}, work) == "connected"


def test_doctor_reports_each_servers_isolation(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import conveyor.cli
    from conveyor.project import init_project

    init_project(tmp_path, name="iso")
    with (tmp_path / "conveyor.yaml").open("a") as fh:
        fh.write(
            "\nmcp:\n  servers:\n"
            f"    boxed: {{command: [{sys.executable}], isolation: {{level: sandbox}}}}\n"
            f"    plain: {{command: [{sys.executable}], isolation: {{level: none}}}}\n"
            "    far: {url: 'http://127.0.0.1:9/mcp'}\n"
        )
    done = CliRunner().invoke(conveyor.cli.app, ["doctor", "--json", "-C", str(tmp_path)])
    assert done.exit_code == 0, done.output
    import json

    rows = {r["server"]: r for r in json.loads(done.stdout)["mcp_isolation"]}
    assert set(rows) == {"boxed", "plain"}  # a remote server is not ours to confine
    assert rows["boxed"]["level"] == "sandbox" and rows["boxed"]["ok"]
    assert "no network" in rows["boxed"]["detail"]


def test_a_server_writing_garbage_is_restarted_and_its_call_fails_cleanly(
    tmp_path: Path,
) -> None:
    async def work(gateway: McpGateway) -> Any:
        with pytest.raises(ToolError) as broken:
            await gateway.call("garbage", {}, CALLER)
        upstream = gateway.upstreams["t"]
        for _ in range(100):  # back after its restart
            if upstream.state == "ready":
                break
            await asyncio.sleep(0.1)
        return broken.value, _text(await gateway.call("echo", {"text": "again"}, CALLER)), upstream

    broken, again, upstream = _run(tmp_path, {"level": "process"}, work, retries=0)
    assert broken.code == "server_down" and "'t'" in broken.message
    assert again == "tools: again" and upstream.restarts >= 1


def test_a_per_call_server_keeps_nothing_between_calls(tmp_path: Path) -> None:
    """lifetime: per_call: a process of its own for each call (its isolation each time);
    a crash fails only that call, and the next starts afresh at once."""

    async def work(gateway: McpGateway) -> Any:
        first = await gateway.call("flaky", {"key": "k", "failures": 5}, CALLER)
        second = await gateway.call("flaky", {"key": "k", "failures": 5}, CALLER)
        with pytest.raises(ToolError) as crashed:
            await gateway.call("crash", {}, CALLER)
        after = await gateway.call("echo", {"text": "fresh"}, CALLER)
        return first, second, crashed.value, after, gateway.status()[0]

    first, second, crashed, after, status = _run(
        tmp_path, {"level": "process"}, work, lifetime="per_call", retries=0
    )
    # a long-lived server would say "failure 2 of 5" the second time: its count survives
    assert _text(first) == _text(second) == "Error executing tool flaky"
    assert crashed.code == "server_down"
    assert _text(after) == "tools: fresh" and status["state"] == "ready"
    assert status["restarts"] == 0  # nothing to restart: each call had its own process
