"""Regenerate the small real media files under tests/media with ffmpeg, and record ffprobe's view.

Run by hand when the set changes (``python tests/media/make_media.py``); the files are committed so
the tests need no encoder. ``manifest.json`` holds ffprobe's durations and sizes as ground truth.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

HERE = Path(__file__).parent
V = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10"]
A = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "45", "-pix_fmt", "yuv420p"]


def ffmpeg(name: str, *args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *args, str(HERE / name)], check=True)


def videos() -> None:
    for seconds in ("2.9", "3.0", "10.0", "10.5", "30.0", "30.2"):
        ffmpeg(f"d{seconds}.mp4", *V, "-t", seconds, *X264)
    ffmpeg("faststart.mp4", *V, "-t", "5", *X264, "-movflags", "+faststart")
    ffmpeg(
        "fragmented.mp4", *V, "-t", "6", *X264, "-movflags", "frag_keyframe+empty_moov", "-g", "5"
    )
    ffmpeg("quicktime.mov", *V, "-t", "4", *X264)
    ffmpeg("matroska.mkv", *V, "-t", "5", *X264)
    ffmpeg("unrotated.tmp.mp4", *V, "-t", "4", *X264)
    ffmpeg(
        "rotated.mp4",
        "-i",
        str(HERE / "unrotated.tmp.mp4"),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
    )
    (HERE / "unrotated.tmp.mp4").unlink()
    ffmpeg("aac10.mkv", *V, *A, "-t", "10", *X264, "-c:a", "aac", "-shortest")
    ffmpeg(
        "aac10_frag.mp4",
        *V,
        *A,
        "-t",
        "10",
        *X264,
        "-c:a",
        "aac",
        "-movflags",
        "frag_keyframe+empty_moov",
        "-g",
        "5",
    )
    # Input options precede their input: video 10.0 s, audio 10.5 s.
    ffmpeg("audio_longer.mp4", "-t", "10", *V, "-t", "10.5", *A, *X264, "-c:a", "aac")
    ffmpeg("webm.webm", *V, "-t", "4", "-c:v", "libvpx", "-b:v", "20k")
    ffmpeg("d12.mov", *V, "-t", "12", *X264)
    # Matroska written to a pipe. ffmpeg 5.1 still writes Duration and Cluster sizes here, so the
    # tests patch those out to get what a live writer leaves.
    with (HERE / "piped.mkv").open("wb") as out:
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", *V, "-t", "6", *X264, "-f", "matroska", "-"],
            check=True,
            stdout=out,
        )


def images() -> None:
    ffmpeg("portrait.png", "-f", "lavfi", "-i", "testsrc=size=400x600", "-frames:v", "1")
    ffmpeg("portrait.jpg", "-f", "lavfi", "-i", "testsrc=size=400x600", "-frames:v", "1")
    ffmpeg(
        "progressive.jpg",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x480",
        "-frames:v",
        "1",
        "-c:v",
        "mjpeg",
        "-huffman",
        "optimal",
    )
    ffmpeg("small.png", "-f", "lavfi", "-i", "testsrc=size=300x400", "-frames:v", "1")
    ffmpeg("wide.png", "-f", "lavfi", "-i", "testsrc=size=1300x500", "-frames:v", "1")
    ffmpeg("animated.gif", "-f", "lavfi", "-i", "testsrc=size=400x400:rate=2", "-t", "1")
    ffmpeg("photo.webp", "-f", "lavfi", "-i", "testsrc=size=400x400", "-frames:v", "1")


def assets() -> None:
    """The package's own sample media: the demo's inputs and the simulator's generated result."""
    out = HERE.parent.parent / "kling_async" / "assets"
    run = ["ffmpeg", "-y", "-loglevel", "error"]
    subprocess.run(
        [
            *run,
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=360x540",
            "-frames:v",
            "1",
            str(out / "character.png"),
        ],
        check=True,
    )
    subprocess.run(
        [
            *run,
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=96x128:rate=10",
            "-t",
            "4",
            *X264,
            "-movflags",
            "+faststart",
            str(out / "motion.mp4"),
        ],
        check=True,
    )
    subprocess.run(
        [
            *run,
            "-f",
            "lavfi",
            "-i",
            "mandelbrot=size=96x128:rate=10",
            "-t",
            "4",
            *X264,
            "-movflags",
            "+faststart",
            str(out / "result.mp4"),
        ],
        check=True,
    )


def probe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(out)
    video = next(s for s in data["streams"] if s["codec_type"] == "video")
    tags = video.get("tags", {})
    stream_duration = video.get("duration") or tags.get("DURATION")
    if isinstance(stream_duration, str) and ":" in stream_duration:
        h, m, s = stream_duration.split(":")
        stream_duration = int(h) * 3600 + int(m) * 60 + float(s)
    return {
        "format_duration": float(data["format"].get("duration", "nan")),
        "video_duration": float(stream_duration) if stream_duration else None,
        "width": video["width"],
        "height": video["height"],
        "rotation": next(
            (int(d["rotation"]) % 360 for d in video.get("side_data_list", []) if "rotation" in d),
            0,
        ),
    }


def main() -> None:
    videos()
    images()
    assets()
    manifest = {}
    for path in sorted(HERE.iterdir()):
        if path.suffix in (".mp4", ".mov", ".mkv", ".webm"):
            manifest[path.name] = probe(path)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
