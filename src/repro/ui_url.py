"""Print the URL of an experiment's runs page in the MLflow UI (`make ui` shows it before starting the UI).

The URL opens the experiment's "Energy per image" saved view (`repro.ui_views`) when the store has it.
Reads the SQLite store directly and read-only, so a missing store is neither created nor migrated.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from repro.ui_views import ENERGY_VIEW_KEY, VIEW_TAG_PREFIX, VIEW_URL_PARAMETER, has_view

#: MLflow 3.17's UI takes its view (GenAI or model training) from this URL parameter, remembered in the
#: browser; without it a first visit opens the GenAI view.
WORKFLOW_PARAMETER = "workflowType=machine_learning"
#: Where `make ui` serves the UI unless MLFLOW_HOST and MLFLOW_PORT say otherwise.
_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_PORT = 5000
_MAKE_UI_STORE = "sqlite:///mlflow.db"


def runs_page_url(host: str, port: int, experiment_id: str, view_key: str | None = None) -> str:
    """The runs page of one experiment, in the UI's model-training view, opened on a saved view if given."""
    return runs_url(f"http://{host}:{port}", experiment_id, view_key)


def runs_url(base_url: str, experiment_id: str, view_key: str | None = None) -> str:
    """The same, on the MLflow UI at `base_url` (e.g. a tracking server's http://HOST:PORT)."""
    view = f"{VIEW_URL_PARAMETER}={view_key}&" if view_key else ""  # sort or filter parameters would skip it
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{view}{WORKFLOW_PARAMETER}"


def ui_link(tracking_uri: str, experiment_id: str, experiment_tags: Mapping[str, str]) -> str:
    """One line that says where the UI shows an experiment: its energy view if it has one, else its runs.

    A tracking server serves its own UI; an SQLite store is served by `make ui`, by default on loopback.
    """
    view = ENERGY_VIEW_KEY if has_view(experiment_tags) else None
    if tracking_uri.startswith(("http://", "https://")):
        return f"Open the runs in the MLflow UI: {runs_url(tracking_uri, experiment_id, view)}"
    if tracking_uri.startswith("sqlite:///"):
        url = runs_page_url(_DEFAULT_HOST, _DEFAULT_PORT, experiment_id, view)
        command = f"mlflow ui --backend-store-uri {tracking_uri}"
        command = "make ui" if tracking_uri == _MAKE_UI_STORE else command
        return f"Open the runs in the MLflow UI with `{command}`: {url}"
    return "Open the runs in the MLflow UI of this tracking store."


def find_experiment(db_path: Path, name: str) -> tuple[str, bool] | None:
    """The id of the active experiment `name` in a SQLite store and whether it has the energy view, or None
    when there is no such experiment."""
    if not db_path.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as connection:
            row = connection.execute(
                "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'", (name,)
            ).fetchone()
            if row is None:
                return None
            view = connection.execute(
                "SELECT 1 FROM experiment_tags WHERE experiment_id = ? AND key = ?",
                (row[0], VIEW_TAG_PREFIX + ENERGY_VIEW_KEY),
            ).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]), view is not None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uri", default=_MAKE_UI_STORE)
    parser.add_argument("--experiment", default="repro")
    parser.add_argument("--host", default=_DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=_DEFAULT_PORT)
    args = parser.parse_args(argv)
    found = (
        find_experiment(Path(args.uri.removeprefix("sqlite:///")), args.experiment)
        if args.uri.startswith("sqlite:///")
        else None
    )
    if found is None:
        print(
            f"No experiment {args.experiment!r} in {args.uri} yet (run `make run` first); "
            f"the UI is at http://{args.host}:{args.port}/#/experiments?{WORKFLOW_PARAMETER}"
        )
    elif found[1]:
        url = runs_page_url(args.host, args.port, found[0], ENERGY_VIEW_KEY)
        print(f"Energy per image of experiment {args.experiment!r}: {url}")
    else:  # a store that no run of this version wrote to yet
        print(f"Runs of experiment {args.experiment!r}: {runs_page_url(args.host, args.port, found[0])}")


if __name__ == "__main__":
    main()
