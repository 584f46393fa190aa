"""Errors the user caused, and how entry points report them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Exit code for bad input, so scripts can tell "you asked for something wrong" from a crash.
USAGE_EXIT_CODE = 2


class UserError(Exception):
    """A problem with what the user asked for: bad config, missing data, unreachable server.

    The message must be one line that names the bad value and says what to do.
    """


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a `UserError` into one line on stderr and exit code 2, without a traceback."""
    try:
        yield
    except UserError as error:
        message = " ".join(str(error).split())  # always one line
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None
