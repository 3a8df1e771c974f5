"""The data of the service's answers: tasks, task ids, credits, links and uploads (pure).

Reads the ``data`` of an answer whose envelope :mod:`kling_async.wire` has already decoded: a
recordInfo or callback record into a :class:`~kling_async.models.Task`, a createTask answer's
``taskId``, an upload's hosted file. Tolerant of unknown keys, blanks and JSON inside strings;
what cannot be used raises ``ProtocolError``, and nothing else does.

Does no I/O and reads no clock (callers pass ``now``).
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from .errors import ProtocolError
from .models import (
    MODEL_NAME,
    UPLOAD_LIFETIME,
    MotionControlInput,
    Task,
    TaskState,
    UploadedFile,
    is_http_url,
)

__all__ = [
    "MAX_TASK_ID_CHARS",
    "is_valid_task_id",
    "loads",
    "parse_credits",
    "parse_download_url",
    "parse_task",
    "parse_task_id",
    "parse_uploaded_file",
    "short",
]

#: Longest task id accepted; the service's ids are 32 characters (kie-api.md section 1.3).
MAX_TASK_ID_CHARS = 256

# Values quoted in error messages are cut short, and deep structures summarised: a hostile
# answer must not fill a log, nor overflow the stack when printed.
short = reprlib.Repr()
short.maxstring = 80
short.maxother = 80
short.maxlevel = 3


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _no_constant(text: str) -> NoReturn:
    raise ValueError(f"{text} is not JSON")


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses what a JSON answer cannot mean, with one kind of failure.

    Non-finite numbers (``1e999``, ``NaN``) are refused; integers longer than Python's limit
    (4300 digits) raise ``ValueError`` and absurd nesting ``RecursionError``: both become
    ``ValueError`` here.
    """
    try:
        return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _unreadable(endpoint: str | None, message: str) -> ProtocolError:
    # The answer said success (code 200) but its data cannot be used: no code of its own.
    return ProtocolError(0, message, endpoint=endpoint)


def is_valid_task_id(value: Any) -> bool:
    """Tell whether ``value`` can be a task id: a short printable string without spaces.

    The service's ids are opaque (32 hex characters in practice); this only keeps out what
    cannot be one, before it is recorded, signed over or sent back in a query.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_TASK_ID_CHARS
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )


def _blank_to_none(value: Any) -> str | None:
    """A text field (``failCode``, ``failMsg``): None when blank or not a scalar."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    return text if text.strip() else None


