"""Session settings shared by the client and the session: defaults, and base URL checks (pure).

Owns the documented defaults of ``KlingSession``'s keyword arguments. Touches no I/O.

Does no I/O; never reads the key (base.py does) or builds a session.
"""

from __future__ import annotations

import ipaddress
import math
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .models import PollSchedule, RateLimit

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_CREATE_LIMIT",
    "DEFAULT_FALLBACK_POLL",
    "DEFAULT_MIN_TRANSFER_RATE",
    "DEFAULT_POLL",
    "DEFAULT_QUERY_LIMIT",
    "DEFAULT_UPLOAD_BASE_URL",
    "DEFAULT_USER_AGENT",
    "FILE_UPLOAD_PATH",
    "IMAGE_UPLOAD_PATH",
    "UPLOAD_BASE_URL_ENV",
    "URL_UPLOAD_PATH",
    "VIDEO_UPLOAD_PATH",
    "check_api_key",
    "check_base_url",
    "is_loopback",
    "upload_base_url_for",
]

DEFAULT_BASE_URL = "https://api.kie.ai"
DEFAULT_UPLOAD_BASE_URL = "https://kieai.redpandaai.co"
API_KEY_ENV = "KIE_API_KEY"
#: Where a session goes when ``base_url`` / ``upload_base_url`` are not given (a simulator, say).
BASE_URL_ENV = "KIE_BASE_URL"
UPLOAD_BASE_URL_ENV = "KIE_UPLOAD_BASE_URL"
#: An ordinary, honest User-Agent: the service's edge refuses some library defaults (9b).
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (compatible; kling_async/0.1; +https://pypi.org/project/kling-async/)"
)
#: Transfers slower than this (bytes per second, after the request timeout's grace) are ended.
DEFAULT_MIN_TRANSFER_RATE = 50_000.0

#: 20 createTask per 10 s per account (kie-api.md section 6).
DEFAULT_CREATE_LIMIT = RateLimit(20, 10.0)
#: 10 recordInfo per second per key (kie-api.md section 2.1).
DEFAULT_QUERY_LIMIT = RateLimit(10, 1.0)
DEFAULT_POLL = PollSchedule()
#: With a webhook receiver, polling is only a safety net for a lost callback.
DEFAULT_FALLBACK_POLL = PollSchedule(phases=((math.inf, 60.0),), first_delay=150.0)

#: Where uploads go on the service (the docs' example layout).
IMAGE_UPLOAD_PATH = "images/kling-async"
VIDEO_UPLOAD_PATH = "videos/kling-async"
FILE_UPLOAD_PATH = "files/kling-async"
URL_UPLOAD_PATH = "urls/kling-async"


def is_loopback(url: str) -> bool:
    """True if ``url`` points at this machine (the key may then go over plain http)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(name: str, url: str, allow_insecure_http: bool) -> str:
    """``url`` without its trailing slash, if it is a safe base URL; else ``ConfigurationError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{name} must be an absolute http(s) URL, got {url!r}")
    if parts.scheme == "http" and not (allow_insecure_http or is_loopback(url)):
        raise ConfigurationError(
            f"{name} {url!r} is plain http: the API key would travel unencrypted. Use https, "
            "a loopback address, or pass allow_insecure_http=True."
        )
    return url.rstrip("/")


def upload_base_url_for(base_url: str) -> str:
    """The upload host that goes with ``base_url``: the real one for the real API host, else itself.

    A simulator serves both hosts on one address, so a base URL of its own points uploads there
    too; the real API host (``https://api.kie.ai``) never takes uploads (kie-api.md section 3).
    """
    host = (urlsplit(base_url).hostname or "").lower()
    if host == urlsplit(DEFAULT_BASE_URL).hostname:
        return DEFAULT_UPLOAD_BASE_URL
    return base_url


def check_api_key(key: str) -> str:
    """``key`` without surrounding whitespace if a header can carry it, else ``ConfigurationError``.

    The error never shows the key: it says what is wrong with it (a pasted ``Bearer`` prefix, a
    line break or another character a header cannot carry).
    """
    key = key.strip()
    if key[:7].lower() == "bearer ":
        raise ConfigurationError(
            "the API key starts with 'Bearer ': give the key alone (the client adds 'Bearer ')"
        )
    if any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigurationError("the API key has a control character or whitespace inside")
    if not key.isascii():
        raise ConfigurationError("the API key has a character that is not ASCII")
    return key
