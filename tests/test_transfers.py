"""Uploads and downloads through KlingSession, against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import shutil
import tracemalloc
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from kling_async import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    KlingSession,
    MediaValidationError,
    MotionControlInput,
    NotFoundError,
)
from kling_async.demo import run_demo
from kling_async.downloads import safe_file_name
from kling_async.simulator import FaultConfig, Simulator

from .conftest import MEDIA, SimFactory, session_for


async def test_upload_image_validates_then_streams(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with session_for(sim) as kling:
        up = await kling.upload_image(MEDIA / "portrait.jpg")
    raw = (MEDIA / "portrait.jpg").read_bytes()
    assert up.file_name.endswith(".jpg") and len(up.file_name) == 36
    assert (up.size_bytes, up.mime_type) == (len(raw), "image/jpeg")
    assert up.expires_at - up.uploaded_at == timedelta(hours=24)
    assert up.file_path.endswith(up.file_name)
    async with http.get(up.url) as r:
        assert await r.read() == raw


@pytest.mark.parametrize(
    ("method", "name", "rule"),
    [
        ("upload_image", "animated.gif", "format"),
        ("upload_image", "small.png", "min-dimensions"),
        ("upload_video", "d2.9.mp4", "min-duration"),
        ("upload_video", "portrait.png", "format"),
    ],
)
async def test_a_bad_file_is_refused_before_any_byte_is_sent(
    sim: Simulator, method: str, name: str, rule: str
) -> None:
    async with session_for(sim) as kling:
        with pytest.raises(MediaValidationError) as caught:
            await getattr(kling, method)(MEDIA / name)
    assert caught.value.rule == rule and caught.value.path == str(MEDIA / name)
    assert sim.count("streamUpload") == 0


async def test_orientation_image_caps_the_video_at_10_s(sim: Simulator) -> None:
    async with session_for(sim) as kling:
        assert (await kling.upload_video(MEDIA / "d12.mov")).mime_type == "video/quicktime"
        with pytest.raises(MediaValidationError, match="10 s"):
            await kling.upload_video(MEDIA / "d12.mov", character_orientation="image")


async def test_the_same_content_is_uploaded_once(sim: Simulator, tmp_path: Path) -> None:
    copy = tmp_path / "same-dance.mp4"
    shutil.copy(MEDIA / "d10.0.mp4", copy)
    async with session_for(sim) as kling:
        ups = await asyncio.gather(
            *(kling.upload_video(MEDIA / "d10.0.mp4") for _ in range(100)),
            kling.upload_video(copy),
        )
        other = await kling.upload_video(MEDIA / "d3.0.mp4")
    assert len({u.url for u in ups}) == 1
    assert other.url != ups[0].url
    assert sim.count("streamUpload") == 2 and kling.uploads_sent == 2


async def test_progress_is_reported_as_bytes_go(sim: Simulator) -> None:
    seen: list[tuple[int, int]] = []
    async with session_for(sim) as kling:
        await kling.upload_video(MEDIA / "d30.0.mp4", on_progress=lambda s, t: seen.append((s, t)))
    total = (MEDIA / "d30.0.mp4").stat().st_size
    assert seen and seen[-1] == (total, total)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)


async def test_upload_file_bytes_paths_and_fixed_names(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    small = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    large = b"y" * (2 * 1024 * 1024)
    async with session_for(sim) as kling:
        a = await kling.upload_file(small)
        b = await kling.upload_file(large, upload_path="blobs", file_name="big.bin")
        c = await kling.upload_file(small, upload_path="blobs", file_name="big.bin")  # overwrites
        d = await kling.upload_file(MEDIA / "portrait.png", upload_path="pics")
    assert a.file_name.endswith(".png")
    assert b.url == c.url and d.file_path.startswith("pics/")
    assert sim.count("base64Upload") == 2 and sim.count("streamUpload") == 2
    async with http.get(b.url) as r:
        assert await r.read() == small


async def test_upload_from_url(sim: Simulator) -> None:
    async with session_for(sim) as kling:
        hosted = await kling.upload_image(MEDIA / "portrait.png")
        fetched = await kling.upload_from_url(hosted.url, file_name="copy.png")
    assert fetched.file_name == "copy.png" and fetched.size_bytes == hosted.size_bytes
    assert sim.count("urlUpload") == 1


async def test_transient_upload_failures_are_retried(sim: Simulator) -> None:
    sim.reconfigure(
        faults=FaultConfig(error_500=0.5, drop=0.2, seed=5, endpoints=frozenset({"streamUpload"}))
    )
    async with session_for(sim, max_retries=10) as kling:
        ups = [
            await kling.upload_file(MEDIA / name)
            for name in ("d3.0.mp4", "d10.0.mp4", "d10.5.mp4", "d12.mov")
        ]
    assert len({u.url for u in ups}) == 4
    assert sim.count("streamUpload") > 4  # some attempts failed and were repeated


async def test_upload_host_errors_map_to_api_errors(sim: Simulator) -> None:
    async with session_for(sim) as kling:
        with pytest.raises(InvalidRequestError) as caught:
            await kling.upload_file(b"abc", upload_path="../escape")
    assert caught.value.code == 400
    async with KlingSession(
        "bad-key", base_url=sim.base_url, upload_base_url=sim.upload_base_url
    ) as stranger:
        with pytest.raises(AuthenticationError):
            await stranger.upload_image(MEDIA / "portrait.png")


async def test_streaming_upload_memory_does_not_grow_with_file_size(
    sim: Simulator, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    async with session_for(sim) as kling:
        tracemalloc.start()
        try:
            up = await kling.upload_file(big)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert up.size_bytes == 64 * 1024 * 1024
    assert peak < 16 * 1024 * 1024  # client and simulator together, for a 64 MB file


# -- downloads -----------------------------------------------------------------------------------


async def finished_task(kling: KlingSession) -> object:
    image = await kling.upload_image(MEDIA / "portrait.png")
    video = await kling.upload_video(MEDIA / "d10.0.mp4")
    return await kling.wait_for_task(
        await kling.create_task(MotionControlInput(image.url, video.url))
    )


async def test_download_streams_without_the_key_and_never_clobbers(
    sim: Simulator, tmp_path: Path
) -> None:
    async with session_for(sim) as kling:
        task = await finished_task(kling)
        first = await kling.download(task, tmp_path)  # type: ignore[arg-type]
        second = await kling.download(task, tmp_path)  # type: ignore[arg-type]
        explicit = tmp_path / "clip.mp4"
        await kling.download(task, explicit)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="exists"):
            await kling.download(task, explicit)  # type: ignore[arg-type]
        assert await kling.download(task, explicit, overwrite=True) == explicit  # type: ignore[arg-type]
        link = await kling.get_download_url(task.result_urls[0])  # type: ignore[attr-defined]
        via_link = await kling.download(link, tmp_path / "linked.mp4")
    asset = (Path(__file__).parent.parent / "kling_async" / "assets" / "result.mp4").read_bytes()
    assert first.parent == tmp_path and second != first and second.name.endswith("-1.mp4")
    for path in (first, second, explicit, via_link):
        assert path.read_bytes() == asset
    assert not list(tmp_path.glob("*.part"))
    results = [r for r in sim.requests if r.endpoint == "result"]
    assert len(results) == 5 and not any(r.had_authorization for r in results)


async def test_failed_download_leaves_nothing_behind(sim: Simulator, tmp_path: Path) -> None:
    async with session_for(sim, max_retries=1) as kling:
        with pytest.raises(NotFoundError):
            await kling.download(f"{sim.base_url}/results/{'0' * 32}.mp4", tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://cdn.example/a/b/clip.mp4?sig=1", "clip.mp4"),
        ("https://cdn.example/..%2F..%2Fetc%2Fpasswd", "etc_passwd"),
        ("https://cdn.example/", "result.mp4"),
        ("https://cdn.example/...", "result.mp4"),
        ("https://cdn.example/%00evil name.mp4", "evil_name.mp4"),
    ],
)
def test_names_from_urls_are_sanitised(url: str, name: str) -> None:
    assert safe_file_name(url) == name


async def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    files = await run_demo(tmp_path, clips=3, time_scale=0.005)
    assert sorted(p.name for p in files) == ["clip-1.mp4", "clip-2.mp4", "clip-3.mp4"]
    assert all(p.stat().st_size > 0 for p in files)


async def test_uploads_go_to_the_upload_host(make_sim: SimFactory) -> None:
    sim = await make_sim(split_hosts=True)
    async with session_for(sim) as kling:
        up = await kling.upload_image(MEDIA / "portrait.png")
    assert up.url.startswith(sim.upload_base_url) and sim.upload_base_url != sim.base_url
