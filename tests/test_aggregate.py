"""The aggregate across envs (rliable's IQM, stratified bootstrap CIs, probability of improvement, performance
profiles) on synthetic run folders whose answer is known, checked against the definitions in Agarwal et al. 2021."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from comparison.aggregate import performance_profile, probability_of_improvement
from comparison.compare import compare

ENVS = ["Pendulum-v1", "MountainCarContinuous-v0"]


def write_run(root: Path, algo: str, env_id: str, seed: int, final: float) -> Path:
    """A run folder as train.py writes it, whose final return (mean of the last two evaluations) is ``final``."""
    folder = root / algo / f"{env_id}_{seed + 1}"
    folder.mkdir(parents=True)
    returns = np.array([[final - 50.0, final - 30.0], [final, final], [final, final]])
    np.savez(
        folder / "evaluations.npz",
        timesteps=np.array([100, 200, 300]),
        results=returns,
        wall_time=np.array([1.0, 2.0, 3.0]),
    )
    summary = {"algo": algo, "env_id": env_id, "seed": seed, "env_steps_per_s": 100.0, "wall_time_s": 3.0}
    (folder / "summary.json").write_text(json.dumps({**summary, "peak_rss_mib": 400.0}))
    return folder


def write_runs(root: Path, finals: dict[str, dict[str, list[float]]]) -> Path:
    """algo -> env -> final return per seed, written as run folders under ``root``."""
    for algo, by_env in finals.items():
        for env_id, values in by_env.items():
            for seed, value in enumerate(values):
                write_run(root, algo, env_id, seed, value)
    return root


def aggregate_of(tmp_path: Path, finals: dict, **kwargs) -> tuple:
    result = compare(
        envs=None, runs=[write_runs(tmp_path / "runs", finals)], log_folder=tmp_path, n_boot=2000, **kwargs
    )
    return result, result.aggregate


def reference_iqm(scores: np.ndarray) -> float:
    """The paper's IQM for a pool whose size is a multiple of 4: the mean of the middle half of the sorted scores."""
    ordered = np.sort(scores)
    quarter = len(ordered) // 4
    return float(ordered[quarter : len(ordered) - quarter].mean())


def reference_improvement(x_by_env: list[np.ndarray], y_by_env: list[np.ndarray]) -> float:
    """The paper's probability of improvement: per env, over every pair of runs, P(X > Y) + 0.5 P(X = Y)."""
    per_env = [np.mean([(a > b) + 0.5 * (a == b) for a in x for b in y]) for x, y in zip(x_by_env, y_by_env)]
    return float(np.mean(per_env))


# Eight seeds per env; sb3's returns on the two envs live on different scales, as real envs' do.
SB3 = {
    "Pendulum-v1": [-900.0, -700.0, -650.0, -400.0, -300.0, -250.0, -200.0, -150.0],
    "MountainCarContinuous-v0": [-30.0, -10.0, 0.0, 20.0, 40.0, 55.0, 70.0, 90.0],
}
RANGES = {"Pendulum-v1": (-1500.0, 0.0), "MountainCarContinuous-v0": (-50.0, 100.0)}


def test_shifted_copies_improve_with_probability_one_and_by_the_shift(tmp_path):
    # custom = sb3 + each env's whole score range: more than sb3's spread, so every custom run beats every sb3 run
    # of its env, and every normalised score moves by exactly 1
    custom = {env: [v + RANGES[env][1] - RANGES[env][0] for v in values] for env, values in SB3.items()}
    result, agg = aggregate_of(tmp_path, {"custom": custom, "sb3": SB3}, score_ranges=RANGES)
    assert agg.improvement["sb3"].value == 1.0
    assert (agg.improvement["sb3"].low, agg.improvement["sb3"].high) == (1.0, 1.0)  # no resample changes that
    assert agg.iqm["custom"].value - agg.iqm["sb3"].value == pytest.approx(1.0)
    assert agg.mean["custom"].value - agg.mean["sb3"].value == pytest.approx(1.0)
    sb3_scores = np.concatenate([agg.scores["sb3"][env] for env in ENVS])
    assert agg.iqm["sb3"].value == pytest.approx(reference_iqm(sb3_scores))
    assert sb3_scores == pytest.approx(
        [(v - RANGES[e][0]) / (RANGES[e][1] - RANGES[e][0]) for e in ENVS for v in SB3[e]]
    )
    assert "custom tends to score higher than sb3" in agg.verdict[0]
    report = (result.folder / "report.md").read_text()
    assert "1.00 [95% CI 1.00, 1.00]" in report and "given (--score-range)" in report


