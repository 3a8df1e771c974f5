"""Where results are saved, and what counts as one (pure: names and checks, no I/O of its own).

The transfer itself (streamed to ``name.part``, with a deadline that grows with what arrives,
then an atomic rename) is :meth:`kling_async.transport.HttpTransport.fetch_to_file`; this module
decides the file name and refuses what is not a video (an HTML error page served with a 200).

Does no network I/O of its own: the transfer is the transport's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import ConfigurationError, DownloadError
from .media import sniff_format

__all__ = ["check_video", "choose_destination", "safe_file_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

OnProgress = Callable[[int, int | None], Any]
#: What a result must look like to be saved as a clip.
_VIDEO_FORMATS = frozenset({"mp4", "matroska"})


def safe_file_name(url: str, default: str = "result.mp4") -> str:
    """A file name from a URL's last path segment, stripped of anything that could escape."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = _UNSAFE.sub("_", name).strip("._")[:120]
    return name or default


def choose_destination(url: str, dest: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Where to write: ``dest`` itself, or a sanitised name inside the folder ``dest``.

    ``dest`` is a folder if it exists as one or is written with a trailing slash (``"clips/"``,
    created if needed). An explicit file that exists is refused unless ``overwrite``; a name
    derived from the URL gets a ``-1``, ``-2``... suffix instead of clobbering a file.
    """
    text = os.fspath(dest)
    as_folder = text.endswith(("/", os.sep))
    dest = Path(text)
    if as_folder or dest.is_dir():
        candidate = dest / safe_file_name(url)
        if overwrite:
            return candidate
        stem, suffix = candidate.stem, candidate.suffix
        counter = 1
        while candidate.exists():
            candidate = dest / f"{stem}-{counter}{suffix}"
            counter += 1
        return candidate
    if dest.exists() and not overwrite:
        raise ConfigurationError(f"{dest} exists; pass overwrite=True to replace it")
    return dest


def check_video(url: str, head: bytes) -> None:
    """Refuse a result whose first bytes are not a video's (``DownloadError``)."""
    if sniff_format(head) not in _VIDEO_FORMATS:
        raise DownloadError(
            f"download of {url} did not return a video (it starts with {head[:16]!r}); "
            "nothing was saved"
        )
