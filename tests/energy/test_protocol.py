"""The study's protocol: warm-up and cooldown."""

from __future__ import annotations

import time
import types

import pytest

from repro.energy import cooldown, protocol, warmup
from repro.errors import UserError


class FakeClock:
    """`perf_counter` and `sleep` for `repro.energy.protocol`: time moves only when the code reads or sleeps.

    Each read advances it by `tick_s` (the cost of one warm-up product), so a countdown that never
    stops would fail the test with a deadline, not hang it.
    """

    def __init__(self, tick_s: float) -> None:
        self.now_s = 0.0
        self.tick_s = tick_s
        self.reads = 0
        self.sleeps: list[float] = []

    def perf_counter(self) -> float:
        self.reads += 1
        assert self.reads < 100_000, "the countdown never ended"
        self.now_s += self.tick_s
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(tick_s=0.01)
    fake_time = types.SimpleNamespace(perf_counter=fake.perf_counter, sleep=fake.sleep)
    monkeypatch.setattr(protocol, "time", fake_time)
    return fake


def test_zero_is_a_no_op(clock: FakeClock) -> None:
    warmup(0)
    cooldown(0)
    assert clock.reads == 0 and clock.sleeps == []  # not even a look at the clock


@pytest.mark.parametrize("step", [warmup, cooldown])
def test_warmup_and_cooldown_end_at_their_deadline(clock: FakeClock, step) -> None:
    step(3.0)
    assert 3.0 <= clock.now_s < 3.0 + 5 * clock.tick_s  # stopped at the deadline, a few clock reads past it
    assert all(0 < slept <= 0.5 for slept in clock.sleeps)  # the countdown redraws at least every 0.5 s
    assert (clock.sleeps == []) == (step is warmup)  # the warm-up works, the cooldown sits idle


def test_warmup_and_cooldown_take_their_time() -> None:
    for step in (warmup, cooldown):
        start = time.perf_counter()
        step(0.3)
        assert time.perf_counter() - start >= 0.3


@pytest.mark.parametrize("step", [warmup, cooldown])
def test_negative_seconds_are_a_user_error(step) -> None:
    with pytest.raises(UserError, match="-1 s is negative"):
        step(-1)
