"""Uploads to the File Upload API: streamed from disk in constant memory, each content once.

A file is named by its content hash plus its extension, so concurrent uploads never overwrite one
another on the service (which overwrites same-named files), and a repeated upload of the same name
is harmless: that is what makes upload retries safe (kie-api.md section 4).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import io
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.threadpool
import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesIOPayload, Payload

from .media import MIME_TYPES, sniff_format
from .models import UploadedFile
from .wire import parse_uploaded_file

__all__ = ["FilePayload", "Uploader", "content_digest"]

_CHUNK = 1024 * 1024
#: In-memory uploads up to this size go as base64 JSON; larger ones as a multipart stream.
BASE64_MAX_BYTES = 1024 * 1024

OnProgress = Callable[[int, int], Any]
Call = Callable[..., Awaitable[Any]]

_EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "mp4": ".mp4", "matroska": ".mkv", "gif": ".gif"}


def content_digest(path: Path) -> tuple[str, int, bytes]:
    """SHA-256 hex digest, size and first bytes of a file (blocking: run it off the loop)."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            if not head:
                head = chunk[:32]
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, head


async def _open_for_reading(path: Path) -> Any:
    """Open a file in a worker thread; if cancelled meanwhile, the file is still closed."""
    loop = asyncio.get_running_loop()
    opening = loop.run_in_executor(None, path.open, "rb")
    try:
        raw = await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(
            lambda done: done.exception() is None and done.result().close()  # type: ignore[func-returns-value]
        )
        raise
    return aiofiles.threadpool.wrap(raw, loop=loop)


#: Files remembered per session (digests and uploads); a batch of a million distinct files
#: must not keep them all.
_MEMORY = 10_000


def _trim(entries: collections.OrderedDict[Any, Any]) -> None:
    while len(entries) > _MEMORY:
        entries.popitem(last=False)


