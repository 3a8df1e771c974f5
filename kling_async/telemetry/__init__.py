"""Telemetry: OpenTelemetry spans and metrics when the API is installed, and logs that name the job.

The library depends on ``opentelemetry-api`` alone (the ``otel`` extra), imported on first use.
Without it, every function here is a cheap no-op; with it but no SDK set up by the application,
no span is made (the global provider is asked again at most once a second, so one set later is
taken up within a second). No SDK module is ever imported here: the application
chooses its SDK, exporters and HTTP instrumentation (aiohttp's ``TraceConfig``, see the README).

Spans: ``kling_async.job`` for each job (``generate`` and each job of ``generate_many``), with
children ``kling_async.validate``, ``.upload``, ``.createTask``, ``.wait`` (each change of state
an event) and ``.download``; an upload shared by jobs is sent in a root ``.upload.send``. Metrics
are listed in :data:`METRICS`. Nothing here raises into a job: an SDK's (or processor's, or
exporter's) error is logged once at DEBUG. Log records of the ``kling_async`` loggers carry
``task_id`` and ``job_key`` (None when unknown) as attributes, taken from the job or wait they
are logged in; the API key is never given to any of these.

Bounds: no aiohttp, no I/O, nothing of the library below it: every layer may call it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from . import _common, _metrics
from ._common import PREFIX, log
from ._common import clean as _clean
from ._common import otel as _otel
from ._common import trouble as _trouble
from ._metrics import METRICS, count, record, watch

__all__ = [
    "METRICS",
    "PREFIX",
    "JobScope",
    "annotate",
    "configure",
    "count",
    "event",
    "job",
    "job_logger",
    "note_task",
    "record",
    "span",
    "traced",
    "traced_job",
    "watch",
]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
J = TypeVar("J")

# The tracer of the provider configured (or the global one), once it has one.
_tracer_provider: Any = None
_tracer: Any = None
# How long "no tracing set up" is believed before the global provider is asked again. Asking
# costs a look into ``os.environ`` (a raised and caught KeyError), and untraced code asks
# dozens of times per job; a provider set later is used from at most this much later.
_UNTRACED_RECHECK = 1.0
# Until when (on ``_clock``) the last "no tracing set up" holds.
_untraced_until = 0.0
_clock = time.monotonic


def configure(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Use these providers instead of OpenTelemetry's global ones (None: the global one)."""
    global _tracer_provider, _tracer, _untraced_until
    _tracer_provider, _tracer, _untraced_until = tracer_provider, None, 0.0
    _metrics.use(meter_provider)


def _get_tracer() -> Any:
    global _tracer, _untraced_until
    if _tracer is None:
        api = _otel()
        if api is None:
            return None
        if _tracer_provider is None and _clock() < _untraced_until:
            return None
        provider = _tracer_provider or api[0].get_tracer_provider()
        if isinstance(provider, api[0].ProxyTracerProvider):
            # No tracing set up (yet): its spans would record nothing anyway.
            _untraced_until = _clock() + _UNTRACED_RECHECK
            return None
        _tracer = provider.get_tracer("kling_async")
    return _tracer