def _datetime_from_ms(value: Any) -> datetime | None:
    if value in (None, "", 0) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(float(value) / 1000.0, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _maybe_json(value: Any) -> Any:
    """Decode a field that the service sends as a JSON string (``param``, ``resultJson``)."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return loads(value)
        except ValueError:
            return None
    return value


@attrs.define
class _RecordWire:
    """The ``data`` of recordInfo and of a callback, with wire names mapped to ours."""

    task_id: str
    state: str
    model: Any = MODEL_NAME
    param: Any = None
    result_json: Any = None
    fail_code: Any = None
    fail_msg: Any = None
    cost_time: Any = None
    complete_time: Any = None
    create_time: Any = None
    update_time: Any = None
    credits_consumed: Any = None


_converter = cattrs.Converter()
_converter.register_structure_hook(
    _RecordWire,
    make_dict_structure_fn(
        _RecordWire,
        _converter,
        task_id=override(rename="taskId"),
        result_json=override(rename="resultJson"),
        fail_code=override(rename="failCode"),
        fail_msg=override(rename="failMsg"),
        cost_time=override(rename="costTime"),
        complete_time=override(rename="completeTime"),
        create_time=override(rename="createTime"),
        update_time=override(rename="updateTime"),
        credits_consumed=override(rename="creditsConsumed"),
    ),
)


def _input_from_param(param: Any) -> tuple[MotionControlInput | None, str | None]:
    """The motion-control input in ``param`` (None for any other model), and its callback URL."""
    body = _maybe_json(param)
    if not isinstance(body, dict):
        return None, None
    callback = body.get("callBackUrl") if isinstance(body.get("callBackUrl"), str) else None
    # One real capture has ``input`` double-encoded as a string inside ``param``.
    task_input = _maybe_json(body.get("input"))
    if not isinstance(task_input, dict):
        return None, callback
    images = task_input.get("input_urls")
    videos = task_input.get("video_urls")
    if not (isinstance(images, list) and images and isinstance(videos, list) and videos):
        return None, callback
    try:
        inp = MotionControlInput(
            image_url=images[0],
            video_url=videos[0],
            prompt=task_input.get("prompt") or None,
            character_orientation=task_input.get("character_orientation", "video"),
            mode=task_input.get("mode", "720p"),
            model=body.get("model", MODEL_NAME),
            background_source=task_input.get("background_source"),
        )
    except ValueError:  # ConfigurationError: the recorded input breaks today's rules
        return None, callback
    return inp, callback


def _number(value: Any) -> float | None:
    """A finite number from a number or numeric string; None for anything else."""
    if value in (None, "") or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):  # float() of an int past 1e308 overflows
        return None
    return number if math.isfinite(number) else None


def _cost_seconds(
    cost: float | None, created: datetime | None, done: datetime | None
) -> float | None:
    """Read ``costTime`` as seconds; fall back to milliseconds when the timestamps say so."""
    if cost is None or created is None or done is None:
        return cost
    span = (done - created).total_seconds()
    if cost > 2 * span + 5 and abs(cost / 1000.0 - span) <= max(5.0, span):
        return cost / 1000.0
    return cost


def _state_of(value: str) -> tuple[TaskState, str | None]:
    """The state, and the raw text when the service sent a state it never documented."""
    try:
        return TaskState(value.strip().lower()), None
    except ValueError:
        # A new state must not end a wait (nor, mistaken for a failure, start a paid retry):
        # it reads as still running, and the text travels along for the caller to log.
        return TaskState.GENERATING, value[:100]


def parse_task(data: Any, *, endpoint: str | None = "recordInfo") -> Task:
    """Parse the ``data`` of a recordInfo answer or a callback into a :class:`Task`.

    Raises ``ProtocolError`` when ``taskId`` or ``state`` is missing or not a string; a state
    the docs do not list reads as ``GENERATING`` with the text kept in ``Task.raw_state``.
    """
    if not isinstance(data, Mapping):
        raise _unreadable(endpoint, f"task data is not an object: {short.repr(data)}")
    fields = dict(data)
    task_id = fields.get("taskId") or fields.get("task_id")
    if not is_valid_task_id(task_id):
        raise _unreadable(endpoint, f"task data has no valid taskId: {short.repr(task_id)}")
    state = fields.get("state")
    if not isinstance(state, str) or not state.strip():
        raise _unreadable(endpoint, f"task data has no state: {short.repr(state)}")
    fields["taskId"] = task_id
    # Both required fields are checked strings and every other field is ``Any``: structuring
    # cannot fail on values, only renames them.
    wire = _converter.structure(fields, _RecordWire)
    task_state, raw_state = _state_of(wire.state)
    result = _maybe_json(wire.result_json)
    urls: tuple[str, ...] = ()
    if isinstance(result, dict) and isinstance(result.get("resultUrls"), list):
        urls = tuple(u for u in result["resultUrls"] if isinstance(u, str))
    inp, callback = _input_from_param(wire.param)
    created = _datetime_from_ms(wire.create_time)
    completed = _datetime_from_ms(wire.complete_time)
    return Task(
        task_id=wire.task_id,
        state=task_state,
        model=wire.model if isinstance(wire.model, str) and wire.model else MODEL_NAME,
        result_urls=urls,
        fail_code=_blank_to_none(wire.fail_code),
        fail_msg=_blank_to_none(wire.fail_msg),
        created_at=created,
        updated_at=_datetime_from_ms(wire.update_time),
        completed_at=completed,
        cost_time=_cost_seconds(_number(wire.cost_time), created, completed),
        credits_consumed=_number(wire.credits_consumed),
        input=inp,
        callback_url=callback,
        raw_state=raw_state,
    )


def parse_task_id(data: Any, *, endpoint: str | None = "createTask") -> str:
    """The task id in a createTask answer's ``data``; ``ProtocolError`` if there is none."""
    if isinstance(data, Mapping):
        task_id = data.get("taskId") or data.get("task_id")
        if is_valid_task_id(task_id):
            return str(task_id)
    raise _unreadable(endpoint, f"createTask answered success without a taskId: {short.repr(data)}")


def parse_credits(data: Any, *, endpoint: str | None = "credit") -> float:
    """The remaining credits in a ``/chat/credit`` answer's ``data``."""
    value = _number(data)
    if value is None:
        raise _unreadable(endpoint, f"credit answer is not a number: {short.repr(data)}")
    return value


def parse_download_url(data: Any, *, endpoint: str | None = "downloadUrl") -> str:
    """The temporary link in a ``/common/download-url`` answer's ``data``."""
    if isinstance(data, str) and is_http_url(data):
        return data
    raise _unreadable(endpoint, f"download-url answer has no http(s) URL: {short.repr(data)}")


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _text(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value else default


def parse_uploaded_file(
    data: Any, *, now: datetime, endpoint: str | None = "upload"
) -> UploadedFile:
    """Parse an upload answer's ``data``; it expires 24 h after upload unless stated sooner."""
    if not isinstance(data, Mapping):
        raise _unreadable(endpoint, f"upload answer has no data object: {short.repr(data)}")
    url = data.get("downloadUrl") or data.get("fileUrl")
    if not isinstance(url, str) or not is_http_url(url):
        raise _unreadable(endpoint, f"upload answer has no http(s) downloadUrl: {short.repr(url)}")
    uploaded_at = _parse_iso(data.get("uploadedAt") or data.get("uploadTime")) or now
    try:
        expires_at = uploaded_at + UPLOAD_LIFETIME
    except OverflowError:  # an upload time at the end of datetime's range: not believable
        uploaded_at, expires_at = now, now + UPLOAD_LIFETIME
    stated = _parse_iso(data.get("expiresAt"))
    if stated is not None and stated < expires_at:
        expires_at = stated
    size = _number(data.get("fileSize"))
    return UploadedFile(
        url=url,
        file_name=_text(data.get("fileName"), url.rsplit("/", 1)[-1]),
        file_path=_text(data.get("filePath"), _text(data.get("uploadPath"), "")),
        size_bytes=int(size) if size is not None and size >= 0 else 0,
        mime_type=_text(data.get("mimeType"), "application/octet-stream"),
        uploaded_at=uploaded_at,
        expires_at=expires_at,
    )
