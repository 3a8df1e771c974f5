"""The programs in examples/ run against the simulator and do what they say.

The CSV batch and the web app run as programs, configured only by the environment (as they would
be against the real service); the chat bot's handler is imported and driven like a chat
transport would drive it, and its terminal entry point runs as a program once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest

from kling_async import inspect_video
from kling_async.simulator import Simulator

from .conftest import MEDIA, SimFactory, eventually, session_for
from .test_display import run_on_a_terminal

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# Generous: a busy 2-core machine may be slow to start a Python process with aiohttp loaded.
RUN_TIMEOUT = 100.0


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the folder is not a package: examples are scripts)."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def env_for(sim: Simulator) -> dict[str, str]:
    """The environment that points an example at ``sim``, as a user would set it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIE_")}
    env.update(
        KIE_API_KEY=sim.api_key,
        KIE_BASE_URL=sim.base_url,
        KIE_WEBHOOK_KEY=sim.webhook_hmac_key or "",
        # rich sizes its bar from the width; a pipe has none, so give one.
        COLUMNS="120",
    )
    return env


async def run_example(
    script: str, *args: str | Path, sim: Simulator, cwd: Path
) -> tuple[int, str, str]:
    """Run an example to its end; return its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / script),
        *map(str, args),
        cwd=cwd,
        env=env_for(sim),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=RUN_TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def is_mp4(path: Path) -> bool:
    """True if ``path`` is a readable MP4 with a duration (the simulator's results are)."""
    return inspect_video(path).duration_s > 0


# -- csv_batch.py --------------------------------------------------------------------------------
def write_manifest(folder: Path) -> Path:
    for name in ("portrait.png", "d3.0.mp4", "d10.0.mp4", "d2.9.mp4"):
        (folder / name).write_bytes((MEDIA / name).read_bytes())
    manifest = folder / "jobs.csv"
    manifest.write_text(
        "image,video,prompt,mode,key\n"
        "portrait.png,d3.0.mp4,dancing in the rain,720p,fox-rain\n"
        "portrait.png,d10.0.mp4,,1080p,fox-long\n"
        'portrait.png,d3.0.mp4,"on a neon street, at night",,fox-neon\n'
        "portrait.png,d2.9.mp4,,,too-short\n"
    )
    return manifest


async def test_csv_batch_makes_the_clips_shows_the_bar_and_resumes(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim()
    manifest = write_manifest(tmp_path)
    clips = tmp_path / "clips"

    code, out, err = await run_example(
        "csv_batch.py", manifest, "--out", clips, sim=sim, cwd=tmp_path
    )
    assert code == 1, (out, err)  # one job breaks a rule
    made = sorted(p.name for p in clips.iterdir())
    assert made == ["fox-long.mp4", "fox-neon.mp4", "fox-rain.mp4"]
    assert all(is_mp4(clips / name) for name in made)
    assert sim.tasks_created[sim.api_key] == 3
    assert "4/4" not in err and "━" not in err, err  # stderr is a pipe: no bar drawn on it
    assert "3 of 4 clips made (0 already done before, 0 resumed), 1 failed" in out, out
    assert "too-short: d2.9.mp4 breaks the rule min-duration" in out, out
    assert (tmp_path / "jobs.csv.journal.sqlite").exists()

    # Run again, on a terminal this time: the journal says what is done; nothing is created
    # (or paid for) twice; the bar is drawn.
    code, out2, err2 = await run_on_a_terminal(
        sys.executable,
        str(EXAMPLES / "csv_batch.py"),
        str(manifest),
        "--out",
        str(clips),
        env={**env_for(sim), "TERM": "xterm"},
        cwd=tmp_path,
    )
    assert code == 1, (out2, err2)
    assert sim.tasks_created[sim.api_key] == 3
    assert "3 of 4 clips made (3 already done before, 0 resumed), 1 failed" in out2, out2
    assert "0 credits for the clips finished now" in out2
    assert "4/4" in err2, err2  # the bar reached its end
    assert sim.api_key not in out + err + out2 + err2


async def test_csv_batch_resumes_after_ctrl_c_without_creating_twice(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # Renders that would last for days: the batch is surely still waiting when interrupted.
    sim = await make_sim(generating_seconds=1e7)
    manifest = write_manifest(tmp_path)
    clips = tmp_path / "clips"
    # A runner may start the tests with SIGINT ignored (a background job); a terminal does
    # not: give the example Python's own Ctrl-C handling, as a person typing it would have.
    ctrl_c = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ctrl_c,
        str(EXAMPLES / "csv_batch.py"),
        str(manifest),
        "--out",
        str(clips),
        cwd=tmp_path,
        env=env_for(sim),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(lambda: sim.tasks_created[sim.api_key] == 3, timeout=RUN_TIMEOUT)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=RUN_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, (out, err)
    assert b"interrupted: run the same command again to resume" in err
    assert not clips.exists() or not any(clips.iterdir())

    # The renders end (the test double's clock is moved for them); the rerun waits on the
    # tasks the first run created and makes none of its own.
    for task in sim.tasks.values():
        task.generating_at = task.done_at = sim.now()
    code, out2, err2 = await run_example(
        "csv_batch.py", manifest, "--out", clips, sim=sim, cwd=tmp_path
    )
    assert code == 1, (out2, err2)
    assert "3 of 4 clips made (0 already done before, 3 resumed), 1 failed" in out2, out2
    assert sim.tasks_created[sim.api_key] == 3
    assert sorted(p.name for p in clips.iterdir()) == [
        "fox-long.mp4",
        "fox-neon.mp4",
        "fox-rain.mp4",
    ]


async def test_csv_batch_refuses_a_bad_manifest_by_line(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim()
    manifest = write_manifest(tmp_path)
    manifest.write_text("image,video,mode\nportrait.png,d3.0.mp4,720p\nportrait.png,d3.0.mp4,4k\n")
    code, out, err = await run_example("csv_batch.py", manifest, sim=sim, cwd=tmp_path)
    assert code == 2, (out, err)
    assert "jobs.csv:3" in err and "mode" in err, err
    assert sim.count("createTask") == 0 and sim.count("streamUpload") == 0


# -- webhook_app.py ------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def webhook_app(sim: Simulator, folder: Path) -> AsyncIterator[str]:
    """Run the web app as a program on a free port; yield its URL; stop it with SIGINT."""
    log = (folder / "app.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "webhook_app.py"),
        "--port",
        "0",
        "--data-dir",
        str(folder / "data"),
        cwd=folder,
        env=env_for(sim),
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=RUN_TIMEOUT)
        assert line.startswith(b"listening on "), (line, (folder / "app.log").read_text())
        yield line.decode().split()[-1]
        proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stdout.read(), timeout=RUN_TIMEOUT)
        assert await proc.wait() == 0
        assert b"stopped" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


def clip_form(image: str, video: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", (MEDIA / image).read_bytes(), filename=image)
    form.add_field("video", (MEDIA / video).read_bytes(), filename=video)
    form.add_field("prompt", "dancing in the rain")
    return form


async def test_webhook_app_makes_a_clip_from_its_callback(
    make_sim: SimFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim()
    assert sim.webhook_hmac_key  # callbacks are signed, and the app checks them
    async with webhook_app(sim, tmp_path) as url:
        async with http.post(f"{url}/clips", data=clip_form("portrait.png", "d3.0.mp4")) as r:
            assert r.status == 202
            clip_id = (await r.json())["id"]

        status: dict[str, object] = {}

        async def done() -> bool:
            async with http.get(f"{url}/clips/{clip_id}") as r:
                status.update(await r.json())
            return status["status"] in ("success", "failed")

        # The app polls only as a fallback, first after 150 s: an outcome within this bound
        # came from the callback.
        deadline = asyncio.get_running_loop().time() + 60
        while not await done():
            assert asyncio.get_running_loop().time() < deadline, status
            await asyncio.sleep(0.05)
        assert status["status"] == "success", status
        task_id = status["task_id"]
        assert isinstance(task_id, str) and task_id in sim.tasks
        delivered = [c for c in sim.callbacks if c.task_id == task_id]
        # (Each createTask's callback URL carries a token of its job, after the "?".)
        assert [(c.url.split("?")[0], c.status) for c in delivered] == [
            (f"{url}/kling/callback", 200)
        ]
        async with http.get(f"{url}/") as r:
            assert (await r.json())["callbacks"] == {"accepted": 1, "rejected": 0, "malformed": 0}
        async with http.get(f"{url}/clips/{clip_id}/video") as r:
            assert r.status == 200
            video = await r.read()
        saved = tmp_path / "clip.mp4"
        saved.write_bytes(video)
        assert is_mp4(saved)

        # A bad file is refused at once, naming the rule; nothing is uploaded or created.
        uploads = sim.count("streamUpload")
        async with http.post(f"{url}/clips", data=clip_form("portrait.png", "d2.9.mp4")) as r:
            assert r.status == 422
            assert await r.json() == {
                "error": "2.90 s is shorter than 3 s",
                "rule": "min-duration",
                "medium": "video",
            }
        assert sim.count("streamUpload") == uploads and sim.tasks_created[sim.api_key] == 1

        # A forged callback is refused: the app verifies with KIE_WEBHOOK_KEY.
        forged = {"code": 200, "msg": "ok", "data": {"taskId": task_id, "state": "success"}}
        headers = {"X-Webhook-Timestamp": "1767694163", "X-Webhook-Signature": "Zm9yZ2Vk"}
        async with http.post(f"{url}/kling/callback", json=forged, headers=headers) as r:
            assert r.status == 401
        async with http.get(f"{url}/") as r:
            assert (await r.json())["callbacks"] == {"accepted": 1, "rejected": 1, "malformed": 0}
    assert sim.api_key not in (tmp_path / "app.log").read_text()


# -- chat_bot.py ---------------------------------------------------------------------------------
chat_bot = load("chat_bot")

Send = Callable[[str], Awaitable[None]]


def recorder() -> tuple[list[str], Send]:
    """A chat transport that keeps what the bot sent."""
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    return sent, send


async def test_chat_bot_reports_progress_and_sends_the_clip(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # A long render (3 s real) that the time-scaled polling cannot miss.
    sim = await make_sim(generating_seconds=600.0)
    sent, send = recorder()
    async with session_for(sim) as kling:
        bot = chat_bot.ClipBot(kling, download_to=tmp_path)
        result = await bot.handle_message("alice", MEDIA / "portrait.png", MEDIA / "d3.0.mp4", send)
    assert result is not None
    (clip,) = result.files
    assert is_mp4(clip)
    assert sent == [
        "Got it! Checking your picture and video…",
        "Both files look good. Uploading them…",
        "Uploading your video: 100%",  # a tiny file goes up in one step
        "Your clip is in the queue.",
        "Rendering your clip now; this usually takes a minute or two…",
        f"Your clip is ready: {clip.name}",
    ]
    assert not bot.busy


@pytest.mark.parametrize("max_per_user", [1, 2])
async def test_chat_bot_refuses_more_clips_per_user_than_its_limit(
    make_sim: SimFactory, tmp_path: Path, max_per_user: int
) -> None:
    sim = await make_sim()
    gate = asyncio.Event()
    held: list[str] = []

    async def held_send(text: str) -> None:
        # The chat transport is slow to post "queued" until the test lets it: those clips stay
        # in progress (their tasks created) for as long as the test needs.
        held.append(text)
        if text == "Your clip is in the queue.":
            await gate.wait()

    image, video = MEDIA / "portrait.png", MEDIA / "d3.0.mp4"
    async with session_for(sim) as kling:
        bot = chat_bot.ClipBot(kling, download_to=tmp_path, max_per_user=max_per_user)
        first = [
            asyncio.create_task(bot.handle_message("alice", image, video, held_send))
            for _ in range(max_per_user)
        ]
        await eventually(lambda: held.count("Your clip is in the queue.") == max_per_user)

        refused, send = recorder()
        assert await bot.handle_message("alice", image, video, send) is None
        if max_per_user == 1:
            assert refused == [
                "You already have a clip in progress. Send this again when it's done."
            ]
        else:
            assert refused == [
                "You already have 2 clips in progress, the most I make at once. Send this "
                "again when one is done."
            ]
        assert sim.tasks_created[sim.api_key] == max_per_user

        # Another user is served meanwhile.
        bob, bob_send = recorder()
        assert await bot.handle_message("bob", image, video, bob_send) is not None
        assert bob[-1].startswith("Your clip is ready: ")

        gate.set()
        results = await asyncio.gather(*first)
        assert all(result is not None for result in results)
        assert not bot.busy
        # Alice's slot is free again.
        _, again_send = recorder()
        assert await bot.handle_message("alice", image, video, again_send) is not None
    assert sim.tasks_created[sim.api_key] == max_per_user + 2


@pytest.mark.parametrize(
    ("image", "video", "medium", "why", "rule"),
    [
        ("portrait.png", "d2.9.mp4", "video", "it is too short", "min-duration"),
        ("small.png", "d3.0.mp4", "image", "it is too small", "min-dimensions"),
        ("portrait.png", "d30.2.mp4", "video", "it is too long", "max-duration"),
        ("photo.webp", "d3.0.mp4", "image", "it is not a JPEG or PNG picture", "format"),
    ],
)
async def test_chat_bot_rejects_a_bad_file_kindly_before_any_upload(
    make_sim: SimFactory,
    tmp_path: Path,
    image: str,
    video: str,
    medium: str,
    why: str,
    rule: str,
) -> None:
    sim = await make_sim()
    sent, send = recorder()
    async with session_for(sim) as kling:
        bot = chat_bot.ClipBot(kling, download_to=tmp_path)
        assert await bot.handle_message("alice", MEDIA / image, MEDIA / video, send) is None
    assert len(sent) == 2, sent
    refusal = sent[1]
    bad = video if medium == "video" else image
    assert refusal.startswith(f"Sorry, I can't use your {medium} “{bad}”: {why}"), refusal
    assert f"rule: {rule})" in refusal
    assert str(MEDIA) not in refusal  # the file's name, never the server's folders
    assert sim.count("streamUpload") == 0 and sim.count("createTask") == 0
    assert not bot.busy


async def test_chat_bot_explains_a_lack_of_credits_without_the_key(
    make_sim: SimFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await make_sim()
    poor = "sk-poor-account-key-0001"
    sim.add_key(poor, credits=0)
    sent, send = recorder()
    async with session_for(sim, api_key=poor) as kling:
        bot = chat_bot.ClipBot(kling, download_to=tmp_path)
        result = await bot.handle_message("alice", MEDIA / "portrait.png", MEDIA / "d3.0.mp4", send)
    assert result is None
    assert sim.count("createTask", code=402) == 1
    assert sent[-1] == (
        "Sorry, I can't make clips right now: the bot's account has run out of credits. "
        "The operator has been told; please try again later."
    )
    assert "InsufficientCreditsError" in caplog.text  # the operator's side of the story
    assert all(poor not in text for text in sent) and poor not in caplog.text
    assert not bot.busy


async def test_chat_bot_says_when_the_service_could_not_make_the_clip(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(failure_rate=1.0)
    sent, send = recorder()
    async with session_for(sim) as kling:
        bot = chat_bot.ClipBot(kling, download_to=tmp_path)
        result = await bot.handle_message("alice", MEDIA / "portrait.png", MEDIA / "d3.0.mp4", send)
    assert result is None
    assert len(sim.tasks) == 1 and all(task.will_fail for task in sim.tasks.values())
    assert sent[-1].startswith("The video service could not make this clip ("), sent
    assert "A clip that fails costs nothing" in sent[-1]
    assert not bot.busy


async def test_chat_bot_runs_from_the_terminal_with_the_environment(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim()
    code, out, err = await run_example(
        "chat_bot.py",
        MEDIA / "portrait.png",
        MEDIA / "d3.0.mp4",
        "--out",
        tmp_path / "clips",
        sim=sim,
        cwd=tmp_path,
    )
    assert code == 0, (out, err)
    (clip,) = (tmp_path / "clips").iterdir()
    assert is_mp4(clip)
    assert out.splitlines()[-1] == f"bot: Your clip is ready: {clip.name}"
    assert sim.api_key not in out + err
