"""Docs that run: every Python block of the README runs, as written, against the simulator."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import SimFactory

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "kling_async" / "assets"
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_its_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("number", range(len(BLOCKS)))
async def test_a_readme_block_runs_as_written(
    make_sim: SimFactory, tmp_path: Path, number: int
) -> None:
    sim = await make_sim(time_scale=0.002)
    # The files the examples name, made from the package's own sample media.
    shutil.copy(ASSETS / "character.png", tmp_path / "character.png")
    shutil.copy(ASSETS / "character.png", tmp_path / "fox.png")
    shutil.copy(ASSETS / "motion.mp4", tmp_path / "dance.mp4")
    (tmp_path / "dances").mkdir()
    for name in ("salsa.mp4", "tango.mp4"):
        shutil.copy(ASSETS / "motion.mp4", tmp_path / "dances" / name)
    script = tmp_path / "example.py"
    script.write_text(BLOCKS[number])
    env = dict(os.environ)
    env.update(
        KIE_API_KEY=sim.api_key,
        KIE_BASE_URL=sim.base_url,
        KIE_WEBHOOK_KEY=sim.webhook_hmac_key or "",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=100)
    assert proc.returncode == 0, f"README block {number + 1} failed:\n{out.decode()}"
