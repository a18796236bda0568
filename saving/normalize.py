"""``VecNormalize`` statistics on disk, without pickle: where a run keeps them, writing and reading them back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stable_baselines3.common.vec_env import VecNormalize

from saving.npz_tree import load_tree, save_tree

__all__ = ["load_normalize_stats", "normalize_stats_path", "save_normalize_stats", "vec_normalize_state"]

# VecNormalize attributes that are its statistics and settings (the wrapped env and spaces come from the new env).
_VEC_NORMALIZE_KEYS = (
    "obs_rms ret_rms clip_obs clip_reward returns gamma epsilon training norm_obs norm_reward norm_obs_keys".split()
)


def vec_normalize_state(vec_normalize: VecNormalize) -> dict[str, Any]:
    """A VecNormalize's statistics and settings, as :func:`saving.npz_tree.save_tree` writes them."""
    return {k: v for k, v in vars(vec_normalize).items() if k in _VEC_NORMALIZE_KEYS}


def normalize_stats_path(run_dir: str | os.PathLike[str], env_id: str, best: bool = False) -> Path:
    """
    Where a run keeps its ``VecNormalize`` statistics: ``<run>/<env_id>/vecnormalize.npz`` (final) and
    ``best_vecnormalize.npz`` (those ``best_model.zip`` was evaluated with), read without unpickling; beside each,
    the zoo's pickled ``.pkl`` of the same statistics, for rl_zoo3's own tools.
    """
    return Path(run_dir) / env_id / ("best_vecnormalize.npz" if best else "vecnormalize.npz")


def save_normalize_stats(vec_normalize: VecNormalize, path: str | os.PathLike[str]) -> None:
    """Write ``path`` (.npz, see :func:`normalize_stats_path`) and the zoo's ``.pkl`` beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tree(path, vec_normalize_state(vec_normalize))
    vec_normalize.save(str(path.with_suffix(".pkl")))


def load_normalize_stats(vec_normalize: VecNormalize, path: str | os.PathLike[str]) -> None:
    """Set ``vec_normalize``'s statistics and settings to those :func:`save_normalize_stats` wrote to ``path``."""
    vars(vec_normalize).update(load_tree(path))
