"""Webhooks: signature checks, callback parsing, the receiver, and webhook-first waiting."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kling_async import MotionControlInput, TaskState
from kling_async.settings import DEFAULT_FALLBACK_POLL
from kling_async.signature import compute_signature
from kling_async.simulator import Simulator
from kling_async.webhooks import (
    MalformedCallbackError,
    WebhookReceiver,
    WebhookVerificationError,
    callback_token,
    callback_url_with_token,
    parse_callback,
    verify_signature,
)

from .conftest import SimFactory, eventually, media_urls, serve, session_for

VECTOR = (
    "e989621f54392584b05867f87b160672",
    "1767694163",
    "qLqsoh/Fp4aR8mgDjSRNTjEn7DB3m+4pxkFPLI/kdmY=",
)
KEY = "test-webhook-hmac-key"
DOC_BODY = {
    "code": 200,
    "msg": "Playground task completed successfully.",
    "data": {
        "taskId": VECTOR[0],
        "model": "kling-2.6/motion-control",
        "state": "success",
        "param": "{}",
        "resultJson": '{"resultUrls":["https://tempfile.aiquickdraw.com/kieai/market/1767694162000_abcd1234.mp4"]}',
        "failCode": None,
        "failMsg": None,
        "costTime": 162,
        "completeTime": 1767694162000,
        "createTime": 1767694000000,
        "updateTime": 1767694162000,
        "creditsConsumed": 110,
    },
}


def test_documented_test_vector_verifies() -> None:
    verify_signature(*VECTOR, KEY, now=1767694163 + 299)


@pytest.mark.parametrize(
    ("timestamp", "signature", "key", "now", "reason"),
    [
        (None, VECTOR[2], KEY, 1767694163, "missing-header"),
        (VECTOR[1], "", KEY, 1767694163, "missing-header"),
        ("17676941.63", VECTOR[2], KEY, 1767694163, "malformed-timestamp"),
        ("soon", VECTOR[2], KEY, 1767694163, "malformed-timestamp"),
        (VECTOR[1], VECTOR[2], KEY, 1767694163 + 301, "stale"),
        (VECTOR[1], VECTOR[2], KEY, 1767694163 - 301, "stale"),
        (VECTOR[1], VECTOR[2], "other-key", 1767694163, "bad-signature"),
        (VECTOR[1], VECTOR[2].lower(), KEY, 1767694163, "bad-signature"),
    ],
)
def test_each_rejection_says_why(
    timestamp: str | None, signature: str, key: str, now: float, reason: str
) -> None:
    with pytest.raises(WebhookVerificationError) as caught:
        verify_signature(VECTOR[0], timestamp, signature, key, now=now)
    assert caught.value.reason == reason


def test_parse_callback_success_and_failure_bodies() -> None:
    task = parse_callback(json.dumps(DOC_BODY).encode())
    assert task.task_id == VECTOR[0] and task.state is TaskState.SUCCESS
    assert task.result_urls[0].endswith("abcd1234.mp4") and task.cost_time == 162
    failed = dict(DOC_BODY, code=501, msg="Playground task failed.")
    failed["data"] = dict(
        DOC_BODY["data"],
        state="fail",
        resultJson=None,
        failCode="500",  # type: ignore[arg-type]
        failMsg="Internal server error",
        creditsConsumed=0,
    )
    task = parse_callback(json.dumps(failed).encode())
    assert (task.state, task.fail_code, task.fail_msg) == (
        TaskState.FAIL,
        "500",
        "Internal server error",
    )


@pytest.mark.parametrize(
    "where",
    [
        lambda d: d["data"],
        lambda d: {**d["data"], "task_id": d["data"].pop("taskId")},
    ],
)
def test_task_id_is_found_in_each_documented_place(where: Any) -> None:
    body = json.loads(json.dumps(DOC_BODY))
    body["data"] = where(body)
    assert parse_callback(json.dumps(body).encode()).task_id == VECTOR[0]
    top = json.loads(json.dumps(DOC_BODY))
    top["taskId"] = top["data"].pop("taskId")
    assert parse_callback(json.dumps(top).encode()).task_id == VECTOR[0]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"data": {"state": "success"}}',
        json.dumps({"data": {**DOC_BODY["data"], "state": "generating"}}).encode(),
    ],  # type: ignore[dict-item]
)
def test_malformed_callbacks(body: bytes) -> None:
    with pytest.raises(MalformedCallbackError):
        parse_callback(body)


# -- against the simulator -------------------------------------------------------------------------


async def hooked(sim: Simulator, receiver: WebhookReceiver, **settings: Any) -> Any:
    url = receiver.url or await receiver.start()
    return session_for(sim, webhook=receiver, callback_url=url, **settings)


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> int:
    async with http.post(url, data=json.dumps(body), headers=headers or {}) as r:
        return r.status


def signed(task_id: str, key: str, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "X-Webhook-Timestamp": stamp,
        "X-Webhook-Signature": compute_signature(task_id, stamp, key),
    }


async def test_signed_callbacks_resolve_waits(sim: Simulator, http: aiohttp.ClientSession) -> None:
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    image, video = await media_urls(http, sim)
    async with await hooked(sim, receiver) as kling:
        ids = [await kling.create_task(MotionControlInput(image, video)) for _ in range(10)]
        tasks = await asyncio.gather(*(kling.wait_for_task(i) for i in ids))
    await receiver.close()
    assert all(t.state is TaskState.SUCCESS and t.result_urls for t in tasks)
    assert receiver.accepted == 10 and receiver.rejected == 0
    assert sim.count("recordInfo") == 10  # one confirmation each, no polling


async def test_forged_stale_and_malformed_callbacks_resolve_nothing(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(time_scale=0.04)  # tasks take 4 s real
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    image, video = await media_urls(http, sim)
    async with await hooked(sim, receiver) as kling:
        task_id = await kling.create_task(MotionControlInput(image, video))
        wait = asyncio.create_task(kling.wait_for_task(task_id))
        fake = json.loads(json.dumps(DOC_BODY))
        fake["data"]["taskId"] = task_id
        assert receiver.url is not None
        assert await post(http, receiver.url, fake, signed(task_id, "wrong-key")) == 401
        assert (
            await post(http, receiver.url, fake, signed(task_id, sim.webhook_hmac_key or "", 1000))
            == 401
        )
        assert await post(http, receiver.url, fake) == 401
        assert await post(http, receiver.url, {"data": {"nothing": 1}}, signed(task_id, "x")) == 400
        await asyncio.sleep(0.2)
        assert not wait.done()
        task = await wait
    await receiver.close()
    assert receiver.rejected == 3 and receiver.malformed == 1
    assert task.result_urls[0].startswith(sim.base_url)


async def test_replayed_signature_with_forged_body_never_yields_a_fake_result(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(time_scale=0.04)  # tasks take 4 s real
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    image, video = await media_urls(http, sim)
    async with await hooked(sim, receiver) as kling:
        task_id = await kling.create_task(MotionControlInput(image, video))
        wait = asyncio.create_task(kling.wait_for_task(task_id))
        # A captured (task id, timestamp, signature) triple, replayed with a body of its own.
        forged = json.loads(json.dumps(DOC_BODY))
        forged["data"]["taskId"] = task_id
        assert receiver.url is not None
        assert (
            await post(http, receiver.url, forged, signed(task_id, sim.webhook_hmac_key or ""))
            == 200
        )
        await eventually(lambda: sim.count("recordInfo") >= 1)  # the confirming query
        assert not wait.done()
        task = await wait
    await receiver.close()
    assert "aiquickdraw" not in task.result_urls[0]
    assert task.result_urls[0].startswith(sim.base_url)


async def test_duplicate_deliveries_are_harmless(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    image, video = await media_urls(http, sim)
    async with await hooked(sim, receiver) as kling:
        task_id = await kling.create_task(MotionControlInput(image, video))
        task = await kling.wait_for_task(task_id)
        body = await kling.get_task(task_id)
    await eventually(lambda: receiver.accepted == 1)
    real = json.loads(json.dumps(DOC_BODY))
    real["data"].update(
        taskId=task_id, resultJson=json.dumps({"resultUrls": list(body.result_urls)})
    )
    assert receiver.url is not None
    for _ in range(2):
        assert (
            await post(http, receiver.url, real, signed(task_id, sim.webhook_hmac_key or "")) == 200
        )
    await receiver.close()
    assert receiver.accepted == 3 and task.result_urls == body.result_urls


async def test_a_dropped_callback_is_caught_by_the_fallback_poll(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(callback_drop_rate=1.0)
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    image, video = await media_urls(http, sim)
    async with await hooked(sim, receiver) as kling:
        task = await kling.wait_for_task(await kling.create_task(MotionControlInput(image, video)))
    await receiver.close()
    assert task.state is TaskState.SUCCESS and receiver.accepted == 0
    assert 1 <= sim.count("recordInfo") <= 3


async def test_a_late_wait_still_sees_an_early_callback(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    image, video = await media_urls(http, sim)
    fallback = DEFAULT_FALLBACK_POLL.scaled(0.1)  # first look after 15 s real
    async with await hooked(sim, receiver, fallback_poll=fallback) as kling:
        task_id = await kling.create_task(MotionControlInput(image, video))
        await eventually(lambda: receiver.received(task_id) is not None)
        started = time.monotonic()
        task = await kling.wait_for_task(task_id)
        assert time.monotonic() - started < 5.0  # the kept callback, not the fallback poll
    await receiver.close()
    assert task.state is TaskState.SUCCESS and sim.count("recordInfo") == 1


async def test_failed_task_by_callback_raises(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    from kling_async import TaskFailedError

    sim = await make_sim(failure_rate=1.0)
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    image, video = await media_urls(http, sim)
    async with await hooked(sim, receiver) as kling:
        with pytest.raises(TaskFailedError):
            await kling.wait_for_task(await kling.create_task(MotionControlInput(image, video)))
    await receiver.close()


async def wait_one(kling: Any, inp: MotionControlInput) -> None:
    await kling.wait_for_task(await kling.create_task(inp))


async def test_500_waits_by_webhook_use_far_fewer_queries(
    make_sim: SimFactory, http: aiohttp.ClientSession
) -> None:
    counts = {}
    for mode in ("polling", "webhook"):
        # 1 s tasks: fast, yet slow enough that the machine's speed does not set the counts.
        sim = await make_sim(time_scale=0.01)
        image, video = await media_urls(http, sim)
        receiver = WebhookReceiver(sim.webhook_hmac_key)
        kling = await hooked(sim, receiver) if mode == "webhook" else session_for(sim)
        async with kling:
            inp = MotionControlInput(image, video)
            await asyncio.gather(*(wait_one(kling, inp) for _ in range(500)))
        await receiver.close()
        counts[mode] = sim.count("recordInfo")
        assert sim.rate_limited == {"createTask": 0, "recordInfo": 0}
    assert counts["webhook"] <= 550  # one confirmation per task, and almost no polling
    # Polling needs a query per look (about 5 per task here); a webhook needs one per task.
    assert counts["webhook"] * 2 < counts["polling"]


async def test_receiver_mounts_in_an_existing_app_and_works_unsigned(
    make_sim: SimFactory, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await make_sim(webhook_hmac_key=None)
    receiver = WebhookReceiver(None, path="/hooks/kie")
    app = web.Application()
    app.router.add_post(receiver.path, receiver.handle)
    caplog.set_level(logging.WARNING, logger="kling_async.webhooks")
    image, video = await media_urls(http, sim)
    async with serve(app) as base:
        receiver.url = f"{base}{receiver.path}"
        async with await hooked(sim, receiver) as kling:
            ids = [await kling.create_task(MotionControlInput(image, video)) for _ in range(3)]
            await asyncio.gather(*(kling.wait_for_task(i) for i in ids))
    assert receiver.accepted == 3
    warnings = [r for r in caplog.records if "no HMAC key" in r.getMessage()]
    assert len(warnings) == 1


def test_receiver_repr_hides_the_key() -> None:
    assert "secret-hmac" not in repr(WebhookReceiver("secret-hmac"))


async def test_without_confirmation_the_callback_alone_ends_the_wait(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    receiver = WebhookReceiver(sim.webhook_hmac_key)
    image, video = await media_urls(http, sim)
    async with await hooked(sim, receiver, confirm_callbacks=False) as kling:
        task = await kling.wait_for_task(await kling.create_task(MotionControlInput(image, video)))
    await receiver.close()
    assert task.state is TaskState.SUCCESS and task.result_urls
    assert sim.count("recordInfo") == 0


# -- malformed signature headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "signature", "reason"),
    [
        ("1e9", VECTOR[2], "malformed-timestamp"),
        ("-5", VECTOR[2], "malformed-timestamp"),
        ("+1767694163", VECTOR[2], "malformed-timestamp"),
        ("9" * 5000, VECTOR[2], "malformed-timestamp"),
        ("\u00b2\u00b3", VECTOR[2], "malformed-timestamp"),
        ("\u0661\u0667\u0666", VECTOR[2], "malformed-timestamp"),
        ("\udcff", VECTOR[2], "malformed-timestamp"),
        (VECTOR[1], "not base64 at all!!!!!!!!!!!!!!!!!!!!!!!!!!", "malformed-signature"),
        (VECTOR[1], VECTOR[2].rstrip("="), "malformed-signature"),
        (VECTOR[1], VECTOR[2] * 1000, "malformed-signature"),
        (VECTOR[1], "é" * 44, "malformed-signature"),
        (VECTOR[1], "\udcff" * 44, "malformed-signature"),
        (VECTOR[1], "AAAA", "malformed-signature"),
    ],
)
def test_malformed_headers_are_verification_errors(
    timestamp: str, signature: str, reason: str
) -> None:
    with pytest.raises(WebhookVerificationError) as caught:
        verify_signature(VECTOR[0], timestamp, signature, KEY, now=1767694163)
    assert caught.value.reason == reason


def test_a_task_id_that_cannot_be_signed_is_a_bad_signature() -> None:
    with pytest.raises(WebhookVerificationError) as caught:
        verify_signature("\ud800", VECTOR[1], VECTOR[2], KEY, now=1767694163)
    assert caught.value.reason == "bad-signature"


def test_odd_bodies_are_malformed_callbacks() -> None:
    for body in (
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"data": {"taskId": "t", "state": "success", "costTime": ' + b"9" * 5000 + b"}}",
        json.dumps({"data": {"taskId": "a b", "state": "success"}}).encode(),
        json.dumps({"data": {"taskId": "t", "state": "cancelled"}}).encode(),
    ):
        with pytest.raises(MalformedCallbackError):
            parse_callback(body)


# -- the receiver over real HTTP ------------------------------------------------------------------


def doc_body(task_id: str = VECTOR[0]) -> bytes:
    body = json.loads(json.dumps(DOC_BODY))
    body["data"]["taskId"] = task_id
    return json.dumps(body).encode()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


async def raw_post(url: str, head: bytes, parts: list[bytes]) -> int:
    """POST with hand-made headers, the body written in ``parts`` with a pause between them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    path = url.split("/", 3)[3]
    writer.write(b"POST /" + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
    for i, part in enumerate(parts):
        if i:
            # Only to make the body arrive in two TCP segments; the outcome does not hang on it.
            await asyncio.sleep(0.05)
        writer.write(part)
        await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def test_a_body_split_across_segments_is_read_whole() -> None:
    receiver = WebhookReceiver(KEY)
    url = await receiver.start()
    body = doc_body()
    stamp = str(int(time.time()))
    head = (
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{'X-Webhook-Timestamp'}: {stamp}\r\n"
        f"X-Webhook-Signature: {compute_signature(VECTOR[0], stamp, KEY)}\r\n"
    ).encode()
    try:
        assert await raw_post(url, head, [body[:40], body[40:]]) == 200
    finally:
        await receiver.close()
    assert receiver.received(VECTOR[0]) is not None and receiver.malformed == 0


async def test_a_chunked_body_is_read_whole(http: aiohttp.ClientSession) -> None:
    receiver = WebhookReceiver(KEY)
    url = await receiver.start()
    body = doc_body()

    async def pieces() -> Any:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    try:
        async with http.post(url, data=pieces(), headers=signed(VECTOR[0], KEY)) as r:
            assert r.status == 200
            assert r.request_info.headers.get("Transfer-Encoding") == "chunked"
    finally:
        await receiver.close()
    assert receiver.accepted == 1 and receiver.received(VECTOR[0]) is not None


async def test_a_body_over_the_cap_is_413_however_framed(http: aiohttp.ClientSession) -> None:
    receiver = WebhookReceiver(KEY, max_body=1000)
    url = await receiver.start()

    async def endless() -> Any:
        for _ in range(50):
            yield b" " * 100

    try:
        async with http.post(url, data=b" " * 1001) as r:
            assert r.status == 413 and (await r.json())["msg"] == "body too large"
        async with http.post(url, data=endless()) as r:
            assert r.status == 413
        # At the cap the body is read (and refused only for what it says).
        padded = doc_body() + b" " * (1000 - len(doc_body()))
        async with http.post(url, data=padded, headers=signed(VECTOR[0], KEY)) as r:
            assert r.status == 200
    finally:
        await receiver.close()
    assert receiver.malformed == 2


async def test_a_body_cut_short_is_refused_without_an_error() -> None:
    receiver = WebhookReceiver(None)
    url = await receiver.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    writer.write(b"POST /kling/callback HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    writer.write_eof()
    assert await reader.read() == b""  # nobody left to answer
    writer.close()
    await eventually(lambda: receiver.malformed == 1)
    await receiver.close()
    assert receiver.accepted == 0


GOOD_SIGNATURE = VECTOR[2].encode()


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        (b"1e9", GOOD_SIGNATURE),
        (b"-5", GOOD_SIGNATURE),
        (b"9" * 4000, GOOD_SIGNATURE),
        (b"\xc2\xb2", GOOD_SIGNATURE),  # "²": a digit to str.isdigit(), not to int()
        (b"\xff\xfe", GOOD_SIGNATURE),  # not UTF-8
        (b"1767694163", b"\xff\xfe\xfd"),
        (b"1767694163", b"\xe9" * 44),
        (b"1767694163", b"%%%%"),
        (b"1767694163", b"A" * 4000),
        (b"", GOOD_SIGNATURE),
    ],
)
async def test_malformed_signature_headers_are_401_never_500(
    timestamp: bytes, signature: bytes
) -> None:
    receiver = WebhookReceiver(KEY)
    url = await receiver.start()
    body = doc_body()
    head = (
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"X-Webhook-Timestamp: " + timestamp + b"\r\n"
        b"X-Webhook-Signature: " + signature + b"\r\n"
    )
    try:
        assert await raw_post(url, head, [body]) == 401
    finally:
        await receiver.close()
    assert receiver.rejected == 1


