"""Print the URL of an experiment's runs page in the MLflow UI (`make ui` shows it before starting the UI).

Reads the SQLite store directly and read-only, so a missing store is neither created nor migrated.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

#: MLflow 3.17's UI takes its view (GenAI or model training) from this URL parameter, remembered in the
#: browser; without it a first visit opens the GenAI view.
WORKFLOW_PARAMETER = "workflowType=machine_learning"


def runs_page_url(host: str, port: int, experiment_id: str) -> str:
    """The runs page of one experiment, in the UI's model-training view."""
    return f"http://{host}:{port}/#/experiments/{experiment_id}/runs?{WORKFLOW_PARAMETER}"


def experiment_id(db_path: Path, name: str) -> str | None:
    """The id of the active experiment `name` in a SQLite store, or None when there is none."""
    if not db_path.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as connection:
            row = connection.execute(
                "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'", (name,)
            ).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="repro")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    found = (
        experiment_id(Path(args.uri.removeprefix("sqlite:///")), args.experiment)
        if args.uri.startswith("sqlite:///")
        else None
    )
    if found is None:
        print(
            f"No experiment {args.experiment!r} in {args.uri} yet (run `make run` first); "
            f"the UI is at http://{args.host}:{args.port}/#/experiments?{WORKFLOW_PARAMETER}"
        )
    else:
        print(f"Runs of experiment {args.experiment!r}: {runs_page_url(args.host, args.port, found)}")


if __name__ == "__main__":
    main()
