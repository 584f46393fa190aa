"""The table a sweep prints at its end: one row per job, then the job with the lowest energy per image.

      job                  state     J/image      F1  duration  energy
      resnet18-cpu-s0      FINISHED   ~16.75  0.6600    38.3 s  estimated (cpu: tdp-load-estimate, ...)
      vgg16-cpu-s0         FAILED          -       -     3.5 s  -    TrainingDiverged: training diverged
      Lowest J/image: resnet18-cpu-s0 (~16.75 J/image), F1 0.6600, which is also the best F1.

An estimated energy carries a `~` and says "estimated" with its methods, so it never reads as a
measurement. A job that did not finish keeps its reason at the end of its row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from repro import names

#: Marks an estimated J/image; a line under the table says so whenever it appears.
ESTIMATE_MARK = "~"


@dataclass(frozen=True)
class JobRow:
    """One job of the sweep as its summary shows it.

    Attributes:
        name: The run's name, or `job N` for a job that failed before its run started.
        state: FINISHED, FAILED, KILLED, RUNNING, or SKIPPED (`resume=true` found it done).
        j_per_image: `energy_j_per_image`, if recorded.
        f1: The validation F1, if recorded.
        duration_s: The training's duration, if recorded.
        energy: How the energy was obtained, e.g. `measured (cpu: rapl, ram: rapl)`.
        estimated: Whether any part of the energy is an estimate.
        note: Why a job did not finish, or which earlier run stands for a skipped one.
    """

    name: str
    state: str
    j_per_image: float | None = None
    f1: float | None = None
    duration_s: float | None = None
    energy: str = "-"
    estimated: bool = False
    note: str = ""

    @classmethod
    def from_run(cls, run: Any, state: str | None = None, note: str = "") -> JobRow:
        """The row of an MLflow run (`mlflow.entities.Run`)."""
        metrics, tags = run.data.metrics, run.data.tags
        estimated = tags.get(names.TAG_ENERGY_ESTIMATED) == "true"
        methods = ", ".join(
            f"{component}: {tags[names.energy_method_tag(component)]}"
            for component in names.COMPONENTS
            if tags.get(names.energy_method_tag(component), "not-measured") != "not-measured"
        )
        energy = f"{'estimated' if estimated else 'measured'} ({methods})" if methods else "-"
        return cls(
            name=run.info.run_name,
            state=state or run.info.status,
            j_per_image=_finite(metrics.get(names.ENERGY_J_PER_IMAGE)),
            f1=_finite(metrics.get(names.F1)),
            duration_s=_finite(metrics.get(names.DURATION_S)),
            energy=energy,
            estimated=estimated,
            note=note,
        )


def _finite(value: float | None) -> float | None:
    return value if value is not None and value == value and abs(value) != float("inf") else None


def _j_per_image(row: JobRow) -> str:
    if row.j_per_image is None:
        return "-"
    return f"{ESTIMATE_MARK if row.estimated else ''}{row.j_per_image:.4g}"


def _f1(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table_lines(rows: Sequence[JobRow]) -> list[str]:
    """The aligned table: a header, then one line per job (numbers right-aligned)."""
    header = ("job", "state", "J/image", "F1", "duration", "energy")
    cells = [
        (
            row.name,
            row.state,
            _j_per_image(row),
            _f1(row.f1),
            "-" if row.duration_s is None else f"{row.duration_s:.1f} s",
            row.energy,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    right = (False, False, True, True, True, False)

    def line(values: Sequence[str], note: str = "") -> str:
        padded = [
            value.rjust(width) if align_right else value.ljust(width)
            for value, width, align_right in zip(values, widths, right, strict=True)
        ]
        return ("  " + "  ".join(padded) + (f"  {note}" if note else "")).rstrip()

    return [line(header), *(line(values, row.note) for values, row in zip(cells, rows, strict=True))]


def lowest_energy_line(rows: Sequence[JobRow]) -> str:
    """One line: the job with the lowest J/image, and the F1 it gives up against the best F1."""
    priced = [row for row in rows if row.j_per_image is not None and row.state in ("FINISHED", "SKIPPED")]
    if not priced:
        return "Lowest J/image: no finished job recorded its energy per image."
    cheapest = min(priced, key=lambda row: row.j_per_image)
    text = f"Lowest J/image: {cheapest.name} ({_j_per_image(cheapest)} J/image)"
    scored = [row for row in priced if row.f1 is not None]
    if cheapest.f1 is None:
        text += ", with no F1 recorded"
    elif len(priced) == 1:
        text += f", F1 {_f1(cheapest.f1)}; the only finished job"
    else:
        best = max(scored, key=lambda row: row.f1)
        if best.f1 <= cheapest.f1:
            text += f", F1 {_f1(cheapest.f1)}, which is also the best F1"
        else:
            text += (
                f", F1 {_f1(cheapest.f1)}: {best.f1 - cheapest.f1:.4f} below the best, "
                f"{best.name} (F1 {_f1(best.f1)}, {_j_per_image(best)} J/image)"
            )
    if len({row.estimated for row in priced}) > 1:
        text += "; beware: this compares measured with estimated energy"
    return text + "."


def summary_lines(rows: Sequence[JobRow]) -> list[str]:
    """The table, a note on `~` when a row has an estimate, and the lowest-energy line."""
    lines = table_lines(rows)
    if any(row.estimated and row.j_per_image is not None for row in rows):
        lines.append(f"  ({ESTIMATE_MARK} an estimate, not a measurement: see the energy column)")
    return [*lines, lowest_energy_line(rows)]
