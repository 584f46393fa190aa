"""The probe on this machine: `python -m repro.estimate ... estimate.probe=true`."""

from __future__ import annotations

import csv
import math
import sqlite3
import sys
from typing import TYPE_CHECKING

import pytest

from repro.estimate.__main__ import main

if TYPE_CHECKING:
    from repro.estimate.probe import ProbeResult


def _estimate(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["repro-estimate", *args])
    main()


def _refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["repro-estimate", *args])
    with pytest.raises(SystemExit) as stopped:
        main()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2, err
    assert err.startswith("error: "), err
    return err


def _runs_in(tracking_uri: str) -> int:
    with sqlite3.connect(tracking_uri.removeprefix("sqlite:///")) as db:
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def test_a_probe_of_a_cpu_smoke_job_measures_its_step_and_records_nothing(
    smoke_overrides, compose_config, tracking_uri, tmp_path, monkeypatch, capsys
):
    from repro.config import job_config
    from repro.estimate.features import dataset_split_sizes

    out_csv = tmp_path / "estimate.csv"
    _estimate(
        monkeypatch, "-m", *smoke_overrides, "gpu=cpu", "seed=0,1", "estimate.probe=true",
        "estimate.probe_seconds=1", f"estimate.csv={out_csv}",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert captured.err.count("probing model=mobilenet_v2 gpu=cpu") == 1  # two seeds, one probe
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 2 and rows[0] == rows[1]
    row = rows[0]
    assert (row["model"], row["gpu"], row["source"]) == ("mobilenet_v2", "cpu", "probe")
    for metric in ("energy_j_per_image", "duration_ms_per_image", "energy_j", "duration_s"):
        low, point, high = (float(row[f"{metric}{s}"]) for s in ("_low", "", "_high"))
        assert 0 < low < point < high, metric
    assert row["gpu_energy_j_per_image"] == "" and row["energy_gpu_j"] == ""  # no GPU measured here
    # experiment=smoke trains 1 head + 1 fine-tuning epoch; early stopping cannot fire before the end
    assert (row["trained_epochs"], row["trained_epochs_low"], row["trained_epochs_high"]) == ("2", "2", "2")
    # the run's energy is its per-image figure x the images of both passes: 2 epochs x (2 steps of 16 + the
    # whole validation set)
    _, n_val = dataset_split_sizes(job_config(compose_config("gpu=cpu")).dataset)
    images = float(row["energy_j"]) / float(row["energy_j_per_image"])
    assert images == pytest.approx(2 * (2 * 16 + n_val), rel=1e-4)
    assert row["energy_provenance"] == "measured" or row["energy_provenance"].startswith("estimated (cpu: ")
    assert "source probe:" in captured.out and "probe energy: " in captured.out
    assert _runs_in(tracking_uri) == 0  # a probe is no training run


def test_a_job_on_another_gpu_is_not_probed_and_the_prior_estimates_it(smoke_overrides, monkeypatch, capsys):
    _estimate(
        monkeypatch, *smoke_overrides, "gpu=gtx750ti", "estimate.probe=true", "estimate.probe_seconds=1"
    )
    captured = capsys.readouterr()
    assert "probing" not in captured.err
    [line] = [line for line in captured.out.splitlines() if line.startswith("not probed: ")]
    assert "gpu=gtx750ti asks for an NVIDIA GTX 750 Ti" in line and line.endswith("the prior estimates it")
    [row] = [line for line in captured.out.splitlines() if line.startswith("mobilenet_v2 gtx750ti")]
    assert row.split()[2] == "prior"


@pytest.mark.parametrize("seconds", ["0", "-1", "soon"])
def test_probe_seconds_must_be_above_zero(seconds, smoke_overrides, tracking_uri, monkeypatch, capsys):
    err = _refused(
        monkeypatch, capsys, *smoke_overrides, "estimate.probe=true", f"estimate.probe_seconds={seconds}"
    )
    assert f"estimate.probe_seconds={seconds}" in err
    assert _runs_in(tracking_uri) == 0


def test_a_probe_while_another_job_holds_the_lock_is_refused(smoke_overrides, monkeypatch, capsys):
    from repro.energy import measurement_lock

    with measurement_lock():
        err = _refused(monkeypatch, capsys, *smoke_overrides, "gpu=cpu", "estimate.probe=true")
    assert "another measured job" in err


def test_a_probe_out_of_memory_names_the_job_the_batch_size_and_the_device(
    smoke_overrides, monkeypatch, capsys
):
    from repro import loop

    def out_of_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(loop, "_train_one_epoch", out_of_memory)
    err = _refused(monkeypatch, capsys, *smoke_overrides, "gpu=cpu", "estimate.probe=true")
    assert "model=mobilenet_v2" in err and "training.batch_size=16" in err and "on cpu" in err
    assert "out of memory" in err


@pytest.mark.slow  # 25 s idle: the session's sweep, then a probe of each of its two architectures
def test_the_probe_table_sets_each_architecture_against_its_full_runs(
    finished_sweep_once, data_cache, tmp_path, monkeypatch, capsys
):
    """A tiny case of `probe-table`: the two smoke jobs the session's sweep trained, probed again here."""
    import mlflow

    from repro.config import TrackingConfig

    experiment = TrackingConfig().experiment
    _estimate(
        monkeypatch, "probe-table", "experiment=smoke", f"dataset.cache_dir={data_cache}",
        "energy=codecarbon",
        f"estimate.tracking_uri={finished_sweep_once.tracking_uri}", f"estimate.experiment={experiment}",
        "estimate.probe_seconds=1", f"estimate.out_dir={tmp_path}",
    )  # fmt: skip
    assert {p.name for p in tmp_path.iterdir()} == {"f_probe.csv", "f_probe.md", "f_probe.tex"}
    rows = {row["architecture"]: row for row in csv.DictReader((tmp_path / "f_probe.csv").open())}
    assert set(rows) == {"mobilenet_v2", "resnet18", "MAPE"}
    mlflow.set_tracking_uri(finished_sweep_once.tracking_uri)
    runs = mlflow.search_runs(
        experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'",
    )  # fmt: skip
    for architecture in ("mobilenet_v2", "resnet18"):
        row = rows[architecture]
        measured = runs.loc[runs["tags.repro.model"] == architecture, "metrics.energy_j_per_image"].mean()
        assert float(row["full_j_per_image"]) == pytest.approx(measured, rel=1e-6)
        error = 100 * (float(row["probe_j_per_image"]) / measured - 1)
        assert float(row["error_pct"]) == pytest.approx(error, rel=1e-6)
    mape = (abs(float(rows["mobilenet_v2"]["error_pct"])) + abs(float(rows["resnet18"]["error_pct"]))) / 2
    assert float(rows["MAPE"]["error_pct"]) == pytest.approx(mape, rel=1e-6)
    # corrected leaving each architecture out: with two, each is corrected by the other's full/probe ratio
    ratios = {a: float(rows[a]["ratio"]) for a in ("mobilenet_v2", "resnet18")}
    for architecture, other in (("mobilenet_v2", "resnet18"), ("resnet18", "mobilenet_v2")):
        row = rows[architecture]
        assert float(row["loo_factor"]) == pytest.approx(ratios[other], rel=1e-6)
        assert float(row["corrected_error_pct"]) == pytest.approx(
            100 * (ratios[other] / ratios[architecture] - 1), rel=1e-6
        )
    assert rows["MAPE"]["corrected_error_pct"] != ""
    assert all(0 <= float(rows[a]["others_cpu_pct"]) <= 100 for a in ("mobilenet_v2", "resnet18"))
    assert "The probe on this machine against full runs" in (tmp_path / "f_probe.md").read_text()
    # the session's jobs trained channels last (auto on the CPU), so the probes did too
    jobs = runs.dropna(subset=["tags.repro.model"])  # not the sweep's parent run
    assert set(jobs["tags.device.memory_format"]) == {"channels_last"}
    assert "training.memory_format=channels_last" in (tmp_path / "f_probe.md").read_text()


def test_full_runs_recorded_before_the_layout_setting_count_as_contiguous():
    """The committed CPU replication predates `training.memory_format`: its probes must train contiguous."""
    from repro.estimate.probe_table import full_runs
    from repro.paths import repo_root

    store = repo_root() / "paper" / "replication" / "cpu" / "mlflow.db"
    full = full_runs(f"sqlite:///{store}", "replication_cpu")
    assert len(full) == 5
    assert set(full["memory_format"]) == {"contiguous"}


def _probe_result(device: str) -> ProbeResult:
    from repro.estimate.probe import PhaseMeasurement, ProbeResult

    steady = [0.5] * 10  # no step-to-step spread: the interval is the bias band x the epoch range
    phases = {
        "head": PhaseMeasurement("head", images=100, duration_s=5.0, energy_j={"cpu": 50.0}, step_s=steady),
        "finetune": PhaseMeasurement(
            "finetune", images=50, duration_s=5.0, energy_j={"cpu": 100.0}, step_s=steady
        ),
        "validation": PhaseMeasurement("validation", images=200, duration_s=2.0, energy_j={"cpu": 20.0}),
    }
    return ProbeResult(device, phases, {"cpu": "rapl"}, False, idle_power_w=10.0, warmup_s=20.0,
                       baseline_s=0.0, cooldown_s=3.0)  # fmt: skip


def test_the_projection_is_j_per_image_per_phase_x_images_x_epochs_with_the_bias_band():
    from repro.estimate.probe import BiasCorrection, project

    bias = BiasCorrection(0.8, (0.9, 1.1))
    out = project(
        _probe_result("cpu"), train_images_per_epoch=64, val_images_per_epoch=32, head_epochs=1,
        epochs=(4, 2, 4), bias=bias,
    )  # fmt: skip
    # J/image: head 0.5, fine-tuning 2.0, validation 0.1; 1 head + 3 fine-tuning epochs, each with validation
    energy = 1 * 64 * 0.5 + 3 * 64 * 2.0 + 4 * 32 * 0.1
    assert out["energy_j"] == pytest.approx(energy * 0.8)
    assert out["energy_j_per_image"] == pytest.approx(energy * 0.8 / (4 * (64 + 32)))
    assert out["energy_j_low"] == pytest.approx((64 * 0.5 + 64 * 2.0 + 2 * 32 * 0.1) * 0.8 * 0.9)
    assert out["energy_j_high"] == pytest.approx(energy * 0.8 * 1.1)
    assert out["duration_s"] == pytest.approx((64 * 0.05 + 3 * 64 * 0.1 + 4 * 32 * 0.01) * 0.8)
    assert out["bias_correction"] == 0.8
    assert math.isnan(out["gpu_energy_j"])  # nothing measured a GPU
    assert out["overhead_j"] == pytest.approx(3.0 * 10.0)  # the cooldown at the idle power
    assert out["warmup_j"] == pytest.approx(20.0 * 50.0 / 5.0)  # the warm-up at the head phase's power


def test_a_cpu_probe_is_corrected_by_the_measured_ratios_and_a_gpu_probe_only_gets_the_band():
    from repro.estimate.probe import BIAS_BAND, CPU_EARLIER_FULL_OVER_PROBE, CPU_FULL_OVER_PROBE, project

    ratios = list(CPU_FULL_OVER_PROBE.values())
    every = ratios + [r for earlier in CPU_EARLIER_FULL_OVER_PROBE.values() for r in earlier]
    geometric_mean = math.prod(ratios) ** (1 / len(ratios))
    args = {"train_images_per_epoch": 64, "val_images_per_epoch": 32, "head_epochs": 1, "epochs": (4, 4, 4)}
    raw = project(_probe_result("cuda:0"), **args)
    cpu = project(_probe_result("cpu"), **args)
    assert raw["bias_correction"] == 1.0
    assert (raw["energy_j_per_image_low"], raw["energy_j_per_image_high"]) == pytest.approx(
        (raw["energy_j_per_image"] * BIAS_BAND[0], raw["energy_j_per_image"] * BIAS_BAND[1])
    )
    assert cpu["energy_j_per_image"] == pytest.approx(raw["energy_j_per_image"] * geometric_mean)
    assert cpu["energy_j"] == pytest.approx(raw["energy_j"] * geometric_mean)
    # the corrected interval holds every full run the ratios came from, earlier runs of the table's too
    assert cpu["energy_j_per_image_low"] == pytest.approx(raw["energy_j_per_image"] * min(every))
    assert cpu["energy_j_per_image_high"] == pytest.approx(raw["energy_j_per_image"] * max(every))


def test_a_probe_says_how_much_of_the_cpu_other_processes_used_while_it_measured():
    from repro.estimate.probe import others_cpu_share

    # 2 CPUs for 10 s: the machine was busy 14 CPU-s, 9 of them this process's -> others 5 of 20
    share = others_cpu_share(machine_busy_s=14.0, process_busy_s=9.0, wall_s=10.0, cpus=2)
    assert share == pytest.approx(0.25)
    assert others_cpu_share(8.0, 9.0, 10.0, 2) == 0.0  # counters read a moment apart: never below 0
    assert math.isnan(others_cpu_share(1.0, 1.0, 0.0, 2))
    result = _probe_result("cpu")  # head 5 s, fine-tuning 5 s, validation 2 s
    for phase, share in (("head", 0.1), ("finetune", 0.5), ("validation", math.nan)):
        result.phases[phase].others_cpu_share = share
    assert result.others_cpu_share == pytest.approx((0.1 * 5 + 0.5 * 5) / 10)  # weighted by duration


def test_the_probe_tables_correction_for_an_architecture_leaves_that_architecture_out():
    import pandas as pd

    from repro.estimate.probe_table import loo_corrections

    corrections = loo_corrections(pd.Series({"a": 0.8, "b": 0.9, "c": 1.0}))
    factor = (0.9 * 1.0) ** 0.5  # b and c only
    assert corrections["a"].factor == pytest.approx(factor)
    assert corrections["a"].band == pytest.approx((0.9 / factor, 1.0 / factor))
    assert corrections["c"].factor == pytest.approx((0.8 * 0.9) ** 0.5)
    assert loo_corrections(pd.Series({"a": 0.8})) == {"a": None}  # nothing else to learn from
    # earlier runs of the table widen the band, never with the left-out architecture's own ratio
    earlier = {"a": (0.5,), "b": (0.7,), "c": (1.2,)}
    widened = loo_corrections(pd.Series({"a": 0.8, "b": 0.9, "c": 1.0}), earlier)
    assert widened["a"].factor == pytest.approx(factor)  # the point comes from this run's ratios alone
    assert widened["a"].band == pytest.approx((0.7 / factor, 1.2 / factor))


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["estimate.probe=maybe"], "estimate.probe=maybe must be true or false"),
        (["probe-table", "-m"], "probe-table probes one job per architecture"),
        (["probe-table", "estimate.probe_seconds=0"], "estimate.probe_seconds=0 must be greater than 0"),
    ],
)
def test_other_bad_probe_settings_are_one_line_and_exit_code_2(args, named, monkeypatch, capsys):
    assert named in _refused(monkeypatch, capsys, *args)
