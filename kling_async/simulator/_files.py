"""The simulated upload host: three upload methods, hosted files, and fetching of URLs."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ._media import MIME_TYPES, sniff, video_seconds
from ._records import ApiAnswer
from ._rules import is_http_url
from ._state import HostedFile

if TYPE_CHECKING:
    from ._app import Service

__all__ = ["FileHost"]

_CHUNK = 256 * 1024


class FileHost:
    """Handlers of the upload host, sharing the service's state, clock and answers."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def resolve(self, url: str) -> HostedFile:
        """The hosted file a task URL points at, fetching external URLs when allowed."""
        path = urlsplit(url).path
        hosted = (
            self.service.state.files.get(path)
            if url.startswith(self.service.upload_base_url)
            else None
        )
        if hosted is not None:
            if hosted.expires_at < self.service.now():
                raise ApiAnswer(422, f"file has expired: {url}")
            return hosted
        if url.startswith((self.service.upload_base_url, self.service.base_url)):
            raise ApiAnswer(422, f"file not found: {url}")
        if not self.service.config.fetch_external_urls:
            raise ApiAnswer(422, f"file is not reachable: {url}")
        if url not in self.service._fetched:
            self.service._fetched[url] = await self._fetch(url, "external", None)
        return self.service._fetched[url]

    async def _fetch(self, url: str, upload_path: str, file_name: str | None) -> HostedFile:
        timeout = aiohttp.ClientTimeout(total=max(self.service.real_seconds(30.0), 2.0))
        target = self.service.workdir / secrets.token_hex(8)
        size = 0
        try:
            async with self.service._http().get(url, timeout=timeout) as answer:
                if answer.status != 200:
                    raise ApiAnswer(422, f"file is not reachable: {url} (HTTP {answer.status})")
                with target.open("wb") as out:
                    async for chunk in answer.content.iter_chunked(_CHUNK):
                        size += len(chunk)
                        if size > self.service.config.max_upload_bytes:
                            raise ApiAnswer(400, "File too large")
                        out.write(chunk)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise ApiAnswer(422, f"file is not reachable: {url} ({type(exc).__name__})") from None
        name = file_name or urlsplit(url).path.rsplit("/", 1)[-1] or secrets.token_hex(8)
        return self._host(target, upload_path, name)

    def _host(self, stored: Path, upload_path: str, file_name: str) -> HostedFile:
        """Register a stored file under its public URL, replacing a same-named one."""
        with stored.open("rb") as fh:
            kind = sniff(fh.read(32))
        seconds = video_seconds(stored, kind) if kind in ("mp4", "mov", "matroska") else None
        mime = MIME_TYPES.get(kind or "", "application/octet-stream")
        now = self.service.now()
        url_path = f"/files/{upload_path}/{file_name}"
        old = self.service.state.files.get(url_path)
        if old is not None and old.path != stored:
            old.path.unlink(missing_ok=True)
        hosted = HostedFile(
            path=stored,
            url_path=url_path,
            file_name=file_name,
            file_path=f"{upload_path}/{file_name}",
            size=stored.stat().st_size,
            mime_type=mime,
            uploaded_at=now,
            expires_at=now + self.service.config.upload_lifetime,
            video_seconds=seconds,
            image_format=kind if kind in ("jpeg", "png") else None,
        )
        self.service.state.files[url_path] = hosted
        return hosted

    def _upload_answer(self, request: web.Request, hosted: HostedFile) -> web.Response:
        uploaded = time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(self.service._epoch0 + hosted.uploaded_at)
        )
        return self.service._answer(
            request,
            200,
            "File uploaded successfully",
            {
                "fileName": hosted.file_name,
                "filePath": hosted.file_path,
                "downloadUrl": f"{self.service.upload_base_url}{hosted.url_path}",
                "fileSize": hosted.size,
                "mimeType": hosted.mime_type,
                "uploadedAt": f"{uploaded}.000Z",
            },
        )

    @staticmethod
    def _clean_upload_path(value: Any) -> str:
        if not isinstance(value, str) or not value.strip("/ "):
            raise ApiAnswer(400, "Missing required parameter: uploadPath")
        parts = [p for p in value.strip().strip("/").split("/") if p]
        if any(p in (".", "..") or "\\" in p for p in parts):
            raise ApiAnswer(400, "Invalid parameter: uploadPath")
        return "/".join(parts)

    @staticmethod
    def _clean_file_name(value: Any, fallback_ext: str = "") -> str:
        if value in (None, ""):
            return secrets.token_hex(8) + fallback_ext
        if not isinstance(value, str) or "/" in value or "\\" in value or value in (".", ".."):
            raise ApiAnswer(400, "Invalid parameter: fileName")
        return value

    async def stream_upload(self, request: web.Request) -> web.Response:
        """``POST /api/file-stream-upload`` (multipart: file, uploadPath, fileName)."""
        self.service._require_key(request, "Authentication failed: Invalid API Key")
        if not request.content_type.startswith("multipart/"):
            raise ApiAnswer(400, "Content-Type must be multipart/form-data")
        fields: dict[str, str] = {}
        stored: Path | None = None
        original = ""
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader):
                continue
            if part.name == "file":
                stored = self.service.workdir / secrets.token_hex(8)
                original = part.filename or ""
                size = 0
                with stored.open("wb") as out:
                    while chunk := await part.read_chunk(_CHUNK):
                        size += len(chunk)
                        if size > self.service.config.max_upload_bytes:
                            out.close()
                            stored.unlink(missing_ok=True)
                            raise ApiAnswer(400, "File too large")
                        out.write(chunk)
            elif part.name:
                fields[part.name] = (await part.read(decode=True)).decode("utf-8", "replace")
        if stored is None:
            raise ApiAnswer(400, "Missing required parameter: file")
        try:
            upload_path = self._clean_upload_path(fields.get("uploadPath"))
            name = self._clean_file_name(fields.get("fileName"), os.path.splitext(original)[1])
        except ApiAnswer:
            stored.unlink(missing_ok=True)
            raise
        return self._upload_answer(request, self._host(stored, upload_path, name))

    async def base64_upload(self, request: web.Request) -> web.Response:
        """``POST /api/file-base64-upload`` (JSON: base64Data, uploadPath, fileName)."""
        self.service._require_key(request, "Authentication failed: Invalid API Key")
        body = await self.service._json_body(request)
        data = body.get("base64Data")
        if not isinstance(data, str) or not data:
            raise ApiAnswer(400, "Missing required parameter: base64Data")
        upload_path = self._clean_upload_path(body.get("uploadPath"))
        name = self._clean_file_name(body.get("fileName"))
        if data.startswith("data:"):
            data = data.partition(",")[2]
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ApiAnswer(400, "Base64 decoding failed: Invalid Base64 format") from None
        stored = self.service.workdir / secrets.token_hex(8)
        stored.write_bytes(raw)
        return self._upload_answer(request, self._host(stored, upload_path, name))

    async def url_upload(self, request: web.Request) -> web.Response:
        """``POST /api/file-url-upload`` (JSON: fileUrl, uploadPath, fileName)."""
        self.service._require_key(request, "Authentication failed: Invalid API Key")
        body = await self.service._json_body(request)
        url = body.get("fileUrl")
        if not isinstance(url, str) or not is_http_url(url):
            raise ApiAnswer(400, "Missing required parameter: fileUrl")
        upload_path = self._clean_upload_path(body.get("uploadPath"))
        name = self._clean_file_name(body.get("fileName")) if body.get("fileName") else None
        hosted = await self._fetch(url, upload_path, name)
        return self._upload_answer(request, hosted)

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        """``GET /files/...``: an uploaded file, until it expires (no auth, like a CDN)."""
        hosted = self.service.state.files.get(request.path)
        if hosted is None or hosted.expires_at < self.service.now():
            raise web.HTTPNotFound()
        return self.service.file_answer(hosted.path, hosted.mime_type)
