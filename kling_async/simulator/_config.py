"""Settings of the simulator, in nominal seconds; ``time_scale`` turns them into real time."""

from __future__ import annotations

import attrs

from ._rules import RateWindow

__all__ = [
    "LIBRARY_USER_AGENTS",
    "MARKET_MODELS",
    "OUTAGE_KINDS",
    "FaultConfig",
    "SimulatorConfig",
]

#: Endpoint names used in faults, the request log and counters. The result and uploaded-file
#: downloads are ``result`` and ``file``: faults reach them only when named in ``endpoints``.
ENDPOINTS = (
    "createTask",
    "recordInfo",
    "credit",
    "downloadUrl",
    "streamUpload",
    "base64Upload",
    "urlUpload",
)
#: User-Agent prefixes of HTTP libraries' defaults, which the service's edge may refuse.
LIBRARY_USER_AGENTS = (
    "python/",
    "python-",
    "aiohttp",
    "httpx",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
)
#: Market models other than motion control that the service hosts, named in public docs and
#: integrations (served generically: see ``SimulatorConfig.market_models``).
MARKET_MODELS = frozenset(
    {
        "kling-2.6/text-to-video",
        "kling-2.6/image-to-video",
        "kling-3.0/video",
        "grok-imagine/text-to-video",
        "wan/3-0-video-prime",
    }
)
#: What an outage (``Simulator.outage``) answers: 455 or 500 error codes, or dropped connections.
OUTAGE_KINDS = ("455", "500", "drop")


@attrs.frozen
class FaultConfig:
    """Seeded fault injection: each fraction is the chance that one request gets that fault.

    ``drop`` closes the connection before the request is processed (nothing happened);
    ``drop_after`` processes it, then closes the connection (the answer is lost: a createTask
    still creates its task); ``slow`` delays the answer by ``slow_seconds`` (nominal).
    ``error_433`` answers code 433 (a sub-key's quota is used up). Faults that process the
    request first, as a real gateway or server would: ``gateway_after`` then answers an HTML
    page with HTTP ``gateway_status`` (502 or 504), ``no_task_id`` answers HTTP 200 success with
    an empty ``data`` (a createTask without ``taskId``), and ``trickle`` sends the answer one
    byte every ``trickle_seconds`` (nominal; for upload answers and downloads). ``html_200``
    answers an HTTP 200 HTML error page without processing (in place of a video, with
    ``endpoints={"result"}``).
    """

    error_500: float = 0.0
    error_455: float = 0.0
    error_429: float = 0.0
    drop: float = 0.0
    drop_after: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 5.0
    error_433: float = 0.0
    gateway_after: float = 0.0
    gateway_status: int = attrs.field(default=502, validator=attrs.validators.in_((502, 504)))
    no_task_id: float = 0.0
    html_200: float = 0.0
    trickle: float = 0.0
    trickle_seconds: float = 0.5
    #: Sent as a ``Retry-After`` header (real seconds) on injected 429 and 455 answers.
    retry_after: float | None = None
    endpoints: frozenset[str] = frozenset(ENDPOINTS)
    seed: int = 0
    #: Keep at most this many entries in the request log (None: all, as tests want).
    request_log_limit: int | None = None

    @property
    def any(self) -> bool:
        """True if some fault can happen."""
        return any(chance for _, chance in self.chances())

    def chances(self) -> tuple[tuple[str, float], ...]:
        """Each fault's name (as in the request log) and its chance, in the order rolled."""
        # New faults go last: a seeded run of the older ones rolls the same as before.
        return (
            ("500", self.error_500),
            ("455", self.error_455),
            ("429", self.error_429),
            ("drop", self.drop),
            ("drop_after", self.drop_after),
            ("slow", self.slow),
            ("433", self.error_433),
            ("gateway_after", self.gateway_after),
            ("no_task_id", self.no_task_id),
            ("html_200", self.html_200),
            ("trickle", self.trickle),
        )


@attrs.frozen
class SimulatorConfig:
    """How the simulated service behaves. Durations are in the service's (nominal) seconds."""

    api_key: str = "sk-sim-0123456789abcdef"
    #: Starting balance of ``api_key`` (more keys: ``Simulator.add_key``).
    credits: float = 100_000.0
    #: The account's webhook HMAC key; None sends callbacks unsigned.
    webhook_hmac_key: str | None = "sim-webhook-hmac-key"
    #: Real seconds per nominal second: 0.01 runs a 100 s task in 1 s, windows included.
    time_scale: float = 1.0
    #: Any value with ``max_requests`` and ``window`` (a client ``RateLimit`` too).
    create_limit: RateWindow = RateWindow(20, 10.0)
    query_limit: RateWindow = RateWindow(10, 1.0)
    #: Nominal seconds spent in ``waiting``, ``queuing`` and ``generating``.
    waiting_seconds: float = 2.0
    queuing_seconds: float = 8.0
    generating_seconds: float = 90.0
    #: Chance that a task ends in ``fail`` (seeded by ``seed``).
    failure_rate: float = 0.0
    #: Right after creation recordInfo answers ``422 recordInfo is null`` for this long...
    invisible_seconds: float = 1.0
    #: ...or ``404 Task not found`` with 404 (both are seen, kie-api.md section 9b).
    invisible_code: int = attrs.field(default=422, validator=attrs.validators.in_((422, 404)))
    #: User-Agent prefixes (case-insensitive) that the edge refuses with a bare HTTP 403
    #: ``error code: 1010`` (kie-api.md section 9b), as is a missing User-Agent when any are
    #: set; ``LIBRARY_USER_AGENTS`` lists libraries' defaults. Empty: nothing is refused.
    edge_block_user_agents: tuple[str, ...] = ()
    #: False: errors as HTTP 200 with the code in the body (the newest docs); True: real statuses.
    http_error_status: bool = False
    faults: FaultConfig = FaultConfig()
    #: Callback delivery: attempts per callback, nominal seconds between them, and timeout.
    callback_attempts: int = 3
    callback_retry_delay: float = 5.0
    callback_timeout: float = 15.0
    #: Chance that a callback is never sent (to test a client's fallback).
    callback_drop_rate: float = 0.0
    #: Uploaded files stay this many nominal seconds (the docs' conservative 24 h).
    upload_lifetime: float = 24 * 3600.0
    #: Largest upload accepted, and largest JSON body.
    max_upload_bytes: int = 110 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    #: Let createTask and URL upload fetch http(s) URLs the simulator does not host itself.
    fetch_external_urls: bool = True
    #: Other Market models served generically: any ``input`` object is taken as is, the task
    #: costs ``market_credits`` and ends with a result video (the motion-control models are
    #: always served, and judged by their rules). Add names to test a client's generic path.
    market_models: frozenset[str] = MARKET_MODELS
    market_credits: float = 10.0
    #: Models whose createTask refuses a missing ``callBackUrl`` (422); some 3.0 docs mark it
    #: required, the 2.6 docs optional (kie-api.md section 9b), so none by default.
    callback_required_models: frozenset[str] = frozenset()
    seed: int = 0
    #: Keep at most this many entries in the request log (None: all, as tests want).
    request_log_limit: int | None = None
