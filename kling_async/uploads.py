"""Uploads to the File Upload API: streamed from disk in constant memory, each content once.

A file is named by its content hash plus its extension, so concurrent uploads never overwrite one
another on the service (which overwrites same-named files), and a repeated upload of the same name
is harmless: that is what makes upload retries safe (kie-api.md section 4).

Bounds: it never touches aiohttp (the transport builds bodies) nor the media rules (the client
checks).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextvars
import hashlib
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import telemetry
from .errors import KlingError, MediaValidationError
from .media import MIME_TYPES, sniff_format
from .models import UploadedFile
from .relay import Meter, OnProgress, ProgressRelay
from .settings import DEFAULT_MIN_TRANSFER_RATE
from .transport import FilePart, multipart_form
from .wire import parse_uploaded_file

__all__ = ["Uploader", "content_digest"]

#: In-memory uploads up to this size go as base64 JSON; larger ones as a multipart stream.
BASE64_MAX_BYTES = 1024 * 1024

Call = Callable[..., Awaitable[Any]]
#: Sends one upload, reporting its progress to the meter it is given.
Send = Callable[[Meter], Awaitable[UploadedFile]]

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
        grace: float,
        min_rate: float = DEFAULT_MIN_TRANSFER_RATE,
    ) -> None:
        self._call = call
        self._base = upload_base_url
        self._slots = asyncio.Semaphore(concurrency)
        self._grace = grace
        self._min_rate = min_rate
        self._cache: collections.OrderedDict[tuple[str, int, str], UploadedFile] = (
            collections.OrderedDict()
        )
        self._in_flight: dict[tuple[str, int, str], _Flight] = {}
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

    @telemetry.traced("upload", join=True)  # a job's upload step is one span, for both files
    async def upload_path(
        self,
        path: Path,
        *,
        upload_path: str,
        file_name: str | None,
        on_progress: OnProgress | None,
    ) -> UploadedFile:
        """Upload a file from disk, or reuse the upload of the same content this session.

        ``on_progress`` (plain or async) hears the bytes sent, from when it joins the upload
        (callers sharing an upload all hear it); a reused upload reports nothing. It is called
        from a task of this caller's, never inside the upload: a slow one hears fewer reports
        (the last always, before this returns) and holds up no one.
        """
        try:
            return await self._upload_path(path, upload_path, file_name, on_progress)
        except OSError as exc:
            if isinstance(exc, KlingError):
                raise
            # Gone, unreadable or changed underneath us: the file's fault, named as such.
            raise MediaValidationError(path, "unreadable", str(exc)) from exc

    async def _upload_path(
        self,
        path: Path,
        upload_path: str,
        file_name: str | None,
        on_progress: OnProgress | None,
    ) -> UploadedFile:
        digest, size, head = await self._digest(path)
        key = (digest, size, upload_path if file_name is None else f"{upload_path}/{file_name}")
        name = file_name or default_file_name(digest, path.name, head)

        mime = mime_of(head, path.name)

        def send(progress: Meter) -> Awaitable[UploadedFile]:
            return self._stream(upload_path, FilePart(path, size, name, mime, progress))

        return await self._once(key, send, on_progress)

    @telemetry.traced("upload", join=True)
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

        async def send(_: Meter) -> UploadedFile:
            if len(content) <= BASE64_MAX_BYTES:
                body = {
                    "base64Data": base64.b64encode(content).decode("ascii"),
                    "uploadPath": upload_path,
                    "fileName": name,
                }
                return await self._post(
                    "base64Upload", "/api/file-base64-upload", len(content), json=body
                )

            part = FilePart(content, len(content), name, mime_of(content[:32], name))
            return await self._stream(upload_path, part)

        return await self._once(key, send)

    @telemetry.traced("upload", join=True)
    async def upload_url(
        self, url: str, *, upload_path: str, file_name: str | None
    ) -> UploadedFile:
        """Have the service fetch ``url`` itself."""
        telemetry.event("file", upload_path=upload_path, source="fetched")
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
                # The service fetches the file itself: allow for the largest one it takes.
                total=self._deadline(100 * 1024 * 1024),
            )
        return parse_uploaded_file(data, now=datetime.now(UTC))

    async def _stream(self, upload_path: str, part: FilePart) -> UploadedFile:
        """A multipart stream upload; the body is rebuilt for each attempt (a stream reads once)."""
        fields = {"uploadPath": upload_path, "fileName": part.filename}
        form = multipart_form(fields, "file", part)
        return await self._post("streamUpload", "/api/file-stream-upload", part.size, data=form)

    async def _post(self, endpoint: str, path: str, size: int, **kwargs: Any) -> UploadedFile:
        async with self._slots:
            self.sent += 1
            data = await self._call(
                endpoint, "POST", f"{self._base}{path}", total=self._deadline(size), **kwargs
            )
        telemetry.count("upload.bytes", size)
        return parse_uploaded_file(data, now=datetime.now(UTC))

    async def _once(
        self, key: tuple[str, int, str], send: Send, on_progress: OnProgress | None = None
    ) -> UploadedFile:
        """Run ``send`` unless the same content is already uploaded (and fresh) or uploading.

        The upload runs in a task the uploader owns. Each caller waits on it without being able
        to cancel it for the others; when the last caller stops waiting, it is cancelled. Its
        progress goes to every caller waiting on it, a late one first hearing where it stands,
        each through a relay of its own (the upload task never runs a caller's callback).
        """
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
        if cached is not None and cached.is_usable_at(datetime.now(UTC)):
            telemetry.event("file", upload_path=key[2], size=key[1], source="reused")
            return cached
        # The relay's pump is this caller's: it ends when this caller stops waiting, and the
        # last report is delivered before the upload is returned.
        told = False
        async with ProgressRelay(on_progress, timeout=self._grace) as relay:
            while True:
                flight = self._in_flight.get(key)
                # The work (and its retries) is in upload.send: the step's span tells whether
                # this caller started it or joined one already on its way.
                source = "joined"
                if flight is None or flight.task.cancelled():
                    flight, source = self._start_flight(key, send), "sent"
                if not told:  # once per call, even if it takes up a new flight below
                    telemetry.event("file", upload_path=key[2], size=key[1], source=source)
                    told = True
                flight.waiters += 1
                flight.listeners.append(relay.offer)
                try:
                    if flight.last is not None:
                        relay.offer(*flight.last)
                    return await asyncio.shield(flight.task)
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and not current.cancelling():
                        continue  # the upload was ended for callers that left, not for this one
                    if not flight.task.done() and flight.waiters == 1:
                        # The last caller left: end the upload, and let nobody join it any more.
                        self._forget_flight(key, flight)
                        flight.task.cancel("every caller of this upload was cancelled")
                    raise
                finally:
                    flight.waiters -= 1
                    flight.listeners.remove(relay.offer)

    def _start_flight(self, key: tuple[str, int, str], send: Send) -> _Flight:
        flight = _Flight()
        # The upload is every caller's, not the first one's: it runs in a context of its own,
        # so its logs name no job and its span (``upload.send``) is no child of one job's.
        flight.task = asyncio.create_task(
            self._send_and_keep(key, send, flight.report), context=contextvars.Context()
        )
        self._in_flight[key] = flight

        def ended(_: asyncio.Task[UploadedFile]) -> None:
            self._forget_flight(key, flight)

        flight.task.add_done_callback(ended)
        return flight

    def _forget_flight(self, key: tuple[str, int, str], flight: _Flight) -> None:
        if self._in_flight.get(key) is flight:
            del self._in_flight[key]
        if flight.task.done() and not flight.task.cancelled():
            flight.task.exception()  # read: every caller may have left before it ended

    def _deadline(self, size: int) -> float:
        """A whole upload must end: the request timeout, plus its size at the least rate."""
        return self._grace + size / self._min_rate

    @telemetry.traced("upload.send")
    async def _send_and_keep(
        self, key: tuple[str, int, str], send: Send, progress: Meter
    ) -> UploadedFile:
        telemetry.annotate(upload_path=key[2], size=key[1])
        uploaded = await send(progress)
        self._cache[key] = uploaded
        _trim(self._cache)
        return uploaded


class _Flight:
    """One upload in progress, how many callers wait on it, and who hears its progress."""

    task: asyncio.Task[UploadedFile]

    def __init__(self) -> None:
        self.waiters = 0
        #: The relays of the callers waiting (``ProgressRelay.offer``: they return at once).
        self.listeners: list[Meter] = []
        #: The last progress reported: a caller joining late hears it first.
        self.last: tuple[int, int | None] | None = None

    def report(self, done: int, total: int | None) -> None:
        """Pass one progress report to every caller's relay; never waits on any callback."""
        self.last = (done, total)
        for listener in tuple(self.listeners):
            listener(done, total)
