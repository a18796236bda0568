"""Atomic periodic checkpoints that resume training exactly where it stopped.

A checkpoint is the folder ``<run_dir>/checkpoints/step_<n>/``:

- ``model.zip``: ``model.save`` (policy, every optimizer's state, ``log_ent_coef``, counters, ``_last_obs``,
  the action space with its RNG used for warm-up sampling, the episode-info buffer);
- ``replay_buffer.pkl`` (optional), ``vecnormalize.pkl`` (when the env is wrapped in ``VecNormalize``);
- ``env_state.pkl``: the picklable state of every env layer (VecEnv wrappers, DummyVecEnv buffers and pending seeds,
  gymnasium wrappers such as Monitor and TimeLimit, the env itself with its ``np_random``);
- ``rng.pkl``: python, numpy (global; the replay buffer samples with it) and torch RNG states;
- ``meta.json``, written last: ``num_timesteps`` and every file's size and sha256.

The folder is written as ``.step_<n>.tmp``, fsynced, then renamed into place, so a kill at any moment leaves either
the complete new checkpoint or none of it; ``meta.json`` lets a reader check completeness and integrity.

Why checkpoints are taken at rollout boundaries: SB3 calls ``on_step`` after ``env.step`` but *before* the
transition is stored and before the gradient steps, so a snapshot there misses part of a step. ``on_rollout_start``
(and ``on_training_end``) see the state between two loop iterations, which is exactly the state a fresh
``learn(..., reset_num_timesteps=False)`` starts from.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from callbacks.state import restore_env, rng_states, set_rng_states, snapshot_env

__all__ = ["CheckpointCallback", "CheckpointError", "find_checkpoints", "load_checkpoint", "resume_latest"]
__all__ += ["save_checkpoint", "trim_monitor_csv"]

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
    """
    root = _checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    step = int(model.num_timesteps)
    final, tmp = root / f"step_{step}", root / f".step_{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save(tmp / "model.zip")
    if save_replay_buffer and isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        model.save_replay_buffer(tmp / "replay_buffer.pkl")
    venv = model.get_env()
    vec_normalize = unwrap_vec_normalize(venv) if venv is not None else None
    if vec_normalize is not None:
        vec_normalize.save(str(tmp / "vecnormalize.pkl"))
    env_state, env_reason = snapshot_env(venv) if venv is not None else (None, "the model has no env")
    if env_state is not None:
        (tmp / "env_state.pkl").write_bytes(pickle.dumps(env_state, protocol=pickle.HIGHEST_PROTOCOL))
    (tmp / "rng.pkl").write_bytes(pickle.dumps(rng_states(), protocol=pickle.HIGHEST_PROTOCOL))

    files = {}
    for path in sorted(tmp.iterdir()):
        _fsync(path)
        files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    meta = dict(num_timesteps=step, algo=type(model).__name__, files=files)
    meta.update(env_state=env_state is not None, env_state_missing_reason=env_reason)
    (tmp / _META).write_text(json.dumps(meta, indent=2))
    _fsync(tmp / _META)
    _fsync(tmp)
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


def _verify(path: Path) -> dict[str, Any]:
    """Check that a checkpoint is complete and intact; return its manifest."""
    meta_path = path / _META
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint folder {path} does not exist")
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
        step = int(meta["num_timesteps"])
    except FileNotFoundError:
        raise CheckpointError(f"Incomplete checkpoint: {meta_path} is missing") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"Corrupted checkpoint manifest {meta_path}: {e}") from None
    if "model.zip" not in files:
        raise CheckpointError(f"Corrupted checkpoint manifest {meta_path}: it lists no model.zip")
    for name, info in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"Incomplete checkpoint: {file} is missing")
        size = file.stat().st_size
        if size != info["size"]:
            raise CheckpointError(f"Truncated checkpoint file {file}: {size} bytes, expected {info['size']}")
        if _sha256(file) != info["sha256"]:
            raise CheckpointError(f"Corrupted checkpoint file {file}: sha256 does not match {meta_path}")
    meta["num_timesteps"] = step
    return meta


def _read_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:
        raise CheckpointError(f"Cannot read checkpoint file {path}: {type(e).__name__}: {e}") from e


