"""``summary.json``: what a finished run reports about itself (its figures, the machine and the versions)."""

import json
import os
import platform
import resource
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import sb3_contrib
import stable_baselines3
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm

from experiment.update_path import update_path


def versions() -> dict[str, str]:
    """The versions of what computed the run."""
    return {
        "python": platform.python_version(),
        "torch": th.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "sb3_contrib": sb3_contrib.__version__,
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
    }


def write_summary(
    run_dir: Path, run: dict[str, Any], model: BaseAlgorithm, returns: list[float], timing: tuple[bool, float, float]
) -> None:
    """
    Write ``run_dir/summary.json``.

    :param run: the run's ``algo``, ``env_id`` and ``seed``
    :param model: the trained model
    :param returns: the final evaluation's episode returns
    :param timing: whether training was interrupted, its wall time and its env steps per second
    """
    interrupted, wall_time, steps_per_s = timing
    summary = {
        **run,
        "n_timesteps": model.num_timesteps,
        "wall_time_s": wall_time,
        "env_steps_per_s": steps_per_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_mean_reward": float(np.mean(returns)),
        "final_std_reward": float(np.std(returns)),
        "final_eval_episodes": len(returns),
        "interrupted": interrupted,
        "update_path": update_path(model),
        "torch_threads": th.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "versions": versions(),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
