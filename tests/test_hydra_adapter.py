"""The private Hydra members repro uses (all in `repro.hydra_adapter`), and the sweep expansion that
copies Hydra's basic sweeper. These tests fail on a Hydra release that changes either, which is why
pyproject.toml pins `hydra-core<1.4`.
"""

from __future__ import annotations

from importlib.metadata import version

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus

from repro.errors import UserError
from repro.hydra_adapter import command_line, job_exception
from repro.preflight import _sweep_jobs


def test_hydra_is_a_release_the_adapter_was_checked_against():
    major, minor = (int(part) for part in version("hydra-core").split(".")[:2])
    assert (major, minor) == (1, 3), (
        f"hydra-core {version('hydra-core')}: recheck repro.hydra_adapter (Hydra's private "
        "get_args_parser and JobReturn._return_value) and the sweep expansion, then widen the pin in "
        "pyproject.toml"
    )


def test_command_line_flags_and_overrides_are_read_as_hydra_reads_them():
    args = command_line(["-m", "model=resnet18,vgg16", "seed=1", "--cfg", "job"])
    assert args.multirun is True
    assert args.overrides == ["model=resnet18,vgg16", "seed=1"]
    assert args.cfg == "job"
    args = command_line(["--config-dir", "/tmp/conf", "--config-name", "mine", "--info"])
    assert (args.config_dir, args.config_name, args.info) == ("/tmp/conf", "mine", "all")
    plain = command_line(["model=vgg16"])
    assert not (plain.multirun or plain.help or plain.hydra_help or plain.cfg or plain.shell_completion)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=resnet18,vgg16", "gpu=a100,t4"],
        ["seed=range(0,3)", "training.head_lr=1e-3", "model=mobilenet_v2,resnet18"],
        ["+foo=choice(1,2)", "dataset.image_size=32"],
        ["model=vgg16"],
    ],
)
def test_sweep_expansion_matches_hydras_basic_sweeper(overrides):
    parsed = OverridesParser.create().parse_overrides(overrides)
    hydra_jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    assert _sweep_jobs(parsed) == hydra_jobs


def test_an_interval_sweep_is_refused_in_one_line():
    parsed = OverridesParser.create().parse_overrides(["training.head_lr=interval(0.001,0.1)"])
    with pytest.raises(UserError, match=r"training.head_lr=interval\(0.001,0.1\).*lists and ranges"):
        _sweep_jobs(parsed)


def test_a_failed_job_s_exception_is_read_without_hydra_s_stderr_line(capsys):
    failed = JobReturn(overrides=["seed=1"], status=JobStatus.FAILED)
    failed.return_value = ValueError("corrupt checkpoint")  # Hydra's public setter, as its launchers use
    error = job_exception(failed)
    assert isinstance(error, ValueError) and str(error) == "corrupt checkpoint"
    assert capsys.readouterr().err == ""  # reading `return_value` would print "Error executing job ..."
    finished = JobReturn(status=JobStatus.COMPLETED)
    finished.return_value = 0.9
    assert job_exception(finished) is None
