"""The service's wire format: request bodies, answer envelopes, and error mapping.

The data inside a successful answer is read by :mod:`kling_async.records` (re-exported here).

Pure functions on plain values: no sockets, no clock (callers pass ``now`` where it matters).
Answers are read tolerantly (unknown keys ignored, ``msg``/``message``, ``""``/``null``, JSON inside
strings, seconds or milliseconds); requests are built exactly (kie-api.md sections 1-5).

What cannot be read raises ``ProtocolError`` (an ``APIError`` and a ``ValueError``), and nothing
else: no answer makes ``decode_answer`` or a ``parse_*`` function raise another exception
(see the property tests).

Does no I/O, no clock (callers pass ``now``); never retries, sleeps or opens a
connection.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import ConfigurationError, GenerationFailedError, ProtocolError, api_error_for
from .models import MotionControlInput
from .records import (
    MAX_TASK_ID_CHARS,
    is_valid_task_id,
    loads,
    parse_credits,
    parse_download_url,
    parse_task,
    parse_task_id,
    parse_uploaded_file,
    short,
)

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_TASK_ID_CHARS",
    "RETRY_AFTER_CAP",
    "create_task_body",
    "decode_answer",
    "is_valid_task_id",
    "market_task_body",
    "parse_credits",
    "parse_download_url",
    "parse_retry_after",
    "parse_task",
    "parse_task_id",
    "parse_uploaded_file",
]

#: Longest wait a ``Retry-After`` header may impose on us; longer values are clipped.
RETRY_AFTER_CAP = 60.0
#: Largest answer body read from the service; the documented answers are a few kB at most, so a
#: longer one is not the service speaking (the transport stops reading past this).
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: Part of a non-JSON error body kept as the error's message (enough for an edge's text).
_ERROR_TEXT_CHARS = 500


def create_task_body(inp: MotionControlInput, callback_url: str | None = None) -> dict[str, Any]:
    """The exact JSON body of ``POST /api/v1/jobs/createTask`` for ``inp``."""
    task_input: dict[str, Any] = {
        "input_urls": [inp.image_url],
        "video_urls": [inp.video_url],
        "character_orientation": inp.character_orientation,
        "mode": inp.mode,
    }
    if inp.prompt is not None:
        task_input["prompt"] = inp.prompt
    if inp.background_source is not None:
        task_input["background_source"] = inp.background_source
    body: dict[str, Any] = {"model": inp.model, "input": task_input}
    if callback_url is not None:
        body["callBackUrl"] = callback_url
    return body


def market_task_body(
    model: str, task_input: Mapping[str, Any], callback_url: str | None = None
) -> dict[str, Any]:
    """The createTask body for any Market model: ``input`` is sent as given, unvalidated.

    Only what could never be a request is refused (``ConfigurationError``): a blank model name,
    an ``input`` that is not a mapping with string keys, or one that is not JSON. Every field is
    passed through untouched, so a field the service added yesterday works today.
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"model must be a model name; got {short.repr(model)}")
    if not isinstance(task_input, Mapping) or not all(isinstance(k, str) for k in task_input):
        raise ConfigurationError(
            f"input must be a mapping of field names to values; got {short.repr(task_input)}"
        )
    body: dict[str, Any] = {"model": model, "input": dict(task_input)}
    if callback_url is not None:
        body["callBackUrl"] = callback_url
    try:
        # Checked here, before a rate-limit slot or a journal entry: a value JSON cannot carry
        # (a set, a datetime, NaN) is the caller's mistake, never a request that may have left.
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"input of {model} is not JSON: {exc}") from None
    return body


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped."""
    if not value or not isinstance(value, str):
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - now).total_seconds()
        except (TypeError, ValueError, OverflowError, IndexError):
            # Dates out of datetime's range raise OverflowError, not ValueError.
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _message_of(body: Mapping[str, Any]) -> str:
    for key in ("msg", "message"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _code_of(value: Any) -> int | None:
    """The body's ``code`` as an int, whether sent as a number or a numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return None


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _error_text(body: bytes) -> str:
    """A one-line text for a non-JSON error answer: an HTML page is named by its title."""
    head = body[:_ERROR_TEXT_CHARS]
    if head.lstrip()[:1] == b"<":
        title = _TITLE.search(body[:65536])
        name = title.group(1).decode("utf-8", "replace") if title else ""
        name = " ".join(name.split())[:120]
        return f"an HTML page ({name})" if name else "an HTML page"
    return " ".join(head.decode("utf-8", "replace").split())


def decode_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    endpoint: str,
    now: datetime,
) -> Any:
    """Return the ``data`` of a successful answer, or raise the matching ``APIError``.

    The body's ``code`` is authoritative (the service sends HTTP 200 for failures); a real HTTP
    error status is honoured too, so both transports map to the same classes. A body that cannot
    be read (over ``MAX_ANSWER_BYTES``, not UTF-8, not a JSON object, nested absurdly deep,
    numbers out of range) raises ``ProtocolError`` when the status said success; with an error
    status, the status picks the class and the body's text is its message (so an edge's bare
    ``403 error code: 1010`` becomes ``EdgeBlockedError``). Codes 501 and 408 inside an HTTP 2xx
    answer mean that a task ended and failed (kie-api.md section 9b): ``GenerationFailedError``.
    """
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    if len(body) > MAX_ANSWER_BYTES:
        raise ProtocolError(
            status,
            f"answer of HTTP {status} is longer than {MAX_ANSWER_BYTES} bytes",
            http_status=status,
            retry_after=retry_after,
            endpoint=endpoint,
        )
    decoded: Any = None
    problem = "empty"
    if body:
        try:
            decoded = loads(body.decode("utf-8"))
            problem = f"a JSON {type(decoded).__name__}"
        except UnicodeDecodeError:
            problem = "not UTF-8"
        except ValueError as exc:
            problem = f"not JSON: {exc}"
    if not isinstance(decoded, dict):
        if 200 <= status < 300:
            raise ProtocolError(
                status,
                f"answer is not a JSON object ({problem}): {short.repr(body[:200])}",
                http_status=status,
                endpoint=endpoint,
            )
        raise api_error_for(
            status,
            _error_text(body) or f"HTTP {status}",
            http_status=status,
            retry_after=retry_after,
            endpoint=endpoint,
        )
    code = _code_of(decoded.get("code"))
    if code is None:
        code = status if status != 200 else 200
    if decoded.get("success") is False and code == 200:
        code = status if status != 200 else 500
    if code == 200 and status >= 400:
        code = status
    if code != 200:
        message = _message_of(decoded) or f"error {code}"
        if code == 408 and 200 <= status < 300:
            # "upstream produced no result in 10 min": the task ended and failed (section 6/9b).
            raise GenerationFailedError(
                code, message, http_status=status, retry_after=retry_after, endpoint=endpoint
            )
        raise api_error_for(
            code, message, http_status=status, retry_after=retry_after, endpoint=endpoint
        )
    return decoded.get("data")
