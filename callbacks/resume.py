"""Reading checkpoints back: verify, then restore the model, buffer, normalisation, env and RNG states, in phases.

See :mod:`callbacks.checkpoint` for what a checkpoint holds and how it is written. Nothing here unpickles unless
the caller passes ``trust_pickle=True`` (checkpoints of earlier versions, written with pickle).
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from callbacks.checkpoint import (
    _META,
    CheckpointError,
    _checkpoint_root,
    _sha256,
    find_checkpoints,
    vec_normalize_state,
)
from callbacks.safe_zip import UntrustedPickleError, load_model
from callbacks.state import restore_buffer, restore_env, restore_model_runtime, set_rng_states
from callbacks.statefile import load_tree

__all__ = ["load_checkpoint", "resume_latest", "trim_monitor_csv"]


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


def _read_tree(path: Path) -> Any:
    try:
        return load_tree(path)
    except Exception as e:
        raise CheckpointError(f"Cannot read checkpoint file {path}: {type(e).__name__}: {e}") from e


_LEGACY = {"env_state.pkl": "env_state", "rng.pkl": "rng", "vecnormalize.pkl": "vecnormalize"}


def _read_states(path: Path, files: dict[str, Any], trust_pickle: bool) -> dict[str, Any]:
    """Phase 1: every state file except the model and the buffer, read before anything is changed."""
    legacy = sorted(name for name in files if name.endswith(".pkl"))
    if legacy and not trust_pickle:
        raise UntrustedPickleError(
            f"checkpoint {path} holds pickled files ({', '.join(legacy)}) from an earlier version; opening them "
            "runs code from the files (pass --trust-files only for a checkpoint you wrote yourself)"
        )
    states: dict[str, Any] = {"env_state": None, "rng": None, "vecnormalize": None, "model": None}
    for name in ("env_state", "vecnormalize"):
        if f"{name}.npz" in files:
            states[name] = _read_tree(path / f"{name}.npz")
    if "runtime.npz" in files:
        runtime = _read_tree(path / "runtime.npz")
        states["rng"], states["model"] = runtime["rng"], runtime["model"]
    for name, key in _LEGACY.items():
        if name in files:
            states[key] = _read_pickle(path / name)
    if isinstance(states["vecnormalize"], VecNormalize):
        states["vecnormalize"] = vec_normalize_state(states["vecnormalize"])
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
    for name in ("replay_buffer.npz", "replay_buffer.pkl"):
        if name not in files:
            continue
        try:
            if name.endswith(".pkl"):  # legacy, only reached with trust_pickle (checked in phase 1)
                model.load_replay_buffer(path / name)
            else:
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
    Load a checkpoint folder written by :func:`save_checkpoint` so that training continues exactly.

    Restores the model (+ optimizers, entropy coefficient, counters), the replay buffer, VecNormalize statistics
    (into ``env``'s VecNormalize, or by wrapping ``env`` in one), the env state when it was saved (otherwise the
    next ``learn`` starts fresh episodes and a warning says so) and, last, the python/numpy/torch RNG states.
    Nothing is unpickled unless ``trust_pickle``.

    To continue: ``model.learn(total - model.num_timesteps, reset_num_timesteps=False, callback=...)``.

    :param path: a ``step_<n>`` folder
    :param algo_class: the algorithm class that saved it (``SAC``, ``CustomSAC``, ...)
    :param env: a fresh env built exactly like the training env (same wrappers, same number of envs)
    :param device: torch device for the model
    :param load_replay_buffer: restore the replay buffer when the checkpoint has one
    :param restore_rng: restore the global RNG states (needed for an exact continuation)
    :param trust_pickle: open checkpoints of earlier versions (pickled files), which runs code from the files
    :param kwargs: passed to ``algo_class.load``
    :return: the loaded model; ``model.get_env()`` is the env to train on
    :raises CheckpointError: the checkpoint is incomplete, truncated, corrupted or unreadable (message names the file)
    :raises UntrustedPickleError: the checkpoint needs unpickling and ``trust_pickle`` is False
    """
    path = Path(path)
    meta = _verify(path)
    states = _read_states(path, meta["files"], trust_pickle)
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
