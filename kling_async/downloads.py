"""Streamed downloads of results: to ``name.part``, then an atomic rename; never with the key.

A download ends: it has a deadline that grows with what arrives (``min_rate`` bytes per second
after a grace of ``grace`` seconds), and what arrived is checked to be a video, by its content,
before the rename (an HTML error page served with a 200 is not a clip).
"""

from __future__ import annotations

import asyncio
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

from .errors import ConfigurationError, DownloadError, TransportError, api_error_for
from .media import sniff_format
from .transport import map_client_error

__all__ = ["choose_destination", "safe_file_name", "stream_to_file"]

_CHUNK = 256 * 1024
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


async def stream_to_file(
    http: aiohttp.ClientSession,
    url: str,
    target: Path,
    *,
    timeout: aiohttp.ClientTimeout,
    on_progress: OnProgress | None = None,
    headers: dict[str, str] | None = None,
    grace: float = 30.0,
    min_rate: float = 50_000.0,
) -> int:
    """GET ``url`` (no credentials) into ``target.part``, then rename; return bytes written.

    The transfer must average ``min_rate`` bytes per second after ``grace`` seconds, or it is
    ended with a ``TransportError``; a body that is not a video raises ``DownloadError``.
    """
    part = target.with_name(target.name + ".part")
    written = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout_at(started + grace) as deadline:
            async with http.get(
                url, timeout=timeout, allow_redirects=True, headers=headers
            ) as answer:
                if answer.status != 200:
                    raise api_error_for(
                        answer.status,
                        f"download failed: HTTP {answer.status}",
                        http_status=answer.status,
                        endpoint="download",
                    )
                total = answer.content_length
                if total is not None:
                    deadline.reschedule(started + grace + total / min_rate)
                await _mkdir(target.parent)
                head = b""
                async with aiofiles.open(part, "wb") as out:
                    async for chunk in answer.content.iter_chunked(_CHUNK):
                        if len(head) < 32:
                            head += chunk[: 32 - len(head)]
                        await out.write(chunk)
                        written += len(chunk)
                        if total is None:
                            deadline.reschedule(started + grace + written / min_rate)
                        if on_progress is not None:
                            on_progress(written, total)
                if total is not None and written != total:
                    raise map_client_error(
                        aiohttp.ClientPayloadError(f"got {written} of {total} bytes"), "download"
                    )
            if sniff_format(head) not in _VIDEO_FORMATS:
                raise DownloadError(
                    f"download of {url} did not return a video (it starts with {head[:16]!r}); "
                    "nothing was saved"
                )
            await aiofiles.os.replace(part, target)
    except TimeoutError as exc:
        await _remove(part)
        if loop.time() >= started + grace:
            raise TransportError(
                f"download: {written} bytes in {loop.time() - started:.0f} s, slower than "
                f"{min_rate:.0f} bytes/s; ended"
            ) from exc
        raise map_client_error(exc, "download") from exc
    except aiohttp.ClientError as exc:
        await _remove(part)
        raise map_client_error(exc, "download") from exc
    except OSError as exc:
        await _remove(part)
        raise DownloadError(f"cannot save the result to {target}: {exc}") from exc
    except BaseException:
        await _remove(part)
        raise
    return written


async def _mkdir(folder: Path) -> None:
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)


async def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        await aiofiles.os.remove(path)
