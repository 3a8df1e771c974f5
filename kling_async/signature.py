"""The webhook signature scheme of the service (kie-api.md section 3.2), as pure functions."""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["compute_signature", "signatures_match"]


def compute_signature(task_id: str, timestamp: str, key: str) -> str:
    """Base64 of HMAC-SHA256, keyed by ``key`` (UTF-8), over ``taskId + "." + timestamp``."""
    message = f"{task_id}.{timestamp}".encode()
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


def signatures_match(expected: str, received: str) -> bool:
    """Compare two signatures in constant time."""
    return hmac.compare_digest(expected.encode(), received.encode())
