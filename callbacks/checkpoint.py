"""A callback that takes exactly resumable checkpoints during training, with any SB3 algorithm.

Why checkpoints are taken at rollout boundaries: SB3 calls ``on_step`` after ``env.step`` but *before* the
transition is stored and before the gradient steps, so a snapshot there misses part of a step. ``on_rollout_start``
(and ``on_training_end``) see the state between two loop iterations, which is exactly the state a fresh
``learn(..., reset_num_timesteps=False)`` starts from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback

from saving.checkpoint import checkpoint_root, find_checkpoints, prune_checkpoints, remove_unfinished, save_checkpoint
from saving.errors import UserError

__all__ = ["ResumableCheckpointCallback"]


class ResumableCheckpointCallback(BaseCallback):
    """
    Save an exactly resumable checkpoint every ``save_freq`` environment steps (and at the end of training).

    Unlike SB3's ``CheckpointCallback`` (a model zip every ``save_freq`` calls), each checkpoint is a folder with
    everything needed to continue as if training had never stopped (see :mod:`saving.checkpoint`), read back by
    :func:`saving.resume_latest`.

    Checkpoints are taken at the first rollout boundary at or after each multiple of ``save_freq`` (with
    ``train_freq=1`` that is the multiple itself), see the module docstring for why.

    :param save_freq: environment steps (``num_timesteps``) between two checkpoints
    :param run_dir: the run folder; checkpoints go to ``<run_dir>/checkpoints/step_<n>/``
    :param keep_last: how many complete checkpoints to keep (None keeps all); the newest is never removed
    :param save_replay_buffer: also save the replay buffer (needed for an exact resume)
    :param save_on_training_end: also save when ``learn`` returns
    :param verbose: 1 prints each checkpoint path
    """

    def __init__(
        self,
        save_freq: int,
        run_dir: str | os.PathLike[str],
        keep_last: int | None = 3,
        save_replay_buffer: bool = True,
        save_on_training_end: bool = True,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if save_freq <= 0:
            raise UserError(f"save_freq must be a positive number of steps, got {save_freq}")
        if keep_last is not None and keep_last < 1:
            raise UserError(f"keep_last must be at least 1 (or None to keep all), got {keep_last}")
        self.save_freq = save_freq
        self.root = checkpoint_root(run_dir)
        self.keep_last = keep_last
        self.save_replay_buffer = save_replay_buffer
        self.save_on_training_end = save_on_training_end
        self.last_path: Path | None = None
        self._next_save = save_freq
        self._last_saved = -1

    def _init_callback(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        remove_unfinished(self.root)

    def _on_training_start(self) -> None:
        self._last_saved = self.model.num_timesteps
        self._next_save = (self.model.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps >= self._next_save:
            self._next_save = (self.model.num_timesteps // self.save_freq + 1) * self.save_freq
            self.save()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.save_on_training_end and self.model.num_timesteps != self._last_saved:
            self.save()

    def save(self) -> Path | None:
        """
        Write a checkpoint now and prune old ones. A write that fails for lack of space (``OSError``: disk full,
        file size limit, quota) is reported in one line and training goes on: the newest complete checkpoint,
        which the failed write never touched, stays the one a resume uses.

        :return: the checkpoint folder, or None when it could not be written
        """
        try:
            path = save_checkpoint(self.model, self.root, save_replay_buffer=self.save_replay_buffer)
        except OSError as e:
            newest = find_checkpoints(self.root)
            kept = f"a resume uses {newest[0]}" if newest else "there is no complete checkpoint yet"
            sys.stderr.write(f"checkpoint at step {self.model.num_timesteps} not written ({e}); {kept}\n")
            return None
        self.last_path = path
        self._last_saved = self.model.num_timesteps
        if self.keep_last is not None:
            prune_checkpoints(self.root, self.keep_last)
        if self.verbose >= 1:
            print(f"Saved checkpoint {path}")
        return path
