"""A batch's manifest, read and judged whole before anything is sent: rows, jobs, their cost.

A CSV manifest (with a header; Excel's "CSV UTF-8" byte-order mark and ``;`` or tab separators
are understood) or JSON Lines. Column names are taken case-blind and without surrounding
spaces; a header problem (an unknown or missing column) is reported once, not once per row.
Each row becomes a :class:`~kling_async.jobs.Job` whose files are judged (headers only) and
priced; two rows that make the same job (the same key) are reported with both line numbers.

Bounds: it reads local files only; it never calls the service or opens a journal.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import attrs

from ..errors import ConfigurationError, KlingError
from ..jobs import Job, MediaSource
from ..media import sniff_format, validate_image, validate_video
from ..models import UploadedFile, is_http_url
from ..rules import MODEL_NAME, estimate_credits
from ._output import describe

__all__ = ["COLUMNS", "Checked", "check_manifest", "media_kind", "swapped_hint"]

#: The columns a manifest may have (``orientation`` is ``character_orientation``'s short name).
COLUMNS = (
    "image",
    "video",
    "prompt",
    "orientation",
    "character_orientation",
    "mode",
    "key",
    "model",
    "background_source",
)
_IMAGE_FORMATS = frozenset({"jpeg", "png", "gif", "webp", "bmp", "heif"})
_VIDEO_FORMATS = frozenset({"mp4", "matroska"})
#: Separators a spreadsheet may have used instead of commas.
_SEPARATORS = (",", ";", "\t", "|")


@attrs.define
class Checked:
    """A manifest judged whole: its good jobs (with their line and estimated cost), its problems."""

    jobs: list[Job] = attrs.Factory(list)
    lines: list[int] = attrs.Factory(list)
    costs: list[float] = attrs.Factory(list)
    problems: list[str] = attrs.Factory(list)
    #: True when the header itself is wrong: the rows were not judged.
    bad_header: bool = False

    @property
    def total(self) -> float:
        """The estimated credits of every good job."""
        return sum(self.costs)


def media_kind(path: str | os.PathLike[str]) -> str | None:
    """``image`` or ``video``, by the file's first bytes; None if unreadable or neither."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except (OSError, ValueError):
        return None
    kind = sniff_format(head)
    if kind in _IMAGE_FORMATS:
        return "image"
    return "video" if kind in _VIDEO_FORMATS else None


def swapped_hint(image: MediaSource, video: MediaSource) -> str | None:
    """A hint when the image and the video were given the other way round, else None."""
    if isinstance(image, UploadedFile) or isinstance(video, UploadedFile):
        return None
    if media_kind(image) == "video" and media_kind(video) == "image":
        return (
            f"{os.fspath(image)} is a video and {os.fspath(video)} an image: "
            "the image comes first (IMAGE VIDEO)"
        )
    return None


