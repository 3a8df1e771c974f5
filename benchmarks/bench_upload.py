"""Upload throughput vs ``curl -F``, memory growth, and header-only validation vs ffprobe.

Uploads are interleaved in pairs, one of ours and one of curl's right after it (every other
pair curl first, so a drift in load favours neither), with the same file to the same simulator
endpoint; the figure is the median of the per-pair ratios (with their smallest and largest), so
a busy moment on a shared machine moves one pair, not the result. The simulator runs in its own
process, so neither client shares a CPU with the server, and stores uploads in memory, so the
disk's noise is left out.

The full run uploads a ~100 MB, 30 s video, made with ffmpeg when it is installed (otherwise,
and in the quick run, a small real MP4 padded to size with a box readers skip). Without curl
or ffprobe their ratios are reported as skipped.

    python -m benchmarks.bench_upload            # full
    python -m benchmarks.bench_upload --quick    # what ``python -m benchmarks`` runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import attrs

from kling_async import KlingSession, validate_video

from ._remote import memory_folder, remote_simulator
from ._report import Row, Spread, at_least, at_most, judged, pair_ratios, skipped

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
FULL_PAIRS = 21
QUICK_PAIRS = 15
QUICK_MIB = 64
UPLOAD_GOAL = 0.8
MEMORY_GOAL_MB = 32.0
VALIDATE_GOAL = 10.0


def make_video(folder: Path, size_mib: int | None = None) -> Path:
    """A video of ``size_mib`` MiB (padded), or of ~100 MB encoded by ffmpeg if it is there."""
    target = folder / "big.mp4"
    if size_mib is None and shutil.which("ffmpeg"):
        subprocess.run(
            [
                "ffmpeg",
                "-y",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=30,noise=alls=20:allf=t",
                "-t",
                "30",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-b:v",
                "26M",
                "-maxrate",
                "26M",
                "-bufsize",
                "52M",
                str(target),
            ],
            check=True,
        )
        return target
    # A real 30 s MP4 followed by a large 'free' box, which readers skip.
    raw = (ROOT / "tests" / "media" / "d30.0.mp4").read_bytes()
    pad = (size_mib or 95) * 1024 * 1024 - len(raw) - 8
    with target.open("wb") as out:
        out.write(raw + (pad + 8).to_bytes(4, "big") + b"free")
        block = b"\0" * (1024 * 1024)
        for _ in range(pad // len(block)):
            out.write(block)
        out.write(b"\0" * (pad % len(block)))
    return target


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@attrs.frozen
class UploadFigures:
    """Seconds per upload (ours and curl's, pair by pair), memory, and validation times."""

    size_bytes: int
    ours: list[float]
    curl: list[float] | None
    rss_growth_mb: float
    traced_peak_mb: float
    validate_s: float
    ffprobe_s: float | None

    def rate(self, times: list[float]) -> float:
        """MB/s of the median upload."""
        return self.size_bytes / 1e6 / statistics.median(times)

    def spread(self) -> Spread | None:
        """Curl's time over ours, pair by pair (None without curl)."""
        return pair_ratios(self.ours, self.curl) if self.curl is not None else None


async def curl_upload(video: Path, base: str, name: str) -> float:
    """Seconds for ``curl -F`` to stream ``video`` to the upload endpoint (it must succeed)."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-H",
        f"Authorization: Bearer {KEY}",
        "-F",
        f"file=@{video}",
        "-F",
        "uploadPath=bench",
        "-F",
        f"fileName={name}",
        f"{base}/api/file-stream-upload",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    elapsed = time.perf_counter() - started
    answer = json.loads(out) if proc.returncode == 0 else {}
    if answer.get("code") != 200 or answer["data"]["fileSize"] != video.stat().st_size:
        raise RuntimeError(f"curl upload failed: {out[:200]!r} {err[:200]!r}")
    return elapsed


def _timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


async def measure(video: Path, pairs: int) -> UploadFigures:
    """Validate, then upload ``video`` in ``pairs`` interleaved pairs, ours then curl's."""
    size = video.stat().st_size
    ours_validate = statistics.median(_timed(lambda: validate_video(video)) for _ in range(20))
    probe_s = None
    if shutil.which("ffprobe"):
        command = ["ffprobe", "-v", "error", "-show_format", "-show_streams", str(video)]
        probe_s = statistics.median(
            _timed(lambda: subprocess.run(command, check=True, capture_output=True))
            for _ in range(5)
        )
    with_curl = shutil.which("curl") is not None
    async with (
        remote_simulator(key=KEY) as sim,
        KlingSession(KEY, base_url=sim.base_url, upload_base_url=sim.base_url) as kling,
    ):
        # Warm up (connections, imports) on a small file; memory grows from here on.
        await kling.upload_file(ROOT / "tests" / "media" / "d3.0.mp4")
        rss_before = peak_rss_mb()
        # Then both on the big file, so the first timed pair is not slower for being first.
        await kling.upload_file(video, upload_path="bench", file_name="warm.mp4")
        if with_curl:
            await curl_upload(video, sim.base_url, "warm.mp4")
        ours: list[float] = []
        curl: list[float] = []
        for i in range(pairs):
            # Every other pair curl goes first: a drift (the machine getting busier) then
            # slows each side as often as the other.
            if with_curl and i % 2:
                curl.append(await curl_upload(video, sim.base_url, f"curl{i}.mp4"))
            started = time.perf_counter()
            # A new name each run: the session would otherwise reuse its first upload.
            done = await kling.upload_file(video, upload_path="bench", file_name=f"ours{i}.mp4")
            ours.append(time.perf_counter() - started)
            if done.size_bytes != size:
                raise RuntimeError(f"uploaded {done.size_bytes} bytes of {size}")
            if with_curl and not i % 2:
                curl.append(await curl_upload(video, sim.base_url, f"curl{i}.mp4"))
        # Traced apart from the timed runs: tracing slows every allocation down.
        tracemalloc.start()
        await kling.upload_file(video, upload_path="bench", file_name="traced.mp4")
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_growth = peak_rss_mb() - rss_before
    return UploadFigures(
        size,
        ours,
        curl if with_curl else None,
        rss_growth,
        traced_peak / 1024**2,
        ours_validate,
        probe_s,
    )


def rows(figures: UploadFigures) -> list[Row]:
    """The figures as table rows."""
    mib = figures.size_bytes / 1024**2
    upload = f"upload a {mib:.0f} MiB file, vs curl -F (median of per-pair ratios)"
    ours_rate = f"{figures.rate(figures.ours):.0f} MB/s"
    spread = figures.spread()
    result = [
        skipped("upload", upload, "curl not installed", ours_rate)
        if spread is None or figures.curl is None
        else judged(
            "upload",
            upload,
            value=ours_rate,
            baseline=f"curl -F {figures.rate(figures.curl):.0f} MB/s",
            ratio=spread.text(),
            goal=at_least(UPLOAD_GOAL),
            checked=spread.median,
        ),
        judged(
            "upload",
            "peak RSS growth while uploading",
            value=f"{figures.rss_growth_mb:.1f} MB",
            baseline=f"file {figures.size_bytes / 1e6:.0f} MB",
            goal=at_most(MEMORY_GOAL_MB, " MB"),
            checked=figures.rss_growth_mb,
        ),
    ]
    validate = "header-only validation vs one ffprobe"
    ours_ms = f"{figures.validate_s * 1000:.2f} ms"
    if figures.ffprobe_s is None:
        result.append(skipped("upload", validate, "ffprobe not installed", ours_ms))
    else:
        times = figures.ffprobe_s / figures.validate_s
        result.append(
            judged(
                "upload",
                validate,
                value=ours_ms,
                baseline=f"ffprobe {figures.ffprobe_s * 1000:.1f} ms",
                ratio=f"{times:.0f}x faster",
                goal=at_least(VALIDATE_GOAL, "x"),
                checked=times,
            )
        )
    return result


async def quick() -> list[Row]:
    """A 64 MiB file, 15 interleaved pairs."""
    with tempfile.TemporaryDirectory(prefix="kling-bench-", dir=memory_folder()) as folder:
        return rows(await measure(make_video(Path(folder), QUICK_MIB), QUICK_PAIRS))


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the quick run's file and pairs")
    parser.add_argument("--pairs", type=int, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kling-bench-", dir=memory_folder()) as folder:
        video = make_video(Path(folder), QUICK_MIB if args.quick else None)
        pairs = args.pairs or (QUICK_PAIRS if args.quick else FULL_PAIRS)
        figures = await measure(video, pairs)
    print(f"\n== upload and validation: {figures.size_bytes / 1e6:.1f} MB ==")
    print(f"kling_async seconds per upload: {', '.join(f'{t:.2f}' for t in figures.ours)}")
    if figures.curl is not None:
        print(f"curl -F seconds per upload:     {', '.join(f'{t:.2f}' for t in figures.curl)}")
    print(f"(ours includes hashing the file; traced Python peak {figures.traced_peak_mb:.1f} MB)")
    for row in rows(figures):
        print(
            f"{row.figure}: {row.value}; {row.baseline}; ratio {row.ratio}; "
            f"goal {row.goal}: {row.verdict}"
        )


if __name__ == "__main__":
    asyncio.run(main())
