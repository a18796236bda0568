"""Statistics of a comparison over seeds: final returns with bootstrap CIs, permutation tests, speed ratios."""

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_PERMUTATIONS = 20_000


@dataclass
class Run:
    """One finished run folder, as read from disk."""

    path: Path
    algo: str
    env_id: str
    seed: int | None
    timesteps: np.ndarray  # (K,) env steps at each evaluation
    returns: np.ndarray  # (K, n_eval_episodes)
    wall_time: np.ndarray | None  # (K,) seconds since training start; None for folders written without it
    summary: dict[str, Any]
    hyperparams: dict[str, Any]
    command: str

    @property
    def mean_returns(self) -> np.ndarray:
        return self.returns.mean(axis=1)


@dataclass
class AlgoStats:
    """Per-algorithm statistics over its runs; arrays are per run, in seed order."""

    algo: str
    runs: list[Run]
    final_returns: np.ndarray
    final_mean: float
    final_ci: tuple[float, float]
    final_std: float
    steps_to_threshold: np.ndarray  # NaN where the run never reached it
    seconds_to_threshold: np.ndarray
    env_steps_per_s: np.ndarray
    wall_time_s: np.ndarray
    peak_rss_mib: np.ndarray

    @property
    def seeds(self) -> list[int | None]:
        return [run.seed for run in self.runs]

    @property
    def n_reached(self) -> int:
        return int(np.isfinite(self.steps_to_threshold).sum())


@dataclass
class Verdict:
    """Learning and speed of ``candidate`` against ``reference``, numbers and the sentences that state them."""

    candidate: str
    reference: str
    p_value: float
    min_p_value: float  # the smallest p the permutation test can give at these sample sizes
    cis_overlap: bool
    learning: str
    speed_ratios: np.ndarray  # per paired seed, candidate / reference env steps per second
    speed_ratio: float  # geometric mean
    speed_ci: tuple[float, float]
    speed: str


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """
    Percentile bootstrap confidence interval of the mean over the first axis (runs), for each remaining entry.

    :param values: (n_runs, ...) array
    :param n_boot: resamples
    :param confidence: coverage
    :param seed: the resampling is seeded, so the same runs always give the same interval
    :return: lower and upper bounds, shaped ``values.shape[1:]``
    """
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return np.quantile(means, alpha, axis=0), np.quantile(means, 1 - alpha, axis=0)


