"""Checkpoints: exact resume, atomicity under SIGKILL, corruption fallback, env-state fallback, Monitor CSV trim."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from callbacks import (
    CheckpointCallback,
    CheckpointError,
    find_checkpoints,
    load_checkpoint,
    resume_latest,
    trim_monitor_csv,
)
from callbacks.safe_zip import UntrustedPickleError
from custom_sac import CustomSAC

REPO = Path(__file__).resolve().parents[1]
N = 300
SAC_KWARGS = dict(
    learning_starts=100,
    buffer_size=2_000,
    batch_size=64,
    policy_kwargs=dict(net_arch=[32, 32]),
    seed=0,
    device="cpu",
)


def _algo(name: str) -> type:
    if name == "custom":
        return CustomSAC
    return SAC


def _env(normalize: bool = False) -> VecEnv:
    env = make_vec_env("Pendulum-v1", n_envs=1)
    return VecNormalize(env) if normalize else env


def _assert_same_model(a, b) -> None:
    pa, pb = a.policy.state_dict(), b.policy.state_dict()
    assert pa.keys() == pb.keys()
    for key in pa:
        assert th.equal(pa[key], pb[key]), f"parameter {key} differs by {(pa[key] - pb[key]).abs().max().item()}"
    assert th.equal(a.log_ent_coef, b.log_ent_coef)
    for name in ("actor", "critic"):
        sa, sb = getattr(a, name).optimizer.state_dict(), getattr(b, name).optimizer.state_dict()
        for idx, state in sa["state"].items():
            for key, value in state.items():
                assert th.equal(value, sb["state"][idx][key]), f"{name} optimizer state {idx}/{key} differs"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("algo_name", "normalize"),
    [("sb3", False), ("sb3", True), ("custom", False)],
    ids=["sb3", "sb3-vecnormalize", "custom_sac"],
)
def test_resume_is_exact(tmp_path: Path, algo_name: str, normalize: bool) -> None:
    algo = _algo(algo_name)
    straight = algo("MlpPolicy", _env(normalize), **SAC_KWARGS).learn(2 * N)

    first = algo("MlpPolicy", _env(normalize), **SAC_KWARGS)
    first.learn(N, callback=CheckpointCallback(100, tmp_path, keep_last=None))
    # Periodic checkpoints at the multiples of save_freq, plus one at the end of learn().
    assert [p.name for p in find_checkpoints(tmp_path)] == ["step_300", "step_200", "step_100"]
    del first

    # A brand-new model and env, as in a new process: only the files carry the state.
    resumed = load_checkpoint(tmp_path / "checkpoints" / "step_300", algo, _env(normalize), device="cpu")
    assert resumed.num_timesteps == N
    resumed.learn(N, reset_num_timesteps=False)
    assert resumed.num_timesteps == 2 * N
    _assert_same_model(straight, resumed)

    # A mid-run periodic checkpoint (taken at a rollout boundary inside learn) is exact too.
    # Here the fresh env comes without VecNormalize: the checkpoint's statistics wrap it.
    mid = load_checkpoint(tmp_path / "checkpoints" / "step_200", algo, _env(), device="cpu")
    mid.learn(2 * N - 200, reset_num_timesteps=False)
    _assert_same_model(straight, mid)
    assert mid.replay_buffer.pos == straight.replay_buffer.pos
    assert np.array_equal(mid.replay_buffer.observations, straight.replay_buffer.observations)
    if normalize:
        assert (tmp_path / "checkpoints" / "step_300" / "vecnormalize.npz").is_file()
        norm_a, norm_b = straight.get_vec_normalize_env(), mid.get_vec_normalize_env()
        assert np.array_equal(norm_a.obs_rms.mean, norm_b.obs_rms.mean)
        assert np.array_equal(norm_a.ret_rms.var, norm_b.ret_rms.var)


def test_checkpoint_layout_and_pruning(tmp_path: Path) -> None:
    model = SAC("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1), **{**SAC_KWARGS, "learning_starts": 1000})
    model.learn(250, callback=CheckpointCallback(50, tmp_path, keep_last=2))
    checkpoints = find_checkpoints(tmp_path)
    assert [p.name for p in checkpoints] == ["step_250", "step_200"]
    meta = json.loads((checkpoints[0] / "meta.json").read_text())
    assert meta["num_timesteps"] == 250 and meta["env_state"] is True
    for name in ("model.zip", "replay_buffer.npz", "env_state.npz", "runtime.npz"):
        assert meta["files"][name]["size"] == (checkpoints[0] / name).stat().st_size > 0
    assert not list((tmp_path / "checkpoints").glob(".*")), "temporary folders must not survive a clean save"
    with pytest.raises(ValueError, match="save_freq"):
        CheckpointCallback(0, tmp_path)
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointCallback(10, tmp_path, keep_last=0)


def test_corrupted_checkpoint_falls_back(tmp_path: Path) -> None:
    model = SAC("MlpPolicy", _env(), **{**SAC_KWARGS, "learning_starts": 1000})
    model.learn(100, callback=CheckpointCallback(50, tmp_path, keep_last=None))
    newest, previous = find_checkpoints(tmp_path)[:2]
    zip_path = newest / "model.zip"
    with open(zip_path, "r+b") as f:
        f.truncate(zip_path.stat().st_size // 2)

    with pytest.raises(CheckpointError, match=str(zip_path)) as err:
        load_checkpoint(newest, SAC, _env(), device="cpu")
    assert "Truncated" in str(err.value)
    with pytest.warns(UserWarning, match="step_100.*falling back"):
        loaded, path = resume_latest(tmp_path, SAC, _env(), device="cpu")
    assert path == previous and loaded.num_timesteps == 50

    # Same size, different bytes: caught by the checksum, not just the size.
    buffer_path = previous / "replay_buffer.npz"
    data = bytearray(buffer_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    buffer_path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"Corrupted checkpoint file {buffer_path}"):
        load_checkpoint(previous, SAC, _env(), device="cpu")

    # A folder without manifest is incomplete; and with nothing loadable left, one clear error.
    (previous / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=r"meta\.json is missing"):
        load_checkpoint(previous, SAC, _env(), device="cpu")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="None of the 2 checkpoints"):
        resume_latest(tmp_path, SAC, _env(), device="cpu")
    with pytest.raises(CheckpointError, match="No checkpoint"):
        resume_latest(tmp_path / "elsewhere", SAC, _env(), device="cpu")


class _LockedPendulum(PendulumEnv):
    """A Pendulum whose state cannot be pickled (a lock), like envs that hold simulator handles."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def test_unpicklable_env_resumes_with_fresh_episodes(tmp_path: Path) -> None:
    def make() -> DummyVecEnv:
        return DummyVecEnv([lambda: Monitor(gym.wrappers.TimeLimit(_LockedPendulum(), 200))])

    model = SAC("MlpPolicy", make(), **{**SAC_KWARGS, "learning_starts": 1000})
    model.learn(60, callback=CheckpointCallback(1000, tmp_path))
    meta = json.loads((find_checkpoints(tmp_path)[0] / "meta.json").read_text())
    assert meta["env_state"] is False and "lock" in meta["env_state_missing_reason"]
    with pytest.warns(UserWarning, match="no env state.*fresh episodes"):
        loaded = load_checkpoint(find_checkpoints(tmp_path)[0], SAC, make(), device="cpu")
    assert loaded._last_obs is None  # the next learn() resets the env instead of using a stale observation
    loaded.learn(10, reset_num_timesteps=False)
    assert loaded.num_timesteps == 70


