"""Progress of a transfer handed to a caller's callback without ever holding the transfer up.

A transfer only *offers* its progress (a plain call that stores the latest value and returns at
once); it never runs user code. Each caller's callback is called by a pump task that the caller
owns (it lives inside the caller's ``async with ProgressRelay(...)`` block and is cancelled with
it), and that keeps only the latest value: a slow callback hears fewer, later reports, the last
one always. Plain and async callbacks alike are called by the pump, one call at a time, in order.

Leaving the block normally waits for the last value to be delivered, so what the caller does next
(an ``UPLOADED`` event) comes after it; a callback that takes longer than ``timeout`` over one
report then is given up (logged, cancelled), so a hung callback never hangs its caller.

Bounds: no I/O, no aiohttp; the transports and the uploader call :meth:`ProgressRelay.offer`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

__all__ = ["Meter", "OnProgress", "ProgressRelay"]

log = logging.getLogger("kling_async")

#: ``(bytes so far, total or None)``, the one progress signature of the library (plain or async).
OnProgress = Callable[[int, int | None], Any]
#: What a transfer reports to: a plain function that returns at once and never raises.
Meter = Callable[[int, int | None], None]


class ProgressRelay:
    """Hands one callback the latest progress of a transfer, from a pump task of its caller.

    Use it as ``async with ProgressRelay(on_progress, timeout=...) as relay:`` and give the
    transfer ``relay.offer``. With ``on_progress`` None it does nothing (and starts no task).
    """

    def __init__(self, on_progress: OnProgress | None, *, timeout: float) -> None:
        self._listener = on_progress
        self._timeout = timeout
        self._latest: tuple[int, int | None] = (0, None)
        self._offered = 0  # reports offered so far
        self._delivered = 0  # the number of the last report whose call has ended
        self._wake = asyncio.Event()
        self._caught: asyncio.Future[None] | None = None
        self._busy_since: float | None = None
        self._closing = False
        self._raised = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        if self._listener is not None:
            self._task = asyncio.create_task(self._pump(), name="kling_async progress relay")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self._flush()
        finally:
            await self._close()

    def offer(self, done: int, total: int | None) -> None:
        """Note how far the transfer is and wake the pump (returns at once, never raises)."""
        if self._task is None or self._closing:
            return
        self._latest = (done, total)
        self._offered += 1
        self._wake.set()

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            number, (done, total) = self._offered, self._latest
            self._busy_since = loop.time()
            await self._call(done, total)
            self._busy_since = None
            self._delivered = number
            if self._caught is not None and not self._caught.done():
                self._caught.set_result(None)

    async def _call(self, done: int, total: int | None) -> None:
        assert self._listener is not None
        try:
            result = self._listener(done, total)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closing or (current is not None and current.cancelling()):
                raise
            self._log_error(done, total)  # the callback's own cancellation, not ours
        except Exception:
            self._log_error(done, total)

    def _log_error(self, done: int, total: int | None) -> None:
        # Once per transfer with the traceback; after that a line at DEBUG, not one per chunk.
        if not self._raised:
            self._raised = True
            log.warning(
                "on_progress raised at %d of %s bytes; the transfer goes on (its further "
                "errors in this transfer are logged at DEBUG)",
                done,
                total,
                exc_info=True,
            )
        else:
            log.debug("on_progress raised again at %d of %s bytes", done, total, exc_info=True)

    async def _flush(self) -> None:
        """Wait until the last report offered is delivered; each call gets ``timeout``."""
        loop = asyncio.get_running_loop()
        task = self._task
        while task is not None and not task.done() and self._delivered < self._offered:
            # The bound runs from when the call now running started (or from now, if idle).
            since = loop.time() if self._busy_since is None else self._busy_since
            self._caught = caught = loop.create_future()
            left = since + self._timeout - loop.time()
            await asyncio.wait(
                {caught, task}, timeout=max(left, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
            if not caught.done() and not task.done():
                done, total = self._latest
                log.warning(
                    "a progress handler (on_progress, or on_event on a transfer) did not return "
                    "within %g s; it is cancelled and the last reports of this transfer (up to "
                    "%d of %s bytes) are not delivered",
                    self._timeout,
                    done,
                    total,
                )
                return

    async def _close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
            # A callback that swallows its cancellation gets ``timeout`` to end, then is left.
            await asyncio.wait({task}, timeout=self._timeout)
        if task.done() and not task.cancelled():
            task.exception()  # read, so that asyncio does not report it as never retrieved
