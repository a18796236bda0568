"""TimedEvalCallback without a log path: it evaluates and times like SB3's EvalCallback, and writes no file."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import SAC

from callbacks import TimedEvalCallback

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_with(callback, steps=120):
    model = SAC(
        "MlpPolicy", gym.make("Pendulum-v1"), learning_starts=50, batch_size=16, seed=0, policy_kwargs={"net_arch": [8]}
    )
    model.learn(steps, callback=callback)


@pytest.mark.parametrize("log_path", [None, "logs"])
def test_timed_eval_callback_with_and_without_a_log_path(tmp_path, monkeypatch, log_path):
    monkeypatch.chdir(tmp_path)
    callback = TimedEvalCallback(
        gym.make("Pendulum-v1", max_episode_steps=20),
        eval_freq=50,
        n_eval_episodes=1,
        log_path=log_path,
        best_model_save_path=None,
        verbose=0,
    )
    train_with(callback)
    assert len(callback.wall_times) == 2 and 0 < callback.wall_times[0] < callback.wall_times[1]
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    if log_path is None:
        assert files == [] and callback.evaluations_timesteps == []  # SB3's EvalCallback records nothing either
    else:
        assert files == ["logs/evaluations.npz"]
        log = np.load(tmp_path / "logs" / "evaluations.npz")
        assert list(log["timesteps"]) == [50, 100] and np.allclose(log["wall_time"], callback.wall_times)
