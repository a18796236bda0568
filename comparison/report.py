"""The written side of a comparison: ``report.md``, ``summary.csv``, ``aggregate.csv``, the figures and ``runs.txt``.

The numbers come from the :class:`comparison.data.Comparison` alone, so comparing the same run folders again
(``--runs``) writes the same tables and curves. The report adds the date and the machine it was written on (CPU
model, operating system), and the core count there when the runs did not record theirs.
"""

import csv
import datetime
import math
import os
import platform
from pathlib import Path

import numpy as np
import yaml

from comparison.aggregate import PROFILE_POINTS
from comparison.data import AlgoStats, Comparison, EnvResult, Estimate, Run
from comparison.plots import plot_aggregate, plot_curves

CSV_COLUMNS = [
    "env",
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
AGGREGATE_COLUMNS = ["algo", "metric", "value", "ci95_low", "ci95_high"]


def write_outputs(result: Comparison, command: str) -> None:
    """
    Write every file of the comparison folder.

    :param result: the comparison
    :param command: the command line that made it, quoted in the report
    """
    runs = [run for env in result.envs.values() for stats in env.stats.values() for run in stats.runs]
    (result.folder / "runs.txt").write_text("".join(f"{run.path}\n" for run in runs))
    write_csv(result, result.folder / "summary.csv")
    for env in result.envs.values():
        plot_curves(env, result.folder / curves_file(result, env.env_id))
    if result.aggregate is not None:
        write_aggregate_csv(result, result.folder / "aggregate.csv")
        plot_aggregate(result.aggregate, result.folder / "aggregate.png")
    (result.folder / "report.md").write_text(report_markdown(result, command))


def curves_file(result: Comparison, env_id: str) -> str:
    """``curves.png`` with one env, ``curves_<env>.png`` with several."""
    return "curves.png" if len(result.envs) == 1 else f"curves_{env_id}.png"


# ----------------------------------------------------------------------------------------------- tables
def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else math.nan


def csv_row(stats: AlgoStats, env: EnvResult) -> dict[str, object]:
    """One row of ``summary.csv``: NaN where a number does not exist (a threshold no run reached)."""
    return {
        "env": env.env_id,
        "algo": stats.algo,
        "runs": len(stats.runs),
        "n_timesteps": _median(np.array([run.timesteps[-1] for run in stats.runs])),
        "final_return_mean": stats.final_mean,
        "final_return_ci95_low": stats.final_ci[0],
        "final_return_ci95_high": stats.final_ci[1],
        "final_return_std": stats.final_std,
        "threshold": math.nan if env.threshold is None else env.threshold,
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


def _write_rows(path: Path, columns: list[str], rows: list[dict[str, object]]) -> None:
    """A CSV file, numbers to 6 significant digits."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


def write_csv(result: Comparison, path: Path) -> None:
    """``summary.csv``: one row per (env, algo)."""
    rows = [csv_row(stats, env) for env in result.envs.values() for stats in env.stats.values()]
    _write_rows(path, CSV_COLUMNS, rows)


def write_aggregate_csv(result: Comparison, path: Path) -> None:
    """``aggregate.csv``: IQM and mean per algo, probability of improvement per reference, with 95% CIs."""
    agg = result.aggregate
    estimates = [(algo, "iqm", e) for algo, e in agg.iqm.items()]
    estimates += [(algo, "mean", e) for algo, e in agg.mean.items()]
    cand = result.algos[0]
    estimates += [(cand, f"probability_of_improvement_over_{ref}", e) for ref, e in agg.improvement.items()]
    rows = [dict(zip(AGGREGATE_COLUMNS, (algo, metric, e.value, e.low, e.high))) for algo, metric, e in estimates]
    _write_rows(path, AGGREGATE_COLUMNS, rows)


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


def _ci(e: Estimate) -> str:
    return f"{e.value:.3f}" + ("" if math.isnan(e.low) else f" [{e.low:.3f}, {e.high:.3f}]")


def _values(runs: list[Run], key: str) -> str:
    found = sorted({str(run.summary.get(key)) for run in runs if run.summary.get(key) is not None})
    return ", ".join(found) if found else "not recorded"


def _rel(path: Path) -> str:
    """Relative to the working directory where under it (short, and valid for a reader in the checkout)."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _all_runs(result: Comparison) -> list[Run]:
    return [run for env in result.envs.values() for s in env.stats.values() for run in s.runs]


def report_markdown(result: Comparison, command: str) -> str:
    """The text of ``report.md``: the aggregate (with several envs), a section per env, how to read the numbers,
    what was run, every run, and the failed runs."""
    envs = ", ".join(result.envs)
    lines = [f"# {' vs '.join(result.algos)} on {envs}", ""]
    lines += [f"Made on {datetime.date.today().isoformat()} by:", "", "```", command, "```", ""]
    if result.aggregate is not None:
        lines += _aggregate_section(result)
    for env in result.envs.values():
        lines += _env_section(result, env)
    lines += _how_to_read(result)
    lines += _what_was_run(result)
    lines += _runs_section(result)
    return "\n".join(lines).rstrip() + "\n"


def _aggregate_section(result: Comparison) -> list[str]:
    agg = result.aggregate
    cand = result.algos[0]
    lines = [f"## Aggregate over {len(result.envs)} envs", ""]
    lines += [f"- **Verdict, {cand} vs {ref}:** {text}" for ref, text in zip(agg.improvement, agg.verdict)]
    lines += ["", "![IQM and mean with CIs, and performance profiles](aggregate.png)", ""]
    lines += ["| algo | IQM [95% CI] | mean [95% CI] | runs per env |", "|---|---|---|---|"]
    for algo in agg.iqm:
        counts = "/".join(str(len(s)) for s in agg.scores[algo].values())
        lines.append(f"| {algo} | {_ci(agg.iqm[algo])} | {_ci(agg.mean[algo])} | {counts} |")
    lines += ["", f"| probability of improvement of {cand} over | value [95% CI] |", "|---|---|"]
    lines += [f"| {ref} | {_ci(e)} |" for ref, e in agg.improvement.items()]
    lines += ["", "Normalisation of each run's final return, (return - score 0) / (score 1 - score 0):", ""]
    lines += ["| env | score 0 | score 1 | chosen as |", "|---|---|---|---|"]
    lines += [f"| {env} | {lo:.1f} | {hi:.1f} | {how} |" for env, (lo, hi, how) in agg.normalisers.items()]
    return [*lines, ""]


def _env_section(result: Comparison, env: EnvResult) -> list[str]:
    thr = env.threshold
    thr_text = f"{thr:g}" if thr is not None else "threshold"
    lines = [f"## {env.env_id}", "", "### Verdict", ""]
    for v in env.verdicts:
        lines.append(f"- **Learning, {v.candidate} vs {v.reference}:** {v.learning}")
        lines.append(f"- **Speed, {v.candidate} vs {v.reference}:** {v.speed}")
    if not env.verdicts:
        lines.append("- One algorithm only: nothing to compare against.")
    if result.jobs and result.jobs > 1:
        lines.append(
            f"- The runs trained {result.jobs} at a time on a shared machine: speeds are comparable with each other "
            "(each pair of a seed ran side by side), less so with numbers measured alone."
        )
    lines += ["", f"![evaluation return against env steps and wall-clock seconds]({curves_file(result, env.env_id)})"]
    lines += ["", "### Results", ""]
    lines.append(
        f"| algo | runs | final return (mean [95% CI]) | reached {thr_text} | steps to {thr_text} (median) | "
        f"seconds to {thr_text} (median) | env steps/s (mean, min-max) | wall time s (mean) | peak memory MiB (max) |"
    )
    lines.append("|" + "---|" * 9)
    for s in env.stats.values():
        row = csv_row(s, env)
        lines.append(
            f"| {s.algo} | {len(s.runs)} | {s.final_mean:.1f} [{s.final_ci[0]:.1f}, {s.final_ci[1]:.1f}] | "
            f"{s.n_reached}/{len(s.runs)} | {_num(row['steps_to_threshold_median'], '.0f')} | "
            f"{_num(row['seconds_to_threshold_median'])} | {_num(row['env_steps_per_s_mean'])} "
            f"({_num(row['env_steps_per_s_min'])}-{_num(row['env_steps_per_s_max'])}) | "
            f"{_num(row['wall_time_s_mean'])} | {_num(row['peak_rss_mib_max'], '.0f')} |"
        )
    threshold = (
        f"Threshold {thr:g} ({env.threshold_source})."
        if thr is not None
        else f"No threshold is known for {env.env_id}; pass --threshold to count steps to a return."
    )
    return [*lines, "", threshold, ""]


def _how_to_read(result: Comparison) -> list[str]:
    episodes = sorted({run.returns.shape[1] for run in _all_runs(result)})
    lines = [
        "## How to read it",
        "",
        f"- *Final return* of a run: the mean return over every episode of its last {result.last_evals} "
        f"evaluation(s) ({'/'.join(map(str, episodes))} deterministic episodes each). The tables give its mean over "
        f"the runs and a 95% percentile-bootstrap confidence interval of that mean ({result.n_boot} resamples of the "
        "runs). With few runs the interval is narrow only by luck: read it together with the number of runs.",
        "- *Reached the threshold*: runs whose evaluation mean return was at least the threshold at some evaluation; "
        "steps and seconds are at the first such evaluation (median over the runs that reached it; seconds are "
        "training time, the time spent evaluating left out).",
        "- *Learning verdict*: a two-sided permutation test of the difference in mean final return (every "
        "relabelling of the pooled runs, or 20,000 random ones). It assumes no distribution, which matters with a "
        "handful of seeds; p >= 0.05 means no evidence of a difference, not evidence of equality. The CI overlap "
        "is a second, rougher look at the same question.",
        "- *Speed verdict*: env steps per second of each run over its whole training (evaluations included), the "
        "ratio taken per seed between runs of the same seed, summarised by the geometric mean with a bootstrap CI "
        "(ratios are multiplicative, so the mean of their logarithms).",
    ]
    if result.aggregate is not None:
        lines += [
            "- *Aggregate* (rliable's definitions, Agarwal et al. 2021): each run's final return is normalised per "
            "env as in the table above, so that 0 and 1 mean the same on every env. *IQM*: the mean of the middle "
            "50% of all normalised scores, every env's runs pooled (robust to one outlying run, less noisy than the "
            "median); *mean*: their plain mean. The CIs come from a stratified bootstrap: runs resampled within "
            f"each env, never across ({result.n_boot} resamples). *Probability of improvement*: for a random run "
            "of each algo on the same env, P(candidate > reference) + 0.5 P(equal), averaged over envs; 0.5 means "
            "neither tends to score higher. *Performance profile* (right panel of the figure): the fraction of "
            "runs whose normalised score exceeds tau, averaged over envs; a curve above another everywhere "
            f"dominates it ({PROFILE_POINTS} values of tau).",
            "- With min-max normalisation over the runs, a score says how a run ranks among these runs, not how "
            "good it is: 1 is the best run here, not a solved task.",
        ]
    return [*lines, ""]


def _what_was_run(result: Comparison) -> list[str]:
    runs = _all_runs(result)
    cores = f"{_values(runs, 'cpu_count')} CPU cores"
    if "not recorded" in cores:
        cores = f"{os.cpu_count()} CPU cores (counted where this report was written; the runs do not record theirs)"
    lines = ["## What was run", ""]
    for env in result.envs.values():
        env_runs = [run for s in env.stats.values() for run in s.runs]
        steps = sorted({int(run.timesteps[-1]) for run in env_runs})
        freqs = sorted({int(np.median(np.diff(run.timesteps))) for run in env_runs if len(run.timesteps) > 1})
        episodes = sorted({run.returns.shape[1] for run in env_runs})
        lines += [
            f"- Env: {env.env_id}; algos: {', '.join(env.stats)}; seeds: "
            + "; ".join(f"{s.algo} {' '.join(str(seed) for seed in s.seeds)}" for s in env.stats.values()),
            f"  - Env steps per run: {', '.join(map(str, steps))}"
            + (" (runs differ in length: final returns are not at the same step)" if len(steps) > 1 else ""),
            f"  - Evaluation every {', '.join(map(str, freqs)) or '-'} env steps, "
            f"{'/'.join(map(str, episodes))} episodes each",
        ]
    lines += [
        f"- Machine: {cores}, {_cpu_model()}, {platform.system()} {platform.release()}; torch threads "
        f"per run: {_values(runs, 'torch_threads')}; runs at a time: {result.jobs or 'unknown (read from disk)'}",
        f"- Gradient step: {_values(runs, 'update_path')}",
        "",
    ]
    lines += _versions(runs)
    for env in result.envs.values():
        lines += _hyperparams(env, len(result.envs) > 1)
    lines += ["To recompute this report from the same runs without training:", "", "```"]
    lines += [f"custom-sac-compare --runs $(cat {_rel(result.folder / 'runs.txt')})", "```", ""]
    return lines


def _versions(runs: list[Run]) -> list[str]:
    lines = ["| package | version |", "|---|---|"]
    packages = sorted({name for run in runs for name in (run.summary.get("versions") or {})})
    for name in packages:
        found = sorted({str((run.summary.get("versions") or {}).get(name)) for run in runs})
        lines.append(f"| {name} | {', '.join(found)} |")
    if not packages:
        lines.append("| - | not recorded in summary.json |")
    return [*lines, ""]


def _hyperparams(env: EnvResult, name_env: bool) -> list[str]:
    """The hyperparameters of one env's runs (the same for all, or each algo's first run), and one command per algo."""
    where = f" on {env.env_id}" if name_env else ""
    configs = {s.algo: s.runs[0].hyperparams for s in env.stats.values()}
    differing = [s.algo for s in env.stats.values() if any(r.hyperparams != s.runs[0].hyperparams for r in s.runs)]
    if len({yaml.safe_dump(c, sort_keys=True) for c in configs.values()}) == 1 and not differing:
        lines = [f"Hyperparameters{where} (`config.yml`), the same for every run:", "", "```yaml"]
        lines += [yaml.safe_dump(next(iter(configs.values())), sort_keys=True).rstrip(), "```", ""]
    else:
        lines = [f"**The hyperparameters{where} differ between runs**; each algo's first run:", ""]
        for algo, config in configs.items():
            lines += [f"{algo}:", "", "```yaml", yaml.safe_dump(config, sort_keys=True).rstrip(), "```", ""]
    lines += [f"One training command per algo{where} (every run's is in its `command.txt`):", "", "```"]
    lines += [s.runs[0].command or f"(no command.txt in {s.runs[0].path})" for s in env.stats.values()]
    return [*lines, "```", ""]


def _runs_section(result: Comparison) -> list[str]:
    lines = [
        "## Runs",
        "",
        "| env | algo | seed | final return | steps to threshold | env steps/s | wall time s | folder |",
    ]
    lines.append("|" + "---|" * 8)
    for env in result.envs.values():
        for s in env.stats.values():
            for i, run in enumerate(s.runs):
                seed = f"{run.seed} (interrupted)" if run.summary.get("interrupted") else str(run.seed)
                lines.append(
                    f"| {env.env_id} | {s.algo} | {seed} | {s.final_returns[i]:.1f} | "
                    f"{_num(s.steps_to_threshold[i], '.0f')} | {_num(s.env_steps_per_s[i])} | "
                    f"{_num(s.wall_time_s[i])} | {_rel(run.path)} |"
                )
    if result.failed:
        lines += ["", "## Failed runs", "", "Left out of everything above:", ""]
        for f in result.failed:
            lines += [f"- {f.env_id} {f.algo} seed {f.seed}, exit {f.returncode}: {f.reason}; log {_rel(f.log)}:"]
            lines += ["", "```"]
            lines += [f.stderr_tail, "```", ""]
    return lines
