"""The simulated service's HTTP layer: routes, auth, validation, faults, files and callbacks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ._callbacks import CallbackDelivery, callback_body
from ._config import SimulatorConfig
from ._faults import Faults
from ._files import FileHost
from ._records import ApiAnswer, Dropped, RequestRecord, current_record
from ._rules import (
    BACKGROUND_SOURCE_MODELS,
    BACKGROUND_SOURCES,
    CREDITS_PER_SECOND,
    DURATION_TOLERANCE,
    MAX_PROMPT_CHARS,
    MODEL_3_0,
    MODES,
    MOTION_MODELS,
    ORIENTATIONS,
    is_http_url,
    sign,
)
from ._state import Account, HostedFile, ServiceState, SimTask, SlidingWindow

log = logging.getLogger("kling_async.simulator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RESULT_ASSET = Path(__file__).resolve().parent.parent / "assets" / "result.mp4"
_CHUNK = 256 * 1024


class Service:
    """Request handlers over a :class:`ServiceState`, with the simulator's clock and faults."""

    def __init__(self, config: SimulatorConfig, workdir: Path) -> None:
        self.config = config
        self.state = ServiceState(config.seed)
        self.workdir = workdir
        self.records: list[RequestRecord] = []
        self.callbacks: list[CallbackDelivery] = []
        self.rate_limited: dict[str, int] = {"createTask": 0, "recordInfo": 0}
        self.base_url = ""
        self.upload_base_url = ""
        self._mono0 = time.monotonic()
        self._epoch0 = time.time()
        self.faults = Faults(self)
        self._background: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._client: aiohttp.ClientSession | None = None
        self._fetched: dict[str, HostedFile] = {}
        self.files = FileHost(self)
        self.add_key(config.api_key, config.credits)

    # -- clock ---------------------------------------------------------------------------------
    def now(self) -> float:
        """Nominal seconds since the simulator started."""
        return (time.monotonic() - self._mono0) / self.config.time_scale

    def real_seconds(self, nominal: float) -> float:
        """Real seconds for a nominal duration."""
        return nominal * self.config.time_scale

    def monotonic_at(self, nominal: float) -> float:
        """The real monotonic time of nominal time ``nominal``."""
        return self._mono0 + nominal * self.config.time_scale

    # -- accounts ------------------------------------------------------------------------------
    def add_key(self, key: str, credits: float) -> None:
        """Create (or reset) an account with ``credits`` and fresh rate windows."""
        self.state.accounts[key] = Account(
            credits=credits,
            create_window=SlidingWindow(self.config.create_limit),
            query_window=SlidingWindow(self.config.query_limit),
        )

    def _key_of(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.state.accounts:
            return None
        return token.strip()

    def _require_key(self, request: web.Request, message: str) -> str:
        key = self._key_of(request)
        if key is None:
            raise ApiAnswer(401, message)
        return key

    def _check_rate(self, endpoint: str, window: SlidingWindow | None) -> None:
        if window is not None and not window.try_acquire(self.now()):
            self.rate_limited[endpoint] += 1
            raise ApiAnswer(429, "Rate limit exceeded")

    # -- answers -------------------------------------------------------------------------------
    def _answer(self, request: web.Request, code: int, msg: str, data: Any = None) -> web.Response:
        record = current_record.get()
        upload = record.endpoint.endswith("Upload")
        body: dict[str, Any] = {"code": code, "msg": msg}
        if upload:
            body["success"] = code == 200
        if code == 200 or not upload:
            body["data"] = data
        status = code if (self.config.http_error_status and code != 200) else 200
        record.code = code
        return web.json_response(body, status=status)

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise ApiAnswer(400, "Content-Type must be application/json")
        limit = self.config.max_json_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiAnswer(400, f"Request body too large (limit {limit} bytes)")
        raw = await request.read()  # cached: a slow answer may have read it already
        if len(raw) > limit:
            raise ApiAnswer(400, f"Request body too large (limit {limit} bytes)")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiAnswer(400, "Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiAnswer(400, "Request body must be a JSON object")
        return body

    # -- middleware ----------------------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Log every request, inject faults, and turn every failure into a documented answer."""
        route = request.match_info.route
        endpoint = str(route.name) if route.name else "other"
        record = RequestRecord(
            endpoint=endpoint,
            method=request.method,
            path=request.path,
            time=time.monotonic(),
            key=self._key_of(request),
            had_authorization="Authorization" in request.headers,
        )
        self.records.append(record)
        limit = self.config.request_log_limit
        if limit is not None and len(self.records) > 2 * limit:
            del self.records[:-limit]  # trimmed in batches: a long-running simulator stays small
        current_record.set(record)
        try:
            # The edge stands before everything; an outage before the service's own faults.
            fault = self.faults.pick(request, endpoint)
            record.fault = fault
            response = await self.faults.respond(request, handler, fault)
        except Dropped:
            record.fault = record.fault or "drop"
            if request.transport is not None:
                request.transport.abort()
            await asyncio.sleep(0)  # let aiohttp see the connection is gone before it answers
            return web.Response(status=204)
        except ApiAnswer as answer:
            response = self._answer(request, answer.code, answer.msg)
        except web.HTTPException as exc:
            if exc.status == 413:
                response = self._answer(request, 400, "Request body too large")
            elif exc.status < 400:
                raise
            elif exc.status in (403, 404, 405):
                # Unknown routes and refused files get a real HTTP status, as on the real hosts.
                record.code = exc.status
                response = web.json_response(
                    {"code": exc.status, "msg": exc.reason}, status=exc.status
                )
            else:
                response = self._answer(request, exc.status, exc.reason)
        except asyncio.CancelledError:
            raise
        except ConnectionResetError:
            # The client left mid-request (a cancelled upload): nobody is there to answer.
            log.debug("client left during %s", request.path)
            response = self._answer(request, 499, "Client closed request")
        except Exception:
            log.exception("simulator handler failed on %s", request.path)
            response = self._answer(request, 500, "Internal server error")
        if record.code is None:
            record.code = response.status
        record.http_status = response.status
        return response

    # -- main host -----------------------------------------------------------------------------
    async def create_task(self, request: web.Request) -> web.Response:
        """``POST /api/v1/jobs/createTask``."""
        key = self._require_key(request, "You do not have access permissions")
        account = self.state.accounts[key]
        self._check_rate("createTask", account.create_window)
        body = await self._json_body(request)
        model = body.get("model")
        market = isinstance(model, str) and model in self.config.market_models
        if model not in MOTION_MODELS and not market:
            raise ApiAnswer(
                422, f"model must be one of [{', '.join(MOTION_MODELS)}] or a Market model"
            )
        inp = body.get("input")
        if not isinstance(inp, dict):
            raise ApiAnswer(422, "input is required")
        callback = body.get("callBackUrl")
        if callback is not None and (not isinstance(callback, str) or not is_http_url(callback)):
            raise ApiAnswer(422, "callBackUrl must be an http(s) URL")
        if callback is None and model in self.config.callback_required_models:
            raise ApiAnswer(422, "callBackUrl is required")
        if market:
            # Any other Market model: its input is its own business (not judged here).
            return self._market_task(request, key, body, callback)
        prompt = inp.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise ApiAnswer(422, "prompt must be a string")
        if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
            raise ApiAnswer(422, f"prompt must be at most {MAX_PROMPT_CHARS} characters")
        for field, allowed in (("character_orientation", ORIENTATIONS), ("mode", MODES)):
            if field not in inp:
                raise ApiAnswer(422, f"{field} is required")
            if field == "mode" and model == MODEL_3_0 and inp[field] not in allowed:
                # The words an integrator reports 3.0 answering std/pro with (section 9b).
                raise ApiAnswer(422, "mode is not within the range of allowed options")
            if inp[field] not in allowed:
                raise ApiAnswer(422, f"{field} must be one of [{', '.join(allowed)}]")
        if "background_source" in inp:
            if model not in BACKGROUND_SOURCE_MODELS:
                raise ApiAnswer(422, f"background_source is not an input of {model}")
            if inp["background_source"] not in BACKGROUND_SOURCES:
                raise ApiAnswer(
                    422, f"background_source must be one of [{', '.join(BACKGROUND_SOURCES)}]"
                )
        urls = {}
        for field in ("input_urls", "video_urls"):
            value = inp.get(field)
            if not isinstance(value, list) or not value:
                raise ApiAnswer(422, f"{field} is required")
            if len(value) != 1 or not isinstance(value[0], str):
                raise ApiAnswer(422, f"{field} must contain exactly one URL")
            if not is_http_url(value[0]):
                raise ApiAnswer(422, f"{field}[0] is not a valid URL")
            urls[field] = value[0]
        image = await self.files.resolve(urls["input_urls"])
        video = await self.files.resolve(urls["video_urls"])
        if image.image_format not in ("jpeg", "png"):
            raise ApiAnswer(422, "input_urls[0] must be an image/jpeg or image/png file")
        if video.video_seconds is None:
            raise ApiAnswer(
                422, "video_urls[0] must be a video/mp4, video/quicktime or video/x-matroska file"
            )
        longest = 10.0 if inp["character_orientation"] == "image" else 30.0
        seconds = video.video_seconds
        if seconds < 3.0 - DURATION_TOLERANCE or seconds > longest + DURATION_TOLERANCE:
            raise ApiAnswer(
                422,
                f"video duration {seconds:.2f}s is outside 3-{longest:g}s for "
                f"character_orientation={inp['character_orientation']}",
            )
        cost = round(CREDITS_PER_SECOND[str(model)][inp["mode"]] * seconds, 2)
        if account.credits - account.reserved < cost:
            raise ApiAnswer(402, "Credits insufficient")
        task = self._start_task(key, body, seconds, cost, callback)
        return self._answer(request, 200, "success", {"taskId": task.task_id})

    def _market_task(
        self, request: web.Request, key: str, body: dict[str, Any], callback: str | None
    ) -> web.Response:
        """A task of another Market model: a flat price, the same lifecycle, a result video."""
        account = self.state.accounts[key]
        cost = self.config.market_credits
        if account.credits - account.reserved < cost:
            raise ApiAnswer(402, "Credits insufficient")
        task = self._start_task(key, body, 0.0, cost, callback)
        return self._answer(request, 200, "success", {"taskId": task.task_id})

    def _start_task(
        self, key: str, body: dict[str, Any], seconds: float, cost: float, callback: str | None
    ) -> SimTask:
        cfg = self.config
        now = self.now()
        queued = now + cfg.waiting_seconds
        generating = queued + cfg.queuing_seconds
        task = SimTask(
            task_id=self.state.new_task_id(),
            key=key,
            body=body,
            created=now,
            queued_at=queued,
            generating_at=generating,
            done_at=generating + cfg.generating_seconds,
            will_fail=self.state.rng.random() < cfg.failure_rate,
            output_seconds=seconds,
            cost=cost,
            callback_url=callback,
        )
        self.state.tasks[task.task_id] = task
        self.state.result_names[task.task_id] = f"{self.base_url}/results/{task.task_id}.mp4"
        self.state.accounts[key].reserved += cost
        self.state.tasks_created[key] += 1
        loop = asyncio.get_running_loop()
        handle = loop.call_later(self.real_seconds(task.done_at - now), self._on_done, task)
        self._timers.add(handle)
        return task

    def _on_done(self, task: SimTask) -> None:
        self.state.settle(task, task.done_at)
        if task.callback_url is None:
            return
        if self.state.rng.random() < self.config.callback_drop_rate:
            return
        job = asyncio.ensure_future(self._deliver(task))
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    async def _deliver(self, task: SimTask) -> None:
        assert task.callback_url is not None
        data = self.state.task_data(task, max(self.now(), task.done_at), self._epoch0)
        payload = json.dumps(callback_body(data)).encode()
        for attempt in range(1, self.config.callback_attempts + 1):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json"}
            if self.config.webhook_hmac_key:
                headers["X-Webhook-Timestamp"] = timestamp
                headers["X-Webhook-Signature"] = sign(
                    task.task_id, timestamp, self.config.webhook_hmac_key
                )
            delivery = CallbackDelivery(task.task_id, task.callback_url, attempt, None)
            self.callbacks.append(delivery)
            try:
                timeout = aiohttp.ClientTimeout(
                    total=max(self.real_seconds(self.config.callback_timeout), 1.0)
                )
                async with self._http().post(
                    task.callback_url, data=payload, headers=headers, timeout=timeout
                ) as answer:
                    delivery.status = answer.status
                    if answer.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError) as exc:
                delivery.error = type(exc).__name__
            await asyncio.sleep(self.real_seconds(self.config.callback_retry_delay))

    async def record_info(self, request: web.Request) -> web.Response:
        """``GET /api/v1/jobs/recordInfo?taskId=``."""
        key = self._require_key(request, "Unauthorized")
        self._check_rate("recordInfo", self.state.accounts[key].query_window)
        task_id = request.query.get("taskId", "").strip()
        if not task_id:
            raise ApiAnswer(400, "taskId parameter is required")
        task = self.state.tasks.get(task_id)
        now = self.now()
        if task is None or task.key != key:
            raise ApiAnswer(422, "recordInfo is null")
        if now < task.created + self.config.invisible_seconds:
            if self.config.invisible_code == 404:
                raise ApiAnswer(404, "Task not found")
            raise ApiAnswer(422, "recordInfo is null")
        self.state.settle(task, now)
        return self._answer(request, 200, "success", self.state.task_data(task, now, self._epoch0))

    async def credit(self, request: web.Request) -> web.Response:
        """``GET /api/v1/chat/credit``."""
        key = self._require_key(request, "You do not have access permissions")
        now = self.now()
        for task in self.state.tasks.values():
            if task.key == key:
                self.state.settle(task, now)
        return self._answer(request, 200, "success", self.state.accounts[key].credits)

    async def download_url(self, request: web.Request) -> web.Response:
        """``POST /api/v1/common/download-url``: a link valid for 20 minutes."""
        self._require_key(request, "You do not have access permissions")
        body = await self._json_body(request)
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise ApiAnswer(422, "url is required")
        name = urlsplit(url).path.rsplit("/", 1)[-1]
        task_id = name.removesuffix(".mp4")
        if not url.startswith(f"{self.base_url}/results/") or task_id not in self.state.tasks:
            raise ApiAnswer(422, "Only files generated by kie.ai can be downloaded")
        expires = int((self._epoch0 + self.now() + 20 * 60) * 1000)
        token = self._result_token(task_id, expires)
        link = f"{self.base_url}/results/{name}?expires={expires}&token={token}"
        return self._answer(request, 200, "success", link)

    def _result_token(self, task_id: str, expires: int) -> str:
        return hashlib.sha256(f"{task_id}:{expires}:{self.config.seed}".encode()).hexdigest()[:16]

    async def get_result(self, request: web.Request) -> web.StreamResponse:
        """``GET /results/{name}``: a succeeded task's video (no auth, like a CDN)."""
        task_id = request.match_info["name"].removesuffix(".mp4")
        task = self.state.tasks.get(task_id)
        if task is None or task.state_at(self.now()).value != "success":
            raise web.HTTPNotFound()
        if "expires" in request.query:
            expires = int(request.query.get("expires", "0"))
            fresh = expires >= (self._epoch0 + self.now()) * 1000
            if not fresh or request.query.get("token") != self._result_token(task_id, expires):
                raise web.HTTPForbidden()
        return self.file_answer(RESULT_ASSET, "video/mp4")

    def file_answer(self, path: Path, content_type: str) -> web.StreamResponse:
        """A hosted file's download, streamed from disk (or whole, for a trickle to send)."""
        if current_record.get().fault == "trickle":
            return web.Response(body=path.read_bytes(), content_type=content_type)
        return web.FileResponse(path, headers={"Content-Type": content_type})

    # -- lifecycle -----------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession()
        return self._client

    async def close(self) -> None:
        """Stop timers and deliveries, and close the outgoing HTTP session."""
        for handle in self._timers:
            handle.cancel()
        for job in list(self._background):
            job.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    def main_routes(self) -> list[web.RouteDef]:
        """Routes of the API host (``api.kie.ai``) and of generated results."""
        return [
            web.post("/api/v1/jobs/createTask", self.create_task, name="createTask"),
            web.get("/api/v1/jobs/recordInfo", self.record_info, name="recordInfo"),
            web.get("/api/v1/chat/credit", self.credit, name="credit"),
            web.post("/api/v1/common/download-url", self.download_url, name="downloadUrl"),
            web.get("/results/{name}", self.get_result, name="result"),
            web.get("/_simulator/stats", self.stats, name="stats"),
            web.get("/_simulator/config", self.sim_config, name="simConfig"),
        ]

    async def sim_config(self, request: web.Request) -> web.Response:
        """``GET /_simulator/config``: the time scale and hosts, for a client of a separate run.

        Not part of the service's API (``Simulator.connect`` reads it). No key is needed and none
        is shown: the key is the one the simulator printed when it started.
        """
        body = {
            "time_scale": self.config.time_scale,
            "base_url": self.base_url,
            "upload_base_url": self.upload_base_url,
        }
        return web.json_response(body)

    async def stats(self, request: web.Request) -> web.Response:
        """``GET /_simulator/stats``: counters and the request log, for a simulator run apart.

        Not part of the service's API. ``?endpoint=`` filters the log; times are the machine's
        monotonic clock, comparable with ``time.monotonic()`` in other processes on it.
        """
        wanted = request.query.get("endpoint")
        log_rows = [
            [r.endpoint, r.time, r.code, r.fault]
            for r in self.records
            if r.endpoint not in ("stats", "simConfig") and (wanted is None or r.endpoint == wanted)
        ]
        body = {
            "rate_limited": self.rate_limited,
            "tasks_created": dict(self.state.tasks_created),
            "completed_at": {
                task_id: self.monotonic_at(task.done_at)
                for task_id, task in self.state.tasks.items()
            },
            "requests": log_rows,
        }
        return web.json_response(body)

    def upload_routes(self) -> list[web.RouteDef]:
        """Routes of the upload host (``kieai.redpandaai.co``) and of uploaded files."""
        return [
            web.post("/api/file-stream-upload", self.files.stream_upload, name="streamUpload"),
            web.post("/api/file-base64-upload", self.files.base64_upload, name="base64Upload"),
            web.post("/api/file-url-upload", self.files.url_upload, name="urlUpload"),
            web.get("/files/{path:.+}", self.files.get_file, name="file"),
        ]


def make_workdir() -> Path:
    """A private folder for stored uploads."""
    return Path(tempfile.mkdtemp(prefix="kling-sim-"))


__all__ = ["RequestRecord", "Service", "make_workdir"]
