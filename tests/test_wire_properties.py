"""Property tests: no answer from the network makes a parser raise anything but a KlingError."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kling_async.errors import APIError, KlingError, ProtocolError
from kling_async.models import UPLOAD_LIFETIME, is_http_url
from kling_async.wire import (
    decode_answer,
    is_valid_task_id,
    parse_credits,
    parse_download_url,
    parse_retry_after,
    parse_task,
    parse_task_id,
    parse_uploaded_file,
)

NOW = datetime(2026, 1, 6, 10, 0, tzinfo=UTC)
TASK_ID = "e989621f54392584b05867f87b160672"
EXAMPLES = 500
PROPERTY = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text that includes what a hostile sender can put in JSON: lone surrogates and control chars.
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=20,
)
# Values shaped like the documented fields, so that the parsers get past their first checks.
RECORD_KEYS = [
    "taskId",
    "task_id",
    "state",
    "model",
    "param",
    "resultJson",
    "failCode",
    "failMsg",
    "costTime",
    "completeTime",
    "createTime",
    "updateTime",
    "creditsConsumed",
]
UPLOAD_KEYS = [
    "downloadUrl",
    "fileUrl",
    "fileName",
    "filePath",
    "uploadPath",
    "fileSize",
    "mimeType",
    "uploadedAt",
    "uploadTime",
    "expiresAt",
]
states = st.sampled_from(["waiting", "queuing", "generating", "success", "fail", "FAIL", "new"])
urls = st.one_of(
    st.sampled_from(
        ["https://a.example/r.mp4", "http://[::1", "ftp://x", "https://", "", "https://b/😀"]
    ),
    any_text.map(lambda t: "https://tempfile.example/" + t),
    any_text.map(lambda t: "http://" + t),
)
dates = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00-23:59", "2026-01-06"]),
)
param_inputs = st.fixed_dictionaries(
    {},
    optional={
        "input_urls": st.one_of(st.lists(urls, max_size=2), json_values),
        "video_urls": st.one_of(st.lists(urls, max_size=2), json_values),
        "prompt": st.one_of(any_text, json_values),
        "character_orientation": st.one_of(st.sampled_from(["image", "video"]), json_values),
        "mode": st.one_of(st.sampled_from(["720p", "1080p"]), json_values),
    },
)
params = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"input": st.one_of(param_inputs, param_inputs.map(json.dumps))},
        optional={"callBackUrl": st.one_of(urls, json_values)},
    ).map(json.dumps),
)


def field_value(key: str) -> st.SearchStrategy[Any]:
    special: dict[str, st.SearchStrategy[Any]] = {
        "taskId": st.one_of(st.sampled_from([TASK_ID, "a b", "x" * 300]), any_text),
        "task_id": any_text,
        "state": st.one_of(states, any_text),
        "param": params,
        "resultJson": st.one_of(
            st.lists(urls).map(lambda u: json.dumps({"resultUrls": u})), any_text
        ),
        "downloadUrl": urls,
        "fileUrl": urls,
        "uploadedAt": dates,
        "uploadTime": dates,
        "expiresAt": dates,
    }
    return st.one_of(special.get(key, scalars), json_values)


def shaped(keys: list[str], required: Any = None) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of ``keys`` with odd values; ``required`` ones (a dict of strategies) always there."""
    required = required or {}
    optional = {k: field_value(k) for k in keys if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


# Records that have what a task needs, so that the parsing past the first checks is exercised.
near_records = shaped(RECORD_KEYS, {"taskId": st.just(TASK_ID), "state": states})
task_data = st.one_of(json_values, shaped(RECORD_KEYS), near_records)
upload_data = st.one_of(
    json_values,
    shaped(UPLOAD_KEYS),
    shaped(UPLOAD_KEYS, {"downloadUrl": st.just("https://tempfile.example/a.png")}),
)


def deep(depth: int, opener: bytes, closer: bytes) -> bytes:
    return opener * depth + closer * depth


bodies = st.one_of(
    st.fixed_dictionaries(
        {"code": st.just(200), "msg": st.just("success"), "data": json_values}
    ).map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass")),
    st.fixed_dictionaries(
        {},
        optional={
            "code": st.one_of(st.sampled_from([200, 408, 422, 501, "200", "²"]), scalars),
            "msg": any_text,
            "message": any_text,
            "success": st.booleans(),
            "data": json_values,
        },
    ).map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    st.integers(min_value=1, max_value=200_000).map(lambda n: deep(n, b"[", b"]")),
    st.integers(min_value=1, max_value=200_000).map(lambda n: deep(n, b'{"a":', b"}")),
    st.integers(min_value=4000, max_value=6000).map(lambda n: b'{"code":200,"data":' + b"7" * n),
    st.sampled_from([b"1e999", b"-1e400", b'{"code": 1e999}', b"NaN", b"error code: 1010"]),
)
retry_after = st.one_of(
    any_text,
    st.floats().map(str),
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
    st.sampled_from(["Mon, 01 Jan 99999999999 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 -2359"]),
)
headers = st.dictionaries(st.sampled_from(["Retry-After", "Content-Type"]), retry_after, max_size=2)


def outcome(call: Callable[[], Any]) -> Any:
    """What ``call`` returns, or the ``KlingError`` it raises; any other exception fails."""
    try:
        result = call()
    except KlingError as exc:
        event(f"raised {type(exc).__name__}")
        return exc
    event("returned")
    return result


@PROPERTY
@given(
    status=st.one_of(st.just(200), st.integers(min_value=0, max_value=999)),
    headers=headers,
    body=bodies,
)
def test_decode_answer_raises_only_kling_errors(
    status: int, headers: dict[str, str], body: bytes
) -> None:
    result = outcome(lambda: decode_answer(status, headers, body, endpoint="e", now=NOW))
    if isinstance(result, KlingError):
        assert isinstance(result, APIError) and result.endpoint == "e"
    else:
        # Only a JSON object without an error code, under a non-error status, is a success.
        assert status < 400 and isinstance(json.loads(body), dict)


@PROPERTY
@given(value=retry_after)
def test_parse_retry_after_never_raises(value: str) -> None:
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or 0.0 <= seconds <= 60.0


@PROPERTY
@given(data=task_data)
def test_parse_task_raises_only_kling_errors(data: Any) -> None:
    task = outcome(lambda: parse_task(data))
    if isinstance(task, KlingError):
        assert isinstance(task, ProtocolError)
    else:
        assert is_valid_task_id(task.task_id)
        assert (task.raw_state is None) == (task.state.value == data["state"].strip().lower())


@PROPERTY
@given(data=st.one_of(json_values, shaped(["taskId", "task_id"])))
def test_parse_task_id_raises_only_kling_errors(data: Any) -> None:
    task_id = outcome(lambda: parse_task_id(data))
    assert isinstance(task_id, ProtocolError) or is_valid_task_id(task_id)


@PROPERTY
@given(data=st.one_of(json_values, numbers, numbers.map(str)))
def test_parse_credits_raises_only_kling_errors(data: Any) -> None:
    credits = outcome(lambda: parse_credits(data))
    assert isinstance(credits, ProtocolError) or math.isfinite(credits)


@PROPERTY
@given(data=st.one_of(json_values, urls))
def test_parse_download_url_raises_only_kling_errors(data: Any) -> None:
    url = outcome(lambda: parse_download_url(data))
    assert isinstance(url, ProtocolError) or is_http_url(url)


@PROPERTY
@given(data=upload_data)
def test_parse_uploaded_file_raises_only_kling_errors(data: Any) -> None:
    uploaded = outcome(lambda: parse_uploaded_file(data, now=NOW))
    if not isinstance(uploaded, ProtocolError):
        assert is_http_url(uploaded.url) and uploaded.size_bytes >= 0
        assert uploaded.expires_at <= uploaded.uploaded_at + UPLOAD_LIFETIME
