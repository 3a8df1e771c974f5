"""Pure value objects: the task input, the polling schedule and rate limits."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from kling_async import (
    ConfigurationError,
    Job,
    MotionControlInput,
    PollSchedule,
    RateLimit,
    estimate_credits,
)
from kling_async.models import one_of
from kling_async.wire import create_task_body, market_task_body

IMAGE = "https://a.example/i.png"
VIDEO = "https://a.example/v.mp4"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "1080"}, "mode must be one of '720p', '1080p', 'std', 'pro'; got '1080'"),
        ({"mode": None}, "mode must be one of '720p', '1080p', 'std', 'pro'; got None"),
        (
            {"model": "kling-2.5/motion-control"},
            "model must be one of 'kling-2.6/motion-control', 'kling-3.0/motion-control'",
        ),
        (
            {"background_source": "input_image"},
            "background_source is an input of kling-3.0/motion-control; "
            "kling-2.6/motion-control does not take it",
        ),
        (
            {"model": "kling-3.0/motion-control", "background_source": "the_sky"},
            "background_source must be one of 'input_video', 'input_image' or None",
        ),
        (
            {"character_orientation": "side"},
            "character_orientation must be one of 'image', 'video'; got 'side'",
        ),
        ({"prompt": "x" * 2501}, "prompt has 2501 characters; at most 2500 are allowed"),
        ({"prompt": 5}, "prompt must be a string or None; got int"),
        ({"image_url": "ftp://a.example/i.png"}, "image_url must be an absolute http(s) URL"),
        ({"video_url": "/local/v.mp4"}, "video_url must be an absolute http(s) URL"),
        ({"video_url": "http://[::1"}, "video_url must be an absolute http(s) URL"),
        ({"image_url": "https://"}, "image_url must be an absolute http(s) URL"),
    ],
)
def test_invalid_input_says_which_field_and_what_it_allows(
    changes: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"image_url": IMAGE, "video_url": VIDEO, **changes}
    with pytest.raises(ConfigurationError) as caught:
        MotionControlInput(**fields)
    text = str(caught.value)
    assert text.startswith(message)
    assert "Attribute(" not in text and len(text) < 200
    assert isinstance(caught.value, ValueError)


def test_quoted_values_are_cut_short() -> None:
    with pytest.raises(ConfigurationError) as caught:
        MotionControlInput(IMAGE, "ftp://" + "x" * 10_000)
    assert len(str(caught.value)) < 200


def test_one_of_is_reusable_by_other_models() -> None:
    @attrs.frozen
    class Options:
        mode: str = attrs.field(validator=one_of("mode", ("720p", "1080p")))

    assert Options("1080p").mode == "1080p"
    with pytest.raises(
        ConfigurationError, match=r"^mode must be one of '720p', '1080p'; got \['x'\]$"
    ):
        Options(["x"])  # type: ignore[arg-type]


def test_default_schedule_follows_the_docs() -> None:
    poll = PollSchedule()
    assert [poll.interval_at(t) for t in (0, 29.9, 30, 119, 120, 3600)] == [3, 3, 8, 8, 15, 15]
    assert poll.next_delay(0, 0, 0.5) == pytest.approx(2.0)  # the first look
    assert poll.next_delay(10, 3, 0.0) == pytest.approx(3.0 * 0.9)  # -10 % jitter
    assert poll.next_delay(10, 3, 0.999) == pytest.approx(3.0 * 1.1, rel=1e-3)


def test_learned_render_time_skips_early_polls() -> None:
    poll = PollSchedule()
    assert poll.next_delay(5, 2, 0.5, expected=100.0) >= 0.8 * 100 - 5
    assert poll.next_delay(95, 9, 0.5, expected=100.0) == pytest.approx(8.0)  # past it: normal
    off = PollSchedule(expected_lead=0.0)
    assert off.next_delay(5, 2, 0.5, expected=100.0) == pytest.approx(3.0)


def test_scaling_keeps_the_shape() -> None:
    poll = PollSchedule().scaled(0.01)
    assert poll.interval_at(0.1) == pytest.approx(0.03)
    assert poll.first_delay == pytest.approx(0.02)
    assert poll.phases[-1][0] == math.inf
    assert RateLimit(20, 10.0).scaled(0.1) == RateLimit(20, 1.0)
    assert RateLimit(10, 1.0).rate == 10.0


@pytest.mark.parametrize(
    "phases",
    [(), ((10.0, 0.0), (math.inf, 1.0)), ((10.0, 1.0), (5.0, 1.0)), ((10.0, 1.0),)],
)
def test_bad_schedules_are_refused(phases: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ConfigurationError, match=r"^phases"):
        PollSchedule(phases=phases)
    with pytest.raises(ConfigurationError, match=r"^jitter must be less than 1; got 1.0$"):
        PollSchedule(jitter=1.0)
    with pytest.raises(ConfigurationError, match=r"^first_delay must be a number"):
        PollSchedule(first_delay=float("nan"))


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^max_requests must be greater than 0; got 0$"):
        RateLimit(0, 1.0)
    with pytest.raises(ConfigurationError, match=r"^window must be greater than 0"):
        RateLimit(1, 0.0)


@pytest.mark.parametrize(
    ("spelling", "sent"), [("720p", "720p"), ("std", "720p"), ("1080p", "1080p"), ("pro", "1080p")]
)
def test_mode_spellings_are_held_as_the_mode_sent(spelling: str, sent: str) -> None:
    for model in ("kling-2.6/motion-control", "kling-3.0/motion-control"):
        inp = MotionControlInput(IMAGE, VIDEO, mode=spelling, model=model)  # type: ignore[arg-type]
        assert inp.mode == sent
        assert create_task_body(inp)["input"]["mode"] == sent
        job = Job("a.png", "b.mp4", mode=spelling)  # type: ignore[arg-type]
        assert job.mode == sent
    # One job whichever way its mode is spelled: the same key, so a journal never runs it twice.
    assert Job("a.png", "b.mp4", mode=spelling).job_key == Job("a.png", "b.mp4", mode=sent).job_key  # type: ignore[arg-type]


def test_the_body_carries_the_model_and_background_source_only_when_given() -> None:
    body = create_task_body(MotionControlInput(IMAGE, VIDEO))
    assert body["model"] == "kling-2.6/motion-control" and "background_source" not in body["input"]
    v3 = MotionControlInput(
        IMAGE, VIDEO, model="kling-3.0/motion-control", background_source="input_image"
    )
    body = create_task_body(v3, "https://me.example/hook")
    assert body["model"] == "kling-3.0/motion-control"
    assert body["input"]["background_source"] == "input_image"
    assert body["callBackUrl"] == "https://me.example/hook"
    assert "callBackUrl" not in create_task_body(v3)  # never required of the caller
    assert (
        MotionControlInput(IMAGE, VIDEO, model="kling-3.0/motion-control").background_source is None
    )


def test_a_job_refuses_background_source_on_2_6_when_it_names_the_model() -> None:
    with pytest.raises(ConfigurationError, match="does not take it"):
        Job("a.png", "b.mp4", model="kling-2.6/motion-control", background_source="input_video")
    # Without a model, the batch's decides; the value alone is judged now.
    assert Job("a.png", "b.mp4", background_source="input_image").model is None
    with pytest.raises(ConfigurationError, match="background_source must be one of"):
        Job("a.png", "b.mp4", background_source="sky")  # type: ignore[arg-type]


def test_job_keys_of_old_jobs_do_not_change() -> None:
    old = Job("a.png", "b.mp4", prompt="p", mode="1080p")
    # The key of a job made before models existed: a journal of then resumes under it.
    assert (
        old.job_key
        == Job("a.png", "b.mp4", "p", "video", "1080p", model="kling-2.6/motion-control").job_key
    )
    v3 = Job("a.png", "b.mp4", prompt="p", mode="1080p", model="kling-3.0/motion-control")
    with_source = attrs.evolve(v3, background_source="input_image")
    assert len({old.job_key, v3.job_key, with_source.job_key}) == 3


@pytest.mark.parametrize(
    ("model", "mode", "credits"),
    [
        ("kling-2.6/motion-control", "720p", 110.0),
        ("kling-2.6/motion-control", "std", 110.0),
        ("kling-2.6/motion-control", "1080p", 180.0),
        ("kling-3.0/motion-control", "720p", 200.0),
        ("kling-3.0/motion-control", "1080p", 270.0),
        ("kling-3.0/motion-control", "pro", 270.0),
    ],
)
def test_estimates_use_each_models_prices(model: str, mode: str, credits: float) -> None:
    assert estimate_credits(10.0, mode, model=model) == credits


def test_estimates_refuse_a_model_without_a_known_price() -> None:
    with pytest.raises(ValueError, match="no price is known"):
        estimate_credits(10.0, "720p", model="kling-3.0/video")
    assert estimate_credits(10.0) == 110.0  # 2.6 stays the default


def test_the_generic_body_passes_the_input_through_untouched() -> None:
    fields = {"prompt": "a fox", "duration": "5", "a_field_from_tomorrow": {"nested": [1, None]}}
    body = market_task_body("acme/text-to-video-9", fields, "https://me.example/hook")
    assert body == {
        "model": "acme/text-to-video-9",
        "input": fields,
        "callBackUrl": "https://me.example/hook",
    }
    assert body["input"] is not fields  # a copy: the caller's mapping is never changed
    for model, task_input in (("", {}), ("m", ["x"]), ("m", {1: "x"}), ("m", {"x": {1, 2}})):
        with pytest.raises(ConfigurationError):
            market_task_body(model, task_input)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not JSON"):
        market_task_body("m", {"x": float("nan")})
