"""What every part of the telemetry shares: the name prefix, the API once looked for, and how
a failure of telemetry itself is told (once, at DEBUG)."""

from __future__ import annotations

import logging
from typing import Any

#: What every span, attribute and metric name of the library starts with.
PREFIX = "kling_async."
log = logging.getLogger("kling_async")

# opentelemetry's ``trace``, ``metrics`` and ``context`` modules, once looked for (None: not
# installed).
_api: tuple[Any, Any, Any] | None = None
_looked = False
# Where telemetry itself failed (an SDK, a processor, an exporter raising): each is logged once.
_failed: set[str] = set()


def trouble(where: str, exc: BaseException) -> None:
    """Telemetry failed at ``where``: say so once, at DEBUG; the job never hears of it."""
    if where not in _failed:
        _failed.add(where)
        log.debug("telemetry failed in %s (ignored from now on): %r", where, exc)


def otel() -> tuple[Any, Any, Any] | None:
    """opentelemetry's API modules, imported on first use; None if not installed."""
    global _api, _looked
    if not _looked:
        _looked = True
        try:
            from opentelemetry import context, metrics, trace
        except ImportError:
            return None
        except Exception as exc:  # a broken install: no telemetry, never a failed job
            trouble("import", exc)
            return None
        _api = (trace, metrics, context)
    return _api


# A tuple, not ``str | bool | ...``: that union would be built anew for every attribute.
_PLAIN = (str, bool, int, float)


def clean(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes under ``PREFIX``, None dropped, anything not a plain value as text."""
    return {
        PREFIX + name: value if isinstance(value, _PLAIN) else str(value)
        for name, value in attrs.items()
        if value is not None
    }
