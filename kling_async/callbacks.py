"""Callbacks as data (pure): their signature, their body, and the per-submission tokens.

The service signs ``taskId + "." + timestamp`` with the account's webhook HMAC key (HMAC-SHA256,
standard Base64; kie-api.md section 3.2). Owns checking that signature, parsing a callback's body
into a :class:`~kling_async.models.Task`, and the ``kling_job`` token of a callback URL. No I/O:
the receiver that serves callbacks over HTTP is :mod:`kling_async.webhooks`.

Does no I/O: the HTTP receiver is webhooks.py; confirming a task is the caller's.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit, urlunsplit

from .errors import (
    ConfigurationError,
    MalformedCallbackError,
    ProtocolError,
    WebhookVerificationError,
)
from .models import Task, is_http_url
from .signature import compute_signature, is_well_formed_signature, signatures_match
from .wire import parse_task

__all__ = [
    "CALLBACK_TOKEN_PARAM",
    "DEFAULT_TOLERANCE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "callback_token",
    "callback_url_with_token",
    "parse_callback",
    "verify_signature",
]

#: Seconds a callback's timestamp may differ from our clock, either way.
DEFAULT_TOLERANCE = 300.0
#: The query parameter of a callback URL that names the submission it belongs to (no secret).
CALLBACK_TOKEN_PARAM = "kling_job"  # noqa: S105
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
# Unix seconds have 10 digits until the year 2286; a longer "timestamp" is not one.
_MAX_TIMESTAMP_DIGITS = 12
# Tokens are URL-safe as they are, so the service hands them back byte for byte.
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,128}")


def verify_signature(
    task_id: str,
    timestamp: str | None,
    signature: str | None,
    key: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a callback's signature; raise ``WebhookVerificationError`` saying why it fails.

    ``timestamp`` is the ``X-Webhook-Timestamp`` header (Unix seconds), ``signature`` the
    ``X-Webhook-Signature`` header; ``now`` defaults to the current time. Whatever the header
    values (non-ASCII, absurdly long, ``1e9``, ``-5``), only ``WebhookVerificationError`` is
    raised; its ``reason`` is ``missing-header``, ``malformed-timestamp``,
    ``malformed-signature``, ``stale`` or ``bad-signature``.
    """
    if not timestamp or not signature:
        missing = TIMESTAMP_HEADER if not timestamp else SIGNATURE_HEADER
        raise WebhookVerificationError("missing-header", f"no {missing} header")
    stamp = timestamp.strip()
    # isdigit() alone accepts "²" and other digits int() refuses; the length keeps int() cheap.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _MAX_TIMESTAMP_DIGITS):
        raise WebhookVerificationError(
            "malformed-timestamp", f"{timestamp[:40]!r} is not Unix seconds"
        )
    received = signature.strip()
    if not is_well_formed_signature(received):
        raise WebhookVerificationError(
            "malformed-signature", "the signature is not Base64 of a 32-byte digest"
        )
    current = time.time() if now is None else now
    skew = abs(current - int(stamp))
    if skew > tolerance:
        raise WebhookVerificationError(
            "stale", f"timestamp is {skew:.0f} s away from now (tolerance {tolerance:g} s)"
        )
    try:
        expected = compute_signature(task_id, stamp, key)
    except UnicodeEncodeError:  # a task id with lone surrogates cannot have been signed
        raise WebhookVerificationError("bad-signature", "the task id cannot be signed") from None
    if not signatures_match(expected, received):
        raise WebhookVerificationError("bad-signature", "signature does not match")


def _task_id_of(body: Mapping[str, Any]) -> str | None:
    data = body.get("data")
    if isinstance(data, Mapping):
        for name in ("taskId", "task_id"):
            value = data.get(name)
            if isinstance(value, str) and value:
                return value
    value = body.get("taskId")
    return value if isinstance(value, str) and value else None


def parse_callback(body: bytes) -> Task:
    """Parse a callback body into a :class:`Task`, as recordInfo's answer would be.

    Raises ``MalformedCallbackError`` (and nothing else) for any body that is not the
    documented JSON of a task in a final state.
    """
    try:
        decoded = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        # Not UTF-8, not JSON, an integer past Python's digit limit, or nested absurdly deep.
        raise MalformedCallbackError("malformed-body", "the body is not JSON") from None
    if not isinstance(decoded, dict):
        raise MalformedCallbackError("malformed-body", "the body is not a JSON object")
    task_id = _task_id_of(decoded)
    if task_id is None:
        raise MalformedCallbackError(
            "malformed-body", "no taskId in data.taskId, data.task_id or taskId"
        )
    data = decoded.get("data")
    fields = dict(data) if isinstance(data, Mapping) else {}
    fields["taskId"] = task_id
    try:
        task = parse_task(fields, endpoint=None)
    except ProtocolError as exc:
        raise MalformedCallbackError("malformed-body", exc.message) from None
    if not task.state.is_terminal:
        state = task.raw_state if task.raw_state is not None else task.state.value
        raise MalformedCallbackError("malformed-body", f"state {state!r} is not final")
    return task


def _is_token(value: object) -> bool:
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def callback_url_with_token(base_url: str, token: str) -> str:
    """``base_url`` with ``kling_job=<token>`` in its query; its other parameters kept as sent.

    ``token`` is 1-128 characters of ``A-Z a-z 0-9 . _ ~ -`` (``secrets.token_urlsafe`` fits);
    a ``kling_job`` parameter already in ``base_url`` is replaced.
    """
    if not is_http_url(base_url):
        raise ConfigurationError(f"callback URL must be an absolute http(s) URL: {base_url[:80]!r}")
    if not _is_token(token):
        raise ConfigurationError(
            "callback token must be 1-128 characters of A-Z a-z 0-9 . _ ~ -; "
            f"got {str(token)[:40]!r}"
        )
    parts = urlsplit(base_url)
    kept = [
        pair
        for pair in parts.query.split("&")
        if pair and unquote_plus(pair.partition("=")[0]) != CALLBACK_TOKEN_PARAM
    ]
    kept.append(f"{CALLBACK_TOKEN_PARAM}={quote(token, safe='')}")
    return urlunsplit(parts._replace(query="&".join(kept)))


def callback_token(url: str | None) -> str | None:
    """The job token in a callback URL (as recorded in a task's ``callBackUrl``), if it has one.

    None when the URL has no ``kling_job`` parameter, has several, or its value is no token.
    """
    if not isinstance(url, str):
        return None
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == CALLBACK_TOKEN_PARAM]
    return values[0] if len(values) == 1 and _is_token(values[0]) else None
