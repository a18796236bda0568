"""Hyperparameters in rl-baselines3-zoo's YAML format: loading, overriding, validating, turning into kwargs."""

import difflib
import importlib.resources
import inspect
from pathlib import Path
from typing import Any

import stable_baselines3
import yaml
from sb3_contrib import TQC, CrossQ
from stable_baselines3 import SAC
from stable_baselines3.common import buffers
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import LinearSchedule

from custom_sac import CustomSAC
from experiment.errors import ConfigError
from experiment.kwargs import parse_kwargs
from experiment.names import check_names, import_class
from experiment.ranges import RangeError, check_ranges
from experiment.yamlio import load_yaml_file

# "custom" and "sb3" are the pair this project is about; TQC and CrossQ are extra references for comparisons.
ALGOS: dict[str, type[BaseAlgorithm]] = {"custom": CustomSAC, "sb3": SAC, "tqc": TQC, "crossq": CrossQ}
# Package data (experiment/configs is configs/ of the checkout), so that an installed copy finds it too.
DEFAULT_CONFIG = Path(str(importlib.resources.files("experiment") / "configs" / "sac.yml"))
# Env steps of a run whose config gives no n_timesteps
DEFAULT_N_TIMESTEPS = 20_000
# Keys of the zoo's format that are not constructor arguments (experiment/zoo.py applies them)
ZOO_KEYS = {
    "n_timesteps",
    "policy",
    "n_envs",
    "normalize",
    "env_wrapper",
    "vec_env_wrapper",
    "frame_stack",
    "callback",
    "env_kwargs",
    "monitor_kwargs",
    "noise_type",
    "noise_std",
}
# This project's own keys beside the zoo's, applied by the runner rather than the constructor: add new ones here
PROJECT_KEYS: set[str] = {"landscape_freq"}  # experiment/landscapes.py
# The zoo names replay buffers by class name (or dotted path); these are the ones SB3 ships
REPLAY_BUFFERS = {"ReplayBuffer", "DictReplayBuffer", "HerReplayBuffer", "NStepReplayBuffer"}
# Keys the runner sets itself from the command line
RUNNER_KEYS = {"env", "seed", "verbose", "tensorboard_log", "device", "_init_setup_model"}
LR_KEYS = {"learning_rate", "actor_learning_rate", "critic_learning_rate", "ent_coef_learning_rate"}


def valid_keys(algo: str) -> set[str]:
    """Hyperparameters ``algo`` accepts: its constructor's arguments and the zoo's extra keys."""
    params = inspect.signature(ALGOS[algo].__init__).parameters
    return (set(params) - {"self"} - RUNNER_KEYS) | ZOO_KEYS | PROJECT_KEYS


