"""Reward curves of run folders: the picture a person looks at first."""

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def training_returns(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Episode returns during training, against the env steps at which each episode ended (all Monitor CSVs)."""
    frames = []
    for csv in sorted(run_dir.glob("*monitor.csv")):
        frame = pd.read_csv(csv, skiprows=1)
        if len(frame):
            frames.append(frame)
    if not frames:
        return np.zeros(0), np.zeros(0)
    # Episodes of several envs interleave in time: sort by wall time, count steps over all envs.
    episodes = pd.concat(frames).sort_values("t")
    return np.cumsum(episodes["l"].to_numpy()), episodes["r"].to_numpy()


def plot_runs(run_dirs: list[Path], labels: list[str], title: str, output: Path) -> Path:
    """
    Episode returns during training (thin) and evaluation mean +- std (thick, with a band), one colour per run.

    :param run_dirs: run folders written by ``scripts/train.py``
    :param labels: legend label of each run
    :param title: figure title
    :param output: PNG path
    :return: ``output``
    """
    fig = Figure(figsize=(9, 5))  # not pyplot: no backend to choose, no global figure list to leak into
    ax = fig.subplots()
    for i, (run_dir, label) in enumerate(zip(run_dirs, labels)):
        color = f"C{i}"
        steps, returns = training_returns(run_dir)
        if len(steps):
            ax.plot(steps, returns, color=color, alpha=0.3, linewidth=0.8, label=f"{label}: training episodes")
        log_path = run_dir / "evaluations.npz"
        if log_path.is_file():
            log = np.load(log_path)
            if len(log["timesteps"]):
                mean, std = log["results"].mean(axis=1), log["results"].std(axis=1)
                ax.plot(
                    log["timesteps"],
                    mean,
                    color=color,
                    linewidth=2,
                    marker="o",
                    markersize=3,
                    label=f"{label}: evaluation mean +- std",
                )
                ax.fill_between(log["timesteps"], mean - std, mean + std, color=color, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    return output
