"""Every numeric hyperparameter out of range is one `error:` line, a non-zero exit, and no new or changed files."""

import hashlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from experiment.config import ALGOS
from experiment.ranges import RANGES, RangeError, check_value

REPO = Path(__file__).resolve().parents[1]

# (algo, arguments, what the error line must say); every key of RANGES has at least one case (checked below).
BAD_VALUES = [
    ("custom", ["-params", "tau:-1"], "tau must be a number in (0, 1]"),
    ("custom", ["-params", "tau:0"], "tau must be a number in (0, 1]"),
    ("tqc", ["-params", "tau:1.5"], "tau must be a number in (0, 1]"),
    ("custom", ["-params", "gamma:1.01"], "gamma must be a number in [0, 1]"),
    ("sb3", ["-params", "batch_size:0"], "batch_size must be an integer >= 1"),
    ("custom", ["-params", "batch_size:2.5"], "batch_size must be an integer >= 1"),
    ("custom", ["-params", "learning_rate:0"], "learning_rate must be a number > 0 or lin_<number > 0>"),
    ("crossq", ["-params", "learning_rate:lin_-7.3e-4"], "learning_rate must be a number > 0 or lin_"),
    ("custom", ["-params", "actor_learning_rate:-1e-3"], "actor_learning_rate must be a number > 0"),
    ("custom", ["-params", "critic_learning_rate:.nan"], "critic_learning_rate must be a number > 0"),
    ("custom", ["-params", "ent_coef_learning_rate:lin_0"], "ent_coef_learning_rate must be a number > 0"),
    ("custom", ["-params", "buffer_size:0"], "buffer_size must be an integer >= 1"),
    ("custom", ["-params", "learning_starts:-1"], "learning_starts must be an integer >= 0"),
    ("custom", ["-params", "train_freq:0"], 'train_freq must be an integer >= 1 or [n, "step"|"episode"]'),
    ("sb3", ["-params", "train_freq:[1, month]"], 'train_freq must be an integer >= 1 or [n, "step"|"episode"]'),
    ("custom", ["-params", "gradient_steps:0"], "gradient_steps must be an integer >= 1 or -1"),
    ("custom", ["-params", "target_update_interval:0"], "target_update_interval must be an integer >= 1"),
    ("custom", ["-params", "ent_coef:-0.1"], "ent_coef must be a number > 0 or 'auto' or auto_<number > 0>"),
    ("sb3", ["-params", "ent_coef:auto_0"], "ent_coef must be a number > 0 or 'auto' or auto_"),
    ("custom", ["-params", "target_entropy:.inf"], "target_entropy must be a finite number or 'auto'"),
    ("custom", ["-params", "n_steps:0"], "n_steps must be an integer >= 1"),
    ("custom", ["-params", "stats_window_size:0"], "stats_window_size must be an integer >= 1"),
    ("sb3", ["-params", "sde_sample_freq:-2"], "sde_sample_freq must be an integer >= -1"),
    ("tqc", ["-params", "top_quantiles_to_drop_per_net:-1"], "top_quantiles_to_drop_per_net must be an integer >= 0"),
    ("crossq", ["-params", "policy_delay:0"], "policy_delay must be an integer >= 1"),
    ("custom", ["-params", "frame_stack:0"], "frame_stack must be an integer >= 1"),
    ("sb3", ["-params", "noise_type:normal", "noise_std:-0.1"], "noise_std must be a number >= 0"),
    ("custom", ["-params", "policy_kwargs:dict(n_critics=0)"], "policy_kwargs n_critics must be an integer >= 1"),
    ("tqc", ["-params", "policy_kwargs:dict(n_quantiles=0)"], "policy_kwargs n_quantiles must be an integer >= 1"),
    ("custom", ["-params", "n_timesteps:.inf"], "n_timesteps must be an integer >= 1"),
    ("custom", ["-params", "n_envs:0"], "n_envs must be an integer >= 1"),
    ("custom", ["-n", "inf"], "expected a positive integer, got 'inf'"),
    ("custom", ["-n", "nan"], "expected a positive integer, got 'nan'"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``, files with their content hash (anything added, removed or changed)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in folder.rglob("*")
    }


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """A log folder that already holds a run, which bad input must leave as it is."""
    earlier = tmp_path / "custom" / "Pendulum-v1_1"
    earlier.mkdir(parents=True)
    (earlier / "config.yml").write_text("learning_rate: 0.001\n")
    return tmp_path


@pytest.mark.parametrize(("algo", "args", "message"), BAD_VALUES, ids=[" ".join(c[1]) for c in BAD_VALUES])
def test_out_of_range_value_is_one_error_line(algo, args, message, logs, run_script):
    before = _snapshot(logs)
    status, stderr = run_script("train.py", ["--algo", algo, *args, "-f", str(logs), "-tb", str(logs)])
    lines = stderr.strip().splitlines()
    assert status != 0
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], stderr
    assert _snapshot(logs) == before


def test_out_of_range_value_in_a_config_file(logs, run_script):
    config = logs / "bad.yml"
    config.write_text("Pendulum-v1:\n  n_timesteps: .inf\n  batch_size: 64\n")
    before = _snapshot(logs)
    status, stderr = run_script("train.py", ["--config", str(config), "-f", str(logs), "-tb", str(logs)])
    assert status == 1 and stderr.count("\n") == 1 and stderr.startswith("error: n_timesteps must be an integer >= 1")
    assert _snapshot(logs) == before


def test_minus_n_inf_from_a_real_process_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "-n", "inf", "-f", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: argument -n/--n-timesteps: expected a positive")
    assert proc.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


def _key_of(arg: str) -> str:
    """``tau:-1`` -> tau; ``policy_kwargs:dict(n_critics=0)`` -> n_critics."""
    key, _, value = arg.partition(":")
    return value.removeprefix("dict(").split("=")[0] if key == "policy_kwargs" else key


def test_every_range_has_a_bad_value_test_and_a_docs_row():
    tested = {_key_of(arg) for _, args, _ in BAD_VALUES for arg in args if ":" in arg}
    assert set(RANGES) <= tested, set(RANGES) - tested
    page = (REPO / "docs" / "bad-input.md").read_text()
    for key, rule in RANGES.items():
        assert f"`{key}`" in page and rule.describe() in page, key


@pytest.mark.parametrize("algo", list(ALGOS))
def test_every_default_is_in_range(algo):
    """The table must not refuse what the algorithms themselves use by default."""
    for key, param in inspect.signature(ALGOS[algo].__init__).parameters.items():
        if key in RANGES and param.default is not inspect.Parameter.empty:
            check_value(key, param.default, RANGES[key])


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("tau", [1, 0.005, "1e-2"], [0, -1, 1.0001, "abc", True]),
        ("gamma", [0, 1, 0.99], [-0.1, 1.1]),
        ("gradient_steps", [-1, 1, 64], [0, -2, 1.5]),
        ("learning_rate", [3e-4, "lin_7.3e-4"], ["lin_0", "lin_x", None]),
        ("ent_coef", ["auto", "auto_0.1", 0.2], ["auto_-1", "automatic", 0]),
        ("learning_starts", [0, 100], [-1]),
    ],
)
def test_range_edges(key, good, bad):
    for value in good:
        check_value(key, value, RANGES[key])
    for value in bad:
        with pytest.raises(RangeError, match=key):
            check_value(key, value, RANGES[key])
