"""Property tests: no callback body or header makes the webhook checks raise a foreign error."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kling_async.errors import MalformedCallbackError, WebhookVerificationError
from kling_async.signature import compute_signature
from kling_async.webhooks import callback_token, parse_callback, verify_signature
from kling_async.wire import is_valid_task_id

EXAMPLES = 500
PROPERTY = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEY = "test-webhook-hmac-key"
NOW = 1767694163

# Header values as aiohttp hands them over: any text, including lone surrogates that stand for
# bytes that were not UTF-8.
any_text = st.text(st.characters(exclude_categories=()), max_size=60)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    any_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=20,
)
callback_data = st.fixed_dictionaries(
    {},
    optional={
        "taskId": st.one_of(st.just("e989621f54392584b05867f87b160672"), any_text, json_values),
        "task_id": st.one_of(any_text, json_values),
        "state": st.one_of(st.sampled_from(["success", "fail", "generating", "?"]), json_values),
        "param": st.one_of(any_text, json_values),
        "resultJson": st.one_of(any_text, json_values),
        "failCode": json_values,
        "costTime": json_values,
        "completeTime": json_values,
    },
)
terminal_data = st.fixed_dictionaries(
    {
        "taskId": st.just("e989621f54392584b05867f87b160672"),
        "state": st.sampled_from(["success", "fail", "Success"]),
    },
    optional={
        "param": st.one_of(any_text, json_values),
        "resultJson": st.one_of(any_text, json_values),
        "failCode": json_values,
        "costTime": json_values,
        "completeTime": json_values,
    },
)
callback_bodies = st.one_of(
    st.fixed_dictionaries({"code": st.sampled_from([200, 501]), "data": terminal_data}).map(
        lambda v: json.dumps(v).encode("utf-8", "surrogatepass")
    ),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    st.fixed_dictionaries(
        {"code": json_values, "data": st.one_of(callback_data, json_values)},
        optional={"taskId": st.one_of(any_text, json_values), "msg": json_values},
    ).map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n + b"]" * n),
)
timestamps = st.one_of(
    st.none(),
    any_text,
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.sampled_from(["1e9", "-5", " 1767694163 ", "1767694163\x00", "²", "٣"]),
)
signatures = st.one_of(
    st.none(),
    any_text,
    st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode()),
    st.integers(min_value=0, max_value=10_000).map(lambda n: "A" * n),
)


@PROPERTY
@given(body=callback_bodies)
def test_parse_callback_raises_only_malformed_callback_errors(body: bytes) -> None:
    try:
        task = parse_callback(body)
    except MalformedCallbackError:
        event("refused")
        return
    event("parsed")
    assert is_valid_task_id(task.task_id) and task.state.is_terminal


@PROPERTY
@given(
    task_id=st.one_of(st.just("e989621f54392584b05867f87b160672"), any_text),
    timestamp=timestamps,
    signature=signatures,
    now=st.one_of(st.just(float(NOW)), st.floats(allow_nan=False)),
)
def test_verify_signature_raises_only_verification_errors(
    task_id: str, timestamp: str | None, signature: str | None, now: float
) -> None:
    try:
        verify_signature(task_id, timestamp, signature, KEY, now=now)
    except WebhookVerificationError as exc:
        event(exc.reason)
        return
    event("verified")
    # Accepted: the signature must then be the one the key makes.
    assert timestamp is not None and signature is not None
    assert signature.strip() == compute_signature(task_id, timestamp.strip(), KEY)


@PROPERTY
@given(task_id=any_text, stamp=st.integers(min_value=NOW - 300, max_value=NOW + 300))
def test_a_true_signature_verifies_for_every_signable_task_id(task_id: str, stamp: int) -> None:
    try:
        signature = compute_signature(task_id, str(stamp), KEY)
    except UnicodeEncodeError:
        return  # lone surrogates: no sender can sign such an id
    verify_signature(task_id, str(stamp), signature, KEY, now=NOW)


@PROPERTY
@given(url=st.one_of(st.none(), any_text, json_values.map(str)))
def test_callback_token_never_raises(url: Any) -> None:
    token = callback_token(url)
    assert token is None or 0 < len(token) <= 128