def test_iqm_difference_equals_the_shift_under_min_max_normalisation(tmp_path):
    # custom = sb3 + 10% of each env's own spread: min-max over both algos maps each env's worst sb3 run to 0 and
    # its best custom run to 1, so every score moves by 0.1 / 1.1 on both envs, and the IQM with it
    custom = {env: [v + 0.1 * (max(values) - min(values)) for v in values] for env, values in SB3.items()}
    _, agg = aggregate_of(tmp_path, {"custom": custom, "sb3": SB3})
    assert agg.iqm["custom"].value - agg.iqm["sb3"].value == pytest.approx(0.1 / 1.1)
    assert {how for _, _, how in agg.normalisers.values()} == {"min-max over the runs of every algo"}
    for env in ENVS:
        pooled = np.concatenate([agg.scores["custom"][env], agg.scores["sb3"][env]])
        assert pooled.min() == 0.0 and pooled.max() == 1.0
    # the copies overlap, so improvement is likely but not certain: the paper's pairwise count gives the number
    expected = reference_improvement([agg.scores["custom"][e] for e in ENVS], [agg.scores["sb3"][e] for e in ENVS])
    assert agg.improvement["sb3"].value == pytest.approx(expected) and 0.5 < expected < 1.0
    assert agg.improvement["sb3"].low <= expected <= agg.improvement["sb3"].high


def test_probability_of_improvement_counts_ties_as_half():
    x = [np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0])]
    y = [np.array([2.0, 2.0]), np.array([0.0, 1.0])]
    # env 1: pairs (1,2)x2 lose, (2,2)x2 tie, (3,2)x2 win -> (2 + 1) / 6; env 2: (0,0)x2 tie, (0,1)x2 lose -> 1 / 4
    assert probability_of_improvement(*x, *y) == pytest.approx(((2 + 1) / 6 + 1 / 4) / 2)
    assert probability_of_improvement(*x, *y) == pytest.approx(reference_improvement(x, y))


def test_stratified_bootstrap_resamples_within_each_env(tmp_path):
    # every custom run scores 0.2 on one env and 0.8 on the other: resampling runs within an env never changes the
    # pooled mean (0.5) or IQM, while resampling the pool of 16 runs across envs would
    custom = {"Pendulum-v1": [-1200.0] * 8, "MountainCarContinuous-v0": [70.0] * 8}
    _, agg = aggregate_of(tmp_path, {"custom": custom, "sb3": SB3}, score_ranges=RANGES)
    for estimate in (agg.mean["custom"], agg.iqm["custom"]):
        assert (estimate.value, estimate.low, estimate.high) == pytest.approx((0.5, 0.5, 0.5))
    assert agg.iqm["sb3"].low < agg.iqm["sb3"].value < agg.iqm["sb3"].high  # sb3's runs do spread


def test_performance_profile_is_the_fraction_above_tau_averaged_over_envs():
    scores = {"a": np.array([0.1, 0.5, 0.9, 1.0]), "b": np.array([0.2, 0.6])}
    taus = np.array([0.0, 0.5, 0.95, 1.0])
    # env a: 4/4, 2/4 (0.5 is not above 0.5), 1/4, 0/4; env b: 2/2, 1/2, 0/2, 0/2
    assert performance_profile(scores, taus) == pytest.approx([1.0, 0.5, 0.125, 0.0])


def test_aggregate_csv_and_verdict_state_the_same_numbers(tmp_path):
    sb3_copy = {env: list(values) for env, values in SB3.items()}
    result, agg = aggregate_of(tmp_path, {"custom": sb3_copy, "sb3": SB3})
    table = pd.read_csv(result.folder / "aggregate.csv").set_index("metric")
    poi = table.loc["probability_of_improvement_over_sb3"]
    assert poi["value"] == pytest.approx(0.5)  # identical runs: every pair a tie or mirrored
    assert poi["ci95_low"] < 0.5 < poi["ci95_high"]
    assert "no evidence that either scores higher" in agg.verdict[0] and "not proof of equality" in agg.verdict[0]
    report = (result.folder / "report.md").read_text()
    assert f"{poi['value']:.2f} [95% CI {poi['ci95_low']:.2f}, {poi['ci95_high']:.2f}]" in report
    # the profile of identical runs is identical
    assert np.array_equal(agg.profiles["custom"], agg.profiles["sb3"])
