"""The project's one error type for what a user can fix, and the saving room's own kinds of it.

:class:`UserError` is defined here, in the lowest room of the project, so that every room above can derive from it:
the callbacks (which write checkpoints through this room), the runner (``experiment.errors.ConfigError``), tuning and
comparison. A script's wrapper (:func:`experiment.cli.run_main`) then reports any of them in one line by catching
this one type.
"""


class UserError(ValueError):
    """A problem with the user's input (options, files, folders), told in one line that names the fix."""


class CheckpointError(UserError):
    """A checkpoint is incomplete, truncated, corrupted or cannot be loaded; the message names the file."""


class UntrustedPickleError(UserError):
    """A file would need unpickling (which can run code) to be opened, and the caller did not say it trusts it."""
