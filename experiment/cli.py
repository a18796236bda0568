"""What every script shares: one-line errors, argument types."""

import argparse
import math
import sys
from collections.abc import Callable

from callbacks import CheckpointError
from callbacks.safe_zip import UntrustedPickleError
from experiment.config import ConfigError

# Errors a user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, CheckpointError, UntrustedPickleError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump) and exits with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def positive_int(text: str) -> int:
    """A finite integer >= 1; ``1e4`` is accepted, ``inf``, ``nan`` and ``2.5`` are not."""
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 1 or number != int(number):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(number)


def run_main(main: Callable[[], object], errors: tuple[type[Exception], ...] = USER_ERRORS) -> None:
    """Run a script's ``main``: user errors become ``error: ...`` on stderr and exit status 1."""
    try:
        main()
    except errors as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)