class _NoSpan:
    """What :func:`span` gives without OpenTelemetry: does nothing, cheaply."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class _Active:
    """A span made current while open, ended on leaving; an ``Exception`` marks it failed.

    What ``start_as_current_span`` does, without its two generator-based context managers:
    spans are made per step of every job, and this is most of what tracing costs the library.
    The context made current is also kept with its span in :data:`_open`: while it is still
    the current one, the span is found without asking OpenTelemetry's context for it.
    """

    __slots__ = ("_own", "_span", "_token")

    def __init__(self, span: Any) -> None:
        self._span = span
        self._token: Any = None
        self._own: contextvars.Token[Any] | None = None

    def __enter__(self) -> Any:
        trace, _, context = _common._api  # type: ignore[misc]  # set: a span exists
        try:
            made = trace.set_span_in_context(self._span)
            self._token = context.attach(made)
            self._own = _open.set((made, self._span))
        except Exception as exc:
            _trouble("span start", exc)
        return self._span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        trace, _, context = _common._api  # type: ignore[misc]
        # Each part on its own: whatever fails (SDK, processor, exporter), the context is
        # restored and the span ended if at all possible; the job never hears of it.
        if self._own is not None:
            try:
                _open.reset(self._own)
            except ValueError as failure:
                # Left in another context: what that one keeps is not ours to change (its
                # lookups still agree with OpenTelemetry's, which is not detached there either).
                _trouble("span cache reset", failure)
        try:
            if self._token is not None:
                context.detach(self._token)
        except Exception as failure:
            _trouble("span context", failure)
        try:
            # As OpenTelemetry's own: a cancellation (a BaseException) is no error of the step;
            # it is marked so it is not mistaken for a step that ended well.
            if exc is not None and self._span.is_recording():
                if isinstance(exc, Exception):
                    self._span.record_exception(exc)
                    self._span.set_status(
                        trace.Status(trace.StatusCode.ERROR, f"{exc_type.__name__}: {exc}")
                    )
                else:
                    self._span.set_attribute(PREFIX + "outcome", "cancelled")
                    self._span.add_event("cancelled")
        except Exception as failure:
            _trouble("span status", failure)
        try:
            self._span.end()
        except Exception as failure:
            _trouble("span end", failure)


# The context the library's innermost span open here made current, and that span: while that
# context is still OpenTelemetry's current one (nothing of the application's opened within),
# :func:`event` and :func:`annotate` take the span from here, cheaper than from the context.
_open: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar(
    "kling_span", default=None
)


def span(name: str, **attrs: Any) -> Any:
    """A context manager: a span ``kling_async.NAME`` (a child of the current one) while open."""
    try:
        tracer = _get_tracer()
        if tracer is None:
            return _NO_SPAN
        return _Active(tracer.start_span(PREFIX + name, attributes=_clean(attrs)))
    except Exception as exc:
        _trouble("span start", exc)
        return _NO_SPAN


def traced(
    name: str, *, join: bool = False, **attrs: Any
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorate a coroutine function: each call runs in a span ``kling_async.NAME``.

    The span names the task its job is about, once the job knows it. ``join``: a call made
    within a span of the same name (opened by a function decorated so) runs in that one.
    """
    full, cleaned = PREFIX + name, _clean(attrs)

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if join and _joinable.get() == full:
                return await fn(*args, **kwargs)
            try:
                tracer = _get_tracer()
                opened: Any = _NO_SPAN
                if tracer is not None:
                    scope = _scope.get()
                    named = cleaned
                    if scope is not None and scope.task_id is not None:
                        named = {**cleaned, PREFIX + "task_id": scope.task_id}
                    opened = _Active(tracer.start_span(full, attributes=named))
            except Exception as exc:
                _trouble("span start", exc)
                opened = _NO_SPAN
            with opened:
                if not join:
                    return await fn(*args, **kwargs)
                token = _joinable.set(full)
                try:
                    return await fn(*args, **kwargs)
                finally:
                    _joinable.reset(token)

        return wrapper

    return decorate


# The span of a ``traced(..., join=True)`` function open here: calls of the same name join it.
_joinable: contextvars.ContextVar[str | None] = contextvars.ContextVar("kling_join", default=None)


def _current_span() -> Any:
    """OpenTelemetry's current span, if it is recording."""
    opened = _open.get()
    if opened is not None and _common._api[2].get_current() is opened[0]:  # type: ignore[index]
        current = opened[1]  # the library's own, as OpenTelemetry would say
    else:  # outside the library's spans, or the application's span within one
        if _get_tracer() is None:
            return None  # no tracing: no span can be recording
        current = _common._api[0].get_current_span()  # type: ignore[index]
    return current if current.is_recording() else None


def annotate(**attrs: Any) -> None:
    """Set attributes on the current span, if one is recording."""
    try:
        current = _current_span()
        if current is not None:
            current.set_attributes(_clean(attrs))
    except Exception as exc:
        _trouble("annotate", exc)


def event(name: str, **attrs: Any) -> None:
    """Add an event to the current span, if one is recording."""
    try:
        current = _current_span()
        if current is not None:
            current.add_event(name, _clean(attrs))
    except Exception as exc:
        _trouble("event", exc)


# -- which job and task a log record (or a span) is about ------------------------------------------
class _Scope:
    """The job (if any) and task (once known) the running code works for."""

    __slots__ = ("job_key", "span", "task_id")

    def __init__(self, job_key: str | None, task_id: str | None, job_span: Any = None) -> None:
        self.job_key = job_key
        self.task_id = task_id
        self.span = job_span


# A task started by a job copies the job's scope (the object itself, so ids learnt later show).
_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("kling_scope", default=None)


def note_task(task_id: str, **attrs: Any) -> None:
    """The running job (or wait) is about ``task_id``: logs and the job's span say so from now."""
    try:
        _note_task(task_id, attrs)
    except Exception as exc:
        _trouble("note_task", exc)


def _note_task(task_id: str, attrs: dict[str, Any]) -> None:
    scope = _scope.get()
    if scope is not None and scope.task_id == task_id and not attrs:
        return  # known already: the spans of the job's steps were started with it (``traced``)
    cleaned = _clean({"task_id": task_id, **attrs})
    if scope is None:
        _scope.set(_Scope(None, task_id))
    elif scope.task_id != task_id:  # the job's span is told once
        scope.task_id = task_id
        if scope.span is not None and scope.span.is_recording():
            scope.span.set_attributes(cleaned)
    current = _current_span()
    if current is not None and current is not (scope and scope.span):
        current.set_attributes(cleaned)


def job_logger(job_key: str | None, task_id: str | None = None) -> logging.LoggerAdapter[Any]:
    """The library's logger with ``job_key`` and ``task_id`` given as ``extra`` to each record."""
    return logging.LoggerAdapter(log, {"job_key": job_key, "task_id": task_id})


