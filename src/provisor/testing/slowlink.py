"""A TCP relay that makes a link slow or stuck, as a congested or broken network does.

It listens on a free port of 127.0.0.1 and forwards each connection to one target
(an SSH test host), optionally at a bounded rate (a slow link that still moves), or
stalling: holding every byte after the first `stall_after` sent towards the target
while keeping the connection open (a link that is stuck, not closed).

    with SlowLink((host.address, host.port), rate=256 * 1024) as link:
        ... connect to ("127.0.0.1", link.port) ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from provisor.testing._background import Background

__all__ = ["SlowLink"]

_CHUNK = 16 * 1024


class SlowLink(Background):
    """Forwards to `target`; `rate` bytes per second each way (None: as fast as it
    goes); after `stall_after` bytes towards the target on a connection (0: at once,
    None: never), or after `stall_after_received` bytes from it (a fetch), nothing more
    is forwarded either way, and the connection stays open."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        rate: float | None = None,
        stall_after: int | None = None,
        stall_after_received: int | None = None,
    ) -> None:
        self.target = target
        self.rate = rate
        self.stall_after = stall_after
        self.stall_after_received = stall_after_received
        self.forwarded = 0  # bytes sent towards the target, all connections
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._relay, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="slowlink", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the slow link did not start")

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
        self._loop.close()

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        stuck = asyncio.Event()  # once set, nothing moves either way
        try:
            server_in, server_out = await asyncio.open_connection(*self.target)
        except OSError:
            client_out.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(
                self._pump(client_in, server_out, stuck, upstream=True),
                self._pump(server_in, client_out, stuck, upstream=False),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_out, server_out):
                writer.close()
            self._tasks.discard(task)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        stuck: asyncio.Event,
        *,
        upstream: bool,
    ) -> None:
        sent = 0
        while True:
            if stuck.is_set():
                await asyncio.Event().wait()  # held until the link is stopped
            limit = _CHUNK
            budget = self.stall_after if upstream else self.stall_after_received
            if budget is not None:
                limit = min(limit, budget - sent)
                if limit <= 0:
                    stuck.set()
                    continue
            data = await source.read(limit)
            if not data:
                with contextlib.suppress(OSError):
                    sink.write_eof()
                return
            sink.write(data)
            await sink.drain()
            sent += len(data)
            if upstream:
                self.forwarded += len(data)
            if self.rate:
                await asyncio.sleep(len(data) / self.rate)
