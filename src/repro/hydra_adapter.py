"""The two private Hydra members repro needs, in one place (hence `hydra-core<1.4` in pyproject.toml).

- Hydra has no public parser for its own command line (`-m`, `--cfg`, ...); preflight must read it
  the way Hydra will.
- A failed job's exception is public only through `JobReturn.return_value`, which raises it and first
  prints "Error executing job with overrides" to stderr; the sweep summary wants the exception
  without that line.

`tests/test_hydra_adapter.py` fails on a Hydra release that changes either.
"""

from __future__ import annotations

import argparse

from hydra.core.utils import JobReturn, JobStatus


def command_line(argv: list[str]) -> argparse.Namespace:
    """Hydra's reading of a command line: its flags and, in `.overrides`, the overrides."""
    from hydra._internal.utils import get_args_parser

    args, _unknown = get_args_parser().parse_known_args(argv)
    return args


def job_exception(job_return: JobReturn) -> BaseException | None:
    """The exception a failed job raised, or None for a job that did not fail; prints nothing."""
    if job_return.status != JobStatus.FAILED:
        return None
    return job_return._return_value