class _JobFields(logging.Filter):
    """Gives every record ``task_id`` and ``job_key`` (None if unknown), for JSON formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _scope.get()
        if not hasattr(record, "task_id"):
            record.task_id = scope.task_id if scope is not None else None
        if not hasattr(record, "job_key"):
            record.job_key = scope.job_key if scope is not None else None
        return True


_FIELDS = _JobFields()
# A logger's filters see only what is logged to it, not to its children: each logger of the
# library gets it (the simulator's by name: it imports nothing of the client), and so does any
# ``kling_async.*`` logger made before this (formatters naming the fields need them on all).
_LOGGERS = ("kling_async", "kling_async.webhooks", "kling_async.simulator")
_made = [name for name in list(logging.root.manager.loggerDict) if name.startswith(PREFIX)]
for _name in (*_LOGGERS, *_made):
    _logger = logging.getLogger(_name)
    if _FIELDS not in _logger.filters:
        _logger.addFilter(_FIELDS)


def traced_job(
    run: Callable[Concatenate[S, J, P], Awaitable[R]],
) -> Callable[Concatenate[S, J, P], Coroutine[Any, Any, R]]:
    """Decorate ``run(self, job, ...)``: it runs in :func:`job` for ``job.job_key``.

    What it returns (a ``GenerationResult``) names the task and its cost on the job's span.
    """

    @functools.wraps(run)
    async def wrapper(owner: S, job_: J, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with job(job_.job_key, mode=job_.mode) as scope:  # type: ignore[attr-defined]
            result = await run(owner, job_, *args, **kwargs)
            task = getattr(result, "task", None)
            if task is not None:
                scope.finished(task.task_id, task.credits_consumed, model=task.model)
            return result

    return wrapper


def _reset(var: contextvars.ContextVar[Any], token: contextvars.Token[Any]) -> None:
    """``var.reset(token)``; left in another context (an async generator closed by the
    collector, say), ``var`` is set back to what it was instead."""
    try:
        var.reset(token)
    except ValueError as exc:
        _trouble("context reset", exc)
        var.set(None if token.old_value is contextvars.Token.MISSING else token.old_value)


def job(job_key: str, **attrs: Any) -> JobScope:
    """``with telemetry.job(key, mode=...) as scope:`` around one job (see :class:`JobScope`)."""
    return JobScope(job_key, **attrs)


class JobScope:
    """One job's span, scope, duration and outcome line; :meth:`finished` names its task."""

    __slots__ = ("_attrs", "_joined", "_span", "_started", "_token", "scope")

    def __init__(self, job_key: str, **attrs: Any) -> None:
        self.scope = _Scope(job_key, None)
        self._attrs = attrs
        self._span: Any = None
        self._started = 0.0
        self._token: contextvars.Token[_Scope | None] | None = None
        self._joined: contextvars.Token[str | None] | None = None

    def __enter__(self) -> JobScope:
        self._started = time.monotonic()
        try:
            tracer = _get_tracer()
            if tracer is not None:
                attrs = _clean({"job_key": self.scope.job_key, **self._attrs})
                self._span = _Active(tracer.start_span(PREFIX + "job", attributes=attrs))
                self.scope.span = self._span.__enter__()
        except Exception as exc:
            _trouble("span start", exc)
        self._token = _scope.set(self.scope)
        # A job started from within another's step (its on_event, say) joins none of its spans.
        self._joined = _joinable.set(None)
        return self

    def finished(self, task_id: str, credits: float | None, **attrs: Any) -> None:
        """The job ended with its task ``task_id`` done, having cost ``credits``."""
        self.scope.task_id = task_id
        try:
            current = self.scope.span
            if current is not None and current.is_recording():
                current.set_attributes(_clean({"task_id": task_id, "credits": credits, **attrs}))
        except Exception as exc:
            _trouble("annotate", exc)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = self.scope
        try:
            if exc is not None:
                scope.task_id = scope.task_id or getattr(exc, "task_id", None)
                if scope.span is not None and scope.span.is_recording() and scope.task_id:
                    scope.span.set_attribute(PREFIX + "task_id", scope.task_id)
            outcome = "ok" if exc is None else type(exc).__name__
            record("job.duration", time.monotonic() - self._started, outcome=outcome)
            # One line per job outcome: a job that failed is news, not a fault of the library.
            if exc is None:
                log.info("job %s: done, task %s", scope.job_key, scope.task_id)
            else:
                log.info("job %s: %s: %s", scope.job_key, outcome, exc)
        except Exception as failure:
            _trouble("job end", failure)
        finally:
            # Whatever failed above, the context is left as it was found and the span ended.
            if self._token is not None:
                _reset(_scope, self._token)
            if self._joined is not None:
                _reset(_joinable, self._joined)
            if self._span is not None:
                self._span.__exit__(exc_type, exc, tb)
