"""Saving and loading without pickle: model zips, checkpoint folders, resuming, normalisation statistics.

- :mod:`saving.errors`: the project's user-error type (:class:`UserError`) and this room's kinds of it;
- :mod:`saving.npz_tree`: trees of plain values and arrays in one ``.npz``, read back with ``allow_pickle=False``;
- :mod:`saving.safe_zip`: an SB3 model zip opened without unpickling anything;
- :mod:`saving.training_state`: what a checkpoint holds besides the model (env layers, RNGs, replay buffer);
- :mod:`saving.checkpoint`: checkpoint folders written atomically, found, verified, pruned;
- :mod:`saving.resume`: a checkpoint read back so that training continues exactly;
- :mod:`saving.normalize`: a run's ``VecNormalize`` statistics.

It works with any SB3 algorithm and imports nothing else of this project.
"""

from saving.checkpoint import find_checkpoints, save_checkpoint
from saving.errors import CheckpointError, UntrustedPickleError, UserError
from saving.normalize import load_normalize_stats, normalize_stats_path, save_normalize_stats
from saving.resume import load_checkpoint, resume_latest, trim_monitor_csv
from saving.safe_zip import load_model

__all__ = [
    "CheckpointError",
    "UntrustedPickleError",
    "UserError",
    "find_checkpoints",
    "load_checkpoint",
    "load_model",
    "load_normalize_stats",
    "normalize_stats_path",
    "resume_latest",
    "save_checkpoint",
    "save_normalize_stats",
    "trim_monitor_csv",
]
