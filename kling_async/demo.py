"""``make demo``: a small batch of clips on the embedded simulator; no key and no network needed.

It uploads the sample character picture and motion video shipped with the package (each once),
creates a few tasks concurrently, waits for them under the documented rate limits, downloads the
results into ``demo-output/`` and prints a line per step and a summary. The simulator runs 50 times
faster than the real service, so a clip that would take 100 s takes 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from .models import Mode, MotionControlInput, Task
from .session import DEFAULT_CREATE_LIMIT, DEFAULT_POLL, DEFAULT_QUERY_LIMIT, KlingSession
from .simulator import Simulator, SimulatorConfig

__all__ = ["main", "run_demo"]

ASSETS = Path(__file__).resolve().parent / "assets"
PROMPTS = (
    "The character dances on a neon-lit street at night.",
    "The character dances in a sunny park.",
    "The character dances on a rooftop at dawn.",
    "The character dances in a snowy forest.",
)


def _say(start: float, text: str) -> None:
    print(f"[{time.monotonic() - start:6.2f} s] {text}", flush=True)


async def run_demo(output: Path, clips: int = 4, time_scale: float = 0.02) -> list[Path]:
    """Run the demo batch; return the downloaded files."""
    start = time.monotonic()
    config = SimulatorConfig(time_scale=time_scale)
    async with Simulator(config) as sim:
        _say(start, f"simulator up at {sim.base_url} (time x{1 / time_scale:g})")
        async with KlingSession(
            sim.api_key,
            base_url=sim.base_url,
            upload_base_url=sim.upload_base_url,
            create_limit=DEFAULT_CREATE_LIMIT.scaled(time_scale),
            query_limit=DEFAULT_QUERY_LIMIT.scaled(time_scale),
            poll=DEFAULT_POLL.scaled(time_scale),
        ) as kling:
            credits_before = await kling.get_credits()
            image, video = await asyncio.gather(
                kling.upload_image(ASSETS / "character.png"),
                kling.upload_video(ASSETS / "motion.mp4"),
            )
            _say(start, f"validated and uploaded {image.file_name} and {video.file_name}")

            async def one(index: int) -> Path:
                mode: Mode = "1080p" if index % 2 else "720p"
                inp = MotionControlInput(
                    image.url, video.url, prompt=PROMPTS[index % len(PROMPTS)], mode=mode
                )
                task_id = await kling.create_task(inp)
                _say(start, f"clip {index + 1}: task {task_id} created ({mode})")

                def on_update(task: Task) -> None:
                    _say(start, f"clip {index + 1}: {task.state.value}")

                task = await kling.wait_for_task(task_id, on_update=on_update)
                path = await kling.download(task, output / f"clip-{index + 1}.mp4", overwrite=True)
                _say(start, f"clip {index + 1}: downloaded {path} ({path.stat().st_size} bytes)")
                return path

            files = await asyncio.gather(*(one(i) for i in range(clips)))
            spent = credits_before - await kling.get_credits()
            uploads = kling.uploads_sent
    elapsed = time.monotonic() - start
    print(
        f"\n{len(files)} clips in {elapsed:.1f} s ({elapsed / time_scale / 60:.1f} min of service "
        f"time), {spent:g} credits, {uploads} uploads sent, output in {output}/"
    )
    return files


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m kling_async.demo``."""
    parser = argparse.ArgumentParser(prog="python -m kling_async.demo", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("demo-output"))
    parser.add_argument("--clips", type=int, default=4)
    args = parser.parse_args(argv)
    asyncio.run(run_demo(args.output, args.clips))


if __name__ == "__main__":
    main()
