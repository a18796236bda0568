"""
Classes a config names by dotted path (``env_wrapper``, ``vec_env_wrapper``, ``callback``, ``replay_buffer_class``):
each resolves only to the kind of class its key claims, and is refused before anything calls it.

Importing a module runs its code, so the names in a run folder someone else wrote (``evaluate.py RUN``,
``train.py --resume RUN``) are checked by their top-level package first, without importing anything: outside
:data:`TRUSTED_PACKAGES` they need ``--trust-files``.
"""

import importlib
from collections.abc import Iterable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper

from experiment.cli import PACKAGES, TRUST_FLAG
from experiment.errors import ConfigError, UserError

# The class each name-taking key must name a subclass of
NAME_KEYS: dict[str, type] = {
    "env_wrapper": gym.Wrapper,
    "vec_env_wrapper": VecEnvWrapper,
    "callback": BaseCallback,
    "replay_buffer_class": ReplayBuffer,
}
TRUSTED_PACKAGES = ("gymnasium", "stable_baselines3", "sb3_contrib", "rl_zoo3", *PACKAGES)


def named_paths(key: str, value: Any) -> list[tuple[str, dict[str, Any]]]:
    """
    The zoo's way to name classes with their kwargs: one dotted path, a one-key mapping ``{path: kwargs}``, or a
    list of these (``replay_buffer_class``: one path, or one of SB3's buffer names). Nothing is imported.

    :return: (dotted path, kwargs) pairs in the order given
    """
    if value is None:
        return []
    pairs = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and len(item) == 1:
            path, kwargs = next(iter(item.items()))
        else:
            path, kwargs = item, {}
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{key}: expected a dotted path or {{path: kwargs}} (check indentation), got {item!r}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ConfigError(f"{key}: the kwargs of {path} must be a mapping, got {kwargs!r}")
        pairs.append((path, dict(kwargs or {})))
    return pairs


def import_class(path: str, key: str) -> type:
    """
    The class ``path`` names, checked to be a subclass of what ``key`` takes (:data:`NAME_KEYS`) before anyone
    calls it.

    :raises ConfigError: it cannot be imported, or it is something else (a function, another class)
    """
    module_name, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError, TypeError):
        raise ConfigError(f"{key} {path!r} cannot be imported; expected package.module.Name") from None
    base = NAME_KEYS[key]
    if not (isinstance(found, type) and issubclass(found, base)):
        what = f"the class {found.__qualname__}" if isinstance(found, type) else f"a {type(found).__name__}"
        raise ConfigError(f"{key} {path} is {what}, not a subclass of {base.__module__}.{base.__qualname__}")
    return found


def check_names(hyperparams: dict[str, Any]) -> None:
    """Import every class the name-taking keys name and check its kind (SB3's buffer names need no import)."""
    for key in NAME_KEYS:
        for path, _ in named_paths(key, hyperparams.get(key)):
            if "." in path or key != "replay_buffer_class":
                import_class(path, key)


def untrusted_modules(hyperparams: dict[str, Any], gym_packages: Iterable[str] = ()) -> list[str]:
    """
    What a run's files would import outside :data:`TRUSTED_PACKAGES`, as ``"module (key)"``, found without importing.

    :param hyperparams: the run's ``config.yml``
    :param gym_packages: the run's ``--gym-packages`` (``args.yml``)
    """
    modules = [(str(module), "gym_packages") for module in gym_packages]
    for key in NAME_KEYS:  # a path without a dot imports nothing (SB3's buffer names; anything else is refused)
        modules += [(path.rpartition(".")[0], key) for path, _ in named_paths(key, hyperparams.get(key)) if "." in path]
    return [f"{module} ({key})" for module, key in modules if module.split(".")[0] not in TRUSTED_PACKAGES]


def check_trusted(hyperparams: dict[str, Any], gym_packages: Iterable[str], where: str, trust: bool) -> None:
    """
    Refuse a run folder from elsewhere that would import modules outside :data:`TRUSTED_PACKAGES`, unless ``trust``.

    :param where: the folder, for the message
    :raises UserError: naming each such module and the flag
    """
    found = untrusted_modules(hyperparams, gym_packages)
    if found and not trust:
        raise UserError(
            f"{where} would import {', '.join(found)}, outside {', '.join(TRUSTED_PACKAGES)}; importing runs its "
            f"code: pass {TRUST_FLAG} only if you trust {where}"
        )
