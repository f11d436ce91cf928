"""The heavy lane: what a costly request body costs is paid off ingest's event loop, behind a small budget.

A body is heavy when it is compressed or larger than `heavy_body_bytes` (body.costs_the_worker). Small
identity bodies, the common valid request, are decoded on the event loop right away and never wait
behind a heavy one. A heavy body is admitted first (at most `max_heavy_waiting` at once, counted from
before its body is read, so a refused one costs no read: 503 with Retry-After and the connection
closed), then inflated and parsed in one worker process (heavyworker.py) that runs at idle CPU priority
(SCHED_IDLE): decompression bombs and huge invalid batches get only the CPU the event loop leaves over.
The worker talks over a socket pair the event loop reads and writes like any other (no executor threads
in ingest's process), one body at a time, the body copied once into a shared memory buffer. A heavy
body not answered within `heavy_timeout_seconds` (waiting included) gets the same 503; a worker that
took too long, died or was interrupted mid-body is killed and another started for the next body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import pickle
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

from hookline.sender.ingest.body import Outgoing, Rejection
from hookline.sender.ingest.budget import ByteBudget
from hookline.sender.ingest.heavyworker import FRAME_HEADER, READY

log = logging.getLogger(__name__)

__all__ = ["BUSY_MESSAGE", "HeavyLane", "busy"]

BUSY_MESSAGE = "ingest is busy with large requests; retry shortly (smaller batches are served right away)"


def busy() -> Rejection:
    return Rejection(503, BUSY_MESSAGE, retry_after=1)


class HeavyLane:
    """One worker process for heavy bodies and the admission budget in front of it."""

    def __init__(
        self,
        *,
        slots: int,
        timeout: float,
        body_bytes: int,
        bytes_per_second: float | None = None,
        burst_bytes: float | None = None,
    ) -> None:
        """`bytes_per_second` (None: no budget): heavy bodies' bytes read per second, `burst_bytes`
        (default one second's worth) at once."""
        self.slots = slots  # heavy requests admitted at once (reading, waiting or in the worker)
        self.timeout = timeout
        self.budget = (
            None
            if bytes_per_second is None
            else ByteBudget(bytes_per_second, burst_bytes if burst_bytes is not None else bytes_per_second)
        )
        self.body_bytes = body_bytes  # the largest body (the shared buffer's size)
        self._shared: tuple[int, mmap.mmap] | None = None  # memfd and its mapping, kept across workers
        self.admitted = 0
        self.worker_pid: int | None = None
        self._lock = asyncio.Lock()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """A slot of the budget for one heavy request, or 503 (busy) when all are taken."""
        if self.admitted >= self.slots:
            raise busy()
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    def reserve(self, size: int) -> float:
        """Take `size` bytes from the byte budget before they are read: the loop time at which they
        are covered, or 503 (busy, the body left unread) when that is past the timeout. The caller
        reads the body, then waits until that time (`wait_until`) before the worker takes it: reading at
        full speed costs the event loop least, and the slot held meanwhile keeps the pace."""
        now = asyncio.get_running_loop().time()
        if self.budget is None or size <= 0:
            return now
        wait = self.budget.take(size, now)
        if wait > self.timeout:
            self.budget.give_back(size)
            raise busy()
        return now + wait

    @staticmethod
    async def wait_until(when: float) -> None:
        delay = when - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def start(self) -> None:
        """Start the worker now rather than at the first heavy body."""
        if self._writer is None:
            await self._spawn()

    async def prepare(self, raw: list[bytes], encoding: str, *limits: int) -> list[Outgoing]:
        """body.prepare_body in the worker: the events, or its Rejection; 503 (busy) past the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            raise busy() from None
        try:
            async with asyncio.timeout_at(deadline):
                result = await self._exchange_or_again(raw, (encoding, *limits))
        except TimeoutError:
            log.warning("ingest: a heavy body took over %gs; its worker is replaced", self.timeout)
            self._kill()
            raise busy() from None
        except BaseException:
            self._kill()  # interrupted mid-body: the worker's next answer would be this body's
            raise
        finally:
            self._lock.release()
        if isinstance(result, tuple):
            status, message, errors, rejected = result
            raise Rejection(status, message, errors, rejected_events=rejected)
        return result  # type: ignore[no-any-return]

    async def _exchange_or_again(self, raw: list[bytes], request: tuple[Any, ...]) -> Any:
        """A worker that died (between bodies or on this one) is replaced and the body tried once
        more: preparing a body has no effects, so the second try is safe; a second death is a 500."""
        try:
            return await self._exchange(raw, request)
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            log.warning("ingest: the heavy-body worker failed (%r); starting another", exc)
            self._kill()
        try:
            return await self._exchange(raw, request)
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            raise RuntimeError(f"the heavy-body worker failed twice on one body ({exc!r})") from exc

    async def _exchange(self, raw: list[bytes], request: tuple[Any, ...]) -> Any:
        if self._writer is None:
            await self._spawn()
        assert self._reader is not None and self._writer is not None
        size = sum(len(chunk) for chunk in raw)
        meta = pickle.dumps((size, *request), protocol=pickle.HIGHEST_PROTOCOL)
        if self._shared is not None and size <= self.body_bytes:
            buffer, offset = self._shared[1], 0
            for chunk in raw:  # the worker is idle (the lock): the buffer is ours
                buffer[offset : offset + len(chunk)] = chunk
                offset += len(chunk)
            self._writer.write(FRAME_HEADER.pack(len(meta)) + meta)
        else:
            self._writer.write(FRAME_HEADER.pack(len(meta)) + meta + FRAME_HEADER.pack(size))
            self._writer.writelines(raw)
        await self._writer.drain()
        size = FRAME_HEADER.unpack(await self._reader.readexactly(FRAME_HEADER.size))[0]
        return pickle.loads(await self._reader.readexactly(size))

    def _shared_buffer(self) -> tuple[int, mmap.mmap] | None:
        if self._shared is None and hasattr(os, "memfd_create") and self.body_bytes > 0:
            try:
                fd = os.memfd_create("hookline-heavy-body")
            except OSError as exc:  # refused (a seccomp profile): bodies go through the socket
                log.warning("ingest: no shared buffer for heavy bodies (%s); they go through the socket", exc)
                self.body_bytes = 0
                return None
            os.ftruncate(fd, self.body_bytes)
            self._shared = (fd, mmap.mmap(fd, self.body_bytes))
        return self._shared

    async def _spawn(self) -> None:
        shared = self._shared_buffer()
        args = [] if shared is None else [str(shared[0]), str(self.body_bytes)]
        ours, theirs = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hookline.sender.ingest.heavyworker",
                *args,
                stdin=theirs,
                stdout=theirs,
                pass_fds=() if shared is None else (shared[0],),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.worker_pid = self._process.pid
        self._reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        if await self._reader.readexactly(len(READY)) != READY:
            raise EOFError("the heavy-body worker did not start")

    def _kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        if self._writer is not None:
            self._writer.close()
        self._process = self._reader = self._writer = None
        self.worker_pid = None

    async def close(self) -> None:
        process = self._process
        if self._shared is not None:
            self._shared[1].close()
            os.close(self._shared[0])
            self._shared = None
        if self._writer is not None:
            self._writer.close()  # the worker reads EOF and exits
        self._process = self._reader = self._writer = None
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), 2.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
