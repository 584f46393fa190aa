"""Saved views of the MLflow UI that open an experiment on the energy of its runs.

MLflow 3.15+ keeps a saved view of the runs page as an experiment tag `mlflow.sharedViewState.<key>`
whose value is the JSON object `{"name", "createdAt", "updatedAt", "state"}`; `state` is itself a JSON
string with the page's sort (`orderByKey`, `orderByAsc`), its columns (`selectedColumns`) and its
grouping (`groupBy`). The link `#/experiments/<id>/runs?viewStateShareKey=<key>` opens one (found in
MLflow 3.17's UI bundle, which also caps the value at 20,000 characters, as the server does).

Every experiment that `repro` opens gets two views under fixed keys, so that a later run updates them
instead of adding copies:

- "Energy per image": every job its own row (the UI nests runs under their parent only when they are
  sorted by creation time), cheapest first, with the energy, F1, duration and provenance columns;
- "By sweep": the runs grouped by their sweep's tag, each group's metrics averaged (a sweep's parent
  run carries that tag but none of its jobs' metrics, so it does not weigh in the averages).

A view the user saved over in the UI (the UI rewrites the value without our `createdBy` field) is the
user's and is left alone. A view that cannot be written is one warning line: never a reason to stop a job.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from repro import names

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: The prefix of the experiment tags that hold the UI's saved views.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
#: The URL parameter that opens a saved view.
VIEW_URL_PARAMETER = "viewStateShareKey"
#: The longest tag value the MLflow server and UI accept for a saved view.
MAX_VIEW_CHARS = 20_000
#: The view that `make run`, `make ui` and the sweep summary link to.
ENERGY_VIEW_KEY = "repro-energy-per-image"
SWEEP_VIEW_KEY = "repro-by-sweep"
#: Marks a view as written by repro; the UI drops the field when a user saves the view themselves.
_WRITER_FIELD = "createdBy"
_WRITER = "repro"


@dataclass(frozen=True)
class SavedView:
    """One saved view of the runs page: its fixed key, the name the UI lists, and the page state."""

    key: str
    name: str
    state: Mapping[str, Any]

    @property
    def tag(self) -> str:
        return VIEW_TAG_PREFIX + self.key


def _metric(key: str) -> str:
    return f"metrics.`{key}`"


def _tag(key: str) -> str:
    return f"tags.`{key}`"


#: The columns of both views, in the order the runs table shows them.
COLUMNS: tuple[str, ...] = (
    _metric(names.ENERGY_J_PER_IMAGE),
    _metric(names.GPU_ENERGY_J_PER_IMAGE),
    _metric(names.F1),
    _metric(names.DURATION_S),
    _metric(names.TRAINED_EPOCHS),
    _tag(names.TAG_MODEL),
    _tag(names.TAG_GPU),
    _tag(names.TAG_ENERGY_ESTIMATED),
)


#: The columns the runs table always shows first (run name, creation time, duration), by their grid ids.
_LEADING_COLUMNS = ("attributes.`Run Name`", "runDateAndNestInfo", "duration")


def repro_views() -> tuple[SavedView, ...]:
    """The two views every experiment gets, the energy view first."""
    sorted_by_energy = {
        "orderByKey": _metric(names.ENERGY_J_PER_IMAGE),
        "orderByAsc": True,
        "selectedColumns": list(COLUMNS),
        "columnOrder": [*_LEADING_COLUMNS, *COLUMNS],  # without it the UI sorts metrics by name
        "columnWidths": dict.fromkeys(COLUMNS[:2], 200),  # wide enough for their whole headers
    }
    by_sweep = {
        "aggregateFunction": "average",
        "groupByKeys": [{"mode": "tag", "groupByData": names.TAG_SWEEP_DIR}],
    }
    return (
        SavedView(ENERGY_VIEW_KEY, "Energy per image", {**sorted_by_energy, "groupBy": None}),
        SavedView(SWEEP_VIEW_KEY, "By sweep", {**sorted_by_energy, "groupBy": by_sweep}),
    )


def _envelope(view: SavedView, created_at_ms: int, updated_at_ms: int) -> str:
    return json.dumps(
        {
            "name": view.name,
            "createdAt": created_at_ms,
            "updatedAt": updated_at_ms,
            "state": json.dumps(view.state),
            _WRITER_FIELD: _WRITER,
        }
    )


def _pending_value(view: SavedView, existing: str | None, now_ms: int) -> str | None:
    """The tag value to write for `view`, or None when the stored one is current or the user's own."""
    if existing is None:
        return _envelope(view, now_ms, now_ms)
    try:
        stored = json.loads(existing)
    except ValueError:
        return None  # not a view repro wrote
    if not isinstance(stored, dict) or stored.get(_WRITER_FIELD) != _WRITER:
        return None  # the user saved over it in the UI
    if stored.get("name") == view.name and stored.get("state") == json.dumps(view.state):
        return None
    created_at = stored.get("createdAt")
    return _envelope(view, created_at if isinstance(created_at, int) else now_ms, now_ms)


def write_views(
    client: MlflowClient,
    experiment_id: str,
    existing_tags: Mapping[str, str],
    views: Sequence[SavedView] | None = None,
) -> bool:
    """Add or update repro's saved views of one experiment; never raises for a view it cannot write.

    Args:
        client: a client of the experiment's store.
        experiment_id: the experiment.
        existing_tags: the experiment's tags as they are now, so that an unchanged view is not rewritten.
        views: the views to write; `repro_views()` unless a caller (a test) passes others.

    Returns:
        Whether every view is in place; if not, one warning line on stderr said why.
    """
    from mlflow.exceptions import MlflowException

    now_ms = int(time.time() * 1000)
    problems: list[str] = []
    for view in repro_views() if views is None else views:
        value = _pending_value(view, existing_tags.get(view.tag), now_ms)
        if value is None:
            continue
        if len(value) > MAX_VIEW_CHARS:
            problems.append(f"{view.name!r} is {len(value):,} characters, over MLflow's {MAX_VIEW_CHARS:,}")
            continue
        try:
            with _quiet_store_log():
                client.set_experiment_tag(experiment_id, view.tag, value)
        except (MlflowException, OSError) as error:
            first_line = (str(error).splitlines() or [type(error).__name__])[0][:200]
            problems.append(f"{view.name!r} could not be written ({first_line})")
            break  # the store refuses writes: the next view would only repeat why
    if problems:
        print(
            f"warning: MLflow UI saved view {'; '.join(problems)}; the runs are recorded as usual",
            file=sys.stderr,
        )
    return not problems


@contextmanager
def _quiet_store_log() -> Iterator[None]:
    """Keep MLflow's SQL store from logging a refused write with its traceback; the warning says it once."""
    store_log = logging.getLogger("mlflow.store.db.utils")
    level = store_log.level
    store_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        store_log.setLevel(level)


def has_view(experiment_tags: Mapping[str, str], key: str = ENERGY_VIEW_KEY) -> bool:
    """Whether an experiment's tags hold the saved view `key`."""
    return VIEW_TAG_PREFIX + key in experiment_tags
