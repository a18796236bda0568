"""The written side of a comparison: ``curves.png``, ``summary.csv``, ``report.md`` and ``runs.txt``.

Everything here is computed from the :class:`experiment.compare.Comparison` alone, so comparing the same run
folders again (``--runs``) writes the same table and curves.
"""

import csv
import datetime
import math
import os
import platform
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure

from experiment.compare import Comparison
from experiment.stats import AlgoStats, Run, bootstrap_ci

CSV_COLUMNS = [
    "algo",
    "runs",
    "n_timesteps",
    "final_return_mean",
    "final_return_ci95_low",
    "final_return_ci95_high",
    "final_return_std",
    "threshold",
    "runs_reaching_threshold",
    "steps_to_threshold_median",
    "seconds_to_threshold_median",
    "env_steps_per_s_mean",
    "env_steps_per_s_min",
    "env_steps_per_s_max",
    "wall_time_s_mean",
    "peak_rss_mib_mean",
    "peak_rss_mib_max",
]
# The curve bands resample every grid point at once; these caps keep that array small (n_boot x runs x points).
CURVE_BOOT = 2_000
CURVE_POINTS = 200


def write_outputs(result: Comparison, command: str, n_boot: int) -> None:
    """
    Write every file of the comparison folder.

    :param result: the comparison
    :param command: the command line that made it, quoted in the report
    :param n_boot: bootstrap resamples used for the confidence intervals (named in the report)
    """
    runs = [run for stats in result.stats.values() for run in stats.runs]
    (result.folder / "runs.txt").write_text("".join(f"{run.path}\n" for run in runs))
    write_csv(result, result.folder / "summary.csv")
    plot_curves(result, result.folder / "curves.png")
    (result.folder / "report.md").write_text(report_markdown(result, command, n_boot))


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else math.nan


def csv_row(stats: AlgoStats, threshold: float | None) -> dict[str, object]:
    """One row of ``summary.csv``: NaN where a number does not exist (a threshold no run reached)."""
    return {
        "algo": stats.algo,
        "runs": len(stats.runs),
        "n_timesteps": _median(np.array([run.timesteps[-1] for run in stats.runs])),
        "final_return_mean": stats.final_mean,
        "final_return_ci95_low": stats.final_ci[0],
        "final_return_ci95_high": stats.final_ci[1],
        "final_return_std": stats.final_std,
        "threshold": math.nan if threshold is None else threshold,
        "runs_reaching_threshold": stats.n_reached,
        "steps_to_threshold_median": _median(stats.steps_to_threshold),
        "seconds_to_threshold_median": _median(stats.seconds_to_threshold),
        "env_steps_per_s_mean": float(np.nanmean(stats.env_steps_per_s)),
        "env_steps_per_s_min": float(np.nanmin(stats.env_steps_per_s)),
        "env_steps_per_s_max": float(np.nanmax(stats.env_steps_per_s)),
        "wall_time_s_mean": float(np.nanmean(stats.wall_time_s)),
        "peak_rss_mib_mean": float(np.nanmean(stats.peak_rss_mib)),
        "peak_rss_mib_max": float(np.nanmax(stats.peak_rss_mib)),
    }


