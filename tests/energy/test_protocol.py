"""The study's protocol: warm-up and cooldown."""

from __future__ import annotations

import time

import pytest

from repro.energy import cooldown, warmup
from repro.errors import UserError


def test_zero_is_a_no_op() -> None:
    start = time.perf_counter()
    warmup(0)
    cooldown(0)
    assert time.perf_counter() - start < 0.1


def test_warmup_and_cooldown_take_their_time() -> None:
    for step in (warmup, cooldown):
        start = time.perf_counter()
        step(0.3)
        assert 0.3 <= time.perf_counter() - start < 1.5


@pytest.mark.parametrize("step", [warmup, cooldown])
def test_negative_seconds_are_a_user_error(step) -> None:
    with pytest.raises(UserError, match="-1 s is negative"):
        step(-1)
