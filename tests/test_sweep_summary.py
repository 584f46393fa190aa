"""The table a sweep prints at its end (`repro.sweep_summary`)."""

from __future__ import annotations

from types import SimpleNamespace

from repro.sweep_summary import JobRow, lowest_energy_line, summary_lines, table_lines

MEASURED = JobRow(
    "resnet18-cuda-s0", "FINISHED", 0.5, 0.8512, 61.25, "measured (cpu: rapl, gpu: nvml-counter)"
)
ESTIMATED = JobRow(
    "mobilenet_v2-cpu-s0",
    "FINISHED",
    12.3456,
    0.8011,
    7.0,
    "estimated (cpu: tdp-load-estimate)",
    estimated=True,
)
FAILED = JobRow("vgg16-cpu-s0", "FAILED", None, None, 3.5, "-", note="TrainingDiverged: training diverged")


def test_the_table_is_aligned_and_marks_estimates_and_keeps_reasons() -> None:
    header, *rows = table_lines([MEASURED, ESTIMATED, FAILED])
    assert header.split() == ["job", "state", "J/image", "F1", "duration", "energy"]
    state_at, energy_at = header.index("state"), header.index("energy")
    for row, job in zip(rows, [MEASURED, ESTIMATED, FAILED], strict=True):
        assert row.startswith(f"  {job.name}")
        assert row[state_at:].startswith(job.state)
        assert row[energy_at:].startswith(job.energy)
        # Numbers are right-aligned: each ends where its header ends.
        for title in ("J/image", "F1", "duration"):
            end = header.index(title) + len(title)
            assert row[end - 1] != " " and row[end] == " ", (title, row)
    measured, estimated, failed = rows
    assert " 0.5 " in measured and "~" not in measured
    assert "~12.35" in estimated and "estimated (cpu: tdp-load-estimate)" in estimated
    assert "0.8011" in estimated and "7.0 s" in estimated
    assert failed.endswith("  TrainingDiverged: training diverged")  # the reason, after every column
    assert failed.index("TrainingDiverged") > energy_at + len(MEASURED.energy)


def test_lowest_energy_names_the_job_and_the_f1_it_gives_up() -> None:
    cheaper = JobRow("mobilenet_v2-cpu-s1", "FINISHED", 0.25, 0.8011, 5.0, "measured (cpu: rapl)")
    line = lowest_energy_line([MEASURED, cheaper, FAILED])
    assert line == (
        "Lowest J/image: mobilenet_v2-cpu-s1 (0.25 J/image), F1 0.8011: 0.0501 below the best, "
        "resnet18-cuda-s0 (F1 0.8512, 0.5 J/image)."
    )
    best_and_cheapest = JobRow("tiny-cpu-s0", "FINISHED", 0.1, 0.9, 1.0, "measured (cpu: rapl)")
    assert lowest_energy_line([MEASURED, best_and_cheapest]).endswith("F1 0.9000, which is also the best F1.")
    mixed = lowest_energy_line([MEASURED, ESTIMATED])
    assert mixed.startswith("Lowest J/image: resnet18-cuda-s0 (0.5 J/image)")
    assert mixed.endswith("; beware: this compares measured with estimated energy.")
    assert lowest_energy_line([FAILED]) == "Lowest J/image: no finished job recorded its energy per image."


def test_summary_explains_the_estimate_mark_only_when_a_row_has_one() -> None:
    assert any("~ an estimate, not a measurement" in line for line in summary_lines([MEASURED, ESTIMATED]))
    assert not any("estimate" in line for line in summary_lines([MEASURED]))


def test_a_row_from_a_run_reads_its_metrics_and_energy_methods() -> None:
    run = SimpleNamespace(
        info=SimpleNamespace(run_name="resnet18-cpu-s0", status="FINISHED", run_id="abc"),
        data=SimpleNamespace(
            metrics={"energy_j_per_image": 16.75, "f1": 0.66, "duration_s": 38.3, "auc": float("nan")},
            tags={
                "energy_estimated": "true",
                "energy.method.cpu": "tdp-load-estimate",
                "energy.method.gpu": "not-measured",
                "energy.method.ram": "constant-estimate",
            },
        ),
    )
    row = JobRow.from_run(run, note="")
    assert (row.name, row.state, row.j_per_image, row.f1, row.duration_s) == (
        "resnet18-cpu-s0", "FINISHED", 16.75, 0.66, 38.3,
    )  # fmt: skip
    assert row.estimated and row.energy == "estimated (cpu: tdp-load-estimate, ram: constant-estimate)"
    run.data.tags = {"energy_estimated": "false", "energy.method.cpu": "rapl", "energy.method.ram": "rapl"}
    run.data.metrics = {"f1": float("nan")}
    row = JobRow.from_run(run, state="SKIPPED")
    assert row.state == "SKIPPED" and row.energy == "measured (cpu: rapl, ram: rapl)"
    assert row.f1 is None and row.j_per_image is None  # NaN is not shown as a number
