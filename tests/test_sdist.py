"""Packaging: the sdist carries what its tests need, and its own tests pass from it.

Marked ``packaging``: it builds the sdist (about a second) and runs a few test files from the
unpacked copy (a few seconds more); ``pytest -m "not packaging"`` leaves it out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("build", reason="the sdist is built with `build` (the dev extra)")

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
#: Folders whose every file the sdist carries, when the source tree has them.
FOLDERS = ("tests", "benchmarks", "examples", "docs", ".ci")
FILES = ("README.md", "CHANGELOG.md", "LICENSE", "Makefile", "pyproject.toml", "mkdocs.yml")
#: Left out wherever they are: environments, caches and outputs.
NEVER = {".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
NEVER_TOP = {"demo-output", ".dist-check", "build", "dist", ".git"}
PLANTED = (
    ".venv/lib/site.py",
    "demo-output/clip-1.mp4",
    ".dist-check/kling_async-0.tar.gz",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.11/x.json",
    "tests/__pycache__/conftest.cpython-311.pyc",
    "tests/.hypothesis/examples/x",
    "benchmarks/__pycache__/bench_batch.cpython-311.pyc",
    "kling_async/__pycache__/rules.cpython-311.pyc",
)
#: Quick files that need the media, the README or the package's layout to pass.
FROM_THE_SDIST = ("tests/test_media.py", "tests/test_layers.py", "tests/test_models.py")


def source_files() -> set[str]:
    """What the sdist must carry, from the source tree: relative POSIX paths."""
    wanted = {name for name in FILES if (ROOT / name).is_file()}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*"):
            rel = path.relative_to(ROOT)
            if path.is_file() and not NEVER & set(rel.parts) and path.suffix != ".pyc":
                wanted.add(rel.as_posix())
    return wanted


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, built from this tree without isolation, unpacked; its top folder."""
    out = tmp_path_factory.mktemp("sdist")
    # Built from a copy without metadata of earlier builds: setuptools adds every file named in
    # an old ``*.egg-info/SOURCES.txt`` to the sdist, which would hide a file MANIFEST.in lost.
    source = out / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(*NEVER, *NEVER_TOP, "*.egg-info", "*.pyc")
    )
    # What a working tree gathers, planted so that leaving it out is really tested.
    for junk in PLANTED:
        (source / junk).parent.mkdir(parents=True, exist_ok=True)
        (source / junk).write_bytes(b"junk")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (archive,) = out.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(out / "unpacked", filter="data")
    (top,) = (out / "unpacked").iterdir()
    return top


def test_the_sdist_carries_the_tests_their_media_and_the_docs(unpacked: Path) -> None:
    carried = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    assert source_files() <= carried, sorted(source_files() - carried)
    # Spot checks, should the source tree itself lose them.
    assert {"README.md", "LICENSE", "tests/conftest.py", "tests/media/manifest.json"} <= carried
    assert len([p for p in carried if p.startswith("tests/media/")]) >= 20
    assert "kling_async/assets/motion.mp4" in carried


def test_the_sdist_leaves_out_environments_and_caches(unpacked: Path) -> None:
    for path in unpacked.rglob("*"):
        rel = path.relative_to(unpacked)
        assert not NEVER & set(rel.parts), rel
        assert rel.parts[0] not in NEVER_TOP, rel
        assert path.suffix != ".pyc", rel


def test_tests_run_from_the_unpacked_sdist(unpacked: Path) -> None:
    # From the unpacked folder, `kling_async` is imported from the sdist's own copy.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--no-cov",
            *FROM_THE_SDIST,
        ],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