def _identity(path: Path) -> tuple[str, int, int, int]:
    """What tells a file apart without reading it: path, size, modification time, inode."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino


class FilePayload(Payload):
    """A file streamed from disk with aiofiles, with a known size and progress reports."""

    def __init__(
        self,
        path: Path,
        size: int,
        *,
        content_type: str,
        filename: str,
        on_progress: OnProgress | None = None,
    ) -> None:
        super().__init__(path, content_type=content_type, filename=filename)
        self._path = path
        self._size = size
        self._file_size = size
        self._on_progress = on_progress

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Not supported: the payload is streamed, never held as text."""
        raise TypeError("a streamed file payload cannot be decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Stream the file in chunks; memory use does not grow with its size."""
        sent = 0
        total = self._file_size
        fh = await _open_for_reading(self._path)
        try:
            while sent < total:
                chunk = await fh.read(min(_CHUNK, total - sent))
                if not chunk:
                    raise OSError(f"{self._path} shrank while being uploaded")
                await writer.write(chunk)
                sent += len(chunk)
                if self._on_progress is not None:
                    self._on_progress(sent, total)
        finally:
            await asyncio.shield(fh.close())

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        """Stream the file (the length is already known and set)."""
        await self.write(writer)


def default_file_name(digest: str, original: str, head: bytes) -> str:
    """A unique name: the content hash plus the original (or sniffed) extension."""
    ext = os.path.splitext(original)[1].lower()
    if not ext or len(ext) > 8:
        ext = _EXTENSIONS.get(sniff_format(head) or "", "")
    return f"{digest[:32]}{ext}"


def mime_of(head: bytes, original: str) -> str:
    """The MIME type sent for the file part."""
    kind = sniff_format(head)
    if kind == "matroska":
        return MIME_TYPES["mkv"]
    if kind and kind in MIME_TYPES:
        return MIME_TYPES[kind]
    if original.lower().endswith(".mov"):
        return MIME_TYPES["mov"]
    return "application/octet-stream"


class Uploader:
    """Uploads for one session: bounded concurrency, one upload per content, safe retries."""

    def __init__(
        self,
        call: Call,
        upload_base_url: str,
        *,
        concurrency: int,
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        self._call = call
        self._base = upload_base_url
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout = timeout
        self._cache: collections.OrderedDict[tuple[str, int, str], UploadedFile] = (
            collections.OrderedDict()
        )
        self._in_flight: dict[tuple[str, int, str], asyncio.Future[UploadedFile]] = {}
        # Digests by file identity: a batch sharing one video hashes it once, not per job.
        self._digests: collections.OrderedDict[
            tuple[str, int, int, int], asyncio.Future[tuple[str, int, bytes]]
        ] = collections.OrderedDict()
        #: Uploads actually sent (cache hits excluded).
        self.sent = 0

    async def _digest(self, path: Path) -> tuple[str, int, bytes]:
        identity = await asyncio.to_thread(_identity, path)
        job = self._digests.get(identity)
        if job is None:
            job = asyncio.ensure_future(asyncio.to_thread(content_digest, path))
            self._digests[identity] = job
            _trim(self._digests)
        else:
            self._digests.move_to_end(identity)
        try:
            return await asyncio.shield(job)
        except Exception:
            self._digests.pop(identity, None)
            raise

    async def upload_path(
        self,
        path: Path,
        *,
        upload_path: str,
        file_name: str | None,
        on_progress: OnProgress | None,
    ) -> UploadedFile:
        """Upload a file from disk, or reuse the upload of the same content this session."""
        digest, size, head = await self._digest(path)
        key = (digest, size, upload_path if file_name is None else f"{upload_path}/{file_name}")
        name = file_name or default_file_name(digest, path.name, head)

        def part() -> Any:
            return FilePayload(
                path,
                size,
                content_type=mime_of(head, path.name),
                filename=name,
                on_progress=on_progress,
            )

        return await self._once(key, lambda: self._stream(upload_path, name, part))

    async def upload_bytes(
        self, content: bytes, *, upload_path: str, file_name: str | None
    ) -> UploadedFile:
        """Upload bytes held in memory (base64 when small, a multipart stream otherwise)."""
        digest = hashlib.sha256(content).hexdigest()
        key = (
            digest,
            len(content),
            upload_path if file_name is None else f"{upload_path}/{file_name}",
        )
        name = file_name or default_file_name(digest, "", content[:32])

        async def send() -> UploadedFile:
            if len(content) <= BASE64_MAX_BYTES:
                body = {
                    "base64Data": base64.b64encode(content).decode("ascii"),
                    "uploadPath": upload_path,
                    "fileName": name,
                }
                return await self._post("base64Upload", "/api/file-base64-upload", json=body)

            def part() -> Any:
                return BytesIOPayload(
                    io.BytesIO(content), content_type=mime_of(content[:32], name), filename=name
                )

            return await self._stream(upload_path, name, part)

        return await self._once(key, send)

    async def upload_url(
        self, url: str, *, upload_path: str, file_name: str | None
    ) -> UploadedFile:
        """Have the service fetch ``url`` itself."""
        body: dict[str, str] = {"fileUrl": url, "uploadPath": upload_path}
        if file_name:
            body["fileName"] = file_name
        async with self._slots:
            self.sent += 1
            data = await self._call(
                "urlUpload",
                "POST",
                f"{self._base}/api/file-url-upload",
                json=body,
                timeout=self._timeout,
            )
        return parse_uploaded_file(data, now=datetime.now(UTC))

    async def _stream(self, upload_path: str, name: str, part: Callable[[], Any]) -> UploadedFile:
        """A multipart stream upload; the body is rebuilt for each attempt (a stream reads once)."""

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("uploadPath", upload_path)
            data.add_field("fileName", name)
            data.add_field("file", part(), filename=name)
            return data

        return await self._post("streamUpload", "/api/file-stream-upload", data=form)

    async def _post(self, endpoint: str, path: str, **kwargs: Any) -> UploadedFile:
        async with self._slots:
            self.sent += 1
            data = await self._call(
                endpoint, "POST", f"{self._base}{path}", timeout=self._timeout, **kwargs
            )
        return parse_uploaded_file(data, now=datetime.now(UTC))

    async def _once(
        self, key: tuple[str, int, str], send: Callable[[], Awaitable[UploadedFile]]
    ) -> UploadedFile:
        """Run ``send`` unless the same content is already uploaded (and fresh) or uploading."""
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
        if cached is not None and cached.is_usable_at(datetime.now(UTC)):
            return cached
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[UploadedFile] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            uploaded = await send()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            self._in_flight.pop(key, None)
        self._cache[key] = uploaded
        _trim(self._cache)
        future.set_result(uploaded)
        return uploaded
