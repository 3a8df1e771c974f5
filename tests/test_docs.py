"""The API reference keeps up with the code; the docs' own examples run.

``make test`` builds the site with ``mkdocs build --strict``, which fails on a broken link,
cross-reference, README snippet or docstring. What the build cannot see is a public name that no
page mentions: that is checked here, with the docs' hand-written test example.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

import kling_async
import kling_async.simulator

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
ASSETS = ROOT / "kling_async" / "assets"
ENTRY = re.compile(r"^::: ([\w.]+)\s*$", re.M)


def reference_entries() -> set[str]:
    """Every ``::: dotted.name`` entry of the reference pages."""
    return {name for page in REFERENCE.glob("*.md") for name in ENTRY.findall(page.read_text())}


@pytest.mark.parametrize("module", [kling_async, kling_async.simulator], ids=lambda m: m.__name__)
def test_every_public_name_has_a_reference_entry(module: ModuleType) -> None:
    entries = reference_entries()
    missing = [name for name in module.__all__ if f"{module.__name__}.{name}" not in entries]
    assert not missing, (
        f"public names without an API reference entry: {missing}; add a line "
        f"`::: {module.__name__}.NAME` to the page of docs/reference/ for its area"
    )


def test_the_check_sees_entries() -> None:
    # A pattern that matched nothing would pass the test above only if __all__ were empty.
    assert "kling_async.KlingSession" in reference_entries()
    assert "kling_async.simulator.Simulator" in reference_entries()


def test_every_reference_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in REFERENCE.glob("*.md"):
        assert f"reference/{page.name}" in nav, page.name


async def test_the_simulator_guide_example_passes(tmp_path: Path) -> None:
    # The guide's pytest example, run as a user would run it: its own file, its own pytest.
    text = (DOCS / "guides" / "simulator.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "import pytest" in b]
    assert len(blocks) == 1
    (tmp_path / "media").mkdir()
    shutil.copy(ASSETS / "character.png", tmp_path / "media" / "character.png")
    shutil.copy(ASSETS / "motion.mp4", tmp_path / "media" / "dance.mp4")
    (tmp_path / "test_guide.py").write_text(blocks[0])
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "test_guide.py",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=100)
    assert proc.returncode == 0, out.decode()
    assert "1 passed" in out.decode()