def _column(name: str) -> str:
    """A header cell as a column name: ``" Image "`` is ``image``, ``Background Source`` too."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _header_problems(path: Path, names: list[str]) -> list[str]:
    problems: list[str] = []
    suggested: set[str] = set()
    for name in sorted({n for n in names if n and n not in COLUMNS}):
        close = difflib.get_close_matches(name, COLUMNS, n=1)
        suggested.update(close)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(COLUMNS)})"
        problems.append(f"{path}:1: unknown column {name!r}{hint}")
    for name in sorted({n for n in names if n and names.count(n) > 1}):
        problems.append(f"{path}:1: the column {name!r} is there twice")
    for name in ("image", "video"):
        if name not in names and name not in suggested:
            problems.append(f"{path}:1: no {name!r} column")
    return problems


def _separator(header: str) -> str:
    """The separator of a CSV file, from its header line: commas unless another is plainly used."""
    counts = {sep: header.count(sep) for sep in _SEPARATORS}
    best = max(_SEPARATORS, key=lambda sep: counts[sep])
    return best if counts[best] and not counts[","] else ","


def _csv_rows(path: Path, fh: IO[str]) -> Iterator[tuple[int, dict[str, str] | str]]:
    first = fh.readline()
    fh.seek(0)
    reader = csv.reader(fh, delimiter=_separator(first))
    header = next(reader, None)
    if header is None:
        return
    names = [_column(cell) for cell in header]
    problems = _header_problems(path, names)
    if problems:
        raise _BadHeader(problems)
    line = reader.line_num
    for cells in reader:
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        row = {name: cell for name, cell in zip(names, cells, strict=False) if name and cell}
        extra = [cell for cell in cells[len(names) :] if cell]
        if extra:
            yield start, f"more cells than columns ({', '.join(map(repr, extra))})"
        else:
            yield start, row


def _jsonl_rows(path: Path, fh: IO[str]) -> Iterator[tuple[int, dict[str, str] | str]]:
    for number, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            yield number, f"not JSON ({exc})"
            continue
        if not isinstance(row, dict):
            yield number, "not a JSON object"
            continue
        yield number, {_column(k): str(v) for k, v in row.items() if v not in (None, "")}


class _BadHeader(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems)
        self.problems = problems


def _local_file(source: MediaSource, name: str) -> Path:
    """A manifest's file as a path: the CLI judges files (and their cost) before any upload."""
    if isinstance(source, UploadedFile) or is_http_url(os.fspath(source)):
        raise ConfigurationError(f"{name} must be a local file, not a URL")
    return Path(os.fspath(source))


def _job(row: dict[str, str], base: Path, model: str | None, background: str | None) -> Job:
    # The batch's --model and --background-source, unless the row gives its own.
    given = {"model": model or MODEL_NAME, "background_source": background}
    return Job.from_row({**{k: v for k, v in given.items() if v}, **row}, base_dir=base)


def check_manifest(
    path: Path, model: str | None = None, background_source: str | None = None
) -> Checked:
    """Every job of the manifest at ``path``, checked before anything is sent; the problems.

    A row's ``model`` and ``background_source`` columns win over the ``--model`` and
    ``--background-source`` given for the whole batch. Raises ``ConfigurationError`` when the
    file cannot be read as text.
    """
    checked = Checked()
    seen: dict[str, int] = {}
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = _jsonl_rows(path, fh) if jsonl else _csv_rows(path, fh)
            for number, row in rows:
                if isinstance(row, str):
                    checked.problems.append(f"{path}:{number}: {row}")
                else:
                    _check_row(checked, seen, path, number, row, model, background_source)
    except _BadHeader as bad:
        checked.problems.extend(bad.problems)
        checked.bad_header = True
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path} is not UTF-8 text (save it as CSV UTF-8)") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    except csv.Error as exc:
        raise ConfigurationError(f"{path} is not a CSV file this can read: {exc}") from None
    return checked


def _check_row(
    checked: Checked,
    seen: dict[str, int],
    path: Path,
    number: int,
    row: dict[str, str],
    model: str | None,
    background_source: str | None,
) -> None:
    try:
        job = _job(row, path.parent, model, background_source)
        image, video = _local_file(job.image, "image"), _local_file(job.video, "video")
        hint = swapped_hint(image, video)
        if hint is not None:
            raise ConfigurationError(hint)
        validate_image(image)
        seconds = validate_video(video, job.character_orientation).duration_s
    except (KlingError, ValueError) as exc:
        checked.problems.append(f"{path}:{number}: {describe(exc)}")
        return
    first = seen.setdefault(job.job_key, number)
    if first != number:
        what = (
            f"the key {job.key!r} is already line {first}'s"
            if job.key is not None
            else f"the same job as line {first} (same files, prompt and options)"
        )
        checked.problems.append(
            f"{path}:{number}: {what}; give each row a key of its own to make both"
        )
        return
    checked.jobs.append(job)
    checked.lines.append(number)
    checked.costs.append(estimate_credits(seconds, job.mode, model=job.model or MODEL_NAME))
