"""Callback delivery: the documented body, signed when the account has a webhook HMAC key."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["CallbackDelivery", "callback_body"]


def callback_body(data: dict[str, Any]) -> dict[str, Any]:
    """The callback envelope for a terminal task's ``data`` (code 200 success, 501 failure)."""
    if data["state"] == "success":
        return {"code": 200, "msg": "Playground task completed successfully.", "data": data}
    return {"code": 501, "msg": "Playground task failed.", "data": data}


@attrs.define
class CallbackDelivery:
    """One attempt to deliver a callback, as the simulator saw it."""

    task_id: str
    url: str
    attempt: int
    #: HTTP status the receiver answered, or None if no answer came.
    status: int | None
    error: str | None = None