async def test_kept_callbacks_are_bounded_by_count(http: aiohttp.ClientSession) -> None:
    receiver = WebhookReceiver(None, max_kept=3)
    url = await receiver.start()
    ids = [f"{i:032x}" for i in range(5)]
    try:
        for task_id in ids:
            async with http.post(url, data=doc_body(task_id)) as r:
                assert r.status == 200
        async with http.post(url, data=doc_body(ids[2])) as r:  # a repeat counts as new
            assert r.status == 200
    finally:
        await receiver.close()
    kept = [task_id for task_id in ids if receiver.received(task_id) is not None]
    assert kept == [ids[2], ids[3], ids[4]]


async def test_kept_callbacks_are_bounded_by_age(http: aiohttp.ClientSession) -> None:
    now = [1000.0]
    receiver = WebhookReceiver(None, keep_for=60.0, clock=lambda: now[0])
    url = await receiver.start()
    try:
        async with http.post(url, data=doc_body("a" * 32)) as r:
            assert r.status == 200
        now[0] += 30.0
        async with http.post(url, data=doc_body("b" * 32)) as r:
            assert r.status == 200
        now[0] += 31.0
        assert receiver.received("a" * 32) is None
        assert receiver.received("b" * 32) is not None
        future = receiver.subscribe("a" * 32)
        assert not future.done()  # the expired callback no longer answers a wait
        receiver.unsubscribe("a" * 32, future)
    finally:
        await receiver.close()


