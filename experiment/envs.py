"""Environment construction and checks shared by training, evaluation and tuning."""

import difflib
import importlib
from copy import deepcopy
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecFrameStack,
    VecNormalize,
    unwrap_vec_normalize,
)

from callbacks.video import headless_rendering
from experiment.config import ConfigError
from experiment.names import import_class
from experiment.zoo import EnvSpec
from saving.normalize import load_normalize_stats


def import_gym_packages(modules: list[str]) -> None:
    """Import the modules that register extra envs (the zoo's ``--gym-packages``)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"--gym-packages {module}: cannot import it ({e})") from None


def check_env_id(env_id: str, env_kwargs: dict[str, Any] | None = None) -> None:
    """
    Raise :class:`ConfigError` unless ``env_id`` is registered, can be made (with ``env_kwargs``), and has a ``Box``
    action space.
    """
    try:
        gym.spec(env_id)
    except gym.error.Error:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else "see gymnasium.pprint_registry() for the ids"
        raise ConfigError(f"unknown env id {env_id!r}; {hint}") from None
    try:
        env = gym.make(env_id, **(env_kwargs or {}))
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"cannot make {env_id}: {str(e).splitlines()[0]}") from None
    except (TypeError, ValueError) as e:  # a keyword the env does not take, or a value it refuses
        raise ConfigError(f"cannot make {env_id} with env_kwargs {env_kwargs}: {str(e).splitlines()[0]}") from None
    action_space = env.action_space
    env.close()
    if not isinstance(action_space, gym.spaces.Box):
        raise ConfigError(
            f"{env_id} has a {type(action_space).__name__} action space; SAC needs a continuous Box action space "
            "(e.g. Pendulum-v1, MountainCarContinuous-v0)"
        )


def _wrap(env: gym.Env, wrappers: list[tuple[str, dict[str, Any]]]) -> gym.Env:
    for path, kwargs in wrappers:
        env = import_class(path, "env_wrapper")(env, **kwargs)
    return env


def make_env(
    env: str | EnvSpec,
    n_envs: int = 1,
    monitor_dir: str | Path | None = None,
    append: bool = False,
    env_kwargs: dict[str, Any] | None = None,
    *,
    evaluation: bool = False,
    render_mode: str | None = None,
    stats: VecEnv | str | Path | None = None,
) -> VecEnv:
    """
    ``n_envs`` copies of an env, each in a ``Monitor``, vectorised and wrapped as the zoo does (see
    :mod:`experiment.zoo` for the layers).

    :param env: a Gymnasium env id, or the :class:`~experiment.zoo.EnvSpec` of a run
    :param n_envs: number of copies
    :param monitor_dir: where the Monitor CSVs go (``monitor.csv``, then ``1.monitor.csv``, ...); ``None``: nowhere
    :param append: append to existing Monitor CSVs (resuming a run) instead of starting them anew
    :param env_kwargs: keyword arguments for ``gym.make``, on top of the spec's
    :param evaluation: an env to evaluate on: its ``VecNormalize`` is frozen (no statistics updates) and returns the
        env's own rewards, as the zoo's eval env
    :param render_mode: passed to ``gym.make`` (``rgb_array`` for videos)
    :param stats: where the ``VecNormalize`` statistics come from: a ``vecnormalize.pkl`` or the training env (copied
        now; ``EvalCallback`` keeps them in sync afterwards); ``None`` starts fresh statistics
    :return: the vectorised env; seeding is left to the model (``seed=`` of the algorithm seeds it)
    """
    spec = env if isinstance(env, EnvSpec) else EnvSpec(env)
    make_kwargs = {**spec.env_kwargs, **(env_kwargs or {})}
    if render_mode is not None:
        headless_rendering()
        make_kwargs["render_mode"] = render_mode

    # The registry entry itself, not its id: a SubprocVecEnv worker may not have imported the package registering it
    registered = gym.spec(spec.env_id)

    def factory(rank: int):
        def make() -> gym.Env:
            single = gym.make(registered, **make_kwargs)
            filename = None
            if monitor_dir is not None:
                filename = str(Path(monitor_dir) / ("monitor.csv" if rank == 0 else f"{rank}.monitor.csv"))
            return _wrap(Monitor(single, filename, override_existing=not append, **spec.monitor_kwargs), spec.wrappers)

        return make

    vec_class = SubprocVecEnv if spec.vec_env == "subproc" and n_envs > 1 else DummyVecEnv
    venv: VecEnv = vec_class([factory(rank) for rank in range(n_envs)])
    for path, kwargs in spec.vec_env_wrappers:
        venv = import_class(path, "vec_env_wrapper")(venv, **kwargs)
    if spec.frame_stack is not None:
        venv = VecFrameStack(venv, spec.frame_stack)
    if spec.normalize is not None:  # outermost: see experiment.zoo for why
        venv = _normalize(venv, spec.normalize, evaluation, stats)
    return venv


def _normalize(venv: VecEnv, kwargs: dict[str, Any], evaluation: bool, stats: VecEnv | str | Path | None) -> VecEnv:
    """``VecNormalize`` over ``venv``; frozen and with the env's own rewards when ``evaluation``."""
    normalized = VecNormalize(venv, **kwargs)
    if isinstance(stats, (str, Path)):  # our .npz: read without unpickling anything
        load_normalize_stats(normalized, stats)
    elif stats is not None and (source := unwrap_vec_normalize(stats)) is not None:
        normalized.obs_rms, normalized.ret_rms = deepcopy(source.obs_rms), deepcopy(source.ret_rms)
    if evaluation:
        normalized.training, normalized.norm_reward = False, False
    return normalized