def write_csv(result: Comparison, path: Path) -> None:
    """``summary.csv``: one row per algo, numbers to 6 significant digits."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for stats in result.stats.values():
            row = csv_row(stats, result.threshold)
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


# ----------------------------------------------------------------------------------------------- curves
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
    low, high = bootstrap_ci(values, CURVE_BOOT) if len(values) > 1 else (values[0], values[0])
    return grid, values.mean(axis=0), low, high


def plot_curves(result: Comparison, path: Path) -> None:
    """``curves.png``: evaluation return against env steps and against wall-clock seconds."""
    # A bare Figure (no pyplot) leaves the caller's matplotlib backend and global figure list alone.
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


# ----------------------------------------------------------------------------------------------- report.md
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _num(value: float, fmt: str = ".1f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)


def _values(runs: list[Run], key: str) -> str:
    found = sorted({str(run.summary.get(key)) for run in runs if run.summary.get(key) is not None})
    return ", ".join(found) if found else "not recorded"


def _rel(path: Path) -> str:
    """Relative to the working directory where under it (short, and valid for a reader in the checkout)."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def report_markdown(result: Comparison, command: str, n_boot: int) -> str:
    """The text of ``report.md``."""
    stats = list(result.stats.values())
    runs = [run for s in stats for run in s.runs]
    algos = [s.algo for s in stats]
    thr = result.threshold
    thr_text = f"{thr:g}" if thr is not None else "threshold"
    lines = [f"# {' vs '.join(algos)} on {result.env_id}", ""]
    lines += [f"Made on {datetime.date.today().isoformat()} by:", "", "```", command, "```", ""]

    lines += ["## Verdict", ""]
    for v in result.verdicts:
        lines.append(f"- **Learning, {v.candidate} vs {v.reference}:** {v.learning}")
        lines.append(f"- **Speed, {v.candidate} vs {v.reference}:** {v.speed}")
    if not result.verdicts:
        lines.append("- One algorithm only: nothing to compare against.")
    if result.jobs and result.jobs > 1:
        lines.append(
            f"- The runs trained {result.jobs} at a time on a shared machine: speeds are comparable with each other "
            "(each pair of a seed ran side by side), less so with numbers measured alone."
        )
    lines += ["", "![evaluation return against env steps and wall-clock seconds](curves.png)", ""]
    lines += [
        "Thick lines: the mean over runs, drawn where every run has an evaluation (runs are interpolated onto shared "
        "points), with its 95% bootstrap band; thin lines: single runs.",
        "",
    ]

    lines += ["## Results", ""]
    lines.append(
        f"| algo | runs | final return (mean [95% CI]) | reached {thr_text} | steps to {thr_text} (median) | "
        f"seconds to {thr_text} (median) | env steps/s (mean, min-max) | wall time s (mean) | peak memory MiB (max) |"
    )
    lines.append("|" + "---|" * 9)
    for s in stats:
        row = csv_row(s, thr)
        lines.append(
            f"| {s.algo} | {len(s.runs)} | {s.final_mean:.1f} [{s.final_ci[0]:.1f}, {s.final_ci[1]:.1f}] | "
            f"{s.n_reached}/{len(s.runs)} | {_num(row['steps_to_threshold_median'], '.0f')} | "
            f"{_num(row['seconds_to_threshold_median'])} | {_num(row['env_steps_per_s_mean'])} "
            f"({_num(row['env_steps_per_s_min'])}-{_num(row['env_steps_per_s_max'])}) | "
            f"{_num(row['wall_time_s_mean'])} | {_num(row['peak_rss_mib_max'], '.0f')} |"
        )
    episodes = sorted({run.returns.shape[1] for run in runs})
    lines += [
        "",
        "How to read it:",
        f"- *Final return* of a run: the mean return over every episode of its last {result.last_evals} "
        f"evaluation(s) ({'/'.join(map(str, episodes))} deterministic episodes each). The table gives its mean over "
        f"the runs and a 95% percentile-bootstrap confidence interval of that mean ({n_boot} resamples of the runs). "
        "With few runs the interval is narrow only by luck: read it together with the number of runs.",
        (
            f"- *Reached {thr_text}*: runs whose evaluation mean return was at least {thr_text} at some evaluation; "
            "steps and seconds are at the first such evaluation (median over the runs that reached it; seconds are "
            "training time, the time spent evaluating left out)."
            if thr is not None
            else f"- *Threshold*: none is known for {result.env_id}; pass --threshold to count steps to a return."
        ),
        "- *Learning verdict*: a two-sided permutation test of the difference in mean final return (every "
        "relabelling of the pooled runs, or 20,000 random ones). It assumes no distribution, which matters with a "
        "handful of seeds; p >= 0.05 means no evidence of a difference, not evidence of equality. The CI overlap "
        "is a second, rougher look at the same question.",
        "- *Speed verdict*: env steps per second of each run over its whole training (evaluations included), the "
        "ratio taken per seed between runs of the same seed, summarised by the geometric mean with a bootstrap CI "
        "(ratios are multiplicative, so the mean of their logarithms).",
        "",
    ]

    lines += ["## What was run", ""]
    steps = sorted({int(run.timesteps[-1]) for run in runs})
    freqs = sorted({int(np.median(np.diff(run.timesteps))) for run in runs if len(run.timesteps) > 1})
    cores = f"{_values(runs, 'cpu_count')} CPU cores"
    if "not recorded" in cores:
        cores = f"{os.cpu_count()} CPU cores (counted where this report was written; the runs do not record theirs)"
    lines += [
        f"- Env: {result.env_id}; algos: {', '.join(algos)}; seeds: "
        + "; ".join(f"{s.algo} {' '.join(str(seed) for seed in s.seeds)}" for s in stats),
        f"- Env steps per run: {', '.join(map(str, steps))}"
        + (" (runs differ in length: final returns are not at the same step)" if len(steps) > 1 else ""),
        f"- Evaluation every {', '.join(map(str, freqs)) or '-'} env steps, "
        f"{'/'.join(map(str, episodes))} episodes each",
        f"- Machine: {cores}, {_cpu_model()}, {platform.system()} {platform.release()}; torch threads "
        f"per run: {_values(runs, 'torch_threads')}; runs at a time: {result.jobs or 'unknown (read from disk)'}",
        "",
    ]
    lines += ["| package | version |", "|---|---|"]
    packages = sorted({name for run in runs for name in (run.summary.get("versions") or {})})
    for name in packages:
        found = sorted({str((run.summary.get("versions") or {}).get(name)) for run in runs})
        lines.append(f"| {name} | {', '.join(found)} |")
    if not packages:
        lines.append("| - | not recorded in summary.json |")
    lines.append("")

    configs = {s.algo: s.runs[0].hyperparams for s in stats}
    differing = [s.algo for s in stats if any(run.hyperparams != s.runs[0].hyperparams for run in s.runs)]
    if len({yaml.safe_dump(c, sort_keys=True) for c in configs.values()}) == 1 and not differing:
        lines += ["Hyperparameters (`config.yml`), the same for every run:", "", "```yaml"]
        lines += [yaml.dump(next(iter(configs.values())), sort_keys=True).rstrip(), "```", ""]
    else:
        lines += ["**The hyperparameters differ between runs**; each algo's first run:", ""]
        for algo, config in configs.items():
            lines += [f"{algo}:", "", "```yaml", yaml.dump(config, sort_keys=True).rstrip(), "```", ""]
    lines += ["One training command per algo (every run's is in its `command.txt`):", "", "```"]
    lines += [s.runs[0].command or f"(no command.txt in {s.runs[0].path})" for s in stats]
    lines += ["```", "", "To recompute this report from the same runs without training:", "", "```"]
    lines += [f"python scripts/compare.py --runs $(cat {_rel(result.folder / 'runs.txt')})", "```", ""]

    lines += ["## Runs", "", "| algo | seed | final return | steps to threshold | env steps/s | wall time s | folder |"]
    lines.append("|" + "---|" * 7)
    for s in stats:
        for i, run in enumerate(s.runs):
            seed = f"{run.seed} (interrupted)" if run.summary.get("interrupted") else str(run.seed)
            lines.append(
                f"| {s.algo} | {seed} | {s.final_returns[i]:.1f} | {_num(s.steps_to_threshold[i], '.0f')} | "
                f"{_num(s.env_steps_per_s[i])} | {_num(s.wall_time_s[i])} | {_rel(run.path)} |"
            )
    if result.failed:
        lines += ["", "## Failed runs", "", "Left out of everything above:", ""]
        for f in result.failed:
            lines += [f"- {f.algo} seed {f.seed}, exit {f.returncode}, log {_rel(f.log)}:", "", "```"]
            lines += [f.stderr_tail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"
