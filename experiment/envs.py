"""Environment construction and checks shared by training, evaluation and tuning."""

import difflib
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from experiment.config import ConfigError


def check_env_id(env_id: str) -> None:
    """Raise :class:`ConfigError` unless ``env_id`` is registered, can be made, and has a ``Box`` action space."""
    try:
        gym.spec(env_id)
    except gym.error.Error:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else "see gymnasium.pprint_registry() for the ids"
        raise ConfigError(f"unknown env id {env_id!r}; {hint}") from None
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"cannot make {env_id}: {str(e).splitlines()[0]}") from None
    action_space = env.action_space
    env.close()
    if not isinstance(action_space, gym.spaces.Box):
        raise ConfigError(
            f"{env_id} has a {type(action_space).__name__} action space; SAC needs a continuous Box action space "
            "(e.g. Pendulum-v1, MountainCarContinuous-v0)"
        )


def make_env(
    env_id: str,
    n_envs: int = 1,
    monitor_dir: str | Path | None = None,
    append: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """
    ``n_envs`` copies of ``env_id`` in a ``DummyVecEnv``, each in a ``Monitor``.

    :param env_id: Gymnasium env id
    :param n_envs: number of copies
    :param monitor_dir: where the Monitor CSVs go (``monitor.csv``, then ``1.monitor.csv``, ...); ``None``: nowhere
    :param append: append to existing Monitor CSVs (resuming a run) instead of starting them anew
    :param env_kwargs: keyword arguments for ``gym.make``
    :return: the vectorised env; seeding is left to the model (``seed=`` of the algorithm seeds it)
    """

    def factory(rank: int):
        def make() -> gym.Env:
            env = gym.make(env_id, **(env_kwargs or {}))
            filename = None
            if monitor_dir is not None:
                filename = str(Path(monitor_dir) / ("monitor.csv" if rank == 0 else f"{rank}.monitor.csv"))
            return Monitor(env, filename, override_existing=not append)

        return make

    return DummyVecEnv([factory(rank) for rank in range(n_envs)])