def permutation_test(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """
    Two-sided permutation test of the difference of means: the share of relabellings of the pooled values whose
    |mean difference| is at least the observed one. It assumes no distribution (returns over a handful of seeds are
    not normal), and it is exact (every relabelling) while there are at most :data:`MAX_PERMUTATIONS`.

    :return: p-value, and the smallest p-value these sample sizes can give at all
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled, n_a = np.concatenate([a, b]), len(a)
    n_total = math.comb(len(pooled), n_a)
    if n_total <= MAX_PERMUTATIONS:
        groups = np.array(list(itertools.combinations(range(len(pooled)), n_a)), dtype=int).reshape(n_total, n_a)
        mask = np.zeros((n_total, len(pooled)), dtype=bool)
        np.put_along_axis(mask, groups, True, axis=1)
    else:
        rng = np.random.default_rng(seed)
        order = rng.random((MAX_PERMUTATIONS, len(pooled))).argsort(axis=1)
        mask = order < n_a
    diffs = (mask * pooled).sum(1) / n_a - (~mask * pooled).sum(1) / len(b)
    observed = abs(a.mean() - b.mean())
    # A small tolerance so that float noise in equal differences does not change the count.
    p_value = float(np.mean(np.abs(diffs) >= observed - 1e-9 * max(1.0, observed)))
    # The observed labelling always counts, and with equal group sizes so does its mirror image.
    n_possible = min(n_total, MAX_PERMUTATIONS)
    min_p = min(1.0, (2 if len(a) == len(b) else 1) / n_possible)
    return p_value, min_p


def final_return(run: Run, last_evals: int) -> float:
    """Mean return over every episode of the run's last ``last_evals`` evaluations."""
    return float(run.returns[-last_evals:].mean())


def first_reach(run: Run, threshold: float | None) -> tuple[float, float]:
    """Env steps and seconds at the first evaluation whose mean return is at least ``threshold`` (NaN if never)."""
    if threshold is None:
        return math.nan, math.nan
    hits = np.flatnonzero(run.mean_returns >= threshold)
    if len(hits) == 0:
        return math.nan, math.nan
    seconds = float(run.wall_time[hits[0]]) if run.wall_time is not None else math.nan
    return float(run.timesteps[hits[0]]), seconds


def algo_stats(algo: str, runs: list[Run], threshold: float | None, last_evals: int, n_boot: int) -> AlgoStats:
    """Statistics of one algorithm over its runs."""
    runs = sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
    finals = np.array([final_return(run, last_evals) for run in runs])
    low, high = bootstrap_ci(finals, n_boot)
    reach = np.array([first_reach(run, threshold) for run in runs]).reshape(len(runs), 2)

    def field_of(key: str) -> np.ndarray:
        return np.array([float(run.summary.get(key, math.nan)) for run in runs])

    return AlgoStats(
        algo=algo,
        runs=runs,
        final_returns=finals,
        final_mean=float(finals.mean()),
        final_ci=(float(low), float(high)),
        final_std=float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
        steps_to_threshold=reach[:, 0],
        seconds_to_threshold=reach[:, 1],
        env_steps_per_s=field_of("env_steps_per_s"),
        wall_time_s=field_of("wall_time_s"),
        peak_rss_mib=field_of("peak_rss_mib"),
    )


def verdict(cand: AlgoStats, ref: AlgoStats, n_boot: int) -> Verdict:
    """The learning-equivalence and speed verdicts of ``cand`` against ``ref``."""
    n_c, n_r = len(cand.final_returns), len(ref.final_returns)
    p_value, min_p = permutation_test(cand.final_returns, ref.final_returns)
    overlap = cand.final_ci[0] <= ref.final_ci[1] and ref.final_ci[0] <= cand.final_ci[1]
    means = f"{cand.algo} {cand.final_mean:.1f} vs {ref.algo} {ref.final_mean:.1f}"
    test = f"permutation test p={p_value:.2f}; 95% CIs {'overlap' if overlap else 'do not overlap'}"
    if min(n_c, n_r) < 2:  # one run has no spread: neither the test nor the intervals mean anything
        learning = f"not testable with {n_c} and {n_r} run(s) ({means}); use at least 2 seeds, better 5 or more."
    elif p_value < 0.05:
        learning = f"final returns differ: {means} ({test})."
    elif not overlap:
        learning = f"inconclusive: {means}; the 95% CIs do not overlap but the test does not reject ({test})."
    else:
        learning = f"no evidence of a difference at n={n_c}/{n_r} ({means}; {test}); this is not proof of equality."
    if min_p >= 0.05 and min(n_c, n_r) >= 2:
        learning += f" With {n_c} and {n_r} runs no p-value below {min_p:.2f} is possible: add seeds to test at all."

    # Pair the runs by seed (every algo gets the same seeds), so that each ratio compares runs made side by side.
    cand_sps = {r.seed: s for r, s in zip(cand.runs, cand.env_steps_per_s) if cand.seeds.count(r.seed) == 1}
    ref_sps = {r.seed: s for r, s in zip(ref.runs, ref.env_steps_per_s) if ref.seeds.count(r.seed) == 1}
    paired = sorted(set(cand_sps) & set(ref_sps), key=lambda s: (s is None, s or 0))
    ratios = np.array([cand_sps[s] / ref_sps[s] for s in paired], dtype=float)
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    if len(ratios) == 1:
        ratio, low, high = float(ratios[0]), math.nan, math.nan
        speed = (
            f"{cand.algo} ran at {ratio:.2f}x the env steps per second of {ref.algo} at one paired seed (no spread)."
        )
    elif len(ratios):
        logs = np.log(ratios)
        ratio = float(np.exp(logs.mean()))
        low, high = (float(np.exp(v)) for v in bootstrap_ci(logs, n_boot))
        if low > 1:
            how = f"{cand.algo} is faster than {ref.algo}"
        elif high < 1:
            how = f"{cand.algo} is slower than {ref.algo}"
        else:
            how = f"no clear speed difference between {cand.algo} and {ref.algo}"
        speed = (
            f"{how}: {ratio:.2f}x the env steps per second (geometric mean of "
            f"{len(ratios)} per-seed ratios, 95% bootstrap CI {low:.2f}-{high:.2f}, range "
            f"{ratios.min():.2f}-{ratios.max():.2f})."
        )
    else:
        ratio, low, high = math.nan, math.nan, math.nan
        unpaired = np.nanmean(cand.env_steps_per_s) / np.nanmean(ref.env_steps_per_s)
        speed = f"no runs pair up by seed; ratio of mean env steps per second {unpaired:.2f}x (no spread)."
    return Verdict(cand.algo, ref.algo, p_value, min_p, overlap, learning, ratios, ratio, (low, high), speed)
