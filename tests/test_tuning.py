"""Tuning: real storages (SQLite, journal file, PostgreSQL), real training on tiny budgets, the CLI end to end."""

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from experiment.config import load_hyperparams
from tuning.objective import make_pruner
from tuning.space import TuningError, load_space, make_sampler
from tuning.storage import StudyStorage, mask_url
from tuning.study import open_study, tune

ROOT = Path(__file__).resolve().parents[1]
TUNE = [sys.executable, str(ROOT / "scripts" / "tune.py")]
# A tiny study: 300 steps, 3 evaluations of one 100-step episode, 16-unit networks (about a second per trial)
TINY_SPACE = {
    "fixed": {
        "learning_starts": 50,
        "batch_size": 32,
        "buffer_size": 5000,
        "policy_kwargs": "dict(net_arch=[16, 16])",
    }
}
TINY = ["-n", "300", "--n-evaluations", "3", "--eval-episodes", "1", "--max-episode-steps", "100"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return path


def run_tune(*args, env=None, check=True):
    result = subprocess.run([*TUNE, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def tiny_tune(tmp_path, space_file, **kwargs):
    options = dict(n_timesteps=300, n_evaluations=3, eval_episodes=1, max_episode_steps=100, space=space_file)
    return tune(
        "custom",
        "Pendulum-v1",
        log_folder=tmp_path / "logs",
        argv=["test"],
        log=lambda _: None,
        **{**options, **kwargs},
    )


def test_space_is_data_and_yaml_overrides_it(tmp_path):
    default = load_space()
    assert set(default.params) == {"learning_rate", "tau", "target_entropy_scale"}
    assert default.params["tau"] == {"type": "float", "low": 1e-3, "high": 0.1, "log": True}
    separate = load_space(separate_learning_rates=True, extra=["gamma", "net_width"])
    assert {"actor_learning_rate", "critic_learning_rate", "ent_coef_learning_rate", "gamma"} <= set(separate.params)
    assert "learning_rate" not in separate.params
    path = tmp_path / "space.yml"
    path.write_text(yaml.safe_dump({"params": {"tau": None, "learning_rate": {"low": 1e-6}}, "fixed": {"gamma": 0.9}}))
    space = load_space(path)
    assert "tau" not in space.params and space.params["learning_rate"]["low"] == 1e-6 and space.fixed == {"gamma": 0.9}
    # Translated names: target entropy as a multiple of -dim(A), net width as policy_kwargs
    trial = optuna.create_study().ask({"target_entropy_scale": optuna.distributions.FloatDistribution(0.5, 0.5)})
    hyperparams = load_space(extra=["net_width"]).sample(trial, action_dim=3)
    assert hyperparams["target_entropy"] == -1.5
    assert re.fullmatch(r"dict\(net_arch=\[(\d+), \1\]\)", hyperparams["policy_kwargs"])
    with pytest.raises(TuningError, match="separate learning rates"):
        load_space(separate_learning_rates=True, algo="sb3")
    path.write_text("params: {tau: {low: 0.5, high: 0.1}}")
    with pytest.raises(TuningError, match="low <= high"):
        load_space(path)


def test_sampler_is_seeded():
    def first_params(seed, n=3):
        study = optuna.create_study(sampler=make_sampler("tpe", seed), direction="maximize")
        space, params = load_space(), []
        for _ in range(n):
            trial = study.ask()
            space.sample(trial, action_dim=1)
            study.tell(trial, 0.0)
            params.append(trial.params)
        return params

    assert first_params(3) == first_params(3)
    assert first_params(3)[0] != first_params(4)[0]


def test_sqlite_study_resumes_and_exports(tmp_path, space_file):
    logs = tmp_path / "logs"
    out = run_tune("--algo", "custom", "--n-trials", 2, *TINY, "--space", space_file, "-f", logs, "--pruner", "none")
    assert "trial 1 COMPLETE" in out.stdout and "retrain: custom-sac-train --algo custom" in out.stdout
    assert "optuna-dashboard sqlite:///" in out.stdout
    # The same command with a larger total resumes the study and adds trials
    run_tune("--algo", "custom", "--n-trials", 3, *TINY, "--space", space_file, "-f", logs, "--pruner", "none")
    folder = logs / "optuna" / "custom_Pendulum-v1"
    study = optuna.load_study(study_name="custom_Pendulum-v1", storage=f"sqlite:///{logs}/optuna/custom_Pendulum-v1.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert [t.user_attrs["seed"] for t in study.trials] == [0, 1, 2]
    trials = pd.read_csv(folder / "trials.csv")
    assert list(trials["number"]) == [0, 1, 2] and {"value", "state", "duration", "params_tau"} <= set(trials.columns)
    assert len((folder / "command.txt").read_text().splitlines()) == 2
    for plot in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (folder / f"{plot}.png").stat().st_size > 0
    # The exported YAML is a flat hyperparameter file the runner accepts as it is
    best_yaml = folder / "best_hyperparams.yml"
    hyperparams = load_hyperparams("custom", "Pendulum-v1", config=best_yaml)
    best = study.best_trial
    assert hyperparams["learning_rate"] == pytest.approx(best.params["learning_rate"])
    assert hyperparams["target_entropy"] == pytest.approx(-1.0 * best.params["target_entropy_scale"])
    assert hyperparams["policy_kwargs"] == "dict(net_arch=[16, 16])" and hyperparams["n_timesteps"] == 20000
    train = ROOT / "scripts" / "train.py"
    result = subprocess.run(
        [
            sys.executable,
            str(train),
            "--algo",
            "custom",
            "--config",
            str(best_yaml),
            "-n",
            "300",
            "--eval-freq",
            "150",
            "--no-progress",
            "-f",
            str(tmp_path / "train"),
            "-tb",
            "",
            "--save-freq",
            "0",
            "--video-freq",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def postgres_url() -> str:
    """The test server's URL: the one .ci/run exported, else start the server here with the same script."""
    if not os.environ.get("CUSTOM_SAC_TEST_POSTGRES_URL"):
        proc = subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh")], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"could not start PostgreSQL with .ci/postgres.sh (needs root and apt): {proc.stderr[-2000:]}")
        for line in proc.stdout.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            os.environ[key] = value
    return os.environ["CUSTOM_SAC_TEST_POSTGRES_URL"]


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_two_workers_share_one_study_exactly(tmp_path, space_file, kind, monkeypatch):
    name = f"workers_{kind}_{uuid.uuid4().hex[:8]}"
    if kind == "sqlite":
        storage = f"sqlite:///{tmp_path}/shared.db"
    elif kind == "journal":
        storage = str(tmp_path / "shared.log")
    else:
        storage = postgres_url()
        # The password comes from the environment, as a user's would (or from ~/.pgpass)
        monkeypatch.setenv("PGPASSWORD", os.environ.get("CUSTOM_SAC_TEST_POSTGRES_PASSWORD", ""))
    env = dict(os.environ)
    args = [
        "--algo",
        "custom",
        "--n-trials",
        6,
        *TINY,
        "--space",
        space_file,
        "-f",
        tmp_path / "logs",
        "--storage",
        storage,
        "--study-name",
        name,
        "--pruner",
        "none",
    ]
    workers = [
        subprocess.Popen(
            [*TUNE, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stdout + stderr
    ran = [re.findall(r"trial (\d+) (COMPLETE|PRUNED|FAIL)", stdout) for stdout, _ in outputs]
    numbers = sorted(int(number) for worker_ran in ran for number, _ in worker_ran)
    assert numbers == list(range(6)), ran  # every trial run once, by one worker, none lost
    study = optuna.load_study(study_name=name, storage=StudyStorage(storage, name, tmp_path / "logs").storage)
    assert len(study.trials) == 6
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert (tmp_path / "logs" / "optuna" / name / "best_hyperparams.yml").exists()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_workers_opening_a_new_study_together_agree_on_what_it_tunes(tmp_path, kind, monkeypatch):
    # Workers started together once failed: one read the study's algo after another had written it, but before its
    # env_id ("tunes --algo custom on None"). Six workers (threads, each with its own storage, as processes would have)
    # open each fresh study at the same moment.
    url = f"sqlite:///{tmp_path}/shared.db" if kind == "sqlite" else postgres_url()
    monkeypatch.setenv("PGPASSWORD", os.environ.get("CUSTOM_SAC_TEST_POSTGRES_PASSWORD", ""))

    made_for = {"algo": "custom", "env_id": "Pendulum-v1"}

    def open_for(store, algo="custom"):
        return open_study(store, make_sampler("random", 0), make_pruner("none", 3), algo, "Pendulum-v1")

    for _ in range(8):
        name = f"opening_{kind}_{uuid.uuid4().hex[:8]}"
        stores = [StudyStorage(url, name, tmp_path) for _ in range(6)]
        start = threading.Barrier(len(stores))

        def open_one(store, start=start):
            start.wait()
            return open_for(store)

        with ThreadPoolExecutor(len(stores)) as pool:
            studies = list(pool.map(open_one, stores))
        assert [s.user_attrs for s in studies] == [made_for] * len(stores)
        for store in stores[1:]:
            store.close()  # 48 open pools would use up the server's 100 connections (CI once failed so)
    # A study made for one algo and env is refused to another, in one line that says what it tunes
    with pytest.raises(TuningError, match=r"tunes --algo custom on Pendulum-v1; pass another --study-name"):
        open_for(stores[0], algo="sb3")
    # A study whose creator died between writing algo and env_id is completed, not refused
    half = optuna.create_study(storage=stores[0].storage, study_name=f"half_{uuid.uuid4().hex[:8]}")
    half.set_user_attr("algo", "custom")
    with StudyStorage(url, half.study_name, tmp_path) as store:
        assert open_for(store).user_attrs == made_for
    stores[0].close()


def test_pruning_prunes_a_bad_region(tmp_path):
    # Learning rates up to 0.5 on 300 steps: a region that mostly fails; successive halving keeps the best third.
    space = tmp_path / "bad.yml"
    space.write_text(yaml.safe_dump({**TINY_SPACE, "params": {"learning_rate": {"low": 1e-6, "high": 0.5}}}))
    study = tiny_tune(tmp_path, space, n_trials=5, pruner="halving", study_name="pruning")
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, [(t.number, t.state, t.value) for t in study.trials]
    assert all(t.user_attrs["reason"].startswith(("pruned after evaluation", "diverged")) for t in pruned)


def test_diverging_and_raising_trials_are_recorded_and_the_study_goes_on(tmp_path, space_file):
    storage = StudyStorage(None, "diverge", tmp_path / "logs")
    study = optuna.create_study(storage=storage.storage, study_name="diverge", direction="maximize")
    study.enqueue_trial({"learning_rate": 1e3}, skip_if_exists=False)  # explodes within a few updates
    study.enqueue_trial({"learning_rate": -1.0})  # the optimizer refuses it: the trial raises
    study = tiny_tune(tmp_path, space_file, n_trials=3, pruner="none", study_name="diverge")
    first, second, third = study.trials
    assert first.state == TrialState.PRUNED and first.user_attrs["reason"].startswith("diverged")
    assert second.state == TrialState.FAIL and "-1.0" in second.user_attrs["reason"]
    assert third.state == TrialState.COMPLETE


def test_bad_storage_is_one_clear_line_and_passwords_are_masked(tmp_path, space_file):
    logs = tmp_path / "logs"
    unreachable = "postgresql://tuner:s3cret-pw@127.0.0.1:1/nowhere"
    result = run_tune("--algo", "custom", "--storage", unreachable, *TINY, "-f", logs, "--study-name", "x", check=False)
    assert result.returncode != 0
    assert result.stderr.startswith("error: cannot open storage postgresql://tuner:***@127.0.0.1:1/nowhere")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    command = (logs / "optuna" / "x" / "command.txt").read_text()
    assert "tuner:***@" in command and "s3cret-pw" not in command
    result = run_tune("--algo", "custom", "--storage", "nosuchdb://host/db", "-f", logs, check=False)
    assert result.returncode != 0 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert mask_url("mysql+pymysql://u:p@h/db") == "mysql+pymysql://u:***@h/db"
    with pytest.raises(TuningError, match="cannot open storage"):
        StudyStorage("postgresql://tuner:pw@127.0.0.1:1/db", "x", logs)


@pytest.mark.parametrize(
    "space, problem",
    [
        ({"params": {"learing_rate": {"type": "float", "low": 1e-5, "high": 1e-3}}}, "did you mean learning_rate"),
        ({"params": {"batch_size": {"type": "categorical", "choices": [64, "big"]}}}, "batch_size: 'big' does not"),
        ({"params": {"gamma": {"type": "float", "low": 0.9, "high": 0.99, "step": -0.01}}}, "space parameter gamma"),
        ({"params": {"actor_learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3}}}, "for --algo sb3"),
        ({"params": {"tau": {"low": 0.01, "high": 2.0}}}, "tau: 2.0 does not work: tau must be a number in (0, 1]"),
    ],
)
def test_a_bad_search_space_is_refused_before_the_first_trial(tmp_path, space, problem):
    path = tmp_path / "space.yml"
    path.write_text(yaml.safe_dump(space))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(TuningError, match=re.escape(problem)):
        tune("sb3", "Pendulum-v1", space=path, n_timesteps=300, log_folder=tmp_path / "logs", argv=["t"], log=print)
    assert sorted(tmp_path.rglob("*")) == before  # no study, no folder: the budget is untouched


def test_a_misspelt_space_parameter_is_one_error_line(tmp_path):
    path = tmp_path / "space.yml"
    path.write_text("params:\n  learing_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}\n")
    result = run_tune("--algo", "custom", "--space", path, "-f", tmp_path / "logs", check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.startswith("error: space parameter learing_rate:")
    assert "did you mean learning_rate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()


def test_two_worker_processes_repeat_the_same_trials(tmp_path, space_file):
    # Trial k trains with seed + k in whichever process runs it: two studies with the same seed and two workers
    # each, and one with a single worker, hold the same parameters and the same scores trial by trial.
    def outcome(name, n_jobs):
        study = tiny_tune(tmp_path, space_file, n_trials=3, pruner="none", study_name=name, n_jobs=n_jobs, seed=7)
        in_this_process = {t.user_attrs["worker"].endswith(f":{os.getpid()}") for t in study.trials}
        assert in_this_process == {n_jobs == 1}  # two jobs are two other processes
        return [(t.number, t.state, t.params, t.value, t.user_attrs["seed"]) for t in study.trials]

    first = outcome("jobs2_a", 2)
    assert [seed for *_, seed in first] == [7, 8, 9]
    assert first == outcome("jobs2_b", 2) == outcome("jobs1", 1)


def study_trials(storage: StudyStorage) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=storage.study_name, storage=storage.storage).trials
    except KeyError:  # the workers have not created it yet
        return []


def _collect(lines, stream):
    for line in stream:
        lines.append(line)


class Worker:
    """A tune.py process whose output lines are collected as they come (so a test can wait for one)."""

    def __init__(self, args, env=None):
        self.process = subprocess.Popen(
            [*TUNE, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.pid = self.process.pid
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        streams = ((self.stdout, self.process.stdout), (self.stderr, self.process.stderr))
        self._readers = [threading.Thread(target=_collect, args=pair, daemon=True) for pair in streams]
        for reader in self._readers:
            reader.start()

    def wait(self, timeout=300):
        """The exit code, once the process has ended and all its output is read."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join()
        return code

    def output(self):
        return "".join(self.stdout) + "".join(self.stderr)


def wait_for(condition, seconds=120.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def shared_study_args(tmp_path, space_file, storage, name, n_trials, heartbeat) -> list:
    """A worker's command line for a study several workers share: the tiny budget, 600 steps a trial, no pruning."""
    options = {"--n-trials": n_trials, "-n": 600, "--space": space_file, "-f": tmp_path / "logs", "--storage": storage}
    options |= {"--study-name": name, "--pruner": "none", "--heartbeat": heartbeat}
    return ["--algo", "custom", *TINY, *itertools.chain.from_iterable(options.items())]  # the last -n counts


def test_a_worker_killed_mid_trial_is_failed_by_heartbeat_and_its_trial_retried(tmp_path, space_file):
    storage, name = f"sqlite:///{tmp_path}/shared.db", "killed"
    view = StudyStorage(storage, name, tmp_path, heartbeat_interval=None)  # the test's own look at the study
    args = [*shared_study_args(tmp_path, space_file, storage, name, n_trials=3, heartbeat=1), "--seed", 1]
    victim, survivor = Worker(args), Worker(args)

    def victim_running():
        mine = [t for t in study_trials(view) if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
        return [t for t in mine if t.state == TrialState.RUNNING and len(t.params) == 3]  # sampled: training

    wait_for(victim_running)
    killed = victim_running()[0]
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert survivor.wait() == 0, survivor.output()
    assert f"trial {killed.number} FAIL (its worker stopped sending heartbeats)" in "".join(survivor.stdout)
    trials = study_trials(view)
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params == trials[killed.number].params
    assert retries[0].user_attrs["seed"] == killed.user_attrs["seed"] == 1 + killed.number  # seed 1: --seed 1
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3 and len(trials) == 4


def test_workers_outlive_a_postgresql_restart(tmp_path, space_file, monkeypatch):
    url, name = postgres_url(), f"restart_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PGPASSWORD", os.environ.get("CUSTOM_SAC_TEST_POSTGRES_PASSWORD", ""))
    view = StudyStorage(url, name, tmp_path, heartbeat_interval=None)  # the test's own look at the study
    args = shared_study_args(tmp_path, space_file, url, name, n_trials=4, heartbeat=30)
    # A 60 s grace period: the outage below, however slow the machine, must not make a running trial stale (the
    # stale-trial path has its own test, with SIGKILL)
    workers = [Worker(args, env=dict(os.environ)) for _ in range(2)]
    wait_for(lambda: sum(t.state == TrialState.RUNNING for t in study_trials(view)) == 2)
    postgres("stop")  # down until a worker has met the outage (or died of it)
    wait_for(lambda: any("database connection lost" in w.output() or w.process.poll() is not None for w in workers))
    postgres()  # started again
    postgres("restart")  # and pg_ctl restart: every open session is cut
    for worker in workers:
        assert worker.wait() == 0, worker.output()
    ran = sorted(int(n) for w in workers for n in re.findall(r"trial (\d+) COMPLETE", "".join(w.stdout)))
    trials = study_trials(view)
    seen = [(t.number, t.state.name, t.system_attrs.get("failed_trial")) for t in trials], [w.output() for w in workers]
    assert ran == [t.number for t in trials if t.state == TrialState.COMPLETE] == [0, 1, 2, 3], seen
    assert [t.state for t in trials if t.state != TrialState.WAITING] == [TrialState.COMPLETE] * 4, seen


def postgres(*command):
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "postgres.sh"), *command], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
