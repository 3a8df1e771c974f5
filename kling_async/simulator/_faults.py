"""Fault injection of the simulator: which fault strikes a request, and the answer it makes.

Three sources, in order: the service's edge (a bare 403 to refused User-Agents), outages (a
window of time in which an endpoint fails), and the seeded roll of ``FaultConfig``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs
from aiohttp import web

from ._config import ENDPOINTS
from ._records import Dropped, current_record

if TYPE_CHECKING:
    from ._app import Service

__all__ = ["Faults", "Outage"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Messages of the error codes a fault or an outage answers with.
_FAULT_MESSAGES = {
    "500": "Internal server error",
    "455": "Service unavailable",
    "429": "Rate limit exceeded",
    "433": "Sub-key usage limit exceeded",
}


@attrs.frozen
class Outage:
    """A window of nominal time in which ``endpoints`` answer ``kind`` (``OUTAGE_KINDS``)."""

    kind: str
    start: float
    end: float
    endpoints: frozenset[str]


def _html_page(status: int, title: str, text: str) -> web.Response:
    """An HTML page such as a gateway or a CDN sends in place of the service's answer."""
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<p>{text}</p>\r\n"
        "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )
    return web.Response(status=status, text=page, content_type="text/html")


class Faults:
    """The faults of one simulated service; the service's config is read on every request."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._rng = random.Random(service.config.faults.seed)
        self.outages: list[Outage] = []

    def pick(self, request: web.Request, endpoint: str) -> str | None:
        """The fault that strikes this request, if any (its name in the request log)."""
        # The edge stands before everything; an outage before the service's own faults.
        return (
            self._edge_fault(request, endpoint)
            or self._outage_fault(endpoint)
            or self._roll(endpoint)
        )

    async def respond(
        self, request: web.Request, handler: Handler, fault: str | None
    ) -> web.StreamResponse:
        """The answer to one request under ``fault`` (None: the handler's own answer)."""
        faults = self.service.config.faults
        record = current_record.get()
        if fault == "edge_block":
            # The edge's bare refusal: text, not the service's JSON envelope.
            record.code = 403
            return web.Response(status=403, text="error code: 1010", content_type="text/plain")
        if fault in ("drop", "outage-drop"):
            raise Dropped
        code = fault.removeprefix("outage-") if fault else None
        if code in _FAULT_MESSAGES:
            response: web.StreamResponse = self.service._answer(
                request, int(code), _FAULT_MESSAGES[code]
            )
            if code in ("429", "455") and faults.retry_after is not None:
                response.headers["Retry-After"] = f"{faults.retry_after:g}"
            return response
        if fault == "html_200":
            record.code = 200
            return _html_page(200, "Error", "Something went wrong. Please try again later.")
        if fault == "slow":
            if request.content_type == "application/json":
                # The request has fully arrived; only the answer is slow. A client that
                # gives up meanwhile does not undo it, as on a real server.
                await request.read()
            await asyncio.sleep(self.service.real_seconds(faults.slow_seconds))
        response = await handler(request)
        # The faults below strike after the request was processed (a task may now exist).
        if fault == "drop_after":
            raise Dropped
        if fault == "gateway_after":
            record.code = faults.gateway_status
            title = "Bad Gateway" if faults.gateway_status == 502 else "Gateway Time-out"
            return _html_page(faults.gateway_status, f"{faults.gateway_status} {title}", "")
        if fault == "no_task_id":
            return self.service._answer(request, 200, "success", {})
        if fault == "trickle" and isinstance(response, web.Response):
            return await self._trickle(request, response)
        return response

    async def _trickle(self, request: web.Request, response: web.Response) -> web.StreamResponse:
        """Send ``response`` one byte every ``trickle_seconds`` (for transfer deadlines)."""
        body = response.body
        data = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else b""
        out = web.StreamResponse(status=response.status)
        out.content_type = response.content_type
        out.content_length = len(data)
        await out.prepare(request)
        interval = self.service.real_seconds(self.service.config.faults.trickle_seconds)
        try:
            for i in range(len(data)):
                await out.write(data[i : i + 1])
                await asyncio.sleep(interval)
            await out.write_eof()
        except ConnectionError:
            pass  # the client gave up: that is what a trickle is for
        return out

    def _edge_fault(self, request: web.Request, endpoint: str) -> str | None:
        """``edge_block`` when the edge refuses this request's User-Agent (section 9b)."""
        prefixes = self.service.config.edge_block_user_agents
        if not prefixes or endpoint not in ENDPOINTS:
            return None
        agent = request.headers.get("User-Agent", "").strip().lower()
        if not agent or agent.startswith(tuple(p.lower() for p in prefixes)):
            return "edge_block"
        return None

    def outage(self, kind: str, seconds: float, endpoints: frozenset[str]) -> None:
        """From now on, for ``seconds`` nominal seconds, answer ``endpoints`` with ``kind``."""
        now = self.service.now()
        self.outages = [o for o in self.outages if o.end > now]
        self.outages.append(Outage(kind, now, now + seconds, endpoints))

    def _outage_fault(self, endpoint: str) -> str | None:
        if not self.outages:
            return None
        now = self.service.now()
        for outage in self.outages:
            if outage.start <= now < outage.end and endpoint in outage.endpoints:
                return f"outage-{outage.kind}"
        return None

    def _roll(self, endpoint: str) -> str | None:
        faults = self.service.config.faults
        if not faults.any or endpoint not in faults.endpoints:
            return None
        roll = self._rng.random()
        for name, chance in faults.chances():
            if roll < chance:
                return name
            roll -= chance
        return None
