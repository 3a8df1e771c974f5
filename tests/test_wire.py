"""The pure wire layer: answers in every documented variation, and errors in both transports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

import kling_async.errors as errors
from kling_async import MotionControlInput, TaskState
from kling_async.wire import (
    RETRY_AFTER_CAP,
    create_task_body,
    decode_answer,
    parse_retry_after,
    parse_task,
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
    with pytest.raises(errors.APIError, match="not a JSON object"):
        answer(200, b"<html>maintenance</html>")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
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
    "bad", [None, [], {"state": "success"}, {"taskId": "t", "state": "exploded"}]
)
def test_unparseable_task_data_raises_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_task(bad)


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
    with pytest.raises(ValueError):
        parse_uploaded_file({"fileName": "x"}, now=NOW)
