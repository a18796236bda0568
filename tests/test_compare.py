"""scripts/compare.py: real runs at small budgets on two envs, the report's files, --runs without retraining (one env
or several), bad input."""

import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from comparison.compare import compare
from comparison.data import CompareError, Run, find_runs, read_run
from comparison.launch import failure_reason, thread_env
from comparison.plots import curve_band
from comparison.report import AGGREGATE_COLUMNS, CSV_COLUMNS
from comparison.stats import first_reach, mean_ci, permutation_p_value, smallest_p_value

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "compare.py"
# Two seeds of each algo on two envs, 300 steps, tiny networks: a real comparison in seconds.
ENVS = ["Pendulum-v1", "MountainCarContinuous-v0"]
SMALL = ["--seeds", "2", "-n", "300", "--eval-freq", "100", "--eval-episodes", "2"]
SMALL += ["-params", "policy_kwargs:dict(net_arch=[16,16])", "batch_size:32", "learning_starts:50"]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> tuple[Path, Path, str]:
    """One real comparison on two envs (custom vs sb3, 2 seeds, 2 jobs): the log folder, the comparison folder,
    stdout."""
    logs = tmp_path_factory.mktemp("logs")
    proc = run_cli("--envs", *ENVS, *SMALL, "--jobs", "2", "-f", str(logs))
    assert proc.returncode == 0, proc.stderr
    return logs, logs / "compare" / ("+".join(ENVS) + "_1"), proc.stdout


@pytest.fixture(scope="module")
def trained(multi) -> tuple[Path, Path, str]:
    """The Pendulum runs of ``multi`` compared alone (``--runs --envs Pendulum-v1``): the log folder, the comparison
    folder, stdout."""
    logs = multi[0]
    proc = run_cli("--runs", str(logs), "--envs", "Pendulum-v1", "--threshold", "-2000", "-f", str(logs))
    assert proc.returncode == 0, proc.stderr
    return logs, logs / "compare" / "Pendulum-v1_1", proc.stdout


def test_compare_writes_its_folder(multi):
    logs, folder, stdout = multi
    for name in (
        "curves_Pendulum-v1.png",
        "curves_MountainCarContinuous-v0.png",
        "aggregate.png",
        "aggregate.csv",
        "report.md",
        "summary.csv",
        "runs.txt",
    ):
        assert (folder / name).is_file(), name
    # a progress line per finished run, and every run an ordinary run folder
    assert sum(line.startswith("[") and "/8]" in line for line in stdout.splitlines()) == 8
    runs = [Path(line) for line in (folder / "runs.txt").read_text().splitlines()]
    assert len(runs) == 8 and {run.parent.name for run in runs} == {"custom", "sb3"}
    for run in runs:
        assert run.parent.parent == logs.resolve()
        for name in ("evaluations.npz", "summary.json", "config.yml", "command.txt"):
            assert (run / name).is_file()
    seeds = sorted((read_run(run).env_id, read_run(run).algo, read_run(run).seed) for run in runs)
    assert seeds == sorted((env, algo, seed) for env in ENVS for algo in ("custom", "sb3") for seed in (0, 1))


def test_multi_env_report_gives_the_aggregate_verdict_with_its_numbers(multi):
    folder = multi[1]
    report = (folder / "report.md").read_text()
    table = pd.read_csv(folder / "summary.csv")
    assert (
        list(table["env"]) == [env for env in ENVS for _ in range(2)] and list(table["algo"]) == ["custom", "sb3"] * 2
    )
    agg = pd.read_csv(folder / "aggregate.csv")
    assert list(agg.columns) == AGGREGATE_COLUMNS
    assert list(agg["metric"]) == ["iqm", "iqm", "mean", "mean", "probability_of_improvement_over_sb3"]
    # min-max normalisation over the runs: every score in [0, 1], and the estimates inside their CIs
    assert ((agg["ci95_low"] <= agg["value"]) & (agg["value"] <= agg["ci95_high"])).all(), agg
    assert ((agg["ci95_low"] >= 0) & (agg["ci95_high"] <= 1)).all(), agg
    assert "## Aggregate over 2 envs" in report and "**Verdict, custom vs sb3:**" in report
    poi = agg.iloc[-1]
    # the verdict quotes the numbers of aggregate.csv, and its words follow from where the CI lies against 0.5
    assert f"{poi['value']:.2f} [95% CI {poi['ci95_low']:.2f}, {poi['ci95_high']:.2f}]" in report
    words = (
        "tends to score higher"
        if poi["ci95_low"] > 0.5
        else "tends to score lower"
        if poi["ci95_high"] < 0.5
        else "no evidence that either scores higher"
    )
    assert words in report
    for env in ENVS:
        assert f"## {env}" in report and f"curves_{env}.png" in report and "min-max over the runs" in report
    # MountainCarContinuous-v0 is registered with a reward threshold of 90; the report says where it came from
    assert "Threshold 90 (the env's registered reward_threshold)" in report
    assert "Threshold -200 (this project's default for the env)" in report