def test_trim_monitor_csv(tmp_path: Path) -> None:
    path = tmp_path / "0.monitor.csv"
    path.write_text('#{"t_start": 0, "env_id": "Pendulum-v1"}\nr,l,t\n-1.0,200,1.0\n-2.0,200,2.0\n-3.0,200,3.0\n')
    with open(path, "a") as appender:  # as a resumed Monitor(override_existing=False) holds it
        assert trim_monitor_csv(path, 450) == 1
        appender.write("-4.0,200,4.0\n")
    assert path.read_text().splitlines()[2:] == ["-1.0,200,1.0", "-2.0,200,2.0", "-4.0,200,4.0"]
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ValueError, match="not a Monitor CSV"):
        trim_monitor_csv(tmp_path / "x.csv", 10)


_TRAINER = """
import sys
sys.path.insert(0, {repo!r})
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from callbacks import CheckpointCallback, find_checkpoints, resume_latest

th.set_num_threads(1)
run_dir = sys.argv[1]
env = make_vec_env("Pendulum-v1", n_envs=1)
if find_checkpoints(run_dir):
    model, path = resume_latest(run_dir, SAC, env, device="cpu")
    print("RESUMED", model.num_timesteps, flush=True)
else:
    model = SAC("MlpPolicy", env, learning_starts=50, buffer_size=20_000, batch_size=32,
                policy_kwargs=dict(net_arch=[16, 16]), seed=0, device="cpu")
    print("FRESH 0", flush=True)

class Progress(BaseCallback):
    def _on_step(self):
        print("STEP", self.num_timesteps, flush=True)
        return True

model.learn(1_000_000, reset_num_timesteps=False,
            callback=[CheckpointCallback({save_freq}, run_dir, keep_last=2), Progress()])
"""


