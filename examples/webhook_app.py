"""A small aiohttp web service that makes clips and learns their outcome from callbacks.

    python examples/webhook_app.py --port 8000 --public-url https://clips.example.com

Routes:

* ``POST /clips``: a multipart form with the files ``image`` and ``video`` and an optional
  ``prompt`` field. Both files are checked at once (headers only); a file that breaks a rule is
  answered 422 naming the rule, a good pair 202 with the clip's id. The clip is made in the
  background.
* ``GET /clips/{id}``: where the clip stands (``checking``, ``uploading``, ``waiting``,
  ``queuing``, ``generating``, ``success`` or ``failed``), its task id, result URLs and the
  error, if any; ``GET /clips/{id}/video`` serves the clip once it is made.
* ``POST /kling/callback``: the service's callbacks, verified and handed to the waiting clips by
  the library's ``WebhookReceiver``. No polling is needed: a lost callback is caught by a slow
  fallback poll (first after 150 s).
* ``GET /``: counts of clips and of callbacks accepted or refused, for monitoring.

Configuration comes from the environment: ``KIE_API_KEY`` (required), ``KIE_WEBHOOK_KEY`` (the
webhook HMAC key from kie.ai's settings; without it callbacks are not verified, only confirmed
by a query), ``KIE_BASE_URL`` (to point it at a simulator), and ``PUBLIC_URL`` (the address the
service reaches this app at, e.g. an https URL behind a proxy; by default the address it listens
on, which is enough for a simulator on the same machine). ``--public-url`` overrides it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiofiles
import attrs
from aiohttp import BodyPartReader, web

from kling_async import (
    ConfigurationError,
    JobEvent,
    JobEventKind,
    KlingSession,
    MediaValidationError,
    validate_image,
    validate_video,
)
from kling_async.rules import MAX_IMAGE_BYTES, MAX_PROMPT_CHARS, MAX_VIDEO_BYTES
from kling_async.webhooks import WebhookReceiver

log = logging.getLogger("webhook_app")

CALLBACK_PATH = "/kling/callback"
_LIMITS = {"image": MAX_IMAGE_BYTES, "video": MAX_VIDEO_BYTES}
# A file's suffix is kept only to make it easier to look at; the library judges content.
_SUFFIXES = {".png", ".jpg", ".jpeg", ".mp4", ".mov", ".mkv"}


@attrs.define
class Clip:
    """One clip asked for through ``POST /clips``, and where it stands."""

    id: str
    #: Where the finished clip is saved.
    clips_dir: Path
    status: str = "checking"
    task_id: str | None = None
    result_urls: tuple[str, ...] = ()
    file: Path | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """What ``GET /clips/{id}`` answers."""
        return {
            "id": self.id,
            "status": self.status,
            "task_id": self.task_id,
            "result_urls": list(self.result_urls),
            "video": f"/clips/{self.id}/video" if self.file is not None else None,
            "error": self.error,
        }


class ClipService:
    """The clips, the session that makes them, and the background tasks it owns."""

    def __init__(self, data_dir: Path, receiver: WebhookReceiver) -> None:
        self.data_dir = data_dir
        self.receiver = receiver
        #: Set once the app knows the URL it is reached at (see :func:`serve`).
        self.session: KlingSession | None = None
        self.clips: dict[str, Clip] = {}
        # Each clip's work is owned here: closing the app cancels it (a createTask already on
        # the wire is still let land by the library).
        self._work: set[asyncio.Task[None]] = set()

    # -- routes --------------------------------------------------------------------------------
    async def create(self, request: web.Request) -> web.Response:
        """``POST /clips``: save the two files, check them, start the clip in the background."""
        if not request.content_type.startswith("multipart/"):
            return _error(400, "send a multipart form with the files `image` and `video`")
        clip = Clip(secrets.token_hex(8), self.data_dir / "clips")
        folder = self.data_dir / "uploads" / clip.id
        await asyncio.to_thread(folder.mkdir, parents=True)
        try:
            files, too_large, prompt = await self._read_form(request, folder)
            refusal = await _check(files, too_large, prompt)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        if refusal is not None:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            return refusal
        self.clips[clip.id] = clip
        work = asyncio.create_task(self._make(clip, folder, files, prompt))
        self._work.add(work)
        work.add_done_callback(self._work.discard)
        return web.json_response(clip.as_json(), status=202)

    async def show(self, request: web.Request) -> web.Response:
        """``GET /clips/{id}``: where the clip stands."""
        return web.json_response(self._clip(request).as_json())

    async def video(self, request: web.Request) -> web.StreamResponse:
        """``GET /clips/{id}/video``: the clip, once made."""
        clip = self._clip(request)
        if clip.file is None:
            raise web.HTTPNotFound(text=f"clip {clip.id} is {clip.status}")
        return web.FileResponse(clip.file)

    async def stats(self, request: web.Request) -> web.Response:
        """``GET /``: clip and callback counts."""
        return web.json_response(
            {
                "clips": len(self.clips),
                "callbacks": {
                    "accepted": self.receiver.accepted,
                    "rejected": self.receiver.rejected,
                    "malformed": self.receiver.malformed,
                },
            }
        )

    def _clip(self, request: web.Request) -> Clip:
        clip = self.clips.get(request.match_info["id"])
        if clip is None:
            raise web.HTTPNotFound(text="no such clip")
        return clip

    async def _read_form(
        self, request: web.Request, folder: Path
    ) -> tuple[dict[str, Path], set[str], str | None]:
        files: dict[str, Path] = {}
        too_large: set[str] = set()
        prompt = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "prompt":
                prompt = (await part.text()).strip() or None
            elif part.name in _LIMITS:
                suffix = Path(part.filename or "").suffix.lower()
                target = folder / f"{part.name}{suffix if suffix in _SUFFIXES else ''}"
                if await _save(part, target, _LIMITS[part.name]):
                    files[part.name] = target
                else:
                    too_large.add(part.name)
        return files, too_large, prompt

    # -- the clip's work -----------------------------------------------------------------------
    async def _make(
        self, clip: Clip, folder: Path, files: dict[str, Path], prompt: str | None
    ) -> None:
        assert self.session is not None

        def on_event(event: JobEvent) -> None:
            if event.kind is JobEventKind.VALIDATED:
                clip.status = "uploading"
            elif event.kind is JobEventKind.CREATED:
                clip.status, clip.task_id = "waiting", event.task_id
            elif event.kind is JobEventKind.STATE_CHANGED and event.task is not None:
                # The outcome itself is set below, once the clip is downloaded.
                state = event.task.state.value
                clip.status = state if state not in ("success", "fail") else clip.status

        try:
            result = await self.session.generate(
                files["image"],
                files["video"],
                prompt=prompt,
                download_to=clip.clips_dir,
                on_event=on_event,
            )
        except asyncio.CancelledError:
            clip.status, clip.error = "failed", "the app stopped before the clip was made"
            raise
        except Exception as exc:  # the clip's failure is its status, never the app's
            log.warning("clip %s failed: %s: %s", clip.id, type(exc).__name__, exc)
            clip.status, clip.error = "failed", str(exc)
            clip.task_id = clip.task_id or getattr(exc, "task_id", None)
            return
        finally:
            # Once uploaded (or given up), the service has what it needs from these files.
            await asyncio.to_thread(shutil.rmtree, folder, True)
        clip.task_id = result.task.task_id
        clip.result_urls = result.result_urls
        clip.file = result.files[0] if result.files else None
        clip.status = "success"

    async def close(self) -> None:
        """Stop the clips still being made."""
        for work in list(self._work):
            work.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)


async def _save(part: BodyPartReader, target: Path, limit: int) -> bool:
    """Stream one uploaded file to disk; False (and nothing kept) once it passes ``limit``."""
    size = 0
    async with aiofiles.open(target, "wb") as fh:
        while chunk := await part.read_chunk(256 * 1024):
            size += len(chunk)
            if size > limit:
                break
            await fh.write(chunk)
    if size <= limit:
        return True
    await asyncio.to_thread(target.unlink)
    return False


async def _check(
    files: dict[str, Path], too_large: set[str], prompt: str | None
) -> web.Response | None:
    """The answer refusing a form (413, 400, 422), or None if the clip can be made."""
    if too_large:
        name = min(too_large)
        return _error(413, f"the {name} is over {_LIMITS[name] // 1024**2} MB")
    if set(files) != {"image", "video"}:
        return _error(400, "send the files `image` and `video`")
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        return _error(400, f"the prompt is over {MAX_PROMPT_CHARS} characters")
    try:
        # Headers only: milliseconds, but still file reads, so off the event loop.
        await asyncio.to_thread(validate_image, files["image"])
        await asyncio.to_thread(validate_video, files["video"])
    except MediaValidationError as exc:
        return web.json_response(
            {"error": exc.detail, "rule": exc.rule, "medium": exc.medium}, status=422
        )
    return None


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def make_app(service: ClipService) -> web.Application:
    """The web application: the clip routes and the callback receiver on one server."""
    # The form carries the video (up to 100 MB); files are streamed to disk, never held whole.
    app = web.Application(client_max_size=MAX_VIDEO_BYTES + MAX_IMAGE_BYTES + 1024 * 1024)
    app.router.add_get("/", service.stats)
    app.router.add_post("/clips", service.create)
    app.router.add_get("/clips/{id}", service.show)
    app.router.add_get("/clips/{id}/video", service.video)
    app.router.add_post(service.receiver.path, service.receiver.handle)
    return app


@contextlib.asynccontextmanager
async def serve(
    data_dir: Path, host: str, port: int, public_url: str | None
) -> AsyncIterator[tuple[str, ClipService]]:
    """Run the app until the block ends; yield the URL it listens on and its service."""
    receiver = WebhookReceiver(os.environ.get("KIE_WEBHOOK_KEY") or None, path=CALLBACK_PATH)
    service = ClipService(data_dir, receiver)
    runner = web.AppRunner(make_app(service), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        url = f"http://{bound_host}:{bound_port}"
        # The session needs the callback URL, known only once the port is bound.
        callback_url = (public_url or url).rstrip("/") + CALLBACK_PATH
        async with KlingSession(webhook=receiver, callback_url=callback_url) as kling:
            service.session = kling
            try:
                yield url, service
            finally:
                await service.close()
    finally:
        await receiver.close()
        await runner.cleanup()


async def _run(data_dir: Path, host: str, port: int, public_url: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still interrupts
            loop.add_signal_handler(sig, stop.set)
    async with serve(data_dir, host, port, public_url) as (url, _):
        print(f"listening on {url}", flush=True)
        await stop.wait()
    print("stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; return the exit code."""
    parser = argparse.ArgumentParser(prog="webhook_app.py", description="Clips over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--data-dir", type=Path, default=Path("webhook-app-data"))
    parser.add_argument("--public-url", default=os.environ.get("PUBLIC_URL"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_run(args.data_dir, args.host, args.port, args.public_url))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