def test_runs_over_several_envs_rebuild_the_same_comparison(multi):
    logs, folder, _ = multi
    proc = run_cli("--runs", *(folder / "runs.txt").read_text().split(), "-f", str(logs))
    assert proc.returncode == 0, proc.stderr
    again = logs / "compare" / ("+".join(sorted(ENVS)) + "_1")  # with --runs the envs come sorted
    assert not (again / "train_logs").exists()
    reorder = lambda t: t.sort_values(["env", "algo"]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(
        reorder(pd.read_csv(again / "summary.csv")), reorder(pd.read_csv(folder / "summary.csv"))
    )
    # the aggregate does not depend on the order of the envs: the stratified resampling is per env
    assert pd.read_csv(again / "aggregate.csv").iloc[:, :3].equals(pd.read_csv(folder / "aggregate.csv").iloc[:, :3])


def test_summary_csv_one_finite_row_per_algo(trained):
    table = pd.read_csv(trained[1] / "summary.csv")
    assert list(table.columns) == CSV_COLUMNS
    assert list(table["algo"]) == ["custom", "sb3"] and list(table["env"]) == ["Pendulum-v1"] * 2
    numbers = table.drop(columns=["env", "algo"])
    assert np.isfinite(numbers.to_numpy(dtype=float)).all(), numbers
    assert (table["runs"] == 2).all() and (table["runs_reaching_threshold"] == 2).all()
    assert (table["final_return_ci95_low"] <= table["final_return_mean"]).all()
    assert (table["final_return_mean"] <= table["final_return_ci95_high"]).all()


def test_curves_png_decodes(trained):
    with Image.open(trained[1] / "curves.png") as image:
        image.load()
        assert image.width > 500 and image.height > 300


def test_report_says_what_was_run(trained):
    report = (trained[1] / "report.md").read_text()
    for text in (
        "## Verdict",
        "permutation test",
        "**Speed, custom vs sb3:**",
        "geometric mean",
        "curves.png",
        "| torch |",
        "| stable_baselines3 |",
        "| gymnasium |",
        "batch_size: 32",
        "seeds: custom 0 1",
        "CPU cores",
        "Evaluation every 100 env steps, 2 episodes each",
        "--runs $(cat",
    ):
        assert text in report, text
    assert "Failed runs" not in report
    # 2 runs against 2 cannot give p < 0.05: the report says so instead of declaring anything equal
    assert "no p-value below 0.33 is possible" in report


def test_runs_reproduce_the_summary_without_training(trained):
    logs, folder, _ = trained
    trained_runs = sorted([*logs.glob("custom/*"), *logs.glob("sb3/*")])
    runs = (folder / "runs.txt").read_text().split()
    by_glob = run_cli(
        "--runs", *runs, "-f", str(logs), "--threshold", "-2000"
    )  # as a shell would expand logs/*/Pendulum-v1_*
    # a folder holding run folders (of both envs: --env keeps one)
    by_folder = run_cli("--runs", str(logs), "--env", "Pendulum-v1", "-f", str(logs), "--threshold", "-2000")
    assert by_glob.returncode == 0 and by_folder.returncode == 0, by_glob.stderr + by_folder.stderr
    assert sorted([*logs.glob("custom/*"), *logs.glob("sb3/*")]) == trained_runs  # nothing was trained
    for new in ("Pendulum-v1_2", "Pendulum-v1_3"):  # ids go up, nothing overwritten
        assert not (logs / "compare" / new / "train_logs").exists()
        assert (logs / "compare" / new / "summary.csv").read_text() == (folder / "summary.csv").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--algos", "custom", "nope"], "unknown algo 'nope'"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--runs", "{empty}"], "no run folders"),
        (["--runs", "{empty}/missing"], "does not exist"),
        (["-params", "actor_learning_rate:1e-3"], "unknown hyperparameter 'actor_learning_rate' for --algo sb3"),
        (["--runs", "{empty}", "-n", "100"], "-n: training options, unused by --runs"),
        (["--envs", "Pendulum-v1", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
        (["--env", "Pendulum-v1", "--envs", "Pendulum-v1"], "--env and --envs: give one of them"),
        (["--threshold", "Pendulum-v1=high"], "--threshold: expected a number, got 'high'"),
        (["--score-range", "Pendulum-v1=0"], "--score-range: expected ENV=LOW,HIGH"),
        (["--score-range", "Pendulum-v1=0,-1"], "the return scored 1 must be above the one scored 0"),
        (["-n", "Hopper-v5=100", "--score-range", "Pendulum-v1=0,1"], "-n Hopper-v5=...: Hopper-v5 is not compared"),
        (
            ["--envs", "Pendulum-v1", "MountainCarContinuous-v0", "-n", "800"],
            "Pendulum-v1: 800 steps per run end before the first evaluation (every 1000 steps, train.py's default), "
            "so no run would have a result; pass --eval-freq 400 (or less), or a larger -n",
        ),
        (["-n", "Pendulum-v1=500", "--eval-freq", "600"], "every 600 steps, --eval-freq"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    proc = run_cli(*[a.format(empty=tmp_path) for a in args], "-f", str(tmp_path / "logs"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "logs" / "compare").exists()  # refused before anything was made


def test_runs_must_cover_every_algo_on_every_env(trained, tmp_path):
    runs = [Path(p) for p in (trained[1] / "runs.txt").read_text().split()]
    other = tmp_path / "custom" / "MountainCarContinuous-v0_1"
    shutil.copytree(runs[0], other)
    summary = json.loads((other / "summary.json").read_text())
    (other / "summary.json").write_text(json.dumps({**summary, "env_id": "MountainCarContinuous-v0"}))
    with pytest.raises(CompareError, match="no runs of sb3 on MountainCarContinuous-v0"):
        compare(runs=[*runs, other], log_folder=tmp_path)
    with pytest.raises(CompareError, match="no runs on Hopper-v5"):
        compare(envs=["Pendulum-v1", "Hopper-v5"], runs=runs, log_folder=tmp_path)
    assert not (tmp_path / "compare").exists()


FAKE_TRAIN = """
import argparse, json, os, shutil, sys
from pathlib import Path
parser = argparse.ArgumentParser()
parser.add_argument("--algo"); parser.add_argument("--seed", type=int); parser.add_argument("-f")
args, _ = parser.parse_known_args()
if (args.algo, args.seed) in [tuple(x) for x in json.loads(os.environ["FAKE_FAIL"])]:
    sys.exit("Traceback ...\\nRuntimeError: boom")
source = Path(json.loads(os.environ["FAKE_SOURCE"])[str(args.seed)])
run = Path(args.f) / args.algo / f"Pendulum-v1_{args.seed}"
shutil.copytree(source, run)
summary = json.loads((run / "summary.json").read_text())
(run / "summary.json").write_text(json.dumps({**summary, "algo": args.algo, "seed": args.seed}))
print(f"run folder: {run}")
"""


@pytest.fixture
def fake_train(trained, tmp_path, monkeypatch) -> Path:
    """A stand-in for train.py that copies the real custom runs (to test orchestration without training)."""
    runs = [read_run(p) for p in find_runs([trained[0] / "custom"])]
    sources = {run.seed: str(run.path) for run in runs if run.env_id == "Pendulum-v1"}
    monkeypatch.setenv("FAKE_SOURCE", json.dumps(sources))
    script = tmp_path / "fake_train.py"
    script.write_text(textwrap.dedent(FAKE_TRAIN))
    return script


def test_a_failed_run_is_reported_and_left_out(fake_train, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", json.dumps([["sb3", 1]]))
    lines: list[str] = []
    result = compare(
        algos=["custom", "sb3", "tqc"],
        seeds=2,
        log_folder=tmp_path,
        train_command=[sys.executable, str(fake_train)],
        echo=lines.append,
    )
    assert [f.algo for f in result.failed] == ["sb3"] and "boom" in result.failed[0].stderr_tail
    assert any("sb3 seed 1: FAILED (exit 1" in line and "boom" in line for line in lines)
    env = result.envs["Pendulum-v1"]
    assert [len(s.runs) for s in env.stats.values()] == [2, 1, 2]
    assert [(v.candidate, v.reference) for v in env.verdicts] == [("custom", "sb3"), ("custom", "tqc")]
    report = (result.folder / "report.md").read_text()
    assert "## Failed runs" in report and "RuntimeError: boom" in report
    assert len(pd.read_csv(result.folder / "summary.csv")) == 3


def test_every_run_of_an_algo_failing_is_an_error(fake_train, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", json.dumps([["sb3", 0], ["sb3", 1]]))
    with pytest.raises(CompareError, match=r"every run of sb3 failed .*boom"):
        compare(seeds=2, log_folder=tmp_path, train_command=[sys.executable, str(fake_train)], echo=lambda line: None)


TRACEBACK = """Traceback (most recent call last):
  File "train.py", line 93, in <module>
    run_main(main)
ValueError: could not broadcast input array from shape (1,3) into shape (1,9)
TensorBoard: tensorboard --logdir logs/tensorboard
/usr/lib/python3/matplotlib/__init__.py:1: UserWarning: Matplotlib is building the font cache
"""


@pytest.mark.parametrize(
    ("stderr", "returncode", "reason"),
    [
        (TRACEBACK, 1, "ValueError: could not broadcast input array from shape (1,3) into shape (1,9)"),
        (
            "UserWarning: slow\nerror: unknown env id 'Pendulm-v1'; did you mean Pendulum-v1?\nhint\n",
            1,
            "error: unknown env id 'Pendulm-v1'; did you mean Pendulum-v1?",
        ),
        ("", -9, "killed by signal 9"),
        ("warning: no video\nSegmentation fault\n", 139, "Segmentation fault"),
    ],
)
def test_a_failed_runs_reason_is_its_error_not_its_last_line(stderr, returncode, reason):
    assert failure_reason(stderr, returncode) == reason


def test_parallel_jobs_share_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert thread_env(4)["CUSTOM_SAC_TORCH_THREADS"] == "2" and thread_env(4)["OMP_NUM_THREADS"] == "2"
    assert thread_env(16)["MKL_NUM_THREADS"] == "1"
    monkeypatch.delenv("CUSTOM_SAC_TORCH_THREADS", raising=False)
    assert "CUSTOM_SAC_TORCH_THREADS" not in thread_env(1)  # one job: torch's own choice


# ----------------------------------------------------------------------------------------------- statistics
def test_permutation_test_is_exact():
    p = permutation_p_value(np.arange(5.0), np.arange(10.0, 15.0))
    assert p == pytest.approx(2 / 252) and smallest_p_value(5, 5) == pytest.approx(2 / 252)  # C(10, 5) relabellings
    assert permutation_p_value(np.ones(3), np.ones(3)) == 1.0
    # of the 20 splits of {0..5} into 3 + 3, those whose first sum is <= 6 or >= 9 (7 + 7) differ by at least 1
    p = permutation_p_value(np.array([0.0, 2.0, 4.0]), np.array([1.0, 3.0, 5.0]))
    assert p == pytest.approx(14 / 20)


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    values = np.random.default_rng(1).normal(size=(20, 3))
    low, high = mean_ci(values)
    assert low.shape == (3,) and np.all(low < values.mean(0)) and np.all(values.mean(0) < high)
    assert np.array_equal(low, mean_ci(values)[0])
    # the percentile interval of the mean of resampled runs: about mean +- 1.96 standard errors
    sem = values.std(axis=0, ddof=1) / np.sqrt(len(values))
    assert np.allclose(high - low, 2 * 1.96 * sem, rtol=0.15)


def test_first_reach_and_curve_band():
    run = Run(
        Path("x"),
        "custom",
        "Pendulum-v1",
        0,
        np.array([100.0, 200.0, 300.0]),
        np.array([[-900.0, -700.0], [-300.0, -100.0], [-150.0, -150.0]]),
        np.array([1.0, 2.0, 3.0]),
        {},
        {},
        "",
    )
    assert first_reach(run, -200) == (200.0, 2.0)
    assert all(math.isnan(v) for v in first_reach(run, 0.0))
    grid, mean, low, high = curve_band(
        [np.array([0.0, 2.0, 4.0]), np.array([1.0, 3.0, 5.0])], [np.array([0.0, 2.0, 4.0]), np.array([2.0, 4.0, 6.0])]
    )
    assert list(grid) == [1.0, 2.0, 3.0, 4.0]  # the span both runs cover
    assert np.allclose(mean, [1.5, 2.5, 3.5, 4.5]) and np.all(low <= mean) and np.all(mean <= high)