def _read_lines(proc: subprocess.Popen, lines: list[str]) -> None:
    lines.extend(iter(proc.stdout.readline, ""))


def test_sigkill_during_checkpointing_always_resumes(tmp_path: Path) -> None:
    save_freq, rounds = 20, 5
    script = tmp_path / "trainer.py"
    script.write_text(_TRAINER.format(repo=str(REPO), save_freq=save_freq))
    run_dir = tmp_path / "run"
    ckpt_dir = run_dir / "checkpoints"
    rng = random.Random(1234)
    killed_mid_write = 0
    expected_start = 0
    for round_ in range(rounds):
        resuming = bool(find_checkpoints(run_dir))
        proc = subprocess.Popen(
            [sys.executable, str(script), str(run_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        lines: list[str] = []
        reader = threading.Thread(target=_read_lines, args=(proc, lines), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while not any(line.startswith("STEP") for line in lines) and time.monotonic() < deadline:
            assert proc.poll() is None, f"trainer exited early with code {proc.returncode}: {lines[-5:]}"
            time.sleep(0.01)
        assert any(line.startswith("STEP") for line in lines), "trainer did not start within 60 s"
        if round_ % 2:
            # Aim at a write in progress: kill as soon as a temporary checkpoint folder appears.
            stop = time.monotonic() + 3
            while time.monotonic() < stop and not list(ckpt_dir.glob(".step_*.tmp")):
                time.sleep(0.0005)
        else:
            time.sleep(rng.uniform(0.05, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=10)
        killed_mid_write += bool(list(ckpt_dir.glob(".step_*.tmp")))

        start = lines[0].split()
        assert start[0] == ("RESUMED" if resuming else "FRESH"), lines[:2]
        assert int(start[1]) == expected_start, "the trainer resumed from another checkpoint than resume_latest"
        # A kill can cut the last line short: count only complete "STEP <n>" lines.
        reached = max(int(m.group(1)) for line in lines if (m := re.fullmatch(r"STEP (\d+)\n", line)))
        if not find_checkpoints(run_dir):  # killed before the first checkpoint: nothing to resume yet
            assert reached <= save_freq
            continue
        model, path = resume_latest(run_dir, SAC, _env(), device="cpu")
        # Atomicity: the newest listed checkpoint is always complete, resume never needs to fall back.
        assert path == find_checkpoints(run_dir)[0] and path.name == f"step_{model.num_timesteps}"
        assert reached - save_freq <= model.num_timesteps <= reached, (reached, model.num_timesteps)
        assert len(find_checkpoints(run_dir)) <= 3  # keep_last=2, plus at most one not yet pruned
        expected_start = model.num_timesteps
        print(f"round {round_}: reached {reached}, resumes at {expected_start}, tmp left {killed_mid_write}")
    assert expected_start > 0, "no round got past the first checkpoint"
    assert killed_mid_write >= 1, "no kill landed during a checkpoint write; the test did not exercise atomicity"


_DISK_FILLS_UP = """
import resource, sys
sys.path.insert(0, {repo!r})
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from callbacks import CheckpointCallback

th.set_num_threads(1)
model = SAC("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1), learning_starts=50, buffer_size=1000, batch_size=16,
            policy_kwargs=dict(net_arch=[8]), seed=0, device="cpu")
checkpoints = CheckpointCallback(50, sys.argv[1], keep_last=None)
model.learn(100, callback=checkpoints)
# From here on no file may grow past {limit} bytes (the kernel's RLIMIT_FSIZE: writes fail with EFBIG), as on a
# disk that filled up; a model.zip is bigger, so every later checkpoint fails halfway through its first file.
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
model.learn(100, reset_num_timesteps=False, callback=checkpoints)
print("FINISHED", model.num_timesteps, flush=True)
"""


def test_disk_full_during_a_checkpoint_keeps_the_newest_complete_one(tmp_path: Path) -> None:
    script = tmp_path / "trainer.py"
    script.write_text(_DISK_FILLS_UP.format(repo=str(REPO), limit=16_000))
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), str(run_dir)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert proc.returncode == 0 and "FINISHED 200" in proc.stdout, proc.stderr[-2000:]
    newest = run_dir / "checkpoints" / "step_100"
    # One line per failed checkpoint (150, and 200 at the end of training), naming the one a resume uses.
    assert proc.stderr.splitlines() == [
        f"checkpoint at step {step} not written ([Errno 27] File too large); a resume uses {newest}"
        for step in (150, 200)
    ], proc.stderr
    assert [p.name for p in find_checkpoints(run_dir)] == ["step_100", "step_50"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_100", "step_50"]  # no half-written
    model, path = resume_latest(run_dir, SAC, _env(), device="cpu")
    assert path == newest and model.num_timesteps == 100
    model.learn(10, reset_num_timesteps=False)


def test_a_checkpoint_of_an_earlier_version_needs_trust(tmp_path: Path) -> None:
    """Pickled state files (the format before this one) are opened only when the caller trusts them."""
    model = SAC("MlpPolicy", _env(), **{**SAC_KWARGS, "learning_starts": 1000})
    model.learn(50, callback=CheckpointCallback(50, tmp_path))
    path = find_checkpoints(tmp_path)[0]
    marker = tmp_path / "marker"
    (path / "runtime.npz").unlink()
    (path / "rng.pkl").write_bytes(pickle.dumps(_OpensMarker(marker)))  # what an earlier version's rng.pkl could hold
    meta = json.loads((path / "meta.json").read_text())
    del meta["files"]["runtime.npz"]
    data = (path / "rng.pkl").read_bytes()
    meta["files"]["rng.pkl"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / "meta.json").write_text(json.dumps(meta))

    with pytest.raises(UntrustedPickleError, match=r"rng\.pkl.*--trust-files"):
        load_checkpoint(path, SAC, _env(), device="cpu")
    with pytest.raises(UntrustedPickleError):  # no fallback to an older checkpoint: they are all of that version
        resume_latest(tmp_path, SAC, _env(), device="cpu")
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017  # trusted: the payload runs, then the state is unusable
        load_checkpoint(path, SAC, _env(), device="cpu", trust_pickle=True)
    assert marker.exists()


class _OpensMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_her_replay_buffer_round_trips_through_the_state_file_with_its_info_dicts(tmp_path):
    from stable_baselines3.her import HerReplayBuffer

    from callbacks.state import buffer_state, restore_buffer
    from callbacks.statefile import load_tree, save_tree
    from tests import zoo_envs  # noqa: F401  (registers PointGoal-v0)

    def model() -> SAC:
        kwargs = dict(copy_info_dict=True)  # HER then keeps every transition's info dict in an object array
        return SAC("MultiInputPolicy", "PointGoal-v0", replay_buffer_class=HerReplayBuffer,
                   replay_buffer_kwargs=kwargs, learning_starts=50, buffer_size=500, batch_size=16,
                   policy_kwargs=dict(net_arch=[8]), seed=0)  # fmt: skip

    trained = model()
    trained.learn(150)
    save_tree(tmp_path / "replay_buffer.npz", buffer_state(trained.replay_buffer))
    fresh = model()
    restore_buffer(fresh.replay_buffer, load_tree(tmp_path / "replay_buffer.npz"))

    saved, restored = trained.replay_buffer, fresh.replay_buffer
    assert (restored.pos, restored.full) == (saved.pos, saved.full) == (150, False)
    for name in ("ep_start", "ep_length", "_current_ep_start"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(saved, name))
    for key in saved.observations:
        np.testing.assert_array_equal(restored.observations[key], saved.observations[key])
    infos = saved.infos[:150].tolist()
    assert any("TimeLimit.truncated" in info or info for row in infos for info in row)  # there is something to keep
    assert restored.infos[:150].tolist() == infos
