"""A ~100 MB, 30 s video: upload throughput vs ``curl -F``, memory growth, validation vs ffprobe.

The simulator runs in its own process so that neither client shares a CPU with the server. The
video is made with ffmpeg when it is installed; otherwise a small real MP4 is padded to size
(then the ffprobe ratio is skipped).

    python -m benchmarks.bench_upload
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

from kling_async import KlingSession, validate_video

from ._remote import remote_simulator

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
RUNS = 3


def make_video(folder: Path) -> Path:
    target = folder / "big.mp4"
    if shutil.which("ffmpeg"):
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
    # No encoder: a real 30 s MP4 followed by a large 'free' box, which readers skip.
    raw = (ROOT / "tests" / "media" / "d30.0.mp4").read_bytes()
    pad = 95 * 1024 * 1024
    target.write_bytes(raw + (pad + 8).to_bytes(4, "big") + b"free" + b"\0" * pad)
    return target


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="kling-bench-"))
    try:
        async with remote_simulator(key=KEY) as sim:
            base = sim.base_url
            video = make_video(folder)
            size_mb = video.stat().st_size / 1024**2

            # Validation: ours (headers only) vs one ffprobe process.
            ours_s = statistics.median(_timed(lambda: validate_video(video)) for _ in range(20))
            probe_s = None
            if shutil.which("ffprobe"):
                probe_s = statistics.median(
                    _timed(
                        lambda: subprocess.run(
                            ["ffprobe", "-v", "error", "-show_format", "-show_streams", str(video)],
                            check=True,
                            capture_output=True,
                        )
                    )
                    for _ in range(5)
                )

            # Upload: curl -F to the same server.
            curl_s = statistics.median(
                _timed(
                    lambda: subprocess.run(
                        [
                            "curl",
                            "-sS",
                            "-o",
                            "/dev/null",
                            "-H",
                            f"Authorization: Bearer {KEY}",
                            "-F",
                            f"file=@{video}",
                            "-F",
                            "uploadPath=bench",
                            f"{base}/api/file-stream-upload",
                        ],
                        check=True,
                    )
                )
                for _ in range(RUNS)
            )

            async with KlingSession(KEY, base_url=base, upload_base_url=base) as kling:
                await kling.upload_file(ROOT / "tests" / "media" / "d3.0.mp4")  # warm up
                rss_before = peak_rss_mb()
                tracemalloc.start()
                times = []
                for i in range(RUNS):
                    started = time.perf_counter()
                    # A new name each run: the session would otherwise reuse its first upload.
                    await kling.upload_file(video, upload_path="bench", file_name=f"run{i}.mp4")
                    times.append(time.perf_counter() - started)
                _, traced_peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                rss_growth = peak_rss_mb() - rss_before
            ours_upload_s = statistics.median(times)

            print(f"\n== upload and validation: {size_mb:.1f} MB, 30 s video ==")
            print(
                f"upload   kling_async {size_mb / ours_upload_s:7.1f} MB/s   "
                f"curl -F {size_mb / curl_s:7.1f} MB/s"
                f"   ratio {curl_s / ours_upload_s:.2f}"
                " (goal >= 0.8; ours includes hashing the file)"
            )
            print(
                f"memory   peak RSS growth {rss_growth:.1f} MB, "
                f"traced Python peak {traced_peak / 1024**2:.1f} MB"
                " (goal < 32 MB)"
            )
            line = f"validate kling_async {ours_s * 1000:.2f} ms"
            if probe_s is not None:
                line += f"   ffprobe {probe_s * 1000:.1f} ms   "
                line += f"ours {probe_s / ours_s:.0f}x faster (goal >= 10x)"
            else:
                line += "   (ffprobe not installed: no ratio)"
            print(line)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


if __name__ == "__main__":
    asyncio.run(main())
