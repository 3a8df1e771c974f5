"""The pure wire layer: answers in every documented variation, and errors in both transports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

import kling_async.errors as errors
from kling_async import MotionControlInput, TaskState
from kling_async.wire import (
    MAX_ANSWER_BYTES,
    RETRY_AFTER_CAP,
    create_task_body,
    decode_answer,
    parse_credits,
    parse_download_url,
    parse_retry_after,
    parse_task,
    parse_task_id,
    parse_uploaded_file,
)

NOW = datetime(2026, 1, 6, 10, 0, tzinfo=UTC)
PARAM = json.dumps(
    {
        "model": "kling-2.6/motion-control",
        "callBackUrl": "https://example.com/hooks/kie",
        "input": {
            "prompt": "A cartoon fox",
            "input_urls": ["https://tempfile.redpandaai.co/xxx/fox.png"],
            "video_urls": ["https://tempfile.redpandaai.co/xxx/dance.mp4"],
            "character_orientation": "video",
            "mode": "720p",
        },
    }
)

CODES = [
    (400, errors.InvalidRequestError),
    (401, errors.AuthenticationError),
    (402, errors.InsufficientCreditsError),
    (404, errors.NotFoundError),
    (405, errors.InvalidRequestError),
    (422, errors.InvalidRequestError),
    (429, errors.RateLimitError),
    (433, errors.QuotaExceededError),
    (455, errors.ServiceUnavailableError),
    (500, errors.ServerError),
    (501, errors.GenerationFailedError),
    (502, errors.ServerError),
    (505, errors.FeatureDisabledError),
]


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode_answer(status, headers or {}, raw, endpoint="test", now=NOW)


@pytest.mark.parametrize(("code", "cls"), CODES)
@pytest.mark.parametrize("real_status", [False, True])
def test_each_code_maps_to_one_class_in_both_transports(
    code: int, cls: type[errors.APIError], real_status: bool
) -> None:
    with pytest.raises(cls) as caught:
        answer(code if real_status else 200, {"code": code, "msg": "nope", "data": None})
    assert (caught.value.code, caught.value.message) == (code, "nope")
    assert isinstance(caught.value, errors.APIError) and isinstance(caught.value, errors.KlingError)


@pytest.mark.parametrize(("code", "cls"), CODES)
def test_http_status_alone_maps_too(code: int, cls: type[errors.APIError]) -> None:
    with pytest.raises(cls):
        answer(code, b"<html>Bad Gateway</html>")


def test_message_key_falls_back_and_success_flag_is_read() -> None:
    with pytest.raises(errors.InvalidRequestError, match="from message"):
        answer(200, {"code": 422, "message": "from message"})
    with pytest.raises(errors.APIError):
        answer(200, {"success": False, "msg": "upload failed"})
    assert answer(200, {"code": 200, "msg": "success", "data": {"taskId": "t"}}) == {"taskId": "t"}
    assert answer(200, {"code": "200", "data": 5}) == 5


def test_record_info_is_null_is_its_own_class() -> None:
    with pytest.raises(errors.TaskNotVisibleError):
        answer(200, {"code": 422, "msg": "recordInfo is null", "data": None})


def test_non_json_success_is_an_error() -> None:
    with pytest.raises(errors.ProtocolError, match="not a JSON object"):
        answer(200, b"<html>maintenance</html>")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty"),
        (b"[1, 2]", "a JSON list"),
        (b'"just text"', "a JSON str"),
        (b'{"code": 200, "msg": "\xff"}', "not UTF-8"),
        (b"\xff\xfe{\x00}\x00", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"code": 200, "data": ' + b"9" * 5000 + b"}", "4300"),
        (b'{"code": 200, "data": 1e999}', "out of range"),
        (b'{"code": 200, "data": NaN}', "NaN"),
        (b'{"code": 200, "data": -Infinity}', "Infinity"),
    ],
)
def test_unreadable_success_bodies_are_protocol_errors(body: bytes, why: str) -> None:
    with pytest.raises(errors.ProtocolError, match=why) as caught:
        answer(200, body)
    assert isinstance(caught.value, ValueError) and caught.value.http_status == 200
    assert caught.value.endpoint == "test"


def test_an_answer_over_the_size_cap_is_a_protocol_error() -> None:
    padded = json.dumps({"code": 200, "data": "x" * MAX_ANSWER_BYTES}).encode()
    with pytest.raises(errors.ProtocolError, match="longer than"):
        answer(200, padded)
    # At the cap it is still read.
    exact = b'{"code": 200, "data": "' + b"x" * (MAX_ANSWER_BYTES - 25) + b'"}'
    assert len(exact) == MAX_ANSWER_BYTES
    assert len(answer(200, exact)) == MAX_ANSWER_BYTES - 25  # type: ignore[arg-type]


def test_the_edges_bare_403_is_edge_blocked_not_auth() -> None:
    with pytest.raises(errors.EdgeBlockedError) as caught:
        answer(403, b"error code: 1010", {"Content-Type": "text/plain"})
    assert caught.value.http_status == 403 and "User-Agent" in caught.value.message
    with pytest.raises(errors.APIError) as other:
        answer(403, b"<html>Forbidden</html>")
    assert not isinstance(other.value, errors.EdgeBlockedError)


@pytest.mark.parametrize("code", [501, 408, "501"])
def test_failure_codes_inside_a_200_answer_mean_the_generation_failed(code: object) -> None:
    with pytest.raises(errors.GenerationFailedError) as caught:
        answer(200, {"code": code, "msg": "Generation failed", "data": None})
    assert caught.value.code == int(code)  # type: ignore[call-overload]


def test_a_real_http_408_is_no_generation_failure() -> None:
    with pytest.raises(errors.APIError) as caught:
        answer(408, b"Request Timeout")
    assert not isinstance(caught.value, errors.GenerationFailedError)


@pytest.mark.parametrize("code", ["\u00b2", "\u0663", "12345678901234567890", 3.5, True, None])
def test_odd_codes_fall_back_to_the_status(code: object) -> None:
    assert answer(200, {"code": code, "data": 1}) == 1
    with pytest.raises(errors.ServerError):
        answer(502, {"code": code, "data": 1})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Mon, 01 Jan 99999999999 00:00:00 GMT", None),
        ("Fri, 31 Dec 9999 23:59:59 +2359", RETRY_AFTER_CAP),
        ("Mon, 01 Jan 0001 00:00:00 GMT", 0.0),
        ("1e999", RETRY_AFTER_CAP),
        ("nan", None),
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("100000", RETRY_AFTER_CAP),
        ((NOW + timedelta(seconds=7)).strftime("%a, %d %b %Y %H:%M:%S GMT"), 7.0),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_retry_after_travels_with_the_error() -> None:
    with pytest.raises(errors.RateLimitError) as caught:
        answer(429, {"code": 429, "msg": "Rate limit exceeded"}, {"Retry-After": "2"})
    assert caught.value.retry_after == 2.0


def test_create_body_is_exact() -> None:
    inp = MotionControlInput("https://a.example/i.png", "https://a.example/v.mp4")
    assert create_task_body(inp) == {
        "model": "kling-2.6/motion-control",
        "input": {
            "input_urls": ["https://a.example/i.png"],
            "video_urls": ["https://a.example/v.mp4"],
            "character_orientation": "video",
            "mode": "720p",
        },
    }
    body = create_task_body(
        MotionControlInput("https://a.example/i.png", "https://a.example/v.mp4", prompt="p"),
        "https://me.example/cb",
    )
    assert body["callBackUrl"] == "https://me.example/cb" and body["input"]["prompt"] == "p"


def success_data(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "taskId": "e989621f54392584b05867f87b160672",
        "model": "kling-2.6/motion-control",
        "state": "success",
        "param": PARAM,
        "resultJson": '{"resultUrls":["https://tempfile.aiquickdraw.com/r.mp4"]}',
        "failCode": "",
        "failMsg": "",
        "costTime": 162,
        "completeTime": 1767694162000,
        "createTime": 1767694000000,
        "updateTime": 1767694162000,
        "creditsConsumed": 110,
        "someNewField": {"added": "later"},
    }
    data.update(changes)
    return data


def test_documented_success_parses() -> None:
    task = parse_task(success_data())
    assert task.state is TaskState.SUCCESS
    assert task.result_urls == ("https://tempfile.aiquickdraw.com/r.mp4",)
    assert task.fail_code is None and task.fail_msg is None
    assert task.created_at == datetime.fromtimestamp(1767694000, UTC)
    assert task.completed_at == datetime.fromtimestamp(1767694162, UTC)
    assert task.cost_time == 162 and task.credits_consumed == 110
    assert task.input is not None and task.input.prompt == "A cartoon fox"
    assert task.callback_url == "https://example.com/hooks/kie"


@pytest.mark.parametrize(
    "changes",
    [
        {"failCode": None, "failMsg": None},
        {"costTime": 162000},  # the older docs' milliseconds
        {
            "param": json.dumps(
                {**json.loads(PARAM), "input": json.dumps(json.loads(PARAM)["input"])}
            )
        },
        {"taskId": None, "task_id": "e989621f54392584b05867f87b160672"},
        {"creditsConsumed": None},
    ],
)
def test_documented_variations_parse_alike(changes: dict[str, object]) -> None:
    data = success_data(**changes)
    if data.get("taskId") is None:
        del data["taskId"]
    task = parse_task(data)
    assert task.task_id == "e989621f54392584b05867f87b160672"
    assert task.fail_code is None
    assert task.cost_time == 162
    assert task.input is not None


def test_fail_and_pending_states_parse() -> None:
    failed = parse_task(
        success_data(
            state="fail",
            resultJson=None,
            failCode="500",
            failMsg="Internal server error",
            creditsConsumed=0,
        )
    )
    assert (failed.state, failed.fail_code, failed.fail_msg, failed.result_urls) == (
        TaskState.FAIL,
        "500",
        "Internal server error",
        (),
    )
    waiting = parse_task(
        success_data(
            state="waiting", resultJson=None, completeTime=None, costTime=None, failCode=None
        )
    )
    assert waiting.completed_at is None and waiting.cost_time is None and not waiting.is_terminal


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"state": "success"},
        {"taskId": "t"},
        {"taskId": "t", "state": None},
        {"taskId": "t", "state": 3},
        {"taskId": "t", "state": "  "},
        {"taskId": 12, "state": "success"},
        {"taskId": "has space", "state": "success"},
        {"taskId": "x" * 257, "state": "success"},
        {"taskId": "\ud800", "state": "success"},
    ],
)
def test_unparseable_task_data_raises_protocol_error(bad: object) -> None:
    with pytest.raises(errors.ProtocolError) as caught:
        parse_task(bad)
    assert isinstance(caught.value, ValueError) and caught.value.endpoint == "recordInfo"


@pytest.mark.parametrize("state", ["exploded", "CANCELED", "timeout"])
def test_an_unknown_state_reads_as_running_and_keeps_its_text(state: str) -> None:
    task = parse_task(success_data(state=state))
    assert task.state is TaskState.GENERATING and not task.is_terminal
    assert task.raw_state == state
    assert parse_task(success_data(state=" Success ")).raw_state is None


def test_odd_field_values_are_read_as_absent() -> None:
    task = parse_task(
        success_data(
            model={"nested": [1]},
            failCode=["500"],
            failMsg={"a": 1},
            costTime="1e999",
            creditsConsumed=10**400,
            createTime=True,
            completeTime="soon",
            updateTime=-(10**30),
            resultJson='{"resultUrls": "not a list"}',
            param='{"input": {"input_urls": "https://a.example/i.png", "video_urls": []}}',
        )
    )
    assert task.model == "kling-2.6/motion-control"
    assert (task.fail_code, task.fail_msg, task.cost_time, task.credits_consumed) == (
        None,
        None,
        None,
        None,
    )
    assert (task.created_at, task.completed_at, task.updated_at) == (None, None, None)
    assert task.result_urls == () and task.input is None


@pytest.mark.parametrize(
    ("parse", "bad"),
    [
        (parse_task_id, {"taskId": ""}),
        (parse_task_id, {"taskId": ["t"]}),
        (parse_task_id, {"taskId": "a\nb"}),
        (parse_task_id, None),
        (parse_credits, "lots"),
        (parse_credits, 10**400),
        (parse_credits, True),
        (parse_credits, {"credits": 1}),
        (parse_download_url, ""),
        (parse_download_url, "file:///etc/passwd"),
        (parse_download_url, "http://[::1"),
        (parse_download_url, ["https://a.example/x.mp4"]),
    ],
)
def test_every_parser_raises_protocol_errors(parse: object, bad: object) -> None:
    with pytest.raises(errors.ProtocolError) as caught:
        parse(bad)  # type: ignore[operator]
    assert caught.value.code == 0 and caught.value.endpoint


def test_the_parsers_read_good_data() -> None:
    assert (
        parse_task_id({"taskId": "task_kling-2.6_1767693973938"}) == "task_kling-2.6_1767693973938"
    )
    assert parse_task_id({"task_id": "abc"}) == "abc"
    assert parse_credits("12.5") == 12.5 and parse_credits(100) == 100.0
    assert parse_download_url("https://tempfile.example/a.mp4") == "https://tempfile.example/a.mp4"


def test_upload_answers_of_both_documented_shapes() -> None:
    per_endpoint = parse_uploaded_file(
        {
            "fileName": "dance.mp4",
            "filePath": "videos/user-uploads/dance.mp4",
            "downloadUrl": "https://tempfile.redpandaai.co/xxx/videos/user-uploads/dance.mp4",
            "fileSize": 18874368,
            "mimeType": "video/mp4",
            "uploadedAt": "2026-01-06T10:00:00.000Z",
        },
        now=NOW,
    )
    assert per_endpoint.expires_at - per_endpoint.uploaded_at == timedelta(hours=24)
    assert per_endpoint.size_bytes == 18874368
    quickstart = parse_uploaded_file(
        {
            "fileId": "f1",
            "fileName": "a.png",
            "uploadPath": "images",
            "fileUrl": "https://tempfile.redpandaai.co/xxx/images/a.png",
            "fileSize": 10,
            "mimeType": "image/png",
            "uploadTime": "2026-01-06T10:00:00Z",
            "expiresAt": "2026-01-06T12:00:00Z",
        },
        now=NOW,
    )
    assert quickstart.url.endswith("/images/a.png")
    assert quickstart.expires_at == datetime(2026, 1, 6, 12, tzinfo=UTC)
    with pytest.raises(errors.ProtocolError):
        parse_uploaded_file({"fileName": "x"}, now=NOW)
    with pytest.raises(errors.ProtocolError):
        parse_uploaded_file({"downloadUrl": "javascript:alert(1)"}, now=NOW)


def test_upload_answers_with_odd_fields_still_parse() -> None:
    odd = parse_uploaded_file(
        {
            "downloadUrl": "https://tempfile.redpandaai.co/xxx/a.png",
            "fileName": {"x": 1},
            "fileSize": -5,
            "mimeType": 7,
            "uploadedAt": "9999-12-31T23:59:59Z",
        },
        now=NOW,
    )
    assert (odd.file_name, odd.size_bytes, odd.mime_type) == (
        "a.png",
        0,
        "application/octet-stream",
    )
    assert odd.uploaded_at == NOW and odd.expires_at == NOW + timedelta(hours=24)
