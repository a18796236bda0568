"""
The keys of rl-baselines3-zoo's format that shape the env, the callbacks and the exploration noise rather than the
model's constructor, parsed the way ``rl_zoo3.exp_manager`` parses them, checked before anything runs.

The env they describe, layer by layer: ``gym.make(env_id, **env_kwargs)`` -> ``Monitor`` -> each ``env_wrapper`` ->
``DummyVecEnv``/``SubprocVecEnv`` -> each ``vec_env_wrapper`` -> ``VecFrameStack`` (``frame_stack``) ->
``VecNormalize`` (``normalize``). The zoo (``ExperimentManager.create_envs``) stacks over the normalisation
instead, which off-policy algorithms cannot train on: SB3's ``_store_transition`` stores the observations it gets
from the ``VecNormalize`` it finds (``get_original_obs``), which would be unstacked (SB3 issue #693, zoo issue #480).
With ``VecNormalize`` outermost, the replay buffer, the policy and the evaluation all see stacked observations,
normalised per stacked entry.
"""

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise, NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.vec_env import VecNormalize

from experiment.config import ConfigError
from experiment.kwargs import parse_kwargs
from experiment.names import import_class, named_paths

VEC_ENVS = ("dummy", "subproc")
# VecNormalize's own arguments, the only ones a normalize string may set
_NORMALIZE_KEYS = set(inspect.signature(VecNormalize.__init__).parameters) - {"self", "venv"}


@dataclass
class EnvSpec:
    """
    How to build a run's env, the same way for training, evaluation, videos and ``evaluate.py``.

    :param env_id: Gymnasium env id
    :param env_kwargs: keyword arguments of ``gym.make``
    :param wrappers: gymnasium wrappers (dotted path, kwargs), innermost first; kept as names so that a
        ``SubprocVecEnv`` worker can rebuild them
    :param vec_env_wrappers: VecEnv wrappers (dotted path, kwargs), innermost first
    :param normalize: ``VecNormalize`` kwargs, ``None`` for no normalisation
    :param frame_stack: frames stacked by ``VecFrameStack``, ``None`` for none
    :param monitor_kwargs: keyword arguments of ``Monitor`` (e.g. ``info_keywords``)
    :param vec_env: ``dummy`` or ``subproc``
    """

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    wrappers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    vec_env_wrappers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    normalize: dict[str, Any] | None = None
    frame_stack: int | None = None
    monitor_kwargs: dict[str, Any] = field(default_factory=dict)
    vec_env: str = "dummy"


def normalize_kwargs(value: Any, gamma: float | None = None) -> dict[str, Any] | None:
    """
    The zoo's ``normalize``: ``true`` (observations and rewards), ``false``, or the kwargs of ``VecNormalize`` as a
    mapping or a string (``"dict(norm_obs=True, norm_reward=False)"``). As in the zoo, the algorithm's ``gamma``
    becomes VecNormalize's discount for the reward statistics.

    :return: the kwargs of ``VecNormalize``, or ``None`` when normalisation is off
    """
    if value is None or value is False:
        return None
    kwargs = {} if value is True else parse_kwargs("normalize", value)
    unknown = set(kwargs) - _NORMALIZE_KEYS
    if unknown:
        raise ConfigError(f"normalize: VecNormalize takes no {', '.join(sorted(unknown))}; it takes {_NORMALIZE_KEYS}")
    if gamma is not None:
        kwargs["gamma"] = gamma
    return kwargs


def named_objects(key: str, value: Any) -> list[tuple[str, dict[str, Any]]]:
    """
    The classes ``key`` names with their kwargs (see :func:`experiment.names.named_paths`), each imported and checked
    here, so that a typo or a name of the wrong kind is an error before training starts.

    :return: (dotted path, kwargs) pairs in the order given
    """
    pairs = named_paths(key, value)
    for path, _ in pairs:
        import_class(path, key)
    return pairs


def env_spec(env_id: str, hyperparams: dict[str, Any], vec_env: str = "dummy") -> EnvSpec:
    """
    The env a run's resolved hyperparameters describe (raises :class:`ConfigError` for a bad key).

    :param env_id: Gymnasium env id
    :param hyperparams: resolved hyperparameters (see :func:`experiment.config.load_hyperparams`)
    :param vec_env: ``dummy`` or ``subproc`` (``--vec-env``)
    """
    if vec_env not in VEC_ENVS:
        raise ConfigError(f"unknown --vec-env {vec_env!r}; use {' or '.join(VEC_ENVS)}")
    return EnvSpec(
        env_id=env_id,
        env_kwargs=parse_kwargs("env_kwargs", hyperparams.get("env_kwargs") or {}),
        wrappers=named_objects("env_wrapper", hyperparams.get("env_wrapper")),
        vec_env_wrappers=named_objects("vec_env_wrapper", hyperparams.get("vec_env_wrapper")),
        normalize=normalize_kwargs(hyperparams.get("normalize"), hyperparams.get("gamma")),
        frame_stack=hyperparams.get("frame_stack"),  # checked by experiment.ranges
        monitor_kwargs=parse_kwargs("monitor_kwargs", hyperparams.get("monitor_kwargs") or {}),
        vec_env=vec_env,
    )


def zoo_callbacks(hyperparams: dict[str, Any]) -> list[BaseCallback]:
    """The zoo's ``callback`` key: SB3 callbacks built from dotted paths and kwargs."""
    callbacks = []
    for path, kwargs in named_objects("callback", hyperparams.get("callback")):
        try:
            callbacks.append(import_class(path, "callback")(**kwargs))
        except TypeError as e:
            raise ConfigError(f"callback {path} rejects its kwargs: {e}") from None
    return callbacks


def action_noise(hyperparams: dict[str, Any], n_actions: int) -> ActionNoise | None:
    """The zoo's ``noise_type`` (``normal`` or ``ornstein-uhlenbeck``) with ``noise_std``, as SB3 action noise."""
    noise_type = hyperparams.get("noise_type")
    if noise_type is None:
        return None
    noise_std = hyperparams.get("noise_std")
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or noise_std < 0:
        raise ConfigError(f"noise_type {noise_type!r} needs noise_std, a non-negative number, got {noise_std!r}")
    mean, sigma = np.zeros(n_actions), noise_std * np.ones(n_actions)
    if "normal" in str(noise_type):
        return NormalActionNoise(mean=mean, sigma=sigma)
    if "ornstein-uhlenbeck" in str(noise_type):
        return OrnsteinUhlenbeckActionNoise(mean=mean, sigma=sigma)
    raise ConfigError(f"unknown noise_type {noise_type!r}; use normal or ornstein-uhlenbeck")


def check_run_keys(hyperparams: dict[str, Any]) -> None:
    """Build the callbacks and the action noise once, only to raise :class:`ConfigError` before a run starts."""
    zoo_callbacks(hyperparams)
    action_noise(hyperparams, n_actions=1)
