"""The webhook signature scheme of the service (kie-api.md section 3.2), as pure functions.

Does no I/O; knows nothing of HTTP, callbacks' bodies or the receiver.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

__all__ = ["SIGNATURE_CHARS", "compute_signature", "is_well_formed_signature", "signatures_match"]

#: Length of a signature: standard Base64 of a 32-byte HMAC-SHA256 digest, padded.
SIGNATURE_CHARS = 44


def compute_signature(task_id: str, timestamp: str, key: str) -> str:
    """Base64 of HMAC-SHA256, keyed by ``key`` (UTF-8), over ``taskId + "." + timestamp``."""
    message = f"{task_id}.{timestamp}".encode()
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


def is_well_formed_signature(value: str) -> bool:
    """Tell whether ``value`` is standard, padded Base64 of 32 bytes, as signatures are."""
    if len(value) != SIGNATURE_CHARS or not value.isascii():
        return False
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def signatures_match(expected: str, received: str) -> bool:
    """Compare two signatures in constant time; False if either is not ASCII text."""
    if not (expected.isascii() and received.isascii()):
        return False
    return hmac.compare_digest(expected.encode("ascii"), received.encode("ascii"))