def parse_overrides(pairs: list[str] | None, flag: str = "-params") -> dict[str, Any]:
    """``["learning_rate:3e-4", "tau:0.01"]`` -> dict, values read as YAML (the zoo's ``-params`` syntax)."""
    overrides: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise ConfigError(f"{flag} expects key:value, got {pair!r} (e.g. {flag} learning_rate:3e-4 tau:0.01)")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key] = value
    return overrides


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """
    A YAML mapping read safely (see :mod:`experiment.yamlio`): a file from elsewhere cannot run code.

    :param path: the file
    :param what: what the file is, for the error messages
    :raises ConfigError: missing file, bad syntax, a Python tag, or not a mapping
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist; pass a YAML file such as configs/sac.yml")
    try:
        data = load_yaml_file(path)
    except yaml.constructor.ConstructorError as e:
        tag = e.problem.rsplit(" ", 1)[-1].replace("tag:yaml.org,2002:", "!!") if e.problem else "?"
        problem = f"tag {tag} would build a Python object; write plain values"
        raise ConfigError(f"cannot read {what} {path}: {problem}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"cannot read {what} {path}: {problem}; fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping of hyperparameters (or of env ids to them)")
    return data


def load_hyperparams(
    algo: str, env_id: str, config: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """
    Resolve the hyperparameters of a run: the config file's entry for ``env_id`` (zoo format, one entry per env id)
    or the whole file (flat format, as exported by a tuning study), then ``overrides``; validated.

    :param algo: key of :data:`ALGOS`
    :param env_id: Gymnasium env id
    :param config: YAML file; ``None`` means the shipped ``configs/sac.yml``
    :param overrides: single keys set on top (``-params``)
    :return: the resolved hyperparameters, YAML-serialisable (schedules stay strings like ``lin_7.3e-4``)
    """
    if algo not in ALGOS:
        raise ConfigError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")
    data = read_yaml_mapping(config or DEFAULT_CONFIG)
    keys = valid_keys(algo)
    if data and all(isinstance(v, dict) for v in data.values()) and not set(data) & keys:
        if env_id in data:
            hyperparams = dict(data[env_id])
        elif "default" in data:  # the zoo's entry for every env the file does not list
            hyperparams = dict(data["default"])
        elif config is None:
            hyperparams = {}  # the shipped file has no entry: SB3's defaults
        else:
            raise ConfigError(f"config {config} has no entry for {env_id} (it has {', '.join(data)})")
    else:
        hyperparams = dict(data)
    hyperparams.update(overrides or {})
    validate(algo, hyperparams)
    return hyperparams


def validate(algo: str, hyperparams: dict[str, Any]) -> None:
    """
    Check names, types and ranges in place (numbers given as strings, e.g. ``1e-3`` from YAML, become numbers).

    The valid range of each numeric key is in :data:`experiment.ranges.RANGES`.
    """
    keys = valid_keys(algo)
    for key in hyperparams:
        if not isinstance(key, str):
            raise ConfigError(f"hyperparameter names are words, got {key!r}; valid keys: {', '.join(sorted(keys))}")
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else f"valid keys: {', '.join(sorted(keys))}"
            raise ConfigError(f"unknown hyperparameter {key!r} for --algo {algo}; {hint}")
    policy = hyperparams.get("policy")
    if policy is not None and (not isinstance(policy, str) or policy not in ALGOS[algo].policy_aliases):
        raise ConfigError(f"policy {policy!r} unknown to --algo {algo}; use {', '.join(ALGOS[algo].policy_aliases)}")
    # raise if a kwargs string does not parse to a dict, or a name is unknown or of the wrong kind
    parsed = parse_kwargs("policy_kwargs", hyperparams["policy_kwargs"]) if "policy_kwargs" in hyperparams else None
    if "replay_buffer_kwargs" in hyperparams:
        parse_kwargs("replay_buffer_kwargs", hyperparams["replay_buffer_kwargs"])
    if hyperparams.get("replay_buffer_class") is not None:
        replay_buffer_class(hyperparams["replay_buffer_class"])
    check_names(hyperparams)
    try:
        check_ranges(hyperparams, parsed)
    except RangeError as e:
        raise ConfigError(str(e)) from None


def replay_buffer_class(name: Any) -> type:
    """The zoo's ``replay_buffer_class``: a name SB3 ships (``HerReplayBuffer``) or the dotted path of a subclass of
    SB3's ``ReplayBuffer``."""
    if isinstance(name, type) and issubclass(name, buffers.ReplayBuffer):
        return name
    if isinstance(name, str) and name in REPLAY_BUFFERS:
        return getattr(buffers, name, None) or getattr(stable_baselines3, name)
    if not isinstance(name, str) or "." not in name:
        raise ConfigError(f"unknown replay_buffer_class {name!r}; use one of {', '.join(sorted(REPLAY_BUFFERS))}")
    return import_class(name, "replay_buffer_class")


def model_kwargs(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments from resolved hyperparameters (zoo and project keys removed, schedules built)."""
    kwargs = {k: v for k, v in hyperparams.items() if k not in ZOO_KEYS | PROJECT_KEYS}
    for key in LR_KEYS & kwargs.keys():
        if isinstance(kwargs[key], str) and kwargs[key].startswith("lin_"):
            kwargs[key] = LinearSchedule(float(kwargs[key][4:]), 0.0, 1.0)
    for key in ("policy_kwargs", "replay_buffer_kwargs"):
        if key in kwargs:
            kwargs[key] = parse_kwargs(key, kwargs[key])
    if kwargs.get("replay_buffer_class") is not None:
        kwargs["replay_buffer_class"] = replay_buffer_class(kwargs["replay_buffer_class"])
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    return kwargs
