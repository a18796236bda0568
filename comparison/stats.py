"""Statistics of one env's runs: final returns with bootstrap CIs, a permutation test, paired speed ratios.

The resampling is ``scipy.stats``' (``bootstrap``, ``permutation_test``), seeded, so that the same runs always give
the same numbers.
"""

import math

import numpy as np
from scipy import stats as sps

from comparison.data import AlgoStats, Run, Verdict

# Exact permutation tests enumerate every relabelling up to this many, then sample this many at random.
MAX_PERMUTATIONS = 20_000


def mean_ci(values: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """
    95% percentile-bootstrap CI of the mean over the first axis (runs), for each remaining entry.

    :param values: (n_runs, ...) array, at least two runs
    :param n_boot: resamples
    :param seed: seeds the resampling
    :return: lower and upper bounds, shaped ``values.shape[1:]``
    """
    values = np.asarray(values, dtype=float)
    result = sps.bootstrap(
        (values,), np.mean, axis=0, n_resamples=n_boot, method="percentile", rng=np.random.default_rng(seed)
    )
    return result.confidence_interval.low, result.confidence_interval.high


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    return a.mean(axis=axis) - b.mean(axis=axis)


def permutation_p_value(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """
    Two-sided permutation test of the difference of means. It assumes no distribution (returns over a handful of
    seeds are not normal); ``scipy.stats.permutation_test`` enumerates every relabelling while there are at most
    :data:`MAX_PERMUTATIONS`, so that it is exact.
    """
    result = sps.permutation_test(
        (np.asarray(a, dtype=float), np.asarray(b, dtype=float)),
        _mean_difference,
        permutation_type="independent",
        n_resamples=MAX_PERMUTATIONS,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def smallest_p_value(n_a: int, n_b: int) -> float:
    """The smallest two-sided p-value :func:`permutation_p_value` can give with these sample sizes: the observed
    labelling is always counted, in each tail."""
    return min(1.0, 2 / min(math.comb(n_a + n_b, n_a), MAX_PERMUTATIONS + 1))


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
    """Statistics of one algorithm over its runs on one env."""
    runs = sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
    finals = np.array([final_return(run, last_evals) for run in runs])
    low, high = mean_ci(finals, n_boot) if len(finals) > 1 else (finals[0], finals[0])
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


def learning_verdict(cand: AlgoStats, ref: AlgoStats) -> tuple[float, str]:
    """The permutation test's p-value on final returns, and the sentence that states what it shows."""
    n_c, n_r = len(cand.final_returns), len(ref.final_returns)
    means = f"{cand.algo} {cand.final_mean:.1f} vs {ref.algo} {ref.final_mean:.1f}"
    if min(n_c, n_r) < 2:  # one run has no spread: neither the test nor the intervals mean anything
        return math.nan, f"not testable with {n_c} and {n_r} run(s) ({means}); use at least 2 seeds, better 5 or more."
    p_value = permutation_p_value(cand.final_returns, ref.final_returns)
    overlap = cand.final_ci[0] <= ref.final_ci[1] and ref.final_ci[0] <= cand.final_ci[1]
    test = f"permutation test p={p_value:.2f}; 95% CIs {'overlap' if overlap else 'do not overlap'}"
    if p_value < 0.05:
        learning = f"final returns differ: {means} ({test})."
    elif not overlap:
        learning = f"inconclusive: {means}; the 95% CIs do not overlap but the test does not reject ({test})."
    else:
        learning = f"no evidence of a difference at n={n_c}/{n_r} ({means}; {test}); this is not proof of equality."
    min_p = smallest_p_value(n_c, n_r)
    if min_p >= 0.05:
        learning += f" With {n_c} and {n_r} runs no p-value below {min_p:.2f} is possible: add seeds to test at all."
    return p_value, learning


def speed_verdict(cand: AlgoStats, ref: AlgoStats, n_boot: int) -> tuple[float, tuple[float, float], str]:
    """Env steps per second of ``cand`` over ``ref``, paired by seed: geometric mean, its CI, and the sentence."""
    # Pair the runs by seed (every algo gets the same seeds), so that each ratio compares runs made side by side.
    cand_sps = {r.seed: s for r, s in zip(cand.runs, cand.env_steps_per_s) if cand.seeds.count(r.seed) == 1}
    ref_sps = {r.seed: s for r, s in zip(ref.runs, ref.env_steps_per_s) if ref.seeds.count(r.seed) == 1}
    paired = sorted(set(cand_sps) & set(ref_sps), key=lambda s: (s is None, s or 0))
    ratios = np.array([cand_sps[s] / ref_sps[s] for s in paired], dtype=float)
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    if len(ratios) == 0:
        unpaired = np.nanmean(cand.env_steps_per_s) / np.nanmean(ref.env_steps_per_s)
        speed = f"no runs pair up by seed; ratio of mean env steps per second {unpaired:.2f}x (no spread)."
        return math.nan, (math.nan, math.nan), speed
    if len(ratios) == 1:
        ratio = float(ratios[0])
        speed = (
            f"{cand.algo} ran at {ratio:.2f}x the env steps per second of {ref.algo} at one paired seed (no spread)."
        )
        return ratio, (math.nan, math.nan), speed
    # Ratios are multiplicative, so their summary is the mean of their logarithms.
    logs = np.log(ratios)
    ratio = float(np.exp(logs.mean()))
    low, high = (float(np.exp(v)) for v in mean_ci(logs, n_boot))
    if low > 1:
        how = f"{cand.algo} is faster than {ref.algo}"
    elif high < 1:
        how = f"{cand.algo} is slower than {ref.algo}"
    else:
        how = f"no clear speed difference between {cand.algo} and {ref.algo}"
    speed = (
        f"{how}: {ratio:.2f}x the env steps per second (geometric mean of {len(ratios)} per-seed ratios, 95% "
        f"bootstrap CI {low:.2f}-{high:.2f}, range {ratios.min():.2f}-{ratios.max():.2f})."
    )
    return ratio, (low, high), speed


def verdict(cand: AlgoStats, ref: AlgoStats, n_boot: int) -> Verdict:
    """The learning and speed verdicts of ``cand`` against ``ref``."""
    p_value, learning = learning_verdict(cand, ref)
    ratio, ratio_ci, speed = speed_verdict(cand, ref, n_boot)
    return Verdict(cand.algo, ref.algo, p_value, learning, ratio, ratio_ci, speed)
