"""Pure value objects: the task input, the polling schedule and rate limits."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from kling_async import ConfigurationError, MotionControlInput, PollSchedule, RateLimit
from kling_async.models import one_of

IMAGE = "https://a.example/i.png"
VIDEO = "https://a.example/v.mp4"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "1080"}, "mode must be one of '720p', '1080p'; got '1080'"),
        ({"mode": None}, "mode must be one of '720p', '1080p'; got None"),
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
