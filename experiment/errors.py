"""The runner's kind of user error, and how any error reads in one line.

Every command runs through :func:`experiment.cli.run_main`, which prints a :class:`UserError` (defined in
:mod:`saving.errors`, the lowest room, so that every room can derive from it) as ``error: ...`` and exits with status
1; any other exception is a bug and keeps its traceback. Raise a subclass that names the area (:class:`ConfigError`,
``tuning.TuningError``, ``comparison.data.CompareError``, ``saving.errors.CheckpointError``) or :class:`UserError`.
"""

from saving.errors import UserError

__all__ = ["ConfigError", "UserError", "first_line"]


class ConfigError(UserError):
    """A problem with the hyperparameters, the env or the command-line settings of a run."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message, or its type's name when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
