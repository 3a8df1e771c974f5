"""The command line's words: Ctrl-C advice, refusals, settings, files, and one line per error.

Each command runs as a subprocess against the simulator over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
from pathlib import Path

import pytest

from kling_async import ConfigurationError, KlingSession, MotionControlInput
from kling_async.cli._commands import hosts
from kling_async.journal import Journal
from kling_async.settings import check_api_key, upload_base_url_for
from kling_async.simulator import FaultConfig, Simulator

from .cli_run import assert_no_key_was_printed, cli, interrupted, manifest
from .conftest import MEDIA, SimFactory

IMAGE = MEDIA / "portrait.png"
VIDEO = MEDIA / "d3.0.mp4"
REAL_API, REAL_UPLOADS = "https://api.kie.ai", "https://kieai.redpandaai.co"


async def test_ctrl_c_in_generate_names_the_task_to_wait_for(make_sim: SimFactory) -> None:
    # A render that lasts for days: the command is surely waiting when interrupted.
    sim = await make_sim(time_scale=0.002, generating_seconds=1e7)
    code, text = await interrupted(
        "generate", str(IMAGE), str(VIDEO), "--out", "clips", sim=sim, when=lambda: bool(sim.tasks)
    )
    [task_id] = sim.tasks
    assert code == 130 and "Traceback" not in text, text
    assert f"task {task_id} was created: `kling-async wait {task_id} --out clips`" in text, text
    assert "journal" not in text  # generate has none: no word of resuming from one


async def test_ctrl_c_in_a_batch_without_a_journal_warns_that_a_rerun_pays_again(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(time_scale=0.002, generating_seconds=1e7)
    jobs = manifest(tmp_path / "jobs.csv", [f"{IMAGE},{VIDEO},p{i},k{i},720p" for i in range(2)])
    code, text = await interrupted(
        "batch", str(jobs), sim=sim, when=lambda: sim.tasks_created[sim.api_key] == 2
    )
    assert code == 130 and "Traceback" not in text, text
    assert "without a journal a rerun creates every job again" in text, text
    assert "--journal" in text and "run the same command again" not in text
    assert all(task_id in text for task_id in sim.tasks), text  # each can still be waited for


async def test_ctrl_c_while_an_answer_is_on_the_wire_still_names_its_task(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # Every createTask answer is held back (about 3 s): Ctrl-C comes while the request is on
    # the wire, before its task exists. The batch lets it land; its id must reach the message.
    faults = FaultConfig(slow=1.0, slow_seconds=1500, endpoints=frozenset({"createTask"}))
    sim = await make_sim(time_scale=0.002, generating_seconds=1e7, faults=faults)
    jobs = manifest(tmp_path / "jobs.csv", [f"{IMAGE},{VIDEO},p0,k0,720p"])
    code, text = await interrupted(
        "batch", str(jobs), sim=sim, when=lambda: sim.count("createTask") == 1
    )
    assert code == 130 and "Traceback" not in text, text
    [task_id] = sim.tasks  # it landed after the interrupt
    assert sim.tasks_created[sim.api_key] == 1
    assert "stopping: waiting for 1 createTask call of cancelled jobs" in text, text
    assert f"1 task had been created ({task_id})" in text, text


async def test_wait_saves_into_a_folder_and_not_twice(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = await make_sim(time_scale=0.002)
    async with sim.session() as kling:
        image, video = await kling.upload_image(IMAGE), await kling.upload_video(VIDEO)
        task_id = await kling.create_task(MotionControlInput(image.url, video.url))
    clips = tmp_path / "clips"  # no trailing slash, and not there yet: a folder all the same
    code, text = await cli("wait", task_id, "--out", str(clips), sim=sim)
    assert code == 0, text
    assert clips.is_dir() and [p.name for p in clips.iterdir()] == [f"{task_id}.mp4"]
    downloads = sim.count("result")
    code, text = await cli("wait", "--json", task_id, "--out", f"{clips}/", sim=sim)
    assert code == 0, text
    assert "not downloaded again" in text and sim.count("result") == downloads
    assert [p.name for p in clips.iterdir()] == [f"{task_id}.mp4"]  # no -1 copy
    assert json.loads(text.splitlines()[-1])["files"] == [str(clips / f"{task_id}.mp4")]


async def test_an_unknown_task_id_is_named_as_such(sim: Simulator) -> None:
    code, text = await cli("status", "nonexistent", sim=sim)
    assert code == 3 and "error: no task nonexistent (or not visible yet)" in text, text
    assert "recordInfo is null" not in text
    code, text = await cli("wait", "nonexistent", "--timeout", "2", sim=sim)
    assert "note: no task nonexistent is visible yet; waiting up to 60 s" in text, text
    assert code == 1 and "error: no task nonexistent (or not visible yet) after 2 s" in text


async def test_a_refused_key_says_where_the_key_came_from(sim: Simulator) -> None:
    code, text = await cli("credits", sim=sim, key="sk-wrong-but-long-enough")
    assert code == 3 and "kie.ai refused the key (401)" in text, text
    assert "check KIE_API_KEY (or --api-key-file)" in text and "from credit" not in text


async def test_a_pasted_key_is_trimmed_or_refused_in_one_line(
    sim: Simulator, tmp_path: Path
) -> None:
    code, text = await cli("credits", sim=sim, key=f"  {sim.api_key} \n")
    assert code == 0, text  # whitespace around a pasted key is not part of it
    code, text = await cli("credits", sim=sim, key=f"Bearer {sim.api_key}")
    assert code == 2 and "starts with 'Bearer '" in text and "Traceback" not in text, text
    code, text = await cli("credits", sim=sim, key="sk-first-half-000\nsk-second-half-111")
    assert code == 2 and "control character or whitespace inside" in text, text
    assert "Traceback" not in text
    binary, empty = tmp_path / "key.bin", tmp_path / "key.txt"
    binary.write_bytes(b"\x00\xff\xfe\x80secret")
    empty.write_text("\n")
    for path, why in ((binary, "is not a text file"), (empty, "is empty")):
        code, text = await cli("credits", "--api-key-file", str(path), sim=sim, key="")
        assert code == 2 and why in text and "Traceback" not in text, text


def test_the_library_refuses_a_key_no_header_can_carry() -> None:
    assert check_api_key("  sk-abc\n") == "sk-abc"
    for bad, why in (
        ("sk-a\nb", "control character"),
        ("sk a", "whitespace"),
        ("Bearer sk-abc", "Bearer"),
        ("sk-é", "ASCII"),
    ):
        with pytest.raises(ConfigurationError, match=why) as caught:
            KlingSession(bad)
        assert bad.strip() not in str(caught.value)


async def test_a_base_url_with_the_api_path_is_refused(sim: Simulator) -> None:
    code, text = await cli("credits", "--base-url", f"{sim.base_url}/api/v1", key=sim.api_key)
    assert code == 2, text
    assert "the base URL is the host only, e.g. https://api.kie.ai" in text and "404" not in text


async def test_uploads_go_to_the_upload_host_the_environment_names(
    make_sim: SimFactory,
) -> None:
    # Two ports, as the real service has two hosts: the API port serves no uploads.
    sim = await make_sim(time_scale=0.002, split_hosts=True)
    code, text = await cli(
        "generate",
        str(IMAGE),
        str(VIDEO),
        sim=sim,
        env={"KIE_UPLOAD_BASE_URL": sim.upload_base_url},
    )
    assert code == 0, text
    assert sim.count("streamUpload") == 2 and len(sim.tasks) == 1


def test_the_real_api_host_keeps_the_real_upload_host(monkeypatch: pytest.MonkeyPatch) -> None:
    assert upload_base_url_for(REAL_API) == REAL_UPLOADS
    assert upload_base_url_for(REAL_API + "/") == REAL_UPLOADS
    assert upload_base_url_for("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    # The command line's --base-url...
    assert hosts(REAL_API, None, {}) == (REAL_API, REAL_UPLOADS)
    assert hosts("http://127.0.0.1:9", None, {}) == ("http://127.0.0.1:9", "http://127.0.0.1:9")
    assert hosts("http://127.0.0.1:9", None, {"KIE_UPLOAD_BASE_URL": "http://localhost:7"}) == (
        "http://127.0.0.1:9",
        "http://localhost:7",
    )
    # ...and KIE_BASE_URL for any program.
    monkeypatch.delenv("KIE_UPLOAD_BASE_URL", raising=False)
    monkeypatch.setenv("KIE_BASE_URL", REAL_API)
    assert KlingSession("k").upload_base_url == REAL_UPLOADS
    monkeypatch.setenv("KIE_BASE_URL", "http://127.0.0.1:9")
    assert KlingSession("k").upload_base_url == "http://127.0.0.1:9"


async def test_python_advice_becomes_the_command_lines_flags(
    sim: Simulator, tmp_path: Path
) -> None:
    code, text = await cli(
        "generate", str(IMAGE), str(VIDEO), "--background-source", "input_image", sim=sim
    )
    assert code == 2 and "--model kling-3.0/motion-control" in text, text
    assert "model='" not in text and "pass model" not in text
    code, text = await cli("credits", "--base-url", "http://example.invalid", key=sim.api_key)
    assert code == 2 and "--allow-insecure-http" in text and "=True" not in text, text
    jobs = manifest(tmp_path / "jobs.csv", [f"{IMAGE},{VIDEO},,big,1080p"])
    code, text = await cli("batch", str(jobs), "--max-credits", "10", sim=sim)
    assert code == 1 and "of --max-credits 10" in text and "max_credits=" not in text, text
    assert sim.count("createTask") == 0


async def test_validate_judges_files_by_content(tmp_path: Path) -> None:
    gif = tmp_path / "dance.mp4"  # a GIF, whatever its name says
    shutil.copy(MEDIA / "animated.gif", gif)
    code, text = await cli(
        "validate", "--json", str(gif), str(MEDIA / "photo.webp"), "https://example.com/x.png"
    )
    rows = [json.loads(line) for line in text.splitlines()]
    assert code == 1 and len(rows) == 3, text
    assert "GIF" in rows[0]["detail"] and "JPEG and PNG" in rows[0]["detail"]
    assert "WEBP" in rows[1]["detail"] and "JPEG and PNG" in rows[1]["detail"]
    assert rows[2]["file"] == "https://example.com/x.png" and rows[2]["rule"] == "url"
    assert "only local files are validated" in rows[2]["detail"]


async def test_generate_hints_at_swapped_files_and_prints_the_result_url(
    make_sim: SimFactory,
) -> None:
    sim = await make_sim(time_scale=0.002)
    code, text = await cli("generate", str(VIDEO), str(IMAGE), sim=sim)
    assert code == 2 and "the image comes first" in text and sim.count("streamUpload") == 0
    code, text = await cli("generate", str(IMAGE), str(VIDEO), sim=sim)
    [task_id] = sim.tasks
    assert code == 0 and f"done: task {task_id}; result: {sim.base_url}/results/" in text, text


async def test_journal_commands_on_empty_and_wrong_files(tmp_path: Path) -> None:
    journal = tmp_path / "batch.sqlite"
    async with Journal(journal) as book:
        await book.update("waiting-1", status="pending")
    code, text = await cli("journal", "--json", str(journal))
    assert code == 0 and json.loads(text)["task_id"] is None, text
    code, text = await cli("unknown", str(journal))
    assert code == 0 and text.strip() == f"no unknown jobs in {journal}"
    code, text = await cli("journal", str(IMAGE))
    assert code == 2 and text.count("error") == 1 and "is not a journal" in text, text


async def test_version_and_json_from_simulate_and_demo(tmp_path: Path) -> None:
    from kling_async import __version__

    code, text = await cli("--version")
    assert code == 0 and text.strip() == f"kling-async {__version__}"
    # simulate takes the simulator's own options (its parser), --json among them.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kling_async", "simulate", "--port", "0", "--json",
        "--api-key", "sk-own-simulator-key", "--time-scale", "0.01",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        facts = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=60))
        assert facts["api_key"] == "sk-own-simulator-key" and facts["time_scale"] == 0.01
        remote = Simulator.connect(facts["base_url"], api_key=facts["api_key"])
        async with remote as sim, sim.session() as kling:
            assert await kling.get_credits() > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=60)
    code, text = await cli("demo", "--json", "--clips", "1", "--output", str(tmp_path / "demo"))
    rows = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and rows[-1]["clips"] == 1 and rows[-1]["failed"] == 0, text
    assert Path(rows[0]["files"][0]).is_file()


async def test_plain_lines_on_a_missing_folder_for_out(sim: Simulator, tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the folder should go")
    code, text = await cli("generate", str(IMAGE), str(VIDEO), "--out", str(blocker), sim=sim)
    assert code == 2 and "--out" in text and "Traceback" not in text, text
    assert sim.count("createTask") == 0


def test_no_output_ever_showed_a_key() -> None:
    # Runs last in this file: every output the commands above printed.
    assert_no_key_was_printed()
