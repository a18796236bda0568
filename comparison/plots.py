"""The figures of a comparison: learning curves per env, and the aggregate (intervals and performance profile).

Each is a bare matplotlib ``Figure`` (no pyplot), which leaves the caller's backend and global figure list alone.
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from comparison.data import Aggregate, EnvResult
from comparison.stats import mean_ci

# The curve bands resample every grid point at once; these caps keep that array small (n_boot x runs x points).
CURVE_BOOT = 2_000
CURVE_POINTS = 200


def curve_band(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """
    Mean curve over runs with its 95% bootstrap band, on a grid every run covers (runs evaluate at different
    wall-clock times, so each is interpolated onto the shared grid).

    :return: grid, mean, lower and upper band
    """
    start, stop = max(x[0] for x in xs), min(x[-1] for x in xs)
    grid = np.unique(np.concatenate(xs))
    grid = grid[(grid >= start) & (grid <= stop)]
    if len(grid) > CURVE_POINTS:
        grid = np.linspace(start, stop, CURVE_POINTS)
    if len(grid) == 0:  # the runs share no span (one ended before another began): nothing to average honestly
        return (np.empty(0),) * 4
    values = np.stack([np.interp(grid, x, y) for x, y in zip(xs, ys)])
    low, high = mean_ci(values, CURVE_BOOT) if len(values) > 1 else (values[0], values[0])
    return grid, values.mean(axis=0), low, high


def plot_curves(result: EnvResult, path: Path) -> None:
    """Evaluation return against env steps and against wall-clock seconds, on one env."""
    fig = Figure(figsize=(13, 4.8), layout="constrained")
    ax_steps, ax_time = fig.subplots(1, 2, sharey=True)
    for i, (algo, stats) in enumerate(result.stats.items()):
        color = f"C{i}"
        for ax, x_of in ((ax_steps, lambda r: r.timesteps), (ax_time, lambda r: r.wall_time)):
            runs = [run for run in stats.runs if x_of(run) is not None]
            if not runs:
                continue
            xs, ys = [x_of(run) for run in runs], [run.mean_returns for run in runs]
            for x, y in zip(xs, ys):
                ax.plot(x, y, color=color, lw=0.7, alpha=0.35)
            grid, mean, low, high = curve_band(xs, ys)
            ax.plot(grid, mean, color=color, lw=2, label=f"{algo} (n={len(runs)})")
            ax.fill_between(grid, low, high, color=color, alpha=0.2, lw=0)
    for ax, label in ((ax_steps, "env steps"), (ax_time, "training wall-clock seconds (evaluations left out)")):
        if result.threshold is not None:
            ax.axhline(result.threshold, color="gray", ls="--", lw=1, label=f"threshold {result.threshold:g}")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    ax_steps.set_ylabel("evaluation return (mean over episodes)")
    fig.suptitle(f"{result.env_id}: mean over seeds with 95% bootstrap CI band; thin lines are single seeds")
    fig.savefig(path, dpi=110)


def plot_aggregate(agg: Aggregate, path: Path) -> None:
    """IQM and mean of the normalised scores with their stratified-bootstrap CIs, and the performance profiles."""
    fig = Figure(figsize=(13, 4.8), layout="constrained")
    ax_iqm, ax_mean, ax_profile = fig.subplots(1, 3, width_ratios=[1, 1, 1.6])
    algos = list(agg.iqm)
    for ax, name, estimates in ((ax_iqm, "IQM", agg.iqm), (ax_mean, "mean", agg.mean)):
        for i, algo in enumerate(algos):
            e = estimates[algo]
            ax.plot([e.low, e.high], [i, i], color=f"C{i}", lw=8, alpha=0.5, solid_capstyle="butt")
            ax.plot([e.value], [i], "|", color="black", ms=16, mew=2)
        ax.set_yticks(range(len(algos)), algos)
        ax.set_ylim(-0.7, len(algos) - 0.3)
        ax.set_xlabel(f"{name} of normalised final return")
        ax.grid(axis="x", alpha=0.3)
    for i, algo in enumerate(algos):
        ax_profile.plot(agg.taus, agg.profiles[algo], color=f"C{i}", lw=2, label=algo)
    ax_profile.set_xlabel("normalised score tau")
    ax_profile.set_ylabel("fraction of runs with score > tau")
    ax_profile.set_ylim(-0.02, 1.02)
    ax_profile.grid(alpha=0.3)
    ax_profile.legend(loc="upper right")
    envs = ", ".join(agg.normalisers)
    # The env ids on a line of their own: several of them run past the figure's edges on one line
    fig.suptitle(
        f"Aggregate over {len(agg.normalisers)} envs: 95% stratified-bootstrap CIs (bars) and performance "
        f"profiles\n{envs}"
    )
    fig.savefig(path, dpi=110)
