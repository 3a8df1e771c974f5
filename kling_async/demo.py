"""``make demo``: a small batch of clips on the embedded simulator; no key and no network needed.

It runs ``generate_many`` over a handful of jobs that share the sample character picture and
motion video shipped with the package: each file is checked and uploaded once, the tasks are
created and awaited concurrently under the documented rate limits, and each clip is downloaded
into ``demo-output/`` as soon as it is ready, with a line per step and a summary at the end. The
simulator runs 50 times faster than the real service, so a clip that would take 100 s takes 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from .jobs import Job, JobEvent, JobEventKind
from .simulator import Simulator, SimulatorConfig

__all__ = ["main", "run_demo"]

ASSETS = Path(__file__).resolve().parent / "assets"
SCENES = ("a neon-lit street at night", "a sunny park", "a rooftop at dawn", "a snowy forest")


async def run_demo(
    output: Path, clips: int = 4, time_scale: float = 0.02, *, as_json: bool = False
) -> list[Path]:
    """Run the demo batch; return the downloaded files.

    With ``as_json``, it prints one JSON object per finished clip and one for the summary
    instead of a line per step.
    """
    start = time.monotonic()

    def say(text: str) -> None:
        if not as_json:
            print(f"[{time.monotonic() - start:6.2f} s] {text}", flush=True)

    def on_event(event: JobEvent) -> None:
        name = event.job_key
        if event.kind is JobEventKind.VALIDATED:
            say(f"{name}: {event.detail} {event.path.name if event.path else ''} passes the rules")
        elif event.kind is JobEventKind.UPLOADED:
            say(f"{name}: {event.detail} uploaded ({event.bytes} bytes)")
        elif event.kind is JobEventKind.CREATED:
            say(f"{name}: task {event.task_id} created")
        elif event.kind is JobEventKind.STATE_CHANGED and event.task is not None:
            say(f"{name}: {event.task.state.value}")
        elif event.kind is JobEventKind.DOWNLOADED:
            say(f"{name}: saved {event.path} ({event.bytes} bytes)")
        elif event.kind is JobEventKind.FAILED:
            say(f"{name}: failed: {event.detail}")

    jobs = [
        Job(
            ASSETS / "character.png",
            ASSETS / "motion.mp4",
            prompt=f"The character dances in {SCENES[i % len(SCENES)]}.",
            mode=("1080p" if i % 2 else "720p"),
            key=f"clip-{i + 1}",
        )
        for i in range(clips)
    ]
    async with Simulator(SimulatorConfig(time_scale=time_scale)) as sim:
        say(f"simulator of the service up at {sim.base_url} (time runs x{1 / time_scale:g})")
        async with sim.session() as kling:
            credits_before = await kling.get_credits()
            files: list[Path] = []
            failed = 0
            async for outcome in kling.generate_many(jobs, download_to=output, on_event=on_event):
                if outcome.result is not None:
                    files.extend(outcome.result.files)
                else:
                    failed += 1
                if as_json:
                    saved = [str(f) for f in outcome.result.files] if outcome.result else []
                    error = None if outcome.ok else str(outcome.error)
                    fields = {"key": outcome.job_key, "task_id": outcome.task_id}
                    print(json.dumps({**fields, "files": saved, "error": error}), flush=True)
            spent = credits_before - await kling.get_credits()
            uploads = kling.uploads_sent
    elapsed = time.monotonic() - start
    if as_json:
        summary = {"clips": len(files), "failed": failed, "seconds": round(elapsed, 2)}
        summary |= {"credits": spent, "uploads": uploads}
        print(json.dumps({**summary, "output": str(output)}), flush=True)
        return files
    print(
        f"\n{len(files)} clips ({failed} failed) in {elapsed:.1f} s, i.e. "
        f"{elapsed / time_scale / 60:.1f} min of service time; {spent:g} credits; "
        f"{uploads} uploads for {clips} jobs; files in {output}/"
    )
    return files


def main(argv: list[str] | None = None, prog: str = "python -m kling_async.demo") -> None:
    """Entry point of ``python -m kling_async.demo`` (``prog`` names it in ``--help``)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("demo-output"))
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="one JSON object per clip")
    args = parser.parse_args(argv)
    asyncio.run(run_demo(args.output, args.clips, as_json=args.json))


if __name__ == "__main__":
    main()
