"""Atomic periodic checkpoints that resume training exactly where it stopped, and that unpickle nothing on load.

A checkpoint is the folder ``<run_dir>/checkpoints/step_<n>/``:

- ``model.zip``: ``model.save`` (policy, every optimizer's state, ``log_ent_coef``, counters), opened on load by
  :func:`callbacks.safe_zip.load_model`, which rebuilds what SB3 pickles instead of unpickling it;
- ``runtime.npz``: python, numpy (global; the replay buffer samples with it) and torch RNG states, and what the zip
  would only hold as pickles: ``_last_obs``, the episode-info deques, the action space's RNG (warm-up sampling),
  ``train_freq``;
- ``replay_buffer.npz`` (optional): the buffer's rows written so far and its position;
- ``vecnormalize.npz`` (when the env is wrapped in ``VecNormalize``): its statistics and settings;
- ``env_state.npz``: the state of every env layer (VecEnv wrappers, DummyVecEnv buffers and pending seeds,
  gymnasium wrappers such as Monitor and TimeLimit, the env itself with its ``np_random``);
- ``meta.json``, written last: ``num_timesteps`` and every file's size and sha256.

The ``.npz`` files are written by :mod:`callbacks.statefile` and read with ``allow_pickle=False``. Checkpoints of
earlier versions (``*.pkl`` files) open only with ``trust_pickle=True``.

The folder is written as ``.step_<n>.tmp``, fsynced, then renamed into place, so a kill at any moment leaves either
the complete new checkpoint or none of it; ``meta.json`` lets a reader check completeness and integrity. A write
that fails (disk full, file size limit) removes its temporary folder: the newest complete checkpoint stays newest.

Why checkpoints are taken at rollout boundaries: SB3 calls ``on_step`` after ``env.step`` but *before* the
transition is stored and before the gradient steps, so a snapshot there misses part of a step. ``on_rollout_start``
(and ``on_training_end``) see the state between two loop iterations, which is exactly the state a fresh
``learn(..., reset_num_timesteps=False)`` starts from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecNormalize, unwrap_vec_normalize

from callbacks.state import buffer_state, model_runtime, rng_states, snapshot_env
from callbacks.statefile import save_tree

__all__ = ["CheckpointCallback", "CheckpointError", "find_checkpoints", "save_checkpoint"]

_STEP_DIR = re.compile(r"^step_(\d+)$")
_META = "meta.json"


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete, truncated, corrupted or cannot be loaded; the message names the file."""


def _checkpoint_root(run_dir: str | os.PathLike[str]) -> Path:
    """Accept a run folder (``<run>/checkpoints`` is used) or the checkpoints folder itself."""
    run_dir = Path(run_dir)
    return run_dir / "checkpoints" if run_dir.name != "checkpoints" else run_dir


def find_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """
    List the checkpoint folders of a run, newest first. Temporary (half-written) folders are never listed.

    :param run_dir: the run folder (or its ``checkpoints`` folder)
    :return: ``step_<n>`` folders sorted by decreasing n (possibly empty)
    """
    root = _checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # works for folders too: their entries must reach the disk before the rename
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(model: BaseAlgorithm, run_dir: str | os.PathLike[str], *, save_replay_buffer: bool = True) -> Path:
    """
    Write ``<run_dir>/checkpoints/step_<num_timesteps>/`` atomically (temporary folder, fsync, rename).

    Call it between two ``learn`` iterations (``CheckpointCallback`` does) for a checkpoint that resumes exactly.

    :param model: the SB3 model (any algorithm; the replay buffer is saved for off-policy ones)
    :param run_dir: the run folder (or its ``checkpoints`` folder)
    :param save_replay_buffer: also save the replay buffer (needed for an exact resume)
    :return: the final checkpoint folder
    :raises OSError: the checkpoint could not be written (nothing is left of it; older checkpoints are untouched)
    """
    root = _checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    step = int(model.num_timesteps)
    final, tmp = root / f"step_{step}", root / f".step_{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_files(model, tmp, save_replay_buffer)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written folder is never renamed, so never listed
        raise
    if final.exists():  # same step saved twice (e.g. end of training right after a periodic save)
        old = root / f".step_{step}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync(root)
    return final


def _write_files(model: BaseAlgorithm, folder: Path, save_replay_buffer: bool) -> None:
    """Every file of a checkpoint, then ``meta.json`` (sizes and checksums) last, all fsynced."""
    model.save(folder / "model.zip")
    if save_replay_buffer and isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        save_tree(folder / "replay_buffer.npz", buffer_state(model.replay_buffer))
    venv = model.get_env()
    vec_normalize = unwrap_vec_normalize(venv) if venv is not None else None
    if vec_normalize is not None:
        save_tree(folder / "vecnormalize.npz", vec_normalize_state(vec_normalize))
    env_state, env_reason = snapshot_env(venv) if venv is not None else (None, "the model has no env")
    if env_state is not None:
        save_tree(folder / "env_state.npz", env_state)
    save_tree(folder / "runtime.npz", {"rng": rng_states(), "model": model_runtime(model)})

    files = {}
    for path in sorted(folder.iterdir()):
        _fsync(path)
        files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    meta = dict(num_timesteps=int(model.num_timesteps), algo=type(model).__name__, files=files)
    meta.update(env_state=env_state is not None, env_state_missing_reason=env_reason)
    (folder / _META).write_text(json.dumps(meta, indent=2))
    _fsync(folder / _META)
    _fsync(folder)


# VecNormalize attributes that are its statistics and settings (the wrapped env and spaces come from the new env).
_VEC_NORMALIZE_KEYS = (
    "obs_rms ret_rms clip_obs clip_reward returns gamma epsilon training norm_obs norm_reward norm_obs_keys".split()
)


def vec_normalize_state(vec_normalize: VecNormalize) -> dict[str, Any]:
    """A VecNormalize's statistics and settings, as :func:`callbacks.statefile.save_tree` writes them (the run
    folder's normalisation files use it too)."""
    return {k: v for k, v in vars(vec_normalize).items() if k in _VEC_NORMALIZE_KEYS}


class CheckpointCallback(BaseCallback):
    """
    Save an exactly resumable checkpoint every ``save_freq`` environment steps (and at the end of training).

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
            raise ValueError(f"save_freq must be a positive number of steps, got {save_freq}")
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be at least 1 (or None to keep all), got {keep_last}")
        self.save_freq = save_freq
        self.root = _checkpoint_root(run_dir)
        self.keep_last = keep_last
        self.save_replay_buffer = save_replay_buffer
        self.save_on_training_end = save_on_training_end
        self.last_path: Path | None = None
        self._next_save = save_freq
        self._last_saved = -1

    def _init_callback(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Leftovers of a killed writer: never complete, never listed, safe to remove.
        for stale in self.root.glob(".step_*"):
            shutil.rmtree(stale, ignore_errors=True)

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
            for old in find_checkpoints(self.root)[self.keep_last :]:
                # Rename first so a kill mid-removal never leaves a half-deleted folder under a checkpoint name.
                trash = old.with_name(f".{old.name}.del")
                os.replace(old, trash)
                shutil.rmtree(trash, ignore_errors=True)
        if self.verbose >= 1:
            print(f"Saved checkpoint {path}")
        return path
