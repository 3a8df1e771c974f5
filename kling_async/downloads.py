"""Streamed downloads of results: to ``name.part``, then an atomic rename; never with the key."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiofiles
import aiofiles.os
import aiohttp

from .errors import api_error_for
from .transport import map_client_error

__all__ = ["choose_destination", "safe_file_name", "stream_to_file"]

_CHUNK = 256 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

OnProgress = Callable[[int, int | None], Any]


def safe_file_name(url: str, default: str = "result.mp4") -> str:
    """A file name from a URL's last path segment, stripped of anything that could escape."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = _UNSAFE.sub("_", name).strip("._")[:120]
    return name or default


def choose_destination(url: str, dest: Path, *, overwrite: bool) -> Path:
    """Where to write: ``dest`` itself, or a sanitised name inside the folder ``dest``.

    An explicit file that exists is refused unless ``overwrite``; a name derived from the URL gets
    a ``-1``, ``-2``... suffix instead of clobbering a file already there.
    """
    if dest.is_dir() or str(dest).endswith(os.sep):
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
        raise FileExistsError(f"{dest} exists; pass overwrite=True to replace it")
    return dest


async def stream_to_file(
    http: aiohttp.ClientSession,
    url: str,
    target: Path,
    *,
    timeout: aiohttp.ClientTimeout,
    on_progress: OnProgress | None = None,
) -> int:
    """GET ``url`` (no credentials) into ``target.part``, then rename; return bytes written."""
    part = target.with_name(target.name + ".part")
    written = 0
    try:
        async with http.get(url, timeout=timeout, allow_redirects=True) as answer:
            if answer.status != 200:
                raise api_error_for(
                    answer.status,
                    f"download failed: HTTP {answer.status}",
                    http_status=answer.status,
                    endpoint="download",
                )
            total = answer.content_length
            target.parent.mkdir(parents=True, exist_ok=True)
            async with aiofiles.open(part, "wb") as out:
                async for chunk in answer.content.iter_chunked(_CHUNK):
                    await out.write(chunk)
                    written += len(chunk)
                    if on_progress is not None:
                        on_progress(written, total)
            if total is not None and written != total:
                raise map_client_error(
                    aiohttp.ClientPayloadError(f"got {written} of {total} bytes"), "download"
                )
        await aiofiles.os.replace(part, target)
    except (aiohttp.ClientError, TimeoutError) as exc:
        await _remove(part)
        raise map_client_error(exc, "download") from exc
    except BaseException:
        await _remove(part)
        raise
    return written


async def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        await aiofiles.os.remove(path)
