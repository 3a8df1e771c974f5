"""The command line, run as a subprocess against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from kling_async.simulator import Simulator

from .cli_run import OUTPUTS, assert_no_key_was_printed, cli
from .cli_run import manifest as _manifest
from .conftest import MEDIA, SimFactory

IMAGE = MEDIA / "portrait.png"
VIDEO = MEDIA / "d10.0.mp4"


async def test_validate_reports_each_file_and_the_rule_it_breaks(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    code, text = await cli("validate", str(IMAGE), str(VIDEO))
    assert code == 0 and text.count("ok  ") == 2 and "10.00 s" in text
    code, text = await cli("validate", "--json", str(VIDEO), str(bad))
    assert code == 1
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows[0]["ok"] is True and rows[0]["seconds"] == 10.0
    assert rows[1] == {
        "file": str(bad),
        "ok": False,
        "rule": rows[1]["rule"],
        "detail": rows[1]["detail"],
    }
    assert rows[1]["rule"] == "format"


async def test_estimate_prints_credits_and_creates_nothing() -> None:
    code, text = await cli("estimate", "--json", "--mode", "1080p", str(IMAGE), str(VIDEO))
    assert code == 0
    assert json.loads(text) == {
        "seconds": 10.0,
        "mode": "1080p",
        "model": "kling-2.6/motion-control",
        "credits": 180.0,
        "dollars": 0.9,
    }


async def test_credits_and_a_missing_key(sim: Simulator) -> None:
    code, text = await cli("credits", "--json", sim=sim)
    assert code == 0 and json.loads(text)["credits"] == sim.credits()
    code, text = await cli("credits", key="")
    assert code == 2 and "no API key" in text and "Traceback" not in text
    code, text = await cli("credits", "--base-url", sim.base_url, key="sk-wrong")
    assert code == 3 and "Traceback" not in text


async def test_the_key_can_come_from_a_file(sim: Simulator, tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(sim.api_key + "\n")
    code, text = await cli(
        "credits", "--api-key-file", str(key_file), "--base-url", sim.base_url, key=""
    )
    assert code == 0 and "credits" in text
    code, text = await cli("credits", "--api-key-file", str(tmp_path / "nope"), key="")
    assert code == 2 and "cannot read --api-key-file" in text


async def test_generate_saves_the_clip(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = await make_sim(time_scale=0.002)
    code, text = await cli(
        "generate", "--json", str(IMAGE), str(VIDEO), "--out", str(tmp_path), sim=sim
    )
    assert code == 0, text
    done = json.loads(text.splitlines()[-1])
    assert done["task_id"] in sim.tasks and Path(done["files"][0]).exists()


async def test_batch_dry_run_bad_rows_budget_and_resume(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(time_scale=0.002)
    rows = [f"{IMAGE},{VIDEO},dance {i},job-{i},720p" for i in range(3)]
    manifest = _manifest(tmp_path / "jobs.csv", rows)
    code, text = await cli("batch", str(manifest), "--dry-run", sim=sim)
    assert code == 0 and "3 jobs, about 330 credits" in text and sim.count("createTask") == 0

    broken = _manifest(tmp_path / "broken.csv", [*rows, f"{IMAGE},{VIDEO},x,job-9,1080"])
    code, text = await cli("batch", str(broken), sim=sim)
    assert code == 1 and "broken.csv:5" in text and "mode" in text
    assert sim.count("createTask") == 0  # the whole manifest is checked first

    journal = tmp_path / "batch.sqlite"
    args = ["batch", "--json", str(manifest), "--journal", str(journal), "--out", str(tmp_path)]
    code, text = await cli(*args, "--max-credits", "250", sim=sim)
    lines = [json.loads(line) for line in text.splitlines()]
    refused = [row for row in lines if row.get("error") == "CreditLimitError"]
    assert code == 1 and len(refused) == 1 and sim.tasks_created[sim.api_key] == 2

    code, text = await cli(*args, sim=sim)  # the rerun finishes the job the budget held back
    assert code == 0, text
    assert sim.tasks_created[sim.api_key] == 3
    code, text = await cli("journal", str(journal))
    assert code == 0 and text.count("succeeded") == 3


async def test_unknown_and_release(make_sim: SimFactory, tmp_path: Path) -> None:
    from kling_async.simulator import FaultConfig

    sim = await make_sim(
        time_scale=0.002,
        faults=FaultConfig(drop_after=1.0, endpoints=frozenset({"createTask"})),
    )
    manifest = _manifest(tmp_path / "jobs.csv", [f"{IMAGE},{VIDEO},lost,lost-1,720p"])
    journal = tmp_path / "batch.sqlite"
    code, text = await cli("batch", str(manifest), "--journal", str(journal), sim=sim)
    # The advice is the command line's, naming this journal and this job; not Python's.
    assert code == 1 and f"`kling-async release {journal} lost-1`" in text, text
    assert "python -m" not in text and "release_jobs" not in text
    code, text = await cli("unknown", str(journal))
    assert code == 0 and text.split() == ["lost-1"]
    code, text = await cli("release", str(journal), "lost-1")
    assert code == 0 and "released lost-1" in text
    code, text = await cli("unknown", "--json", str(tmp_path / "missing.sqlite"))
    assert code == 2 and "no journal" in text


async def test_status_and_wait_for_a_task(make_sim: SimFactory, tmp_path: Path) -> None:
    from kling_async import MotionControlInput

    sim = await make_sim(time_scale=0.002)
    async with sim.session() as kling:
        image = await kling.upload_image(IMAGE)
        video = await kling.upload_video(VIDEO)
        task_id = await kling.create_task(MotionControlInput(image.url, video.url))
    code, text = await cli("wait", "--json", task_id, "--out", str(tmp_path), sim=sim)
    assert code == 0, text
    waited = json.loads(text.splitlines()[-1])
    assert waited["state"] == "success" and Path(waited["files"][0]).exists()
    code, text = await cli("status", task_id, sim=sim)
    assert code == 0 and f"{task_id}: success" in text


async def test_ctrl_c_during_a_batch_says_how_to_resume(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    import signal

    from kling_async.simulator import FaultConfig

    sim = await make_sim(
        time_scale=0.02,
        faults=FaultConfig(slow=1.0, slow_seconds=100.0, endpoints=frozenset({"createTask"})),
    )
    rows = [f"{IMAGE},{VIDEO},p{i},k{i},720p" for i in range(3)]
    manifest = _manifest(tmp_path / "jobs.csv", rows)
    journal = tmp_path / "batch.sqlite"
    env = {k: v for k, v in os.environ.items() if k != "KIE_API_KEY"}
    env["KIE_API_KEY"] = sim.api_key
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kling_async", "batch", str(manifest), "--journal", str(journal),
        "--base-url", sim.base_url,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    deadline = asyncio.get_running_loop().time() + 60
    while sim.count("createTask") < 3:
        assert asyncio.get_running_loop().time() < deadline, "the batch never created"
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, _ = await proc.communicate()
    text = out.decode()
    OUTPUTS.append(text)
    assert proc.returncode == 130 and "run the same command again to resume" in text
    assert f"the journal {journal} keeps every task created" in text
    assert "Traceback" not in text
    code, text = await cli("batch", str(manifest), "--journal", str(journal), sim=sim)
    assert code == 0, text
    assert sim.tasks_created[sim.api_key] == 3  # the rerun resumed every job, paid nothing more


def test_no_output_ever_showed_the_key() -> None:
    # Runs last in this file: every output the commands above printed.
    assert_no_key_was_printed()
