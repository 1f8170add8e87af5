"""A TCP proxy in its own process, to cut, hang and restore a real service under test.

::

    with TcpProxy("127.0.0.1", 6379) as proxy:      # Redis, through proxy.port
        url = f"redis://127.0.0.1:{proxy.port}/0"
        proxy.refuse()      # the process is killed: connections are refused (and cut)
        proxy.hang()        # SIGSTOP: connections are accepted by the kernel, never answered
        proxy.restore()     # back: a stopped proxy continues, a killed one starts again

``hang`` is what a stopped or partitioned service looks like to a client:
nothing fails, nothing answers, only timeouts help. Run as
``python -m conveyor.testing.tcp_proxy LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time

__all__ = ["TcpProxy"]


class TcpProxy:
    """The proxy process and the three states a test puts it in."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        port: int | None = None,
        *,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.target = (target_host, target_port)
        #: Where it listens: loopback, or a network namespace's side of a veth pair.
        self.host = listen_host
        if port is None:
            with socket.socket() as s:
                s.bind((listen_host, 0))
                port = int(s.getsockname()[1])
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def start(self) -> TcpProxy:
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, self.host, str(self.port), *map(str, self.target)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"the TCP proxy on {self.host}:{self.port} did not start")

    def refuse(self) -> None:
        """Kill the proxy: open connections are cut, new ones refused."""
        if self._process is not None:
            if self._stopped:
                self._process.send_signal(signal.SIGCONT)
            self._process.kill()
            self._process.wait(10)
            self._process = None
        self._stopped = False

    def hang(self) -> None:
        """SIGSTOP the proxy: connections neither fail nor answer."""
        if self._process is None:
            self.start()
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        self._stopped = True

    def restore(self) -> None:
        """Continue a stopped proxy, or start a killed one again on the same port."""
        if self._process is not None and self._stopped:
            self._process.send_signal(signal.SIGCONT)
            self._stopped = False
        elif self._process is None:
            self.start()

    def close(self) -> None:
        self.refuse()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(listen_host: str, listen_port: int, host: str, port: int) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    server = await asyncio.start_server(handle, listen_host, listen_port, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen_host, listen, target_host, target_port = sys.argv[1:5]
    asyncio.run(_serve(listen_host, int(listen), target_host, int(target_port)))
