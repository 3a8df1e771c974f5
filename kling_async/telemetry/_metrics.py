"""The library's metrics: counters tallied here and read when the SDK collects, gauges read from
the objects watched, a histogram of job durations."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._common import PREFIX, otel, trouble

#: The library's metrics: name (after ``PREFIX``) -> (kind, unit, description, labels). Counters
#: are tallied here and read by the SDK when it collects (observable counters): a count costs a
#: dict update, not a trip through the SDK, and most are made per request. ``origin``: a task
#: ``created`` by this session, or ``resumed`` (only waited for: a rerun's, say).
METRICS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "tasks.created": ("counter", "{task}", "Tasks created (createTask gave a task id)", ("model",)),
    "tasks.finished": ("counter", "{task}", "Tasks seen to end", ("state", "origin")),
    "credits.estimated": ("counter", "{credit}", "Estimated credits of the tasks created", ()),
    "credits.consumed": ("counter", "{credit}", "Credits tasks consumed", ("origin",)),
    "http.rate_limited": ("counter", "{response}", "429 answers received", ("endpoint",)),
    "retries": ("counter", "{retry}", "Requests tried again, by reason (the error)", ("reason",)),
    "submissions.unknown": ("counter", "{call}", "createTask calls with an unknown outcome", ()),
    "limiter.wait": ("counter", "s", "Time requests spent waiting for a rate slot", ("limiter",)),
    "limiter.granted": ("counter", "{request}", "Rate slots granted", ("limiter",)),
    "limiter.queue": ("gauge", "{request}", "Requests waiting for a rate slot now", ("limiter",)),
    "job.duration": ("histogram", "s", "Jobs from start to outcome, by outcome", ("outcome",)),
    "upload.bytes": ("counter", "By", "Bytes of files uploaded", ()),
    "download.bytes": ("counter", "By", "Bytes of results downloaded", ()),
}

_meter_provider: Any = None
# Instruments of the global meter live as long as the process (making one twice is an error
# to the SDK); those of a configured provider, as long as it is configured.
_global_instruments: dict[str, Any] = {}
_instruments = _global_instruments
# What each gauge reads when collected, by id of the object read (a user's may not hash; one
# shared by sessions counts once): (the object, weakly; its attribute; labels).
_gauges: dict[str, dict[int, tuple[weakref.ref[Any], str, dict[str, str]]]] = {}
# Sessions may be opened in several threads while the SDK collects in its own.
_gauge_lock = threading.Lock()
# Totals of the tallied counters, by labels, since the meter provider in use was configured.
_tallies: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
_tally_lock = threading.Lock()


def use(meter_provider: Any) -> None:
    """Count with ``meter_provider`` (None: the global one) from now, from zero."""
    global _meter_provider, _instruments
    _meter_provider = meter_provider
    _instruments = _global_instruments if meter_provider is None else {}
    _tallies.clear()  # a new provider counts from now
    for name in list(_gauges):
        try:
            _instrument(name)
        except Exception as exc:
            trouble("meter", exc)


def _instrument(name: str) -> Any:
    found = _instruments.get(name)
    if found is None:
        api = otel()
        if api is None:
            return None
        meter = (_meter_provider or api[1].get_meter_provider()).get_meter("kling_async")
        kind, unit, description, _ = METRICS[name]
        if kind == "gauge":
            found = meter.create_observable_gauge(
                PREFIX + name, [_reader(name, api[1].Observation)], unit, description
            )
        elif kind == "counter":
            found = meter.create_observable_counter(
                PREFIX + name, [_totals(name, api[1].Observation)], unit, description
            )
        else:
            found = meter.create_histogram(PREFIX + name, unit=unit, description=description)
        _instruments[name] = found
    return found


def _reader(name: str, observation: Any) -> Callable[[Any], list[Any]]:
    def read(_: Any) -> list[Any]:
        with _gauge_lock:
            entries = list(_gauges.get(name, {}).values())
        totals: dict[tuple[tuple[str, str], ...], float] = {}
        for ref, attribute, labels in entries:
            source = ref()
            if source is not None:
                key = tuple(sorted(labels.items()))
                totals[key] = totals.get(key, 0) + getattr(source, attribute)
        return [observation(value, dict(key)) for key, value in totals.items()]

    return read


def _totals(name: str, observation: Any) -> Callable[[Any], list[Any]]:
    def read(_: Any) -> list[Any]:
        with _tally_lock:
            totals = list(_tallies.get(name, {}).items())
        return [observation(value, dict(key)) for key, value in totals]

    return read


def count(name: str, n: float = 1, **labels: str) -> None:
    """Add ``n`` to the counter ``kling_async.NAME`` (one of :data:`METRICS`)."""
    if not n or otel() is None:
        return
    if name not in _instruments:
        try:
            _instrument(name)
        except Exception as exc:  # the tally is kept: a later provider may read it
            trouble("meter", exc)
    key = tuple(labels.items())
    with _tally_lock:  # event loops of several threads may count at once
        totals = _tallies.setdefault(name, {})
        totals[key] = totals.get(key, 0) + n


def watch(name: str, source: object, attribute: str, **labels: str) -> None:
    """Report ``source.ATTRIBUTE`` as the gauge ``kling_async.NAME`` (summed by labels).

    Read only when metrics are collected: nothing is spent per change. ``source`` is held
    weakly, and forgotten once it is gone; watched again (a limiter shared by several
    sessions), it is still read once.
    """
    if otel() is None:
        return
    try:
        ref = weakref.ref(source)
    except TypeError as exc:  # an object that cannot be held weakly: not watched
        trouble("watch", exc)
        return
    with _gauge_lock:
        # Those gone are dropped here: a weakref callback could run (GC) in the midst of this.
        sources = _gauges.setdefault(name, {})
        for dead in [k for k, entry in sources.items() if entry[0]() is None]:
            del sources[dead]
        sources[id(source)] = (ref, attribute, labels)
    try:
        _instrument(name)
    except Exception as exc:
        trouble("meter", exc)


def record(name: str, value: float, **labels: str) -> None:
    """Record ``value`` in the histogram ``kling_async.NAME`` (one of :data:`METRICS`)."""
    try:
        instrument = _instrument(name)
        if instrument is not None:
            instrument.record(value, labels or None)
    except Exception as exc:
        trouble("record", exc)
