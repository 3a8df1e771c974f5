"""The service's wire format, in one place: request bodies, answer decoding, and error mapping.

Pure functions on plain values: no sockets, no clock (callers pass ``now`` where it matters).
Answers are read tolerantly (unknown keys ignored, ``msg``/``message``, ``""``/``null``, JSON inside
strings, seconds or milliseconds); requests are built exactly (kie-api.md sections 1-5).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from .errors import APIError, api_error_for
from .models import (
    MODEL_NAME,
    UPLOAD_LIFETIME,
    MotionControlInput,
    Task,
    TaskState,
    UploadedFile,
)

__all__ = [
    "create_task_body",
    "decode_answer",
    "parse_credits",
    "parse_download_url",
    "parse_retry_after",
    "parse_task",
    "parse_task_id",
    "parse_uploaded_file",
]

#: Longest wait a ``Retry-After`` header may impose on us; longer values are clipped.
RETRY_AFTER_CAP = 60.0


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
    body: dict[str, Any] = {"model": MODEL_NAME, "input": task_input}
    if callback_url is not None:
        body["callBackUrl"] = callback_url
    return body


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _message_of(body: Mapping[str, Any]) -> str:
    for key in ("msg", "message"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


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
    error status is honoured too, so both transports map to the same classes.
    """
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    try:
        decoded: Any = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        decoded = None
    if not isinstance(decoded, dict):
        if 200 <= status < 300:
            raise APIError(
                status,
                f"answer is not a JSON object: {body[:200]!r}",
                http_status=status,
                endpoint=endpoint,
            )
        raise api_error_for(
            status,
            body[:200].decode("utf-8", "replace") or f"HTTP {status}",
            http_status=status,
            retry_after=retry_after,
            endpoint=endpoint,
        )
    code = decoded.get("code")
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if not isinstance(code, int) or isinstance(code, bool):
        code = status if status != 200 else 200
    if decoded.get("success") is False and code == 200:
        code = status if status != 200 else 500
    if code == 200 and status >= 400:
        code = status
    if code != 200:
        raise api_error_for(
            code,
            _message_of(decoded) or f"error {code}",
            http_status=status,
            retry_after=retry_after,
            endpoint=endpoint,
        )
    return decoded.get("data")


def _blank_to_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def _datetime_from_ms(value: Any) -> datetime | None:
    if value in (None, "", 0):
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
            return json.loads(value)
        except ValueError:
            return None
    return value


@attrs.define
class _RecordWire:
    """The ``data`` of recordInfo and of a callback, with wire names mapped to ours."""

    task_id: str
    state: str
    model: str = MODEL_NAME
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
    body = _maybe_json(param)
    if not isinstance(body, dict):
        return None, None
    callback = body.get("callBackUrl") if isinstance(body.get("callBackUrl"), str) else None
    # One real capture has ``input`` double-encoded as a string inside ``param``.
    task_input = _maybe_json(body.get("input"))
    if not isinstance(task_input, dict):
        return None, callback
    images = task_input.get("input_urls") or []
    videos = task_input.get("video_urls") or []
    try:
        inp = MotionControlInput(
            image_url=images[0],
            video_url=videos[0],
            prompt=task_input.get("prompt") or None,
            character_orientation=task_input.get("character_orientation", "video"),
            mode=task_input.get("mode", "720p"),
        )
    except (ValueError, TypeError, IndexError, KeyError):
        return None, callback
    return inp, callback


def _number(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


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


def parse_task(data: Any) -> Task:
    """Parse the ``data`` of a recordInfo answer or a callback into a :class:`Task`."""
    if not isinstance(data, Mapping):
        raise ValueError(f"task data is not an object: {data!r}")
    fields = dict(data)
    if "taskId" not in fields and "task_id" in fields:
        fields["taskId"] = fields["task_id"]
    try:
        wire = _converter.structure(fields, _RecordWire)
    except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"task data lacks taskId or state: {data!r}") from exc
    try:
        state = TaskState(str(wire.state).strip().lower())
    except ValueError as exc:
        raise ValueError(f"unknown task state {wire.state!r}") from exc
    result = _maybe_json(wire.result_json)
    urls: tuple[str, ...] = ()
    if isinstance(result, dict) and isinstance(result.get("resultUrls"), list):
        urls = tuple(u for u in result["resultUrls"] if isinstance(u, str))
    inp, callback = _input_from_param(wire.param)
    created = _datetime_from_ms(wire.create_time)
    completed = _datetime_from_ms(wire.complete_time)
    return Task(
        task_id=str(wire.task_id),
        state=state,
        model=str(wire.model or MODEL_NAME),
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
    )


def parse_task_id(data: Any) -> str:
    """The task id in a createTask answer's ``data``."""
    if isinstance(data, Mapping):
        task_id = data.get("taskId") or data.get("task_id")
        if isinstance(task_id, str) and task_id:
            return task_id
    raise ValueError(f"createTask answer has no taskId: {data!r}")


def parse_credits(data: Any) -> float:
    """The remaining credits in a ``/chat/credit`` answer's ``data``."""
    value = _number(data)
    if value is None:
        raise ValueError(f"credit answer is not a number: {data!r}")
    return value


def parse_download_url(data: Any) -> str:
    """The temporary link in a ``/common/download-url`` answer's ``data``."""
    if isinstance(data, str) and data:
        return data
    raise ValueError(f"download-url answer has no URL: {data!r}")


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_uploaded_file(data: Any, *, now: datetime) -> UploadedFile:
    """Parse an upload answer's ``data``; it expires 24 h after upload unless stated sooner."""
    if not isinstance(data, Mapping):
        raise ValueError(f"upload answer has no data object: {data!r}")
    url = data.get("downloadUrl") or data.get("fileUrl")
    if not isinstance(url, str) or not url:
        raise ValueError(f"upload answer has no downloadUrl: {data!r}")
    uploaded_at = _parse_iso(data.get("uploadedAt") or data.get("uploadTime")) or now
    expires_at = uploaded_at + UPLOAD_LIFETIME
    stated = _parse_iso(data.get("expiresAt"))
    if stated is not None and stated < expires_at:
        expires_at = stated
    size = _number(data.get("fileSize"))
    return UploadedFile(
        url=url,
        file_name=str(data.get("fileName") or url.rsplit("/", 1)[-1]),
        file_path=str(data.get("filePath") or data.get("uploadPath") or ""),
        size_bytes=int(size) if size is not None else 0,
        mime_type=str(data.get("mimeType") or "application/octet-stream"),
        uploaded_at=uploaded_at,
        expires_at=expires_at,
    )
