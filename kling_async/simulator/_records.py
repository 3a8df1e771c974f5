"""What the simulator remembers of each request, and the exceptions its handlers answer with."""

from __future__ import annotations

import contextvars

import attrs

__all__ = ["ApiAnswer", "Dropped", "RequestRecord", "current_record"]


@attrs.define
class RequestRecord:
    """One request the simulator answered (or dropped), for tests to inspect."""

    endpoint: str
    method: str
    path: str
    #: Real monotonic time the request arrived.
    time: float
    key: str | None
    had_authorization: bool
    #: The error code in the body (200 on success), or None when the connection was dropped.
    code: int | None = None
    http_status: int | None = None
    fault: str | None = None


# The record of the request being handled: handlers run in the middleware's context.
current_record: contextvars.ContextVar[RequestRecord] = contextvars.ContextVar("simulator_request")


class ApiAnswer(Exception):
    """Raised inside a handler to answer with a documented error envelope."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class Dropped(Exception):
    """The connection was closed without an answer (fault injection)."""
