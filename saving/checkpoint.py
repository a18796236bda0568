"""Checkpoint folders that resume training exactly: writing them atomically, finding, verifying and pruning them.

A checkpoint is the folder ``<run_dir>/checkpoints/step_<n>/``:

- ``model.zip``: ``model.save`` (policy, every optimizer's state, ``log_ent_coef``, counters), opened on load by
  :func:`saving.safe_zip.load_model`, which rebuilds what SB3 pickles instead of unpickling it;
- ``runtime.npz``: python, numpy (global; the replay buffer samples with it) and torch RNG states, and what the zip
  would only hold as pickles: ``_last_obs``, the episode-info deques, the action space's RNG (warm-up sampling),
  ``train_freq``;
- ``replay_buffer.npz`` (optional): the buffer's rows written so far and its position;
- ``vecnormalize.npz`` (when the env is wrapped in ``VecNormalize``): its statistics and settings;
- ``env_state.npz``: the state of every env layer (VecEnv wrappers, DummyVecEnv buffers and pending seeds,
  gymnasium wrappers such as Monitor and TimeLimit, the env itself with its ``np_random``);
- ``meta.json``, written last: ``num_timesteps`` and every file's size and sha256.

The ``.npz`` files are written by :mod:`saving.npz_tree` and read with ``allow_pickle=False``; reading a checkpoint
back is :mod:`saving.resume`'s job, and :class:`callbacks.ResumableCheckpointCallback` takes them during training.

The folder is written as ``.step_<n>.tmp``, fsynced, then renamed into place, so a kill at any moment leaves either
the complete new checkpoint or none of it; ``meta.json`` lets a reader check completeness and integrity. A write
that fails (disk full, file size limit) removes its temporary folder: the newest complete checkpoint stays newest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import unwrap_vec_normalize

from saving.errors import CheckpointError
from saving.normalize import vec_normalize_state
from saving.npz_tree import save_tree
from saving.training_state import buffer_state, model_runtime, rng_states, snapshot_env

__all__ = [
    "MANIFEST",
    "checkpoint_root",
    "find_checkpoints",
    "prune_checkpoints",
    "remove_unfinished",
    "save_checkpoint",
    "verify_checkpoint",
]

_STEP_DIR = re.compile(r"^step_(\d+)$")
MANIFEST = "meta.json"


def checkpoint_root(run_dir: str | os.PathLike[str]) -> Path:
    """Accept a run folder (``<run>/checkpoints`` is used) or the checkpoints folder itself."""
    run_dir = Path(run_dir)
    return run_dir / "checkpoints" if run_dir.name != "checkpoints" else run_dir


def find_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """
    List the checkpoint folders of a run, newest first. Temporary (half-written) folders are never listed.

    :param run_dir: the run folder (or its ``checkpoints`` folder)
    :return: ``step_<n>`` folders sorted by decreasing n (possibly empty)
    """
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def prune_checkpoints(run_dir: str | os.PathLike[str], keep_last: int) -> None:
    """
    Remove all but the newest ``keep_last`` checkpoints of a run.

    :param run_dir: the run folder (or its ``checkpoints`` folder)
    :param keep_last: how many complete checkpoints to keep (at least 1: the newest is never removed)
    """
    for old in find_checkpoints(run_dir)[max(keep_last, 1) :]:
        # Rename first so a kill mid-removal never leaves a half-deleted folder under a checkpoint name.
        trash = old.with_name(f".{old.name}.del")
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def remove_unfinished(run_dir: str | os.PathLike[str]) -> None:
    """Remove the leftovers of a killed writer (``.step_*`` folders): never complete, never listed."""
    for stale in checkpoint_root(run_dir).glob(".step_*"):
        shutil.rmtree(stale, ignore_errors=True)


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

    Call it between two ``learn`` iterations (``callbacks.ResumableCheckpointCallback`` does) for a checkpoint that
    resumes exactly.

    :param model: the SB3 model (any algorithm; the replay buffer is saved for off-policy ones)
    :param run_dir: the run folder (or its ``checkpoints`` folder)
    :param save_replay_buffer: also save the replay buffer (needed for an exact resume)
    :return: the final checkpoint folder
    :raises OSError: the checkpoint could not be written (nothing is left of it; older checkpoints are untouched)
    """
    root = checkpoint_root(run_dir)
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
    (folder / MANIFEST).write_text(json.dumps(meta, indent=2))
    _fsync(folder / MANIFEST)
    _fsync(folder)


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """
    Check that a checkpoint folder is complete and intact: every file its manifest lists, with that size and sha256.

    :param path: a ``step_<n>`` folder
    :return: the manifest, ``num_timesteps`` as an int
    :raises CheckpointError: the folder or a file is missing, truncated or corrupted (the message names it)
    """
    meta_path = path / MANIFEST
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
