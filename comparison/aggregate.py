"""The aggregate across envs, with the definitions of rliable (Agarwal et al., 2021, "Deep Reinforcement Learning at
the Edge of the Statistical Precipice"), computed with ``scipy.stats``:

- each run's final return is normalised per env, ``(x - low) / (high - low)``, so that envs with different return
  scales can be pooled;
- the IQM is the mean of the middle 50% of every run's normalised score pooled over envs
  (``trim_mean(x, 0.25)``), the mean is the plain mean of the same pool;
- their 95% CIs come from a stratified bootstrap: the runs are resampled within each env (``scipy.stats.bootstrap``
  with one sample per env), never across envs, so every resample keeps each env's weight;
- the probability of improvement of X over Y is the average over envs of P(X > Y) + 0.5 P(X = Y) for a random run
  of each on that env, which is the Mann-Whitney U statistic divided by ``n_x * n_y``;
- the performance profile is, for each threshold tau, the fraction of runs whose normalised score exceeds tau,
  averaged over envs.
"""

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats as sps

from comparison.data import Aggregate, EnvResult, Estimate

PROFILE_POINTS = 101


def min_max_normalisers(
    finals: Mapping[str, Mapping[str, np.ndarray]], score_ranges: Mapping[str, tuple[float, float]] | None = None
) -> dict[str, tuple[float, float, str]]:
    """
    The score that maps to 0 and to 1 on each env: ``score_ranges[env]`` where given (e.g. a random policy's and a
    reference return), else the lowest and highest final return of every run on that env, all algos together.

    :param finals: env -> algo -> final return per run
    :param score_ranges: env -> (return scored 0, return scored 1)
    :return: env -> (low, high, how they were chosen)
    """
    score_ranges = score_ranges or {}
    normalisers = {}
    for env_id, by_algo in finals.items():
        if env_id in score_ranges:
            low, high = score_ranges[env_id]
            normalisers[env_id] = (float(low), float(high), "given (--score-range)")
        else:
            pooled = np.concatenate(list(by_algo.values()))
            normalisers[env_id] = (float(pooled.min()), float(pooled.max()), "min-max over the runs of every algo")
    return normalisers


def normalise(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(values - low) / (high - low)``; every run at 0 where the runs have no spread at all."""
    values = np.asarray(values, dtype=float)
    return (values - low) / (high - low) if high != low else np.zeros_like(values)


def iqm(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean of the samples pooled along ``axis``: ``trim_mean(x, 0.25)``."""
    return sps.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)


def pooled_mean(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of the samples pooled along ``axis``."""
    return np.concatenate(samples, axis=axis).mean(axis=axis)


def probability_of_improvement(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """
    rliable's probability of improvement: the first half of ``samples`` are X's runs per env, the second half Y's,
    in the same env order. Per env, the Mann-Whitney U of X against Y over ``n_x * n_y`` is P(X > Y) + 0.5 P(X = Y);
    the result is its average over envs.
    """
    n_envs = len(samples) // 2
    per_env = [
        sps.mannwhitneyu(x, y, axis=axis, method="asymptotic").statistic / (x.shape[axis] * y.shape[axis])
        for x, y in zip(samples[:n_envs], samples[n_envs:])
    ]
    return np.mean(per_env, axis=0)


def stratified_estimate(
    samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], n_boot: int, seed: int = 0
) -> Estimate:
    """
    ``statistic(*samples)`` with a 95% percentile CI from a stratified bootstrap: ``scipy.stats.bootstrap``
    resamples each sample (one per env, per algo) on its own. NaN bounds where a sample has fewer than two runs.
    """
    samples = [np.asarray(s, dtype=float) for s in samples]
    value = float(statistic(*samples, axis=-1))
    if min(len(s) for s in samples) < 2:
        return Estimate(value, math.nan, math.nan)
    result = sps.bootstrap(
        samples, statistic, n_resamples=n_boot, vectorized=True, method="percentile", rng=np.random.default_rng(seed)
    )
    return Estimate(value, float(result.confidence_interval.low), float(result.confidence_interval.high))


def performance_profile(scores: Mapping[str, np.ndarray], taus: np.ndarray) -> np.ndarray:
    """Fraction of runs with normalised score above each tau, averaged over envs (env -> scores per run)."""
    return np.mean([(s[:, None] > taus[None, :]).mean(axis=0) for s in scores.values()], axis=0)


def aggregate(
    envs: Mapping[str, EnvResult], n_boot: int, score_ranges: Mapping[str, tuple[float, float]] | None = None
) -> Aggregate:
    """
    rliable's aggregate metrics of every algo over ``envs`` (the first algo is the candidate, the others the
    references for the probability of improvement).

    :param envs: env -> its per-env result
    :param n_boot: bootstrap resamples
    :param score_ranges: env -> (return scored 0, return scored 1); other envs are normalised min-max over the runs
    :return: the aggregate
    """
    algos = list(next(iter(envs.values())).stats)
    finals = {env_id: {a: r.stats[a].final_returns for a in algos} for env_id, r in envs.items()}
    normalisers = min_max_normalisers(finals, score_ranges)
    scores = {a: {env_id: normalise(finals[env_id][a], *normalisers[env_id][:2]) for env_id in envs} for a in algos}
    iqms = {a: stratified_estimate(list(scores[a].values()), iqm, n_boot) for a in algos}
    means = {a: stratified_estimate(list(scores[a].values()), pooled_mean, n_boot) for a in algos}
    cand = algos[0]
    improvement = {
        ref: stratified_estimate([*scores[cand].values(), *scores[ref].values()], probability_of_improvement, n_boot)
        for ref in algos[1:]
    }
    pooled = np.concatenate([s for by_env in scores.values() for s in by_env.values()])
    taus = np.linspace(min(0.0, pooled.min()), max(1.0, pooled.max()), PROFILE_POINTS)
    profiles = {a: performance_profile(scores[a], taus) for a in algos}
    verdict = [aggregate_verdict(cand, ref, iqms, improvement[ref], len(envs)) for ref in algos[1:]]
    return Aggregate(normalisers, scores, iqms, means, improvement, taus, profiles, verdict)


def aggregate_verdict(cand: str, ref: str, iqms: Mapping[str, Estimate], improvement: Estimate, n_envs: int) -> str:
    """One sentence a reader can check against the aggregate table: the IQMs, the probability of improvement and
    what its CI says about 0.5 (no difference)."""
    p = improvement
    numbers = (
        f"IQM of normalised final return {cand} {_estimate(iqms[cand])} vs {ref} {_estimate(iqms[ref])}; "
        f"probability that a {cand} run scores higher than a {ref} run on the same env, averaged over {n_envs} envs: "
        f"{_estimate(p)}"
    )
    if math.isnan(p.low):
        return f"not testable ({numbers}): some env has fewer than 2 runs of an algo, so there is no CI."
    if p.low > 0.5:
        return f"{cand} tends to score higher than {ref} ({numbers}; the CI lies above 0.5)."
    if p.high < 0.5:
        return f"{cand} tends to score lower than {ref} ({numbers}; the CI lies below 0.5)."
    return (
        f"no evidence that either scores higher ({numbers}; the CI contains 0.5, the value for no difference); "
        "this is not proof of equality."
    )


def _estimate(e: Estimate) -> str:
    return f"{e.value:.2f}" + ("" if math.isnan(e.low) else f" [95% CI {e.low:.2f}, {e.high:.2f}]")
