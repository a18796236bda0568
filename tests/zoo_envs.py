"""Small envs for the tests, and what the zoo-format tests plug into train.py by name: a goal env (for HER) and a
probe callback.

``--gym-packages tests.zoo_envs`` registers ``PointGoal-v0``; ``callback: tests.zoo_envs.ProbeCallback`` records what
the model sees.
"""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper


class PointGoalEnv(gym.Env):
    """
    A point on a line moves by its action toward a goal; reward 0 within ``tolerance`` of the goal, else -1.
    Goal-conditioned in gymnasium-robotics' layout (``observation``, ``achieved_goal``, ``desired_goal`` and a
    vectorised ``compute_reward``), which is what ``HerReplayBuffer`` needs.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, tolerance: float = 0.1, render_mode: str | None = None):
        box = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.observation_space = spaces.Dict({"observation": box, "achieved_goal": box, "desired_goal": box})
        self.action_space = spaces.Box(-0.2, 0.2, shape=(1,), dtype=np.float32)
        self.tolerance = tolerance
        self.render_mode = render_mode
        self.position = self.goal = np.zeros(1, dtype=np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        return {"observation": self.position.copy(), "achieved_goal": self.position.copy(), "desired_goal": self.goal}

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info) -> np.ndarray:
        distance = np.linalg.norm(np.asarray(achieved_goal) - np.asarray(desired_goal), axis=-1)
        return -(distance > self.tolerance).astype(np.float32)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-1, 1, size=1).astype(np.float32)
        self.goal = self.np_random.uniform(-1, 1, size=1).astype(np.float32)
        return self._obs(), {}

    def step(self, action):
        self.position = np.clip(self.position + np.clip(action, -0.2, 0.2), -1, 1).astype(np.float32)
        reward = float(self.compute_reward(self.position, self.goal, {}))
        return self._obs(), reward, reward == 0.0, False, {"is_success": reward == 0.0}

    def render(self) -> np.ndarray:
        frame = np.full((32, 64, 3), 255, dtype=np.uint8)
        frame[:, int((self.goal[0] + 1) * 31.5)] = (0, 160, 0)
        frame[12:20, int((self.position[0] + 1) * 31.5)] = (200, 0, 0)
        return frame


class BrokenRenderEnv(gym.Wrapper):
    """Pendulum whose renderer fails, as a MuJoCo env does on a machine without a GL backend."""

    # gym.make reads the entry point's class metadata; gymnasium 0.29 refuses the property a Wrapper has there
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None):
        super().__init__(gym.make("Pendulum-v1", render_mode=render_mode))

    def render(self):
        raise RuntimeError("no OpenGL context: set MUJOCO_GL=egl")


gym.register("PointGoal-v0", entry_point=PointGoalEnv, max_episode_steps=20)
gym.register("BrokenRenderPendulum-v0", entry_point=BrokenRenderEnv)


class MarkerVecWrapper(VecEnvWrapper):
    """A VecEnv wrapper that changes nothing, so a test can find it in the chain."""

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()


class ProbeCallback(BaseCallback):
    """
    Record, into the JSON file ``path`` at the end of training, what the model trained on: the VecEnv layers, the
    gymnasium layers of env 0, the spaces, the attributes ``attrs`` of env 0, the replay buffer, and for the first
    ``n_obs`` steps the observations the policy got next together with the env's own (VecNormalize's original) ones.
    """

    def __init__(self, path: str, attrs: list[str] | None = None, n_obs: int = 50):
        super().__init__()
        self.path, self.attrs, self.n_obs = Path(path), attrs or [], n_obs
        self.record: dict = {"steps": []}

    def _on_training_start(self) -> None:
        layers, venv = [], self.training_env
        while True:
            layers.append(type(venv).__name__)
            if not hasattr(venv, "venv"):
                break
            venv = venv.venv
        self.record.update(
            vec_layers=layers,
            env_chain=self.training_env.env_method("__str__", indices=[0])[0],
            n_envs=self.training_env.num_envs,
            observation_shape=list(self.model.observation_space.shape or []),
            action_high=self.model.action_space.high.tolist(),
            attrs={a: np.asarray(self.training_env.get_attr(a, indices=[0])[0]).tolist() for a in self.attrs},
            replay_buffer=type(self.model.replay_buffer).__name__,
            her={k: str(getattr(self.model.replay_buffer, k, None)) for k in ("n_sampled_goal", "her_ratio")},
        )

    def _on_step(self) -> bool:
        vec_normalize = self.model.get_vec_normalize_env()
        flat = vec_normalize is not None and not isinstance(vec_normalize.obs_rms, dict)  # Dict obs: one per key
        if flat and len(self.record["steps"]) < self.n_obs:
            step = {
                "policy_obs": self.locals["new_obs"],
                "original_obs": vec_normalize.get_original_obs(),
                "mean": vec_normalize.obs_rms.mean,
                "var": vec_normalize.obs_rms.var,
            }
            self.record["steps"].append({k: np.asarray(v).tolist() for k, v in step.items()})
        return True

    def _on_training_end(self) -> None:
        self.path.write_text(json.dumps(self.record))


class ImageEnv(gym.Env):
    """Image observations, for a features extractor with parameters."""

    observation_space = spaces.Box(0, 255, (36, 36, 3), np.uint8)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


class DictPendulum(gym.ObservationWrapper):
    """Pendulum-v1 with its observation split into a ``Dict``: the features are a concatenation, no parameters."""

    def __init__(self):
        super().__init__(gym.make("Pendulum-v1"))
        box = self.env.observation_space
        self.observation_space = spaces.Dict(
            angle=spaces.Box(box.low[:2], box.high[:2]), velocity=spaces.Box(box.low[2:], box.high[2:])
        )

    def observation(self, obs):
        return {"angle": obs[:2], "velocity": obs[2:]}
