"""Kling 3.0 next to 2.6, and any other Market model, through the whole chain on the simulator.

The end-to-end tests of the other files run on both motion-control models where it is cheap
(``test_batch``, ``test_session``, ``test_simulator``); these are the paths only models have.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from kling_async import (
    ConfigurationError,
    CreditLimitError,
    InvalidRequestError,
    Job,
    JobOutcome,
    KlingSession,
    MotionControlInput,
    Submission,
    TaskState,
)
from kling_async.journal import SCHEMA_VERSION, Journal
from kling_async.simulator import Simulator, SimulatorConfig

from .cli_run import cli
from .conftest import MEDIA, Receiver, SimFactory, eventually, media_urls, session_for

V26, V30 = "kling-2.6/motion-control", "kling-3.0/motion-control"
IMAGE, VIDEO = MEDIA / "portrait.png", MEDIA / "d10.0.mp4"
SHORT = MEDIA / "d3.0.mp4"
#: A model no client knows of, hosted by the simulator for these tests.
ODD = "acme/text-to-video-x"
OUTPUTS: list[str] = []


async def collect(kling: KlingSession, jobs: list[Job], **kw: object) -> list[JobOutcome]:
    return [o async for o in kling.generate_many(jobs, **kw)]  # type: ignore[arg-type]


async def generic_sim(make_sim: SimFactory) -> Simulator:
    """A simulator that also hosts ``ODD``."""
    return await make_sim(market_models=SimulatorConfig().market_models | {ODD})


# -- the generic path: create_task(model, input) ------------------------------------------------


async def test_any_market_model_is_created_waited_for_and_downloaded(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await generic_sim(make_sim)
    fields = {"prompt": "a fox", "duration": "5", "knob_from_tomorrow": {"a": [1, None]}}
    async with session_for(sim) as kling:
        task_id = await kling.create_task(ODD, fields)
        task = await kling.wait_for_task(task_id)
        path = await kling.download(task, tmp_path)
    # Sent as given: every field, unknown ones too, untouched; nothing added.
    assert sim.tasks[task_id].body == {"model": ODD, "input": fields}
    assert (task.model, task.state, task.input) == (ODD, TaskState.SUCCESS, None)
    assert path.stat().st_size > 0 and path.read_bytes()[4:8] == b"ftyp"


async def test_generic_tasks_share_the_create_limit_and_take_a_callback(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    sim = await generic_sim(make_sim)
    async with session_for(sim) as kling:
        # More than one window's worth (20): the session's limiter spaces them, none is refused.
        ids = await asyncio.gather(*(kling.create_task(ODD, {"n": n}) for n in range(25)))
        with_callback = await kling.create_task(ODD, {"n": 99}, receiver.url)
        await kling.wait_for_task(with_callback)
    assert len(set(ids)) == 25 and sim.rate_limited["createTask"] == 0
    assert sim.tasks[with_callback].body["callBackUrl"] == receiver.url
    await eventually(lambda: len(receiver.received) == 1)
    assert json.loads(receiver.received[0][1])["data"]["model"] == ODD


async def test_the_service_judges_generic_inputs_and_nothing_is_created_twice(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    image, video = await media_urls(http, sim)
    raw = {"input_urls": [image], "video_urls": [video], "character_orientation": "video"}
    async with session_for(sim) as kling:
        cases = [
            (V26, {**raw, "mode": "720p", "background_source": "input_image"}, "background_source"),
            (V30, {**raw, "mode": "std"}, "not within the range"),  # why std/pro are mapped
            ("acme/not-hosted", {"prompt": "x"}, "model"),
        ]
        for model, fields, words in cases:
            submission = Submission()
            with pytest.raises(InvalidRequestError, match=words):
                await kling.create_task(model, fields, submission=submission)
            assert not submission.may_exist  # a 422 surely created nothing
        # The same wishes through the validated path: std is sent as 720p and is taken.
        task_id = await kling.create_task(MotionControlInput(image, video, mode="std", model=V30))
    assert sim.tasks[task_id].body["input"]["mode"] == "720p"
    assert sim.tasks_created[sim.api_key] == 1


async def test_create_task_arguments_are_checked_before_anything_is_sent(sim: Simulator) -> None:
    inp = MotionControlInput("https://a.example/i.png", "https://a.example/v.mp4")
    async with session_for(sim) as kling:
        with pytest.raises(ConfigurationError, match="generic form"):
            await kling.create_task(inp, {"x": 1})  # type: ignore[call-overload]
        with pytest.raises(ConfigurationError, match="needs the input"):
            await kling.create_task(ODD)  # type: ignore[call-overload]
        with pytest.raises(ConfigurationError, match="not JSON"):
            await kling.create_task(ODD, {"when": object()})
        with pytest.raises(TypeError, match="positional"):
            await kling.create_task(ODD, {}, "https://me.example/h", "extra")  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="twice"):
            await kling.create_task(inp, "https://a.example/h", callback_url="https://b.example/h")  # type: ignore[call-overload]
    assert sim.requests == []


# -- validated models in batches -----------------------------------------------------------------


async def test_a_batch_model_is_the_default_of_jobs_that_name_none(sim: Simulator) -> None:
    jobs = [
        Job(IMAGE, SHORT, key="batch-model"),
        Job(IMAGE, SHORT, key="own-source", background_source="input_image", mode="pro"),
        Job(IMAGE, SHORT, key="own-model", model=V26),
    ]
    async with session_for(sim) as kling:
        outcomes = await collect(kling, jobs, model=V30, background_source="input_video")
        [plain_2_6] = await collect(kling, [jobs[2]], model=V30)
    done = {o.job_key: o for o in outcomes}
    sent = {key: sim.tasks[o.task_id].body for key, o in done.items() if o.task_id}
    assert sent["batch-model"]["model"] == sent["own-source"]["model"] == V30
    assert sent["batch-model"]["input"]["background_source"] == "input_video"
    assert sent["own-source"]["input"]["background_source"] == "input_image"
    assert sent["own-source"]["input"]["mode"] == "1080p"
    # A job that names 2.6 keeps it: the batch's background source does not fit it, and the
    # job says so without being created; with none, it runs on 2.6.
    assert isinstance(done["own-model"].error, ConfigurationError) and "own-model" not in sent
    assert plain_2_6.ok and sim.tasks[plain_2_6.task_id].body["model"] == V26  # type: ignore[index]
    assert sim.tasks_created[sim.api_key] == 3


async def test_a_rerun_asking_another_model_never_gets_the_old_models_clip(
    sim: Simulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.sqlite"
    job = Job(IMAGE, SHORT, key="clip")
    async with session_for(sim) as kling:
        [first] = await collect(kling, [job], journal=journal)
        [again] = await collect(kling, [job], journal=journal, model=V30)
        [same] = await collect(kling, [job], journal=journal, model=V26)
    assert first.ok and same.ok and same.task_id == first.task_id
    assert isinstance(again.error, ConfigurationError)
    assert f"sent to {V26}, but this run asks for {V30}" in str(again.error)
    assert sim.tasks_created[sim.api_key] == 1


async def test_background_source_on_2_6_is_refused_before_any_upload(sim: Simulator) -> None:
    async with session_for(sim) as kling:
        with pytest.raises(ConfigurationError, match="does not take it"):
            await kling.generate(IMAGE, SHORT, background_source="input_image")
        with pytest.raises(ConfigurationError, match="does not take it"):
            kling.generate_many([], model=V26, background_source="input_image")
        # Left to the default model (2.6), the job itself ends with the error, unsent.
        [outcome] = await collect(kling, [Job(IMAGE, SHORT, background_source="input_image")])
    assert isinstance(outcome.error, ConfigurationError) and outcome.task_id is None
    assert sim.requests == []  # not even an upload


async def test_max_credits_uses_each_models_price(sim: Simulator) -> None:
    # 10 s clips: 110 credits at 720p on 2.6, 200 on 3.0. 440 allows one 3.0 job and two 2.6
    # (420); priced alike, all four would fit (440 at 2.6's price), or only two (at 3.0's).
    jobs = [Job(IMAGE, VIDEO, key="v3-0", model=V30)]
    jobs += [Job(IMAGE, VIDEO, key=f"v2-{i}") for i in range(2)]
    jobs += [Job(IMAGE, VIDEO, key="v3-1", model=V30)]
    async with session_for(sim) as kling:
        outcomes = await collect(kling, jobs, max_credits=440, max_pending=1)
    refused = [o.job_key for o in outcomes if isinstance(o.error, CreditLimitError)]
    assert refused == ["v3-1"], [o.error for o in outcomes]
    spent = sum(o.result.task.credits_consumed or 0 for o in outcomes if o.result)
    assert spent == pytest.approx(200 + 110 + 110)


async def test_a_callback_url_is_sent_when_given_and_never_required(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    sim = await make_sim()
    async with session_for(sim) as kling:
        plain = await kling.generate(IMAGE, SHORT, model=V30)
        called = await kling.generate(IMAGE, SHORT, model=V30, callback_url=receiver.url)
    assert "callBackUrl" not in sim.tasks[plain.task.task_id].body
    assert sim.tasks[called.task.task_id].body["callBackUrl"] == receiver.url
    # A service that does require one says so, and the client passes its words on.
    strict = await make_sim(callback_required_models=frozenset({V30}))
    async with session_for(strict) as kling:
        with pytest.raises(InvalidRequestError, match="callBackUrl is required"):
            await kling.generate(IMAGE, SHORT, model=V30)
    assert strict.tasks_created[strict.api_key] == 0


# -- the journal ---------------------------------------------------------------------------------


async def test_a_journal_of_schema_3_gains_the_model_and_resumes(
    sim: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "v3.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE jobs (key TEXT PRIMARY KEY, status TEXT NOT NULL, image_url TEXT, "
        "image_expires REAL, video_url TEXT, video_expires REAL, task_id TEXT, state TEXT, "
        "result_urls TEXT, files TEXT, error TEXT, updated REAL NOT NULL, callback_token TEXT, "
        "fail_code TEXT, credits REAL)"
    )
    db.execute(
        "INSERT INTO jobs (key, status, task_id, state, result_urls, updated, credits) "
        "VALUES ('old', 'succeeded', 't1', 'success', '[\"https://a.example/r.mp4\"]', 0, 33)"
    )
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    async with Journal(path) as journal:
        record = await journal.get("old")
        assert record is not None and record.model is None and record.credits == 33
    async with session_for(sim) as kling:
        [outcome] = await collect(kling, [Job(IMAGE, SHORT, key="old")], journal=path)
    # A job finished before models were recorded was a 2.6 task; nothing was asked again.
    assert outcome.result is not None and outcome.result.task.model == V26
    assert sim.requests == []
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    db.close()


# -- the command line ----------------------------------------------------------------------------


async def run(*args: str, sim: Simulator | None = None) -> tuple[int, str]:
    code, text = await cli(*args, sim=sim)
    OUTPUTS.append(text)
    return code, text


async def test_estimate_takes_the_model_and_either_mode_spelling() -> None:
    code, text = await run(
        "estimate", "--json", "--model", V30, "--mode", "pro", str(IMAGE), str(VIDEO)
    )
    assert code == 0, text
    assert json.loads(text) == {
        "seconds": 10.0,
        "mode": "1080p",
        "model": V30,
        "credits": 270.0,
        "dollars": 1.35,
    }
    code, text = await run("estimate", "--background-source", "input_image", str(IMAGE), str(VIDEO))
    assert code == 2 and "does not take it" in text and "Traceback" not in text


async def test_generate_sends_the_model_mode_and_background_source(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(time_scale=0.002)
    args = ["--model", V30, "--mode", "std", "--background-source", "input_image"]
    code, text = await run("generate", "--json", str(IMAGE), str(SHORT), *args, sim=sim)
    assert code == 0, text
    task_id = json.loads(text.splitlines()[-1])["task_id"]
    sent = sim.tasks[task_id].body
    assert sent["model"] == V30
    assert (sent["input"]["mode"], sent["input"]["background_source"]) == ("720p", "input_image")


async def test_a_manifest_names_models_per_row_over_the_batch_flag(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(time_scale=0.002)
    manifest = tmp_path / "jobs.csv"
    header = "image,video,key,mode,model,background_source\n"
    rows = [
        f"{IMAGE},{VIDEO},a,pro,{V26},",  # its own model: 18 credits/s
        f"{IMAGE},{VIDEO},b,720p,,input_image",  # the batch's (3.0): 20 credits/s
    ]
    manifest.write_text(header + "\n".join(rows) + "\n")
    flags = ["--model", V30]
    code, text = await run("batch", str(manifest), "--dry-run", *flags, sim=sim)
    assert code == 0 and "2 jobs, about 380 credits" in text, text
    # JSON Lines say "" where a CSV cell is empty: the batch's model too, never 2.6's by default.
    lines = tmp_path / "jobs.jsonl"
    row = {"image": str(IMAGE), "video": str(VIDEO), "key": "b", "mode": "720p", "model": ""}
    lines.write_text(json.dumps(row) + "\n")
    code, text = await run("batch", str(lines), "--dry-run", *flags, sim=sim)
    assert code == 0 and "1 job, about 200 credits" in text, text
    broken = tmp_path / "broken.csv"
    broken.write_text(header + "\n".join([*rows, f"{IMAGE},{VIDEO},c,720p,{V26},input_video"]))
    code, text = await run("batch", str(broken), *flags, sim=sim)
    assert code == 1 and "broken.csv:4" in text and "does not take it" in text
    assert sim.count("createTask") == 0
    journal = tmp_path / "batch.sqlite"
    code, text = await run("batch", str(manifest), "--journal", str(journal), *flags, sim=sim)
    assert code == 0, text
    bodies = {t.body["model"]: t.body["input"] for t in sim.tasks.values()}
    assert bodies[V26]["mode"] == "1080p" and "background_source" not in bodies[V26]
    assert bodies[V30]["background_source"] == "input_image"
    code, text = await run("journal", "--json", str(journal))
    assert {json.loads(line)["key"]: json.loads(line)["model"] for line in text.splitlines()} == {
        "a": V26,
        "b": V30,
    }


def test_no_output_of_this_file_showed_the_key() -> None:
    # Runs last in this file: every output the commands above printed.
    assert OUTPUTS, "the command-line tests of this file ran first"
    assert all(SimulatorConfig().api_key not in text for text in OUTPUTS)
