"""The one error type a user can fix, and how any error reads in one line.

Every script runs through :func:`experiment.cli.run_main`, which prints a :class:`UserError` as ``error: ...`` and
exits with status 1; any other exception is a bug and keeps its traceback. Raise a subclass that names the area
(:class:`ConfigError`, ``tuning.TuningError``, the comparison's error) or :class:`UserError` itself.
"""


class UserError(ValueError):
    """A problem with the user's input (options, files, folders), told in one line that names the fix."""


class ConfigError(UserError):
    """A problem with the hyperparameters, the env or the command-line settings of a run."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message, or its type's name when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
