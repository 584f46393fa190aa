"""`gpu.power_limit_w`: set through NVML for the job and restored however it ends, or refused before training.

NVML is replaced by a fake module that keeps one board's limit and its range, so the set and restore
logic is tested without a GPU (setting a real limit needs root and a board that allows it).
"""

from __future__ import annotations

import signal
import sys
import types
from pathlib import Path

import pytest
import torch
from tests.support import refused_in_process

from repro.energy.nvml import check_power_limit, power_limit
from repro.errors import UserError

_GPU = torch.device("cuda", 0)  # the fake NVML answers for it; torch's CUDA is never touched


class _NVMLError(Exception):
    pass


class _NoPermission(_NVMLError):
    pass


def _fake_pynvml(limit_mw: int = 250_000, low_mw: int = 100_000, high_mw: int = 300_000, root: bool = True):
    """A pynvml module for one board; `board.calls` lists the limits set, in order."""
    board = types.SimpleNamespace(limit_mw=limit_mw, calls=[], open=0)

    def set_limit(_handle, value_mw):
        if not root:
            raise _NoPermission("Insufficient Permissions")
        if not low_mw <= value_mw <= high_mw:
            raise _NVMLError("Invalid Argument")
        board.calls.append(value_mw)
        board.limit_mw = value_mw

    def init():
        board.open += 1

    def shutdown():
        board.open -= 1

    module = types.ModuleType("pynvml")
    module.NVMLError = _NVMLError
    module.NVMLError_NoPermission = _NoPermission
    module.nvmlInit = init
    module.nvmlShutdown = shutdown
    module.nvmlDeviceGetHandleByIndex = lambda index: f"gpu{index}"
    module.nvmlDeviceGetPowerManagementLimit = lambda _handle: board.limit_mw
    module.nvmlDeviceGetEnforcedPowerLimit = lambda _handle: board.limit_mw
    module.nvmlDeviceGetPowerManagementLimitConstraints = lambda _handle: (low_mw, high_mw)
    module.nvmlDeviceSetPowerManagementLimit = set_limit
    return module, board


@pytest.fixture
def board(monkeypatch):
    module, state = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return state


def test_the_limit_is_set_for_the_block_and_the_previous_one_restored(board):
    with power_limit(_GPU, 200) as in_force_w:
        assert in_force_w == 200  # read back from NVML
        assert board.limit_mw == 200_000
    assert board.limit_mw == 250_000
    assert board.calls == [200_000, 250_000]
    assert board.open == 0  # NVML shut down again


def test_the_previous_limit_is_restored_when_the_job_fails(board):
    with pytest.raises(RuntimeError, match="out of memory"), power_limit(_GPU, 150):
        assert board.limit_mw == 150_000
        raise RuntimeError("out of memory")
    assert board.limit_mw == 250_000 and board.open == 0


def test_the_previous_limit_is_restored_when_sigterm_stops_the_job(board):
    from repro.loop import TrainingStopped

    with pytest.raises(TrainingStopped), power_limit(_GPU, 150):
        raise TrainingStopped()  # what train.py's SIGTERM handler raises
    assert board.limit_mw == 250_000


def test_sigterm_is_held_back_while_the_limit_is_restored(board, monkeypatch):
    masks = []
    monkeypatch.setattr(signal, "pthread_sigmask", lambda how, sigs: masks.append((how, set(sigs))) or set())
    with power_limit(_GPU, 150):
        assert masks == []
    assert masks == [(signal.SIG_BLOCK, {signal.SIGTERM}), (signal.SIG_UNBLOCK, {signal.SIGTERM})]


def test_no_limit_leaves_the_board_alone(board):
    with power_limit(_GPU, None) as in_force_w:
        assert in_force_w is None
    assert board.calls == [] and board.open == 0


@pytest.mark.parametrize(("limit_w", "named"), [(350, "100 to 300 W"), (50, "100 to 300 W")])
def test_a_limit_outside_the_board_range_is_refused_and_nothing_set(board, limit_w, named):
    with pytest.raises(UserError, match=named):
        check_power_limit(_GPU, limit_w)
    with pytest.raises(UserError, match=named), power_limit(_GPU, limit_w):
        pass
    assert board.calls == [] and board.open == 0


def test_without_permission_the_limit_is_refused_naming_root(monkeypatch):
    module, state = _fake_pynvml(root=False)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with pytest.raises(UserError, match="no permission.*root"):
        check_power_limit(_GPU, 200)
    assert state.limit_mw == 250_000 and state.open == 0


def test_the_preflight_check_sets_only_the_limit_in_force(board):
    check_power_limit(_GPU, 200)
    assert board.calls == [250_000]  # the permission probe writes the limit back unchanged


def test_on_the_cpu_the_limit_is_refused(board):
    with pytest.raises(UserError, match="needs an NVIDIA GPU"), power_limit(torch.device("cpu"), 200):
        pass
    assert board.calls == []


@pytest.mark.store_absent
def test_a_cpu_job_with_a_power_limit_is_refused_before_anything_is_recorded(
    monkeypatch, capsys, smoke_overrides, tracking_uri
):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "gpu=cpu", "gpu.power_limit_w=200")
    assert "gpu.power_limit_w=200" in err and "NVIDIA GPU" in err
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()


def test_a_negative_limit_is_refused_by_the_schema(monkeypatch, capsys, smoke_overrides):
    err = refused_in_process(monkeypatch, capsys, *smoke_overrides, "gpu.power_limit_w=-5")
    assert "gpu.power_limit_w=-5" in err


def _real_gpu() -> bool:
    from repro.energy.nvml import nvml_index

    return torch.cuda.is_available() and nvml_index(torch.device("cuda")) is not None


@pytest.mark.skipif(not _real_gpu(), reason="needs an NVIDIA GPU with NVML (none here)")
def test_on_this_gpu_a_limit_is_set_and_restored_or_refused_for_permission():
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        before_mw = pynvml.nvmlDeviceGetPowerManagementLimit(handle)
        low_mw, _high_mw = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
    finally:
        pynvml.nvmlShutdown()
    target_w = max(low_mw, before_mw - 50_000) / 1000  # 50 W lower, within the board's range
    try:
        check_power_limit(torch.device("cuda"), target_w)
    except UserError as error:  # a container or a user without root: the refusal says so
        assert "no permission" in str(error) or "cannot be set" in str(error), error
        return
    with power_limit(torch.device("cuda"), target_w) as in_force_w:
        assert in_force_w == pytest.approx(target_w, abs=1)
    pynvml.nvmlInit()
    try:
        assert pynvml.nvmlDeviceGetPowerManagementLimit(handle) == before_mw
    finally:
        pynvml.nvmlShutdown()
