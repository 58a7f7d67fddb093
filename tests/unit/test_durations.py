"""One duration parser: retry delays and the dead-letter age filters read the same text."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.durations import parse_duration
from shared.topology import RetryDelay


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500ms", timedelta(milliseconds=500)), ("90s", timedelta(seconds=90)),
     ("1h30m", timedelta(minutes=90)), ("2d", timedelta(days=2)), (" 1.5H ", timedelta(hours=1.5))],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "5x", "1h 30", "-5s"])
def test_bad_durations_are_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r"use e\.g\. 500ms"):
        parse_duration(text)


def test_a_retry_delay_is_one_whole_unit_that_names_its_queue() -> None:
    assert RetryDelay.parse(" 5 s") == RetryDelay(label="5s", milliseconds=5000)
    assert RetryDelay.parse("500ms").seconds == 0.5
    for bad in ("0s", "1.5s", "1h30m", "2d", "soon"):
        with pytest.raises(ValueError, match="invalid retry delay"):
            RetryDelay.parse(bad)
