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
from kling_async.session import DEFAULT_FALLBACK_POLL
from kling_async.signature import compute_signature
from kling_async.simulator import Simulator
from kling_async.webhooks import (
    MalformedCallbackError,
    WebhookReceiver,
    WebhookVerificationError,
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
