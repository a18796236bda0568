"""Files from elsewhere never run code; `--resume model.zip` starts a new run that is what its files say."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch as th

from comparison.data import read_run
from experiment.config import ALGOS, read_yaml_mapping
from experiment.envs import make_env
from experiment.errors import UserError
from saving.errors import UntrustedPickleError
from saving.safe_zip import load_model, pickled_entries, read_zip_data

REPO = Path(__file__).resolve().parents[1]
NET = "policy_kwargs:dict(net_arch=[16, 16], activation_fn=nn.ReLU)"  # a class: pickled by SB3, rebuilt by us
TINY = ["-params", "learning_starts:50", "batch_size:32", "buffer_size:2000", NET]
QUIET = ["--no-progress", "-v", "0", "--video-freq", "0", "--eval-episodes", "1"]


def train(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), *args, *QUIET],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One honest 300-step run of CustomSAC."""
    logs = tmp_path_factory.mktemp("logs")
    train("-n", "300", "--seed", "1", "-f", str(logs), "-tb", "", "--eval-freq", "300", "--save-freq", "0", *TINY)
    return logs / "custom" / "Pendulum-v1_1"


class Payload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant_in_zip(zip_path: Path, marker: Path, keys: list[str] | None = None) -> list[str]:
    """Replace the pickled blob of ``keys`` (default: every pickled entry) of a model zip by the payload."""
    with zipfile.ZipFile(zip_path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(files["data"])
    blob = base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()
    keys = keys or pickled_entries(data)
    for key in keys:
        entry = data[key] if isinstance(data.get(key), dict) else {":type:": "<class 'object'>"}
        data[key] = {**entry, ":serialized:": blob}
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return keys


YAML_PAYLOAD = "!!python/object/apply:builtins.open [{marker}, w]\n"


def test_yaml_tag_never_runs(tmp_path, run_script):
    marker = tmp_path / "marker"
    config = tmp_path / "evil.yml"
    config.write_text(f"Pendulum-v1:\n  learning_rate: {YAML_PAYLOAD.format(marker=marker)}")
    status, stderr = run_script("train.py", ["--config", str(config), "-f", str(tmp_path / "logs")])
    assert status == 1 and stderr.count("\n") == 1
    assert stderr.startswith(f"error: cannot read config {config}: tag '!!python/object/apply:builtins.open' would")
    assert not marker.exists() and not (tmp_path / "logs").exists()


def test_the_zoos_own_run_files_still_read(tmp_path):
    """rl-baselines3-zoo dumps an OrderedDict (with tuples inside): plain data, so it loads."""
    config = tmp_path / "config.yml"
    config.write_text(
        "!!python/object/apply:collections.OrderedDict\n- - - learning_rate\n    - 0.001\n"
        "  - - train_freq\n    - !!python/tuple\n      - 1\n      - episode\n"
    )
    assert read_yaml_mapping(config) == {"learning_rate": 0.001, "train_freq": (1, "episode")}


def test_pickled_payloads_never_run_and_the_folder_still_evaluates(run_dir, tmp_path, run_script):
    folder = shutil.copytree(run_dir, tmp_path / "Pendulum-v1_1")
    marker = tmp_path / "marker"
    for name in ("best_model.zip", "Pendulum-v1.zip"):
        planted = plant_in_zip(folder / name, marker)
        assert {"policy_class", "observation_space", "action_space", "policy_kwargs", "_last_obs"} <= set(planted)

    status, stderr = run_script("evaluate.py", [str(folder), "--episodes", "2"])
    assert status == 0, stderr
    model = load_model(folder / "Pendulum-v1.zip", ALGOS["custom"], make_env("Pendulum-v1"))
    honest = load_model(run_dir / "Pendulum-v1.zip", ALGOS["custom"], make_env("Pendulum-v1"))
    obs = np.random.default_rng(0).uniform(-1, 1, size=(8, 3)).astype(np.float32)
    assert np.array_equal(model.predict(obs, deterministic=True)[0], honest.predict(obs, deterministic=True)[0])

    # The run's config (which says how to build the env) poisoned too: refused in one line, nothing runs
    (folder / "config.yml").write_text(f"learning_rate: {YAML_PAYLOAD.format(marker=marker)}")
    status, stderr = run_script("evaluate.py", [str(folder), "--episodes", "2"])
    assert status == 1 and stderr.count("\n") == 1 and "would build a Python object" in stderr
    with pytest.raises(UserError, match="not plain YAML"):
        read_run(folder)  # what compare.py --runs reads
    assert not marker.exists()

    # The payload is live: SB3's own loader runs it.
    with pytest.raises(Exception):  # noqa: B017  # whatever SB3 makes of an open file object
        ALGOS["custom"].load(folder / "Pendulum-v1.zip")
    assert marker.exists()


def test_an_entry_that_cannot_be_rebuilt_needs_trust(run_dir, tmp_path, run_script):
    zip_path = Path(shutil.copy(run_dir / "Pendulum-v1.zip", tmp_path / "model.zip"))
    marker = tmp_path / "marker"
    plant_in_zip(zip_path, marker, ["action_noise"])
    status, stderr = run_script("evaluate.py", [str(zip_path), "--env", "Pendulum-v1"])
    assert status == 1 and stderr.count("\n") == 1 and "action_noise" in stderr and "--trust-files" in stderr
    assert not marker.exists()
    with pytest.raises(UntrustedPickleError):
        load_model(zip_path, ALGOS["custom"], make_env("Pendulum-v1"))
    assert not marker.exists()


def test_resume_from_a_zip_is_a_new_run_with_its_own_settings(run_dir, tmp_path):
    """config.yml/args.yml are what the run uses, the seed is applied, learning_starts holds, TB name ends in _1."""
    zip_path = run_dir / "Pendulum-v1.zip"
    before = read_zip_data(zip_path)
    args = ["--resume", str(zip_path), "-n", "150", "--seed", "7", "--eval-freq", "1000", "--save-freq", "0"]
    args += ["-params", NET, "tau:0.02", "gamma:0.9", "learning_starts:100"]  # batch_size: the default, not the zip's
    runs = []
    for name in ("a", "b"):
        logs = tmp_path / name
        train(*args, "-f", str(logs), "-tb", str(logs / "tb"))
        runs.append(logs / "custom" / "Pendulum-v1_1")
    config, settings = read_yaml_mapping(runs[0] / "config.yml"), read_yaml_mapping(runs[0] / "args.yml")
    assert (config["tau"], config["gamma"], config["learning_starts"]) == (0.02, 0.9, 100)
    assert settings["seed"] == 7 and settings["resume"] == str(zip_path)
    after = read_zip_data(runs[0] / "Pendulum-v1.zip")
    assert (after["tau"], after["gamma"], after["learning_starts"], after["seed"]) == (0.02, 0.9, 100, 7)
    assert before["batch_size"] == 32 and after["batch_size"] == 256 and "batch_size" not in config
    assert after["num_timesteps"] == 150
    assert after["_n_updates"] - before["_n_updates"] == 150 - 100  # no gradient step before learning_starts
    assert [p.name for p in (tmp_path / "a" / "tb" / "Pendulum-v1").iterdir()] == ["custom_1_1"]
    params = [th.load(zipfile.ZipFile(r / "Pendulum-v1.zip").open("policy.pth"), weights_only=True) for r in runs]
    assert all(th.equal(params[0][k], params[1][k]) for k in params[0])  # same seed, same run
    assert not all(th.equal(params[0][k], v) for k, v in honest_params(zip_path).items())


def honest_params(zip_path: Path) -> dict[str, th.Tensor]:
    return th.load(zipfile.ZipFile(zip_path).open("policy.pth"), weights_only=True)


def test_no_module_reads_yaml_or_pickles_unsafely():
    """The safe readers are the only readers: no yaml.load outside experiment/yamlio.py, no unsafe loaders."""
    pattern = re.compile(r"yaml\.(load|unsafe_load|full_load)\(|UnsafeLoader|FullLoader|yaml\.Loader\b")
    offenders = []
    for path in REPO.glob("[!.]*/**/*.py"):
        if "tests" in path.parts or path.name == "yamlio.py":
            continue
        offenders += [
            f"{path.relative_to(REPO)}: {line.strip()}"
            for line in path.read_text().splitlines()
            if pattern.search(line)
        ]
    assert not offenders, offenders
    assert os.path.isfile(REPO / "experiment" / "yamlio.py")


@pytest.mark.parametrize("policy", ["CnnPolicy", "MultiInputPolicy"])
def test_sb3_policies_with_the_same_docstring_are_told_apart_by_the_env(policy, tmp_path):
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env

    from tests.zoo_envs import DictPendulum, ImageEnv

    env = make_vec_env(ImageEnv if policy == "CnnPolicy" else DictPendulum, n_envs=1)
    SAC(policy, env, buffer_size=10, seed=0).save(tmp_path / "model.zip")  # SB3's two classes share one docstring
    loaded = load_model(tmp_path / "model.zip", SAC, env=env)
    assert type(loaded.policy).__name__ == policy
