"""Reading checkpoints back: verify, then restore the model, buffer, normalisation, env and RNG states, in phases.

See :mod:`saving.checkpoint` for what a checkpoint holds and how it is written. Nothing here unpickles: the state
files are read with ``allow_pickle=False``, and the model zip by :func:`saving.safe_zip.load_model`, which unpickles
only with ``trust_pickle=True``.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from saving.checkpoint import checkpoint_root, find_checkpoints, verify_checkpoint
from saving.errors import CheckpointError, UntrustedPickleError
from saving.npz_tree import load_tree
from saving.safe_zip import load_model
from saving.training_state import restore_buffer, restore_env, restore_model_runtime, set_rng_states

__all__ = ["load_checkpoint", "resume_latest", "trim_monitor_csv"]


def _read_tree(path: Path) -> Any:
    try:
        return load_tree(path)
    except Exception as e:
        raise CheckpointError(f"Cannot read checkpoint file {path}: {type(e).__name__}: {e}") from e


def _read_states(path: Path, files: dict[str, Any]) -> dict[str, Any]:
    """Phase 1: every state file except the model and the buffer, read before anything is changed."""
    states: dict[str, Any] = {"env_state": None, "rng": None, "vecnormalize": None, "model": None}
    for name in ("env_state", "vecnormalize"):
        if f"{name}.npz" in files:
            states[name] = _read_tree(path / f"{name}.npz")
    if "runtime.npz" in files:
        runtime = _read_tree(path / "runtime.npz")
        states["rng"], states["model"] = runtime["rng"], runtime["model"]
    return states


def _attach_vec_normalize(env: gym.Env | VecEnv, saved: dict[str, Any], algo_class: type[BaseAlgorithm]) -> VecEnv:
    """Phase 2: the saved statistics into ``env``'s VecNormalize, or into a new one wrapped around ``env``."""
    if not isinstance(env, VecEnv):
        env = algo_class._wrap_env(env, verbose=0)
    existing = unwrap_vec_normalize(env)
    if existing is None:
        existing = env = VecNormalize(env, norm_obs_keys=saved.get("norm_obs_keys"))
    vars(existing).update(saved)
    return env


def _load_model(
    path: Path, algo_class: type[BaseAlgorithm], env: Any, states: dict[str, Any], trust_pickle: bool, **kwargs: Any
) -> BaseAlgorithm:
    """Phase 3: the model from ``model.zip``, nothing unpickled; its runtime state from ``runtime.npz``."""
    zip_path = path / "model.zip"
    runtime = states["model"]
    if runtime is not None and "train_freq" in runtime:
        kwargs.setdefault("train_freq", tuple(runtime["train_freq"]))
    try:
        model = load_model(zip_path, algo_class, env, trust_pickle=trust_pickle, **kwargs)
    except UntrustedPickleError:
        raise
    except Exception as e:
        raise CheckpointError(f"Cannot load checkpoint file {zip_path}: {type(e).__name__}: {e}") from e
    if runtime is not None and states["env_state"] is not None:
        restore_model_runtime(model, runtime)
    return model


def _restore_buffer(model: BaseAlgorithm, path: Path, files: dict[str, Any]) -> None:
    """Phase 4: the replay buffer's rows and position."""
    if not isinstance(model, OffPolicyAlgorithm):
        return
    name = "replay_buffer.npz"
    if name not in files:
        return
    try:
        restore_buffer(model.replay_buffer, load_tree(path / name))
    except Exception as e:
        raise CheckpointError(f"Cannot load checkpoint file {path / name}: {type(e).__name__}: {e}") from e


def _restore_env_state(model: BaseAlgorithm, path: Path, env_state: Any, meta: dict[str, Any]) -> None:
    """Phase 5: every env layer where it was, or a warning that the next learn() starts fresh episodes."""
    if env_state is None:
        reason = meta.get("env_state_missing_reason", "")
        warnings.warn(f"Checkpoint {path} has no env state ({reason}); resume starts fresh episodes", stacklevel=3)
        model._last_obs = None  # type: ignore[assignment]  # forces a reset at the next learn()
        return
    try:
        restore_env(model.get_env(), env_state)
    except ValueError as e:
        model._last_obs = None  # type: ignore[assignment]
        msg = f"Env state in {path / 'env_state.npz'} not restored ({e}); resume starts fresh episodes"
        warnings.warn(msg, stacklevel=3)


def load_checkpoint(
    path: str | os.PathLike[str],
    algo_class: type[BaseAlgorithm],
    env: gym.Env | VecEnv,
    *,
    device: th.device | str = "auto",
    load_replay_buffer: bool = True,
    restore_rng: bool = True,
    trust_pickle: bool = False,
    **kwargs: Any,
) -> BaseAlgorithm:
    """
    Load a checkpoint folder written by :func:`saving.checkpoint.save_checkpoint` so that training continues exactly.

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
    :param trust_pickle: let SB3 unpickle what ``model.zip`` cannot be opened without (runs code from the file)
    :param kwargs: passed to ``algo_class.load``
    :return: the loaded model; ``model.get_env()`` is the env to train on
    :raises CheckpointError: the checkpoint is incomplete, truncated, corrupted or unreadable (message names the file)
    :raises UntrustedPickleError: the checkpoint needs unpickling and ``trust_pickle`` is False
    """
    path = Path(path)
    meta = verify_checkpoint(path)
    states = _read_states(path, meta["files"])
    if states["vecnormalize"] is not None:
        env = _attach_vec_normalize(env, states["vecnormalize"], algo_class)
    model = _load_model(path, algo_class, env, states, trust_pickle, device=device, **kwargs)
    if int(model.num_timesteps) != meta["num_timesteps"]:
        raise CheckpointError(
            f"{path / 'model.zip'} holds step {model.num_timesteps}, its manifest says {meta['num_timesteps']}"
        )
    if load_replay_buffer:
        _restore_buffer(model, path, meta["files"])
    _restore_env_state(model, path, states["env_state"], meta)
    if restore_rng and states["rng"] is not None:
        set_rng_states(states["rng"])
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
        raise CheckpointError(f"No checkpoint in {checkpoint_root(run_dir)}")
    for path in candidates:
        try:
            return load_checkpoint(path, algo_class, env, **kwargs), path
        except CheckpointError as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
    raise CheckpointError(f"None of the {len(candidates)} checkpoints in {checkpoint_root(run_dir)} can be loaded")


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