def load_checkpoint(
    path: str | os.PathLike[str],
    algo_class: type[BaseAlgorithm],
    env: gym.Env | VecEnv,
    *,
    device: th.device | str = "auto",
    load_replay_buffer: bool = True,
    restore_rng: bool = True,
    **kwargs: Any,
) -> BaseAlgorithm:
    """
    Load a checkpoint folder written by :func:`save_checkpoint` so that training continues exactly.

    Restores the model (+ optimizers, entropy coefficient, counters), the replay buffer, VecNormalize statistics
    (into ``env``'s VecNormalize, or by wrapping ``env`` in one), the env state when it was saved (otherwise the
    next ``learn`` starts fresh episodes and a warning says so) and, last, the python/numpy/torch RNG states.

    To continue: ``model.learn(total - model.num_timesteps, reset_num_timesteps=False, callback=...)``.

    :param path: a ``step_<n>`` folder
    :param algo_class: the algorithm class that saved it (``SAC``, ``CustomSAC``, ...)
    :param env: a fresh env built exactly like the training env (same wrappers, same number of envs)
    :param device: torch device for the model
    :param load_replay_buffer: restore the replay buffer when the checkpoint has one
    :param restore_rng: restore the global RNG states (needed for an exact continuation)
    :param kwargs: passed to ``algo_class.load``
    :return: the loaded model; ``model.get_env()`` is the env to train on
    :raises CheckpointError: the checkpoint is incomplete, truncated, corrupted or unreadable (message names the file)
    """
    path = Path(path)
    meta = _verify(path)
    files = meta["files"]
    # Read everything before touching the env, so a failure leaves the caller's env unchanged for a fallback.
    env_state = _read_pickle(path / "env_state.pkl") if "env_state.pkl" in files else None
    rng_state = _read_pickle(path / "rng.pkl") if "rng.pkl" in files else None
    vec_norm_saved = _read_pickle(path / "vecnormalize.pkl") if "vecnormalize.pkl" in files else None

    if vec_norm_saved is not None:
        if not isinstance(env, VecEnv):
            env = algo_class._wrap_env(env, verbose=0)
        existing = unwrap_vec_normalize(env)
        if existing is None:
            env = VecNormalize.load(str(path / "vecnormalize.pkl"), env)
        else:
            keep = {"venv", "class_attributes", "num_envs"}
            vars(existing).update({k: v for k, v in vars(vec_norm_saved).items() if k not in keep})

    zip_path = path / "model.zip"
    try:
        model = algo_class.load(zip_path, env=env, device=device, force_reset=env_state is None, **kwargs)
    except Exception as e:
        raise CheckpointError(f"Cannot load checkpoint file {zip_path}: {type(e).__name__}: {e}") from e
    if int(model.num_timesteps) != meta["num_timesteps"]:
        raise CheckpointError(f"{zip_path} holds step {model.num_timesteps}, its manifest says {meta['num_timesteps']}")

    buffer_path = path / "replay_buffer.pkl"
    if load_replay_buffer and "replay_buffer.pkl" in files and isinstance(model, OffPolicyAlgorithm):
        try:
            model.load_replay_buffer(buffer_path)
        except Exception as e:
            raise CheckpointError(f"Cannot load checkpoint file {buffer_path}: {type(e).__name__}: {e}") from e

    if env_state is not None:
        try:
            restore_env(model.get_env(), env_state)
        except ValueError as e:
            env_state = None
            model._last_obs = None  # type: ignore[assignment]  # forces a reset at the next learn()
            msg = f"Env state in {path / 'env_state.pkl'} not restored ({e}); resume starts fresh episodes"
            warnings.warn(msg, stacklevel=2)
    else:
        reason = meta.get("env_state_missing_reason", "")
        warnings.warn(f"Checkpoint {path} has no env state ({reason}); resume starts fresh episodes", stacklevel=2)

    if restore_rng and rng_state is not None:
        set_rng_states(rng_state)
    return model


def resume_latest(
    run_dir: str | os.PathLike[str], algo_class: type[BaseAlgorithm], env: gym.Env | VecEnv, **kwargs: Any
) -> tuple[BaseAlgorithm, Path]:
    """
    Load the newest complete checkpoint of a run, falling back to older ones (one warning per bad checkpoint).

    :param run_dir: the run folder (or its ``checkpoints`` folder)
    :param algo_class: the algorithm class
    :param env: a fresh env built like the training env
    :param kwargs: passed to :func:`load_checkpoint`
    :return: (model, checkpoint folder)
    :raises CheckpointError: when no checkpoint can be loaded
    """
    candidates = find_checkpoints(run_dir)
    if not candidates:
        raise CheckpointError(f"No checkpoint in {_checkpoint_root(run_dir)}")
    for path in candidates:
        try:
            return load_checkpoint(path, algo_class, env, **kwargs), path
        except CheckpointError as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
    raise CheckpointError(f"None of the {len(candidates)} checkpoints in {_checkpoint_root(run_dir)} can be loaded")


def trim_monitor_csv(csv_path: str | os.PathLike[str], env_steps: int) -> int:
    """
    Drop the Monitor CSV rows of episodes that ended after ``env_steps`` steps of this env.

    A resumed run replays the steps between its checkpoint and the kill; without trimming, the episodes that ended
    in that span would appear twice in the appended CSV. The file is truncated in place (one ``truncate`` call, so
    it is atomic and keeps the inode): a Monitor that already opened it in append mode keeps writing at the new end.

    :param csv_path: a ``*.monitor.csv`` file written by SB3's ``Monitor``
    :param env_steps: steps of *this* env at the checkpoint (``num_timesteps // n_envs``)
    :return: the number of rows removed
    """
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as f:  # exact bytes: the truncation offset must match the file
        lines = f.read().splitlines(keepends=True)
    if len(lines) < 2 or not lines[0].startswith("#"):
        raise ValueError(f"{csv_path} is not a Monitor CSV (expected a '#' JSON header line, then a column header)")
    rows = list(csv.DictReader(lines[1:]))
    kept, total = 0, 0
    for row in rows:
        total += int(row["l"])
        if total > env_steps:
            break
        kept += 1
    os.truncate(csv_path, len("".join(lines[: 2 + kept]).encode()))
    return len(rows) - kept


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

    def save(self) -> Path:
        """
        Write a checkpoint now and prune old ones.

        :return: the checkpoint folder
        """
        self.last_path = save_checkpoint(self.model, self.root, save_replay_buffer=self.save_replay_buffer)
        self._last_saved = self.model.num_timesteps
        if self.keep_last is not None:
            for old in find_checkpoints(self.root)[self.keep_last :]:
                # Rename first so a kill mid-removal never leaves a half-deleted folder under a checkpoint name.
                trash = old.with_name(f".{old.name}.del")
                os.replace(old, trash)
                shutil.rmtree(trash, ignore_errors=True)
        if self.verbose >= 1:
            print(f"Saved checkpoint {self.last_path}")
        return self.last_path
