"""`python -m repro.estimate [-m] <repro.train overrides> [estimate.KEY=VALUE ...]` and `... validate`.

    python -m repro.estimate -m model=resnet50,vgg16 gpu=t4,a100 training=paper
    python -m repro.estimate experiment=paper gpu=rtx3090 estimate.csv=estimate.csv
    python -m repro.estimate -m model=resnet50,vgg16 gpu=auto estimate.probe=true estimate.probe_seconds=10
    python -m repro.estimate validate [estimate.tracking_uri=sqlite:///mlflow.db estimate.experiment=repro]
    python -m repro.estimate probe-table [estimate.probe_seconds=10] [<the full runs' overrides>]

Keys of the estimate itself (everything else goes to the jobs, as for `repro.train`):
`estimate.csv=PATH`, `estimate.sources=[published,mlflow]`, `estimate.tracking_uri`,
`estimate.experiment` (the MLflow runs added to the fit, and read by validate's STEP table),
`estimate.out_dir` (validate's tables; default paper/estimation), `estimate.selection=random|configuration`
(how the kernel is chosen, see `repro.estimate.model`), `estimate.probe=true` (measure each job that runs on
this machine for `estimate.probe_seconds`, default 10, per phase: `repro.estimate.probe`). `probe-table`
probes each architecture of the full runs in `estimate.tracking_uri`/`estimate.experiment` (default: the
25 CPU runs of paper/replication/cpu, at experiment=replication_cpu) and writes f_probe to `estimate.out_dir`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from repro.errors import UserError, exit_on_user_error
from repro.paths import repo_root

_KEYS = ("csv", "sources", "selection", "tracking_uri", "experiment", "out_dir", "probe", "probe_seconds")
_SOURCES = ("published", "mlflow")
_REPO_ROOT = repo_root()


def _split_args(argv: list[str]) -> tuple[str, bool, dict[str, str], list[str]]:
    """(command: estimate, validate or probe-table; multirun?; estimate.* keys; the jobs' overrides)."""
    command = argv[0] if argv and argv[0] in ("validate", "probe-table") else "estimate"
    args = argv[1:] if command != "estimate" else argv
    multirun = False
    keys: dict[str, str] = {}
    overrides: list[str] = []
    for arg in args:
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg.startswith("estimate."):
            key, sep, value = arg.removeprefix("estimate.").partition("=")
            if not sep or key not in _KEYS:
                raise UserError(
                    f"{arg} is not an estimate setting; known: {', '.join('estimate.' + k for k in _KEYS)}"
                )
            keys[key] = value
        elif arg.startswith("-"):
            raise UserError(f"{arg} is not an option of repro.estimate; use -m for a sweep")
        else:
            overrides.append(arg)
    if command == "validate" and (overrides or multirun):
        raise UserError("validate takes only estimate.* settings (tracking_uri, experiment, out_dir)")
    if command == "probe-table" and multirun:
        raise UserError("probe-table probes one job per architecture of the full runs; drop -m")
    return command, multirun, keys, overrides


def _sources(keys: dict[str, str]) -> list[str]:
    sources = [s.strip() for s in keys.get("sources", "published").strip("[]").split(",") if s.strip()]
    unknown = [s for s in sources if s not in _SOURCES]
    if unknown or not sources:
        raise UserError(f"estimate.sources={keys.get('sources')} must list {' and/or '.join(_SOURCES)}")
    if "mlflow" in sources and not keys.get("experiment"):
        raise UserError(
            "estimate.sources with mlflow needs estimate.experiment=NAME (and estimate.tracking_uri)"
        )
    return sources


def _check_probe(keys: dict[str, str]) -> None:
    """`estimate.probe` is true or false; `estimate.probe_seconds` above 0, even unused."""
    from repro.estimate.probe import parse_probe_seconds

    probe = keys.get("probe", "false").strip().lower()
    if probe not in ("true", "false"):
        raise UserError(f"estimate.probe={keys['probe']} must be true or false")
    keys["probe"] = probe
    if "probe_seconds" in keys:
        parse_probe_seconds(keys["probe_seconds"])


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line and exit code 2 on bad input, before anything is fitted."""
    with exit_on_user_error():
        command, multirun, keys, overrides = _split_args(sys.argv[1:] if argv is None else argv)
        _check_probe(keys)
        if command == "probe-table":
            _probe_table(keys, overrides)
            return
        if command == "validate":
            from repro.estimate.validate import write_validation

            out_dir = Path(keys.get("out_dir", "paper/estimation"))
            out_dir = out_dir if out_dir.is_absolute() else _REPO_ROOT / out_dir
            written = write_validation(
                out_dir,
                keys.get("tracking_uri", "sqlite:///mlflow.db")
                if "experiment" in keys
                else keys.get("tracking_uri"),
                keys.get("experiment"),
            )
            print(f"wrote {len(written)} files to {out_dir}")
            return
        from repro.estimate.report import estimate_jobs

        sources = _sources(keys)
        estimate_jobs(overrides, multirun, sources, keys)


def _probe_table(keys: dict[str, str], overrides: list[str]) -> None:
    from repro.estimate import probe_table
    from repro.estimate.probe import DEFAULT_PROBE_SECONDS

    out_dir = Path(keys.get("out_dir", "paper/estimation"))
    out_dir = out_dir if out_dir.is_absolute() else _REPO_ROOT / out_dir
    uri = keys.get("tracking_uri", probe_table.DEFAULT_RUNS_URI)
    if uri == probe_table.DEFAULT_RUNS_URI:
        uri = f"sqlite:///{_REPO_ROOT / uri.removeprefix('sqlite:///')}"
    written = probe_table.write_probe_table(
        out_dir, overrides or list(probe_table.DEFAULT_OVERRIDES), uri,
        keys.get("experiment", probe_table.DEFAULT_EXPERIMENT),
        float(keys.get("probe_seconds", DEFAULT_PROBE_SECONDS)),
    )  # fmt: skip
    print(f"wrote {len(written)} files to {out_dir}")


if __name__ == "__main__":
    main()