@pytest.mark.parametrize(
    "settings", [{"max_kept": -1}, {"keep_for": -1.0}, {"max_body": 0}, {"max_kept": 1.5}]
)
def test_receiver_bounds_are_checked(settings: dict[str, Any]) -> None:
    from kling_async import ConfigurationError

    with pytest.raises(ConfigurationError):
        WebhookReceiver(None, **settings)


# -- per-job tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://me.example/hook", "https://me.example/hook?kling_job=tok-1"),
        (
            "https://me.example/hook?a=1&b=x%20y",
            "https://me.example/hook?a=1&b=x%20y&kling_job=tok-1",
        ),
        (
            "https://me.example/hook?kling_job=old&a=1",
            "https://me.example/hook?a=1&kling_job=tok-1",
        ),
        ("https://me.example/hook?kling%5Fjob=old", "https://me.example/hook?kling_job=tok-1"),
        ("http://127.0.0.1:8080/h?flag#frag", "http://127.0.0.1:8080/h?flag&kling_job=tok-1#frag"),
    ],
)
def test_callback_url_with_token_keeps_other_parameters(base: str, expected: str) -> None:
    url = callback_url_with_token(base, "tok-1")
    assert url == expected
    assert callback_token(url) == "tok-1"


@pytest.mark.parametrize(
    ("base", "token"),
    [
        ("ftp://me.example/hook", "tok"),
        ("https://me.example/hook", ""),
        ("https://me.example/hook", "a b"),
        ("https://me.example/hook", "a&b"),
        ("https://me.example/hook", "x" * 129),
    ],
)
def test_callback_url_with_token_refuses_bad_input(base: str, token: str) -> None:
    from kling_async import ConfigurationError

    with pytest.raises(ConfigurationError):
        callback_url_with_token(base, token)


