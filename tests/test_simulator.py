"""The simulator's documented behaviour, proven over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kling_async.errors import EdgeBlockedError
from kling_async.models import RateLimit
from kling_async.signature import compute_signature
from kling_async.simulator import LIBRARY_USER_AGENTS, FaultConfig, Simulator
from kling_async.wire import decode_answer

from .conftest import MEDIA, Receiver, SimFactory, media_urls, serve, upload_raw


def auth(sim: Simulator, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or sim.api_key}"}


def task_body(image_url: str, video_url: str, **changes: Any) -> dict[str, Any]:
    inp = {
        "input_urls": [image_url],
        "video_urls": [video_url],
        "character_orientation": "video",
        "mode": "720p",
    }
    body: dict[str, Any] = {"model": "kling-2.6/motion-control", "input": inp}
    for key, value in changes.items():
        if key in ("model", "callBackUrl", "input"):
            body[key] = value
        elif value is None:
            inp.pop(key, None)
        else:
            inp[key] = value
    return body


async def call(
    http: aiohttp.ClientSession,
    sim: Simulator,
    method: str,
    path: str,
    key: str | None = None,
    **kwargs: Any,
) -> tuple[int, dict[str, Any]]:
    headers = kwargs.pop("headers", None) or auth(sim, key)
    async with http.request(method, f"{sim.base_url}{path}", headers=headers, **kwargs) as r:
        return r.status, await r.json(content_type=None)


async def create(
    http: aiohttp.ClientSession, sim: Simulator, body: dict[str, Any], key: str | None = None
) -> dict[str, Any]:
    return (await call(http, sim, "POST", "/api/v1/jobs/createTask", key, json=body))[1]


async def record(http: aiohttp.ClientSession, sim: Simulator, task_id: str) -> dict[str, Any]:
    return (await call(http, sim, "GET", f"/api/v1/jobs/recordInfo?taskId={task_id}"))[1]


async def wait_terminal(
    http: aiohttp.ClientSession, sim: Simulator, task_id: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = await record(http, sim, task_id)
        if answer["code"] == 200 and answer["data"]["state"] in ("success", "fail"):
            return answer
        await asyncio.sleep(0.02)
    raise AssertionError("task did not finish")


# -- auth and error transport -------------------------------------------------------------------


@pytest.mark.parametrize("http_error_status", [False, True])
async def test_missing_or_wrong_key_gets_documented_401(
    make_sim: SimFactory, http: aiohttp.ClientSession, http_error_status: bool
) -> None:
    sim = await make_sim(http_error_status=http_error_status)
    expected_status = 401 if http_error_status else 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": sim.api_key}):
        status, body = await call(
            http, sim, "POST", "/api/v1/jobs/createTask", headers=headers or {"X": "1"}, json={}
        )
        assert (status, body["code"], body["msg"]) == (
            expected_status,
            401,
            "You do not have access permissions",
        )
        status, body = await call(
            http, sim, "GET", "/api/v1/jobs/recordInfo?taskId=x", headers=headers or {"X": "1"}
        )
        assert (status, body["code"], body["msg"]) == (expected_status, 401, "Unauthorized")
    async with http.post(
        f"{sim.upload_base_url}/api/file-base64-upload",
        json={},
        headers={"Authorization": "Bearer no"},
    ) as r:
        body = await r.json()
        assert (r.status, body["code"], body["success"]) == (expected_status, 401, False)
        assert body["msg"] == "Authentication failed: Invalid API Key"
    assert sim.count("createTask", code=401) == 3


async def test_unknown_route_is_a_real_404(sim: Simulator, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, sim, "GET", "/api/v1/nothing")
    assert (status, body["code"]) == (404, 404)


# -- createTask validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "code", "fragment"),
    [
        ({"model": "kling-2.5/other"}, 422, "model"),
        ({"input": None}, 422, "input is required"),
        ({"input_urls": None}, 422, "input_urls is required"),
        ({"video_urls": []}, 422, "video_urls is required"),
        ({"input_urls": ["http://a.example/1.png", "http://a.example/2.png"]}, 422, "exactly one"),
        ({"character_orientation": "side"}, 422, "character_orientation must be one of"),
        ({"character_orientation": None}, 422, "character_orientation is required"),
        ({"mode": "4k"}, 422, "mode must be one of"),
        ({"mode": "std"}, 422, "mode must be one of"),  # the schema's values only
        ({"background_source": "input_video"}, 422, "background_source is not an input of"),
        ({"model": "kling-3.0/motion-control", "mode": "pro"}, 422, "not within the range"),
        ({"model": "kling-3.0/motion-control", "background_source": "sky"}, 422, "must be one of"),
        ({"model": "kling-3.0/video-9"}, 422, "model must be one of"),
        ({"prompt": "x" * 2501}, 422, "2500"),
        ({"prompt": 5}, 422, "prompt must be a string"),
        ({"callBackUrl": "ftp://x"}, 422, "callBackUrl"),
        ({"input_urls": ["not a url"]}, 422, "not a valid URL"),
    ],
)
async def test_create_task_rejects_invalid_bodies(
    sim: Simulator, http: aiohttp.ClientSession, changes: dict[str, Any], code: int, fragment: str
) -> None:
    image, video = await media_urls(http, sim)
    answer = await create(http, sim, task_body(image, video, **changes))
    assert answer["code"] == code and fragment in answer["msg"], answer
    assert sim.tasks_created[sim.api_key] == 0


async def test_create_task_accepts_prompt_of_exactly_2500(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    image, video = await media_urls(http, sim)
    answer = await create(http, sim, task_body(image, video, prompt="x" * 2500))
    assert answer["code"] == 200 and len(answer["data"]["taskId"]) == 32


async def test_urls_must_point_at_known_files(sim: Simulator, http: aiohttp.ClientSession) -> None:
    image, video = await media_urls(http, sim)
    answer = await create(
        http, sim, task_body(image, f"{sim.upload_base_url}/files/tests/missing.mp4")
    )
    assert answer["code"] == 422 and "not found" in answer["msg"]
    answer = await create(http, sim, task_body(video, video))
    assert answer["code"] == 422 and "image/jpeg or image/png" in answer["msg"]
    answer = await create(http, sim, task_body(image, image))
    assert answer["code"] == 422 and "video/mp4" in answer["msg"]


async def test_unreachable_external_url_is_422(sim: Simulator, http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    image, _ = await media_urls(http, sim)
    answer = await create(http, sim, task_body(image, f"http://127.0.0.1:{port}/v.mp4"))
    assert answer["code"] == 422 and "not reachable" in answer["msg"]


@pytest.mark.parametrize(
    ("video", "orientation", "accepted"),
    [
        ("d2.9.mp4", "video", False),
        ("d3.0.mp4", "video", True),
        ("d10.0.mp4", "image", True),
        ("d10.5.mp4", "image", False),
        ("d12.mov", "image", False),
        ("d12.mov", "video", True),
        ("d30.0.mp4", "video", True),
        ("d30.2.mp4", "video", False),
        ("matroska.mkv", "image", True),
    ],
)
async def test_video_duration_is_checked_against_orientation(
    sim: Simulator, http: aiohttp.ClientSession, video: str, orientation: str, accepted: bool
) -> None:
    image, clip = await media_urls(http, sim, video)
    answer = await create(http, sim, task_body(image, clip, character_orientation=orientation))
    assert (answer["code"] == 200) is accepted, answer
    if not accepted:
        assert answer["code"] == 422 and "duration" in answer["msg"]


# -- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["input_video", "input_image", None])
async def test_kling_3_takes_a_background_source(
    sim: Simulator, http: aiohttp.ClientSession, source: str | None
) -> None:
    image, video = await media_urls(http, sim)
    body = task_body(image, video, model="kling-3.0/motion-control", background_source=source)
    task_id = (await create(http, sim, body))["data"]["taskId"]
    data = (await wait_terminal(http, sim, task_id))["data"]
    assert data["model"] == "kling-3.0/motion-control" and data["state"] == "success"
    assert json.loads(data["param"]) == body
    assert data["creditsConsumed"] == pytest.approx(200.0)  # 10 s at 20 credits/s


async def test_a_model_can_require_a_callback_url(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(callback_required_models=frozenset({"kling-3.0/motion-control"}))
    image, video = await media_urls(http, sim)
    v3 = task_body(image, video, model="kling-3.0/motion-control")
    answer = await create(http, sim, v3)
    assert answer["code"] == 422 and "callBackUrl is required" in answer["msg"]
    assert (await create(http, sim, task_body(image, video)))["code"] == 200  # 2.6: optional
    v3["callBackUrl"] = "http://127.0.0.1:9/hook"
    assert (await create(http, sim, v3))["code"] == 200


async def test_other_market_models_are_served_generically(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(market_models=frozenset({"acme/talking-avatar-7"}), credits=25.0)
    # Any input, judged by nobody here: unknown fields are kept as they came.
    body = {
        "model": "acme/talking-avatar-7",
        "input": {"script": "hello", "voice": {"id": 3, "speed": 1.5}, "new_field": [None]},
    }
    task_id = (await create(http, sim, body))["data"]["taskId"]
    data = (await wait_terminal(http, sim, task_id))["data"]
    assert (data["model"], data["state"]) == ("acme/talking-avatar-7", "success")
    assert json.loads(data["param"]) == body
    [url] = json.loads(data["resultJson"])["resultUrls"]
    async with http.get(url) as r:
        assert r.status == 200 and (await r.read())[4:8] == b"ftyp"
    assert sim.credits() == 25.0 - sim.config.market_credits
    # A name the simulator does not host is refused, and so is an input that is no object.
    for refused in ({**body, "model": "acme/talking-avatar-8"}, {**body, "input": "hello"}):
        answer = await create(http, sim, refused)
        assert answer["code"] == 422, answer
    # The flat price is still paid for: a balance too small is 402.
    assert (await create(http, sim, body))["code"] == 200
    assert (await create(http, sim, body))["code"] == 402


# -- lifecycle -----------------------------------------------------------------------------------


async def test_lifecycle_goes_through_every_state_with_documented_fields(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    # Stages of 0.5 s real: wide enough to see each one on a busy machine.
    sim = await make_sim(
        time_scale=0.05,
        invisible_seconds=5.0,
        waiting_seconds=10.0,
        queuing_seconds=10.0,
        generating_seconds=10.0,
    )
    image, video = await media_urls(http, sim)
    body = task_body(image, video, prompt="dance", callBackUrl="http://127.0.0.1:9/none")
    task_id = (await create(http, sim, body))["data"]["taskId"]
    first = await record(http, sim, task_id)
    assert first == {"code": 422, "msg": "recordInfo is null", "data": None}
    seen: list[str] = []
    answer = first
    while not seen or seen[-1] not in ("success", "fail"):
        answer = await record(http, sim, task_id)
        if answer["code"] == 200 and (not seen or seen[-1] != answer["data"]["state"]):
            seen.append(answer["data"]["state"])
        await asyncio.sleep(0.005)
    assert seen == ["waiting", "queuing", "generating", "success"]
    data = answer["data"]
    assert json.loads(data["param"]) == body
    result_urls = json.loads(data["resultJson"])["resultUrls"]
    assert len(result_urls) == 1 and result_urls[0].endswith(".mp4")
    assert data["completeTime"] - data["createTime"] == 30_000  # 10 + 10 + 10 nominal seconds
    assert data["costTime"] == 30
    assert data["creditsConsumed"] == pytest.approx(110.0)  # 10 s of 720p at 11 credits/s
    async with http.get(result_urls[0]) as r:
        assert r.status == 200 and (await r.read())[4:8] == b"ftyp"


async def test_failed_task_reports_fail_code_and_costs_nothing(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(failure_rate=1.0)
    image, video = await media_urls(http, sim)
    before = sim.credits()
    task_id = (await create(http, sim, task_body(image, video)))["data"]["taskId"]
    data = (await wait_terminal(http, sim, task_id))["data"]
    assert (data["state"], data["failCode"], data["failMsg"]) == (
        "fail",
        "500",
        "Internal server error",
    )
    assert data["creditsConsumed"] == 0 and data["resultJson"] is None
    assert (await call(http, sim, "GET", "/api/v1/chat/credit"))[1]["data"] == before


async def test_record_info_errors(sim: Simulator, http: aiohttp.ClientSession) -> None:
    _status, body = await call(http, sim, "GET", "/api/v1/jobs/recordInfo")
    assert body == {"code": 400, "msg": "taskId parameter is required", "data": None}
    body = await record(http, sim, "0" * 32)
    assert body == {"code": 422, "msg": "recordInfo is null", "data": None}


async def test_tasks_are_private_to_their_key(sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.add_key("other-key")
    image, video = await media_urls(http, sim)
    task_id = (await create(http, sim, task_body(image, video)))["data"]["taskId"]
    await wait_terminal(http, sim, task_id)
    _status, body = await call(
        http, sim, "GET", f"/api/v1/jobs/recordInfo?taskId={task_id}", key="other-key"
    )
    assert body["code"] == 422


# -- credits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "prices"),
    [("kling-2.6/motion-control", (11, 18)), ("kling-3.0/motion-control", (20, 27))],
)
async def test_credits_are_charged_per_second_and_mode(
    make_sim: SimFactory, http: aiohttp.ClientSession, model: str, prices: tuple[int, int]
) -> None:
    sim = await make_sim(credits=1000.0)
    image, video = await media_urls(http, sim, "d10.0.mp4")
    ids = [
        (await create(http, sim, task_body(image, video, mode=mode, model=model)))["data"]["taskId"]
        for mode in ("720p", "1080p")
    ]
    for task_id in ids:
        data = (await wait_terminal(http, sim, task_id))["data"]
        assert data["model"] == model
    _status, body = await call(http, sim, "GET", "/api/v1/chat/credit")
    spent = 10 * prices[0] + 10 * prices[1]  # 10 s at 720p, then at 1080p
    assert body == {"code": 200, "msg": "success", "data": pytest.approx(1000 - spent)}


async def test_insufficient_credits_is_402(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(credits=200.0)
    image, video = await media_urls(http, sim, "d10.0.mp4")
    assert (await create(http, sim, task_body(image, video)))["code"] == 200  # reserves 110
    answer = await create(http, sim, task_body(image, video))
    assert answer["code"] == 402 and answer["msg"] == "Credits insufficient"
    assert sim.tasks_created[sim.api_key] == 1


# -- rate limits ---------------------------------------------------------------------------------


async def test_create_limit_rejects_the_21st_in_a_window_and_does_not_queue(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    # Real time (scale 1): the 10 s window is far longer than 21 local requests take.
    sim = await make_sim(time_scale=1.0)
    image, video = await media_urls(http, sim)
    codes = [(await create(http, sim, task_body(image, video)))["code"] for _ in range(21)]
    assert codes == [200] * 20 + [429]
    assert sim.rate_limited["createTask"] == 1
    assert sim.tasks_created[sim.api_key] == 20
    sim.add_key("second-key")  # the limit is per key
    assert (await create(http, sim, task_body(image, video), key="second-key"))["code"] == 200


async def test_query_limit_and_window_sliding(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(time_scale=1.0, query_limit=RateLimit(10, 4.0))
    codes = [(await record(http, sim, "x" * 32))["code"] for _ in range(11)]
    assert codes == [422] * 10 + [429]
    sim2 = await make_sim(time_scale=0.05, query_limit=RateLimit(3, 4.0))  # window 0.2 s real
    codes = [(await record(http, sim2, "x"))["code"] for _ in range(4)]
    assert codes[:3] == [422] * 3 and codes[3] in (422, 429)
    await asyncio.sleep(0.25)
    assert (await record(http, sim2, "x"))["code"] == 422


# -- callbacks -----------------------------------------------------------------------------------


def test_signature_matches_documented_test_vector() -> None:
    signature = compute_signature(
        "e989621f54392584b05867f87b160672", "1767694163", "test-webhook-hmac-key"
    )
    assert signature == "qLqsoh/Fp4aR8mgDjSRNTjEn7DB3m+4pxkFPLI/kdmY="


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("failure_rate", [0.0, 1.0])
async def test_callback_is_signed_and_carries_the_documented_body(
    make_sim: SimFactory, http: aiohttp.ClientSession, receiver: Receiver, failure_rate: float
) -> None:
    sim = await make_sim(failure_rate=failure_rate)
    image, video = await media_urls(http, sim)
    task_id = (await create(http, sim, task_body(image, video, callBackUrl=receiver.url)))["data"][
        "taskId"
    ]
    await wait_for(lambda: receiver.received)
    headers, raw = receiver.received[0]
    body = json.loads(raw)
    assert body["data"]["taskId"] == task_id
    if failure_rate:
        assert (body["code"], body["msg"], body["data"]["state"]) == (
            501,
            "Playground task failed.",
            "fail",
        )
    else:
        assert (body["code"], body["data"]["state"]) == (200, "success")
        assert json.loads(body["data"]["resultJson"])["resultUrls"]
    timestamp = headers["X-Webhook-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    assert headers["X-Webhook-Signature"] == compute_signature(
        task_id, timestamp, "sim-webhook-hmac-key"
    )
    assert len(receiver.received) == 1  # a 200 answer ends delivery


async def test_callback_is_retried_then_given_up(
    make_sim: SimFactory, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.status = 500
    sim = await make_sim(callback_attempts=3, callback_retry_delay=1.0, webhook_hmac_key=None)
    image, video = await media_urls(http, sim)
    await create(http, sim, task_body(image, video, callBackUrl=receiver.url))
    await wait_for(lambda: len(sim.callbacks) == 3 and sim.callbacks[-1].status is not None)
    assert [d.attempt for d in sim.callbacks] == [1, 2, 3]
    assert all(d.status == 500 for d in sim.callbacks)
    assert len(receiver.received) == 3
    assert "X-Webhook-Signature" not in receiver.received[0][0]  # no HMAC key: unsigned


# -- uploads -------------------------------------------------------------------------------------


async def test_three_upload_methods_host_the_same_bytes(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    raw = (MEDIA / "portrait.jpg").read_bytes()
    streamed = await upload_raw(http, sim, MEDIA / "portrait.jpg", "images/a", "p.jpg")
    assert streamed["success"] is True and streamed["msg"] == "File uploaded successfully"
    data = streamed["data"]
    assert (data["fileName"], data["filePath"], data["fileSize"], data["mimeType"]) == (
        "p.jpg",
        "images/a/p.jpg",
        len(raw),
        "image/jpeg",
    )
    assert data["uploadedAt"].endswith("Z")
    encoded = "data:image/jpeg;base64," + base64.b64encode(raw).decode()
    async with http.post(
        f"{sim.upload_base_url}/api/file-base64-upload",
        json={"base64Data": encoded, "uploadPath": "images/b", "fileName": "b.jpg"},
        headers=auth(sim),
    ) as r:
        b64 = await r.json()
    async with http.post(
        f"{sim.upload_base_url}/api/file-url-upload",
        json={"fileUrl": data["downloadUrl"], "uploadPath": "images/c"},
        headers=auth(sim),
    ) as r:
        by_url = await r.json()
    for answer in (streamed, b64, by_url):
        async with http.get(answer["data"]["downloadUrl"]) as r:
            assert r.status == 200 and await r.read() == raw


async def test_same_name_overwrites_and_random_name_otherwise(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    first = await upload_raw(http, sim, MEDIA / "portrait.png", "x", "same.png")
    second = await upload_raw(http, sim, MEDIA / "portrait.jpg", "x", "same.png")
    assert first["data"]["downloadUrl"] == second["data"]["downloadUrl"]
    async with http.get(first["data"]["downloadUrl"]) as r:
        assert await r.read() == (MEDIA / "portrait.jpg").read_bytes()
    a = await upload_raw(http, sim, MEDIA / "portrait.png", "x")
    b = await upload_raw(http, sim, MEDIA / "portrait.png", "x")
    assert a["data"]["fileName"] != b["data"]["fileName"]
    assert a["data"]["fileName"].endswith(".png")


@pytest.mark.parametrize(
    ("endpoint", "payload", "fragment"),
    [
        ("file-base64-upload", {"uploadPath": "x"}, "base64Data"),
        ("file-base64-upload", {"base64Data": "aGVsbG8=", "uploadPath": ""}, "uploadPath"),
        (
            "file-base64-upload",
            {"base64Data": "%%%not", "uploadPath": "x"},
            "Base64 decoding failed",
        ),
        ("file-base64-upload", {"base64Data": "aGVsbG8=", "uploadPath": "../up"}, "uploadPath"),
        ("file-url-upload", {"fileUrl": "nope", "uploadPath": "x"}, "fileUrl"),
    ],
)
async def test_upload_errors_are_400(
    sim: Simulator,
    http: aiohttp.ClientSession,
    endpoint: str,
    payload: dict[str, Any],
    fragment: str,
) -> None:
    async with http.post(
        f"{sim.upload_base_url}/api/{endpoint}", json=payload, headers=auth(sim)
    ) as r:
        body = await r.json()
    assert body["code"] == 400 and body["success"] is False and fragment in body["msg"]


async def test_stream_upload_without_upload_path_is_400(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"data", filename="a.bin")
    async with http.post(
        f"{sim.upload_base_url}/api/file-stream-upload", data=form, headers=auth(sim)
    ) as r:
        body = await r.json()
    assert body == {"code": 400, "msg": "Missing required parameter: uploadPath", "success": False}


async def test_uploaded_files_expire(make_sim: SimFactory, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(upload_lifetime=20.0)  # 0.1 s real
    url = (await upload_raw(http, sim, MEDIA / "portrait.png"))["data"]["downloadUrl"]
    await asyncio.sleep(0.3)
    async with http.get(url) as r:
        assert r.status == 404


async def test_split_hosts_serve_uploads_apart(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(split_hosts=True)
    assert sim.base_url != sim.upload_base_url
    answer = await upload_raw(http, sim, MEDIA / "portrait.png")
    assert answer["data"]["downloadUrl"].startswith(sim.upload_base_url)
    async with http.post(f"{sim.base_url}/api/file-stream-upload", headers=auth(sim)) as r:
        assert r.status == 404


# -- bad requests never crash it ----------------------------------------------------------------


async def test_bad_bodies_get_clear_answers(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(max_json_bytes=1000)
    url = "/api/v1/jobs/createTask"
    headers = {**auth(sim), "Content-Type": "application/json"}
    assert (await call(http, sim, "POST", url, data=b"{oops", headers=headers))[1][
        "msg"
    ] == "Request body is not valid JSON"
    assert (await call(http, sim, "POST", url, data=b"[1]", headers=headers))[1][
        "msg"
    ] == "Request body must be a JSON object"
    _status, body = await call(http, sim, "POST", url, data=b"x" * 5000, headers=headers)
    assert body["code"] == 400 and "too large" in body["msg"]
    _status, body = await call(
        http, sim, "POST", url, data=b"model=x", headers={**auth(sim), "Content-Type": "text/plain"}
    )
    assert body["code"] == 400 and "Content-Type" in body["msg"]
    # Still serving afterwards.
    assert (await call(http, sim, "GET", "/api/v1/chat/credit"))[1]["code"] == 200


# -- download-url ------------------------------------------------------------------------------


async def test_download_url_gives_a_working_link_for_generated_files_only(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    image, video = await media_urls(http, sim)
    task_id = (await create(http, sim, task_body(image, video)))["data"]["taskId"]
    result = json.loads((await wait_terminal(http, sim, task_id))["data"]["resultJson"])[
        "resultUrls"
    ][0]
    _status, body = await call(
        http, sim, "POST", "/api/v1/common/download-url", json={"url": result}
    )
    assert body["code"] == 200
    async with http.get(body["data"]) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
    _status, body = await call(
        http,
        sim,
        "POST",
        "/api/v1/common/download-url",
        json={"url": "https://elsewhere.example/a.mp4"},
    )
    assert body["code"] == 422
    result_gets = [r for r in sim.requests if r.endpoint == "result"]
    assert result_gets and not any(r.had_authorization for r in result_gets)


# -- faults and time scale ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code"), [("error_500", 500), ("error_455", 455), ("error_429", 429)]
)
async def test_injected_error_codes(
    make_sim: SimFactory, http: aiohttp.ClientSession, fault: str, code: int
) -> None:
    sim = await make_sim(faults=FaultConfig(**{fault: 1.0}, endpoints=frozenset({"credit"})))
    assert (await call(http, sim, "GET", "/api/v1/chat/credit"))[1]["code"] == code
    assert sim.requests[-1].fault == str(code)
    assert sim.rate_limited == {"createTask": 0, "recordInfo": 0}  # injected 429s are not counted


async def test_dropped_connection_before_and_after_processing(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    image, video = await media_urls(http, sim)
    sim.reconfigure(faults=FaultConfig(drop=1.0, endpoints=frozenset({"createTask"})))
    with pytest.raises(aiohttp.ClientError):
        await create(http, sim, task_body(image, video))
    assert sim.tasks_created[sim.api_key] == 0
    sim.reconfigure(faults=FaultConfig(drop_after=1.0, endpoints=frozenset({"createTask"})))
    with pytest.raises(aiohttp.ClientError):
        await create(http, sim, task_body(image, video))
    assert sim.tasks_created[sim.api_key] == 1  # the answer was lost, the task exists


async def test_slow_answers_are_delayed(make_sim: SimFactory, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(time_scale=0.01, faults=FaultConfig(slow=1.0, slow_seconds=30.0))  # 0.3 s
    start = time.monotonic()
    assert (await call(http, sim, "GET", "/api/v1/chat/credit"))[1]["code"] == 200
    assert time.monotonic() - start >= 0.3
    assert sim.requests[-1].fault == "slow"


async def test_faults_are_seeded_and_reproducible(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    runs = []
    for _ in range(2):
        sim = await make_sim(faults=FaultConfig(error_500=0.3, error_455=0.2, seed=7))
        codes = [
            (await call(http, sim, "GET", "/api/v1/chat/credit"))[1]["code"] for _ in range(30)
        ]
        runs.append(codes)
    assert runs[0] == runs[1]
    assert {200, 500, 455} <= set(runs[0])


async def test_time_scale_stretches_every_duration(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    slow = await make_sim(time_scale=0.02)
    image, video = await media_urls(http, slow)
    created = time.monotonic()
    task_id = (await create(http, slow, task_body(image, video)))["data"]["taskId"]
    data = (await wait_terminal(http, slow, task_id))["data"]
    elapsed = time.monotonic() - created
    assert elapsed >= 2.0  # 100 nominal seconds at 0.02 take at least 2 s real...
    assert elapsed < 12.0  # ...and nowhere near 100 s
    assert data["completeTime"] - data["createTime"] == 100_000  # reported in nominal time


# -- the command ---------------------------------------------------------------------------------


async def test_runs_as_a_command(http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kling_async.simulator",
            "--port",
            str(port),
            "--api-key",
            "cli-key",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = await asyncio.to_thread(proc.stdout.readline)
        assert f"127.0.0.1:{port}" in banner
        async with http.get(
            f"http://127.0.0.1:{port}/api/v1/chat/credit",
            headers={"Authorization": "Bearer cli-key"},
        ) as r:
            assert (await r.json())["code"] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_reachable_external_urls_are_fetched_and_checked(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    from aiohttp import web

    async def send_file(request: web.Request) -> web.FileResponse:
        return web.FileResponse(MEDIA / request.match_info["name"])

    app = web.Application()
    app.router.add_get("/{name}", send_file)
    async with serve(app) as external:
        answer = await create(
            http, sim, task_body(f"{external}/portrait.jpg", f"{external}/d10.0.mp4")
        )
        assert answer["code"] == 200
        answer = await create(
            http,
            sim,
            task_body(
                f"{external}/portrait.jpg", f"{external}/d12.mov", character_orientation="image"
            ),
        )
        assert answer["code"] == 422 and "duration" in answer["msg"]


async def test_an_upload_over_the_size_limit_is_a_clear_400(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(max_upload_bytes=1000)
    form = aiohttp.FormData()
    form.add_field("file", b"x" * 5000, filename="big.bin")
    form.add_field("uploadPath", "x")
    async with http.post(
        f"{sim.upload_base_url}/api/file-stream-upload", data=form, headers=auth(sim)
    ) as r:
        body = await r.json()
    assert body == {"code": 400, "msg": "File too large", "success": False}
    assert (await call(http, sim, "GET", "/api/v1/chat/credit"))[1]["code"] == 200


async def test_the_request_log_can_be_bounded(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(request_log_limit=5)
    for _ in range(30):
        await call(http, sim, "GET", "/api/v1/chat/credit")
    assert 5 <= len(sim.requests) <= 10


async def test_stats_endpoint_serves_counters_for_a_simulator_run_apart(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    image, video = await media_urls(http, sim)
    task_id = (await create(http, sim, task_body(image, video)))["data"]["taskId"]
    await record(http, sim, task_id)
    async with http.get(f"{sim.base_url}/_simulator/stats?endpoint=createTask") as r:
        stats = await r.json()
    assert stats["tasks_created"] == {sim.api_key: 1}
    assert stats["rate_limited"] == {"createTask": 0, "recordInfo": 0}
    assert stats["completed_at"][task_id] == pytest.approx(sim.completed_at(task_id))
    assert [row[0] for row in stats["requests"]] == ["createTask"]


# -- the real service's odd answers (kie-api.md section 9b) --------------------------------------

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) kling-tests/1.0"}


async def test_the_edge_refuses_library_user_agents_with_a_bare_403(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(edge_block_user_agents=LIBRARY_USER_AGENTS)
    url = f"{sim.base_url}/api/v1/chat/credit"
    async with http.get(url, headers=auth(sim)) as r:  # aiohttp's own "Python/3.x aiohttp/..."
        assert (r.status, r.content_type, await r.text()) == (403, "text/plain", "error code: 1010")
        with pytest.raises(EdgeBlockedError):
            decode_answer(
                r.status, r.headers, await r.read(), endpoint="credit", now=datetime.now(UTC)
            )
    async with http.get(url, headers=auth(sim), skip_auto_headers=["User-Agent"]) as r:
        assert r.status == 403
    async with http.post(
        f"{sim.upload_base_url}/api/file-base64-upload",
        json={},
        headers={**auth(sim), "User-Agent": "python-httpx/0.27"},
    ) as r:
        assert r.status == 403
    async with http.get(url, headers={**auth(sim), **BROWSER}) as r:
        assert r.status == 200 and (await r.json())["code"] == 200
    assert [r.fault for r in sim.requests] == ["edge_block"] * 3 + [None]
    assert [r.code for r in sim.requests] == [403, 403, 403, 200]


async def test_the_edge_is_off_by_default(sim: Simulator, http: aiohttp.ClientSession) -> None:
    async with http.get(
        f"{sim.base_url}/api/v1/chat/credit", headers=auth(sim), skip_auto_headers=["User-Agent"]
    ) as r:
        assert r.status == 200 and (await r.json())["code"] == 200
    assert sim.requests[-1].fault is None


@pytest.mark.parametrize("http_error_status", [False, True])
async def test_a_sub_key_quota_fault_is_433_and_creates_nothing(
    make_sim: SimFactory, http: aiohttp.ClientSession, http_error_status: bool
) -> None:
    sim = await make_sim(http_error_status=http_error_status)
    image, video = await media_urls(http, sim)
    sim.reconfigure(faults=FaultConfig(error_433=1.0, endpoints=frozenset({"createTask"})))
    status, body = await call(
        http, sim, "POST", "/api/v1/jobs/createTask", json=task_body(image, video)
    )
    assert (status, body["code"]) == (433 if http_error_status else 200, 433)
    assert sim.tasks_created[sim.api_key] == 0 and sim.requests[-1].fault == "433"


async def test_record_info_can_answer_404_right_after_creation(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(invisible_code=404, invisible_seconds=1e6)
    image, video = await media_urls(http, sim)
    task_id = (await create(http, sim, task_body(image, video)))["data"]["taskId"]
    assert await record(http, sim, task_id) == {"code": 404, "msg": "Task not found", "data": None}
    assert (await record(http, sim, "0" * 32))["code"] == 422  # an unknown task: as before
    sim.reconfigure(invisible_seconds=0.0)
    assert (await record(http, sim, task_id))["code"] == 200


@pytest.mark.parametrize(("status", "title"), [(502, "Bad Gateway"), (504, "Gateway Time-out")])
async def test_a_gateway_page_after_the_task_was_created(
    make_sim: SimFactory, http: aiohttp.ClientSession, status: int, title: str
) -> None:
    sim = await make_sim()
    image, video = await media_urls(http, sim)
    sim.reconfigure(
        faults=FaultConfig(
            gateway_after=1.0, gateway_status=status, endpoints=frozenset({"createTask"})
        )
    )
    async with http.post(
        f"{sim.base_url}/api/v1/jobs/createTask", json=task_body(image, video), headers=auth(sim)
    ) as r:
        assert (r.status, r.content_type) == (status, "text/html")
        assert title in await r.text()
    assert sim.tasks_created[sim.api_key] == 1  # the task exists although the answer says no
    assert (sim.requests[-1].fault, sim.requests[-1].code) == ("gateway_after", status)


async def test_a_success_without_task_id_after_the_task_was_created(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    image, video = await media_urls(http, sim)
    sim.reconfigure(faults=FaultConfig(no_task_id=1.0, endpoints=frozenset({"createTask"})))
    assert await create(http, sim, task_body(image, video)) == {
        "code": 200,
        "msg": "success",
        "data": {},
    }
    assert sim.tasks_created[sim.api_key] == 1 and len(sim.tasks) == 1


async def test_a_result_download_can_be_an_html_error_page(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    image, video = await media_urls(http, sim)
    task_id = (await create(http, sim, task_body(image, video)))["data"]["taskId"]
    answer = await wait_terminal(http, sim, task_id)
    result = json.loads(answer["data"]["resultJson"])["resultUrls"][0]
    sim.reconfigure(faults=FaultConfig(html_200=1.0, endpoints=frozenset({"result"})))
    async with http.get(result) as r:
        assert (r.status, r.content_type) == (200, "text/html")
        assert (await r.read()).startswith(b"<html>")
    assert sim.requests[-1].fault == "html_200"
    # The API itself is untouched by a fault aimed at downloads.
    assert (await record(http, sim, task_id))["data"]["state"] == "success"


async def test_an_upload_answer_can_trickle(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    # One byte every 0.5 nominal s = 1 ms real: a 300-byte answer takes 0.3 s at least.
    sim = await make_sim(
        time_scale=0.002,
        faults=FaultConfig(trickle=1.0, endpoints=frozenset({"streamUpload"})),
    )
    started = time.monotonic()
    answer = await upload_raw(http, sim, MEDIA / "portrait.png")
    elapsed = time.monotonic() - started
    size = len(json.dumps(answer).encode())
    assert elapsed >= 0.9 * size * 0.001
    assert answer["data"]["downloadUrl"] and sim.requests[-1].fault == "trickle"


async def test_a_download_can_trickle(make_sim: SimFactory, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(time_scale=0.02)  # one byte every 10 ms
    url = (await upload_raw(http, sim, MEDIA / "d3.0.mp4"))["data"]["downloadUrl"]
    sim.reconfigure(faults=FaultConfig(trickle=1.0, endpoints=frozenset({"file"})))
    started = time.monotonic()
    async with http.get(url) as r:
        assert r.content_length == (MEDIA / "d3.0.mp4").stat().st_size
        head = await r.content.readexactly(8)
        elapsed = time.monotonic() - started
    assert head[4:8] == b"ftyp"
    assert elapsed >= 7 * 0.01  # the eighth byte comes after seven pauses
    assert sim.requests[-1].fault == "trickle"


@pytest.mark.parametrize("kind", ["455", "500", "drop"])
async def test_an_outage_of_record_info_while_tasks_keep_rendering(
    make_sim: SimFactory, http: aiohttp.ClientSession, kind: str
) -> None:
    sim = await make_sim(time_scale=0.01)  # tasks take 100 nominal s = 1 s
    image, video = await media_urls(http, sim)
    task_id = (await create(http, sim, task_body(image, video)))["data"]["taskId"]
    sim.outage(kind, 100.0)  # longer than the task has left to render
    if kind == "drop":
        with pytest.raises(aiohttp.ClientError):
            await record(http, sim, task_id)
    else:
        assert (await record(http, sim, task_id))["code"] == int(kind)
    assert sim.requests[-1].fault == f"outage-{kind}"
    # Other endpoints still answer, and the outage does not stop tasks.
    assert (await call(http, sim, "GET", "/api/v1/chat/credit"))[1]["code"] == 200
    end = sim.now() + 100.0
    await wait_for(lambda: sim.now() > end)
    answer = await record(http, sim, task_id)
    assert answer["code"] == 200 and answer["data"]["state"] == "success"


async def test_outage_arguments_are_checked(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="kind"):
        sim.outage("503", 1.0)
    with pytest.raises(ValueError, match="seconds"):
        sim.outage("455", -1.0)


def test_the_simulators_own_media_reader_agrees_with_ffprobe() -> None:
    # The simulator judges durations with readers of its own (never the client's): checked here
    # against ffprobe's figures, shipped with the test media.
    import json

    from kling_async.simulator._media import sniff, video_seconds

    manifest = json.loads((MEDIA / "manifest.json").read_text())
    checked = 0
    for name, facts in manifest.items():
        path = MEDIA / name
        kind = sniff(path.read_bytes()[:32])
        if kind not in ("mp4", "mov", "matroska"):
            continue
        seconds = video_seconds(path, kind)
        if seconds is None:
            # Only a Matroska file without a Duration (a live one) may go unread: refused.
            assert kind == "matroska", name
            continue
        truth = facts["video_duration"] or facts["format_duration"]
        assert abs(seconds - truth) < 0.06, (name, seconds, truth)
        checked += 1
    assert checked >= 12


def test_the_simulators_media_reader_never_raises_on_crafted_files(tmp_path: Path) -> None:
    import struct

    from kling_async.simulator._media import video_seconds

    cases = {
        "mvhd-without-body.mp4": struct.pack(">I4s", 8, b"ftyp") + struct.pack(">I4s", 8, b"mvhd"),
        "nested-moov.mp4": b"".join(
            struct.pack(">I4s", 8 + 8 * (3000 - i), b"moov") for i in range(3000)
        ),
        "huge-scale.mkv": bytes.fromhex("1a45dfa3")
        + b"\x80"
        + bytes.fromhex("18538067")
        + b"\xff"
        + bytes.fromhex("1549a966")
        + b"\xff"
        + bytes.fromhex("2ad7b1")
        + b"\x41\x90"
        + b"\xff" * 400,
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        kind = "matroska" if name.endswith(".mkv") else "mp4"
        assert video_seconds(path, kind) is None, name
