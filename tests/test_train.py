"""scripts/train.py, evaluate.py and plot.py end to end, through subprocesses, on small budgets."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiment.config import ALGOS, load_hyperparams
from experiment.envs import make_env
from experiment.run import create_model

REPO = Path(__file__).resolve().parents[1]
TINY = ["-params", "learning_starts:50", "batch_size:32", "buffer_size:5000", "policy_kwargs:dict(net_arch=[16, 16])"]


def run(script: str, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module", params=["custom", "sb3"])
def trained(request, tmp_path_factory):
    """One small run per algo: 800 steps (4 episodes, so rollout/ep_rew_mean is logged), 2 evaluations."""
    logs = tmp_path_factory.mktemp(f"logs_{request.param}")
    video = ["--video-freq", "800"] if request.param == "custom" else ["--video-freq", "0"]
    proc = run(
        "train.py",
        "--algo",
        request.param,
        "-n",
        "800",
        "--seed",
        "3",
        "-f",
        str(logs),
        "-tb",
        str(logs / "tb"),
        "--eval-freq",
        "400",
        "--eval-episodes",
        "2",
        "--save-freq",
        "400",
        "--no-progress",
        "-v",
        "0",
        *video,
        *TINY,
    )
    run_dir = logs / request.param / "Pendulum-v1_1"
    return request.param, run_dir, logs, proc.stdout


def test_run_folder_holds_real_data(trained):
    algo, run_dir, _, stdout = trained
    assert f"run folder: {run_dir}" in stdout and "Final evaluation" in stdout
    for name in (
        "Pendulum-v1.zip",
        "best_model.zip",
        "evaluations.npz",
        "monitor.csv",
        "config.yml",
        "args.yml",
        "command.txt",
        "rewards_plot.png",
        "summary.json",
    ):
        assert (run_dir / name).is_file(), name

    model = ALGOS[algo].load(run_dir / "Pendulum-v1.zip")
    assert model.num_timesteps == 800
    action, _ = model.predict(np.zeros(3, dtype=np.float32), deterministic=True)
    assert action.shape == (1,) and -2 <= action[0] <= 2

    log = np.load(run_dir / "evaluations.npz")
    assert log["timesteps"].tolist() == [400, 800]
    assert log["results"].shape == (2, 2) and np.isfinite(log["results"]).all()
    assert log["wall_time"].shape == (2,) and 0 < log["wall_time"][0] < log["wall_time"][1]

    with Image.open(run_dir / "rewards_plot.png") as image:
        image.load()
        assert image.size[0] > 500 and image.size[1] > 300
    monitor = (run_dir / "monitor.csv").read_text().splitlines()
    assert len(monitor) == 2 + 4  # header lines + 4 episodes of 200 steps
    assert "train.py" in (run_dir / "command.txt").read_text()
    if algo == "custom":
        assert sorted(p.name for p in (run_dir / "videos").iterdir()) == ["800.gif", "800.mp4"]


def test_config_round_trips_into_identical_model(trained):
    algo, run_dir, _, _ = trained
    saved = load_hyperparams(algo, "Pendulum-v1", config=run_dir / "config.yml")
    seed = yaml.safe_load((run_dir / "args.yml").read_text())["seed"]
    assert saved["batch_size"] == 32 and saved["learning_rate"] == 1e-3 and saved["n_timesteps"] == 800
    tiny = dict(arg.split(":", 1) for arg in TINY[1:])
    original = load_hyperparams(algo, "Pendulum-v1", overrides={**tiny, "n_timesteps": 800})
    a = create_model(algo, make_env("Pendulum-v1"), saved, seed=seed)
    b = create_model(algo, make_env("Pendulum-v1"), original, seed=seed)
    for (name, p), q in zip(a.policy.state_dict().items(), b.policy.state_dict().values()):
        assert th.equal(p, q), name
    for attr in ("learning_starts", "batch_size", "buffer_size", "tau", "gamma", "target_entropy"):
        assert getattr(a, attr) == getattr(b, attr), attr


def test_tensorboard_holds_train_and_eval_scalars(trained):
    algo, _, logs, _ = trained
    (tb_run,) = list((logs / "tb" / "Pendulum-v1").iterdir())
    assert tb_run.name.startswith(f"{algo}_1")
    events = EventAccumulator(str(tb_run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for key in (
        "train/actor_loss",
        "train/critic_loss",
        "train/ent_coef",
        "eval/mean_reward",
        "rollout/ep_rew_mean",
        "time/fps",
    ):
        assert key in scalars, (key, scalars)
    assert all(np.isfinite(e.value) for e in events.Scalars("train/critic_loss"))
    if algo == "custom":
        assert "trajectory/video" in events.Tags()["images"]


def test_evaluate_and_plot(trained):
    _, run_dir, _, _ = trained
    proc = run("evaluate.py", str(run_dir), "--episodes", "2", "--seed", "1")
    assert "best_model.zip" in proc.stdout and proc.stdout.count("episode ") == 2 and "mean return" in proc.stdout
    proc = run("evaluate.py", str(run_dir / "Pendulum-v1.zip"), "--episodes", "1", "--stochastic")
    assert "stochastic" in proc.stdout
    out = run_dir.parent / "both.png"
    run("plot.py", str(run_dir), str(run_dir), "-o", str(out))
    with Image.open(out) as image:
        assert image.size[0] > 500


def test_resume_continues_the_same_run(trained, tmp_path):
    algo, run_dir, logs, _ = trained
    proc = run("train.py", "--resume", str(run_dir), "-n", "1000", "--no-progress", "-v", "0")
    assert "resuming" in proc.stdout and "step 800" in proc.stdout
    assert ALGOS[algo].load(run_dir / "Pendulum-v1.zip").num_timesteps == 1000
    assert np.load(run_dir / "evaluations.npz")["timesteps"].tolist() == [400, 800]  # next eval would be at 1200
    assert len((run_dir / "monitor.csv").read_text().splitlines()) == 2 + 5  # appended, not restarted
    assert not (logs / algo / "Pendulum-v1_2").exists()


BAD_INPUTS = {
    "unknown algo": (["--algo", "ppo"], "invalid choice"),
    "misspelled env": (["--env", "Pendulm-v1"], "did you mean Pendulum-v1"),
    "discrete env": (["--env", "CartPole-v1"], "Box action space"),
    "zero steps": (["-n", "0"], "positive integer"),
    "negative steps": (["-n", "-5"], "positive integer"),
    "non-numeric steps": (["-n", "abc"], "positive integer"),
    "missing yaml": (["--config", "nope.yml"], "does not exist"),
    "unknown hyperparameter": (["-params", "learnin_rate:1e-3"], "did you mean learning_rate"),
    "wrong-typed value": (["-params", "learning_rate:abc"], "learning_rate must be a number"),
    "missing resume": (["--resume", "logs/nothing_here"], "no such run folder"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(case, tmp_path):
    args, message = BAD_INPUTS[case]
    earlier = tmp_path / "custom" / "Pendulum-v1_1"
    earlier.mkdir(parents=True)
    (earlier / "config.yml").write_text("learning_rate: 0.001\n")
    proc = run(
        "train.py", *args, "-f", str(tmp_path), "-tb", str(tmp_path / "tb"), "--no-progress", check=False, timeout=120
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
    assert sorted(p.name for p in (tmp_path / "custom").iterdir()) == ["Pendulum-v1_1"]  # nothing new, nothing lost
    assert (earlier / "config.yml").read_text() == "learning_rate: 0.001\n"


def test_bad_yaml_device_and_model_paths(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("learning_rate: [1e-3\n")
    cases = [
        ("train.py", ["--config", str(bad)], "cannot read config"),
        ("train.py", ["--resume", str(bad)], "not an SB3 model zip"),
        ("evaluate.py", [str(tmp_path)], "not a run folder"),
        ("evaluate.py", [str(tmp_path / "missing.zip")], "does not exist"),
    ]
    if not th.cuda.is_available():
        cases.append(("train.py", ["--device", "cuda"], "no CUDA GPU"))
    empty_run = tmp_path / "custom" / "Pendulum-v1_7"
    empty_run.mkdir(parents=True)
    (empty_run / "args.yml").write_text("algo: custom\nenv_id: Pendulum-v1\n")
    cases.append(("evaluate.py", [str(empty_run)], "no model in"))
    for script, args, message in cases:
        extra = ["-f", str(tmp_path / "logs")] if script == "train.py" else []
        proc = run(script, *args, *extra, check=False, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert not (tmp_path / "logs").exists()


def test_ctrl_c_saves_the_model(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "train.py"),
            "-n",
            "100000",
            "-f",
            str(tmp_path),
            "-tb",
            str(tmp_path / "tb"),
            "--no-progress",
            "-v",
            "0",
            "--save-freq",
            "0",
            "--video-freq",
            "0",
            "--eval-freq",
            "300",
            "--eval-episodes",
            "1",
            *TINY,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        # Python raises KeyboardInterrupt only where SIGINT was not ignored at its start, and a shell ignores it for
        # what it runs in the background (``nohup pytest &``): the child gets the default handling back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    run_dir = tmp_path / "custom" / "Pendulum-v1_1"
    deadline = time.time() + 120
    while not (run_dir / "evaluations.npz").exists() and time.time() < deadline:  # past the first evaluation
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stdout and "Traceback" not in stderr
    assert (run_dir / "Pendulum-v1.zip").is_file() and (run_dir / "summary.json").is_file()
    assert 300 <= ALGOS["custom"].load(run_dir / "Pendulum-v1.zip").num_timesteps < 100_000


def test_help_lists_the_contract_flags():
    proc = run("train.py", "--help")
    for flag in ("--algo", "--env", "-n", "--config", "-params", "-f", "-tb", "--eval-freq", "--resume", "--device"):
        assert flag in proc.stdout