@pytest.mark.parametrize(
    "url",
    [
        None,
        "https://me.example/hook",
        "https://me.example/hook?kling_job=a&kling_job=b",
        "https://me.example/hook?kling_job=a%20b",
        "https://me.example/hook?kling_job=",
        "http://[::1",
    ],
)
def test_callback_token_is_none_without_one_clear_token(url: str | None) -> None:
    assert callback_token(url) is None


async def test_a_callback_with_a_token_wakes_the_tokens_waiter(
    http: aiohttp.ClientSession,
) -> None:
    receiver = WebhookReceiver(KEY)
    url = await receiver.start()
    try:
        early = receiver.subscribe_token("job-1")
        other = receiver.subscribe_token("job-2")
        with_token = callback_url_with_token(url, "job-1")
        async with http.post(with_token, data=doc_body(), headers=signed(VECTOR[0], KEY)) as r:
            assert r.status == 200
        task = await asyncio.wait_for(early, 10)
        assert task.task_id == VECTOR[0]
        assert receiver.received_for_token("job-1") == task
        assert receiver.received(VECTOR[0]) == task  # found by task id as well
        late = receiver.subscribe_token("job-1")
        assert late.done() and late.result() == task
        assert not other.done()
        receiver.unsubscribe_token("job-2", other)
        assert other.cancelled()
        # A refused callback wakes no token.
        async with http.post(
            callback_url_with_token(url, "job-3"), data=doc_body(), headers=signed(VECTOR[0], "x")
        ) as r:
            assert r.status == 401
        assert receiver.received_for_token("job-3") is None
        receiver.discard_token("job-1")
        assert receiver.received_for_token("job-1") is None
    finally:
        await receiver.close()


# -- after close ----------------------------------------------------------------------------------


async def test_a_closed_receiver_hands_out_futures_that_stay_pending() -> None:
    receiver = WebhookReceiver(None)
    await receiver.start()
    pending = receiver.subscribe(VECTOR[0])
    assert not receiver.closed
    await receiver.close()
    assert receiver.closed
    after = receiver.subscribe(VECTOR[0])
    by_token = receiver.subscribe_token("job-1")
    # Neither cancelled nor resolved: a wait on them sleeps its full poll interval, never spins.
    assert not any(f.done() for f in (pending, after, by_token))
    receiver.unsubscribe(VECTOR[0], pending)
    receiver.unsubscribe(VECTOR[0], after)
    receiver.unsubscribe_token("job-1", by_token)
    assert pending.cancelled() and after.cancelled() and by_token.cancelled()
    await receiver.start()
    assert not receiver.closed
    await receiver.close()
