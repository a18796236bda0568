"""Open an SB3 model zip without unpickling anything, so a model from elsewhere cannot run code.

An SB3 zip holds ``data`` (JSON) and ``*.pth`` tensors. SB3 already reads the tensors with
``torch.load(weights_only=True)``; what it unpickles is every ``data`` entry that JSON could not hold (the policy
class, the spaces, schedules, ``_last_obs``...), each stored as a cloudpickle blob beside a few readable fields.
:func:`load_model` rebuilds each such entry from those readable fields, the env and the caller's hyperparameters,
and hands them to SB3 as ``custom_objects``, so SB3 never reaches the blob. An entry that cannot be rebuilt is
refused unless the caller trusts the file (``trust_pickle=True``, the scripts' ``--trust-files``).
"""

from __future__ import annotations

import importlib
import json
import os
import zipfile
from typing import Any

import gymnasium as gym
from stable_baselines3.common import buffers
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.her.her_replay_buffer import HerReplayBuffer

from saving.errors import UntrustedPickleError

__all__ = ["load_model", "pickled_entries", "read_zip_data"]

_SERIALIZED = ":serialized:"
# Runtime state, not configuration: None makes SB3 rebuild it (a reset before the next learn(), fresh deques,
# lr_schedule derived again from learning_rate by _setup_model). A checkpoint restores these from its own files.
_RUNTIME = "_last_obs _last_episode_starts _last_original_obs ep_info_buffer ep_success_buffer lr_schedule".split()
# Where the classes named in policy_kwargs may come from (activation functions, optimizers, feature extractors).
_CLASS_PACKAGES = ("torch.nn", "torch.optim", "stable_baselines3", "sb3_contrib", "custom_sac")
# Replay buffers SB3 picks by itself from the spaces and n_steps: None lets it pick again.
_DEFAULT_BUFFERS = (buffers.ReplayBuffer, buffers.DictReplayBuffer, buffers.NStepReplayBuffer)
_SCHEDULES = {str(LinearSchedule): LinearSchedule, str(ConstantSchedule): ConstantSchedule}


def read_zip_data(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``data`` JSON of an SB3 model zip, as stored (pickled entries left as they are, never decoded)."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("data"))


def pickled_entries(data: dict[str, Any]) -> list[str]:
    """Keys of ``data`` that SB3 would unpickle."""
    return [key for key, value in data.items() if isinstance(value, dict) and _SERIALIZED in value]


def _readable(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith(":")}


def _same(value: Any, stored: Any) -> bool:
    """Whether ``value`` is what SB3 wrote as ``stored`` (the JSON value, or ``str()`` of what JSON can't hold)."""
    try:
        return json.loads(json.dumps(value)) == stored
    except (TypeError, ValueError):
        return str(value) == stored


def _check_matches(what: str, obj: Any, entry: dict[str, Any]) -> None:
    fields = vars(obj) if not isinstance(obj, dict) else obj
    for key, stored in _readable(entry).items():
        if key in fields and not key.endswith("np_random") and not _same(fields[key], stored):
            raise ValueError(f"the model's {what} has {key}={stored}, the env's has {fields[key]}")


def _same_kwargs(given: dict[str, Any], entry: dict[str, Any]) -> bool:
    stored = _readable(entry)
    return given.keys() == stored.keys() and all(_same(given[k], stored[k]) for k in given)


def _match_class(what: str, entry: dict[str, Any], candidates: list[type], name: str | None = None) -> type:
    """
    The candidate whose module and docstring are the stored ones (the readable part of a pickled class).

    ``name`` breaks a tie between classes with the same docstring (SB3's ``CnnPolicy`` and ``MultiInputPolicy``).
    """
    found = [c for c in candidates if c.__module__ == entry.get("__module__") and c.__doc__ == entry.get("__doc__")]
    if len(found) > 1 and name is not None:
        found = [c for c in found if c.__name__ == name]
    if len(found) != 1:
        raise UntrustedPickleError(
            f"{what} from {entry.get('__module__')} is none of {[c.__name__ for c in candidates]}"
        )
    return found[0]


def _resolve_class(text: str) -> type | None:
    """``"<class 'torch.nn.modules.activation.ReLU'>"`` -> ``torch.nn.ReLU``, for classes of the allowed packages."""
    if not (text.startswith("<class '") and text.endswith("'>")):
        return None
    module, _, name = text[len("<class '") : -2].rpartition(".")
    if not any(module == p or module.startswith(p + ".") for p in _CLASS_PACKAGES):
        return None
    obj = getattr(importlib.import_module(module), name, None)
    return obj if isinstance(obj, type) and str(obj) == text else None


def _policy_kwargs(entry: dict[str, Any]) -> dict[str, Any]:
    kwargs = {}
    for key, stored in _readable(entry).items():
        resolved = _resolve_class(stored) if isinstance(stored, str) else None
        if isinstance(stored, str) and stored.startswith("<") and resolved is None:
            raise UntrustedPickleError(f"policy_kwargs {key}={stored} cannot be rebuilt from its description")
        kwargs[key] = resolved if resolved is not None else stored
    return kwargs


def _schedule(key: str, entry: dict[str, Any]) -> Any:
    schedule = _SCHEDULES.get(entry[":type:"])
    if schedule is None:
        raise UntrustedPickleError(f"{key} is a {entry[':type:']}, which cannot be rebuilt from its description")
    return schedule(**_readable(entry))


def _rebuild(key: str, entry: dict[str, Any], algo_class: type[BaseAlgorithm], env: VecEnv | gym.Env | None) -> Any:
    """One pickled ``data`` entry, rebuilt from its readable fields and the env; UntrustedPickleError if it can't."""
    if key in _RUNTIME:
        return None
    if key in ("observation_space", "action_space"):
        if env is None:
            raise UntrustedPickleError(f"the model's {key} is pickled: pass the env it plays")
        # The space as the model sees it: SB3 wraps the env first (channel-last images are transposed)
        space = getattr(algo_class._wrap_env(env, verbose=0, monitor_wrapper=False), key)
        if str(type(space)) != entry[":type:"]:
            raise ValueError(f"the model's {key} is a {entry[':type:']}, the env's a {type(space)}")
        _check_matches(key, space, entry)
        return space
    if key == "policy_class":
        candidates = list(dict.fromkeys(algo_class.policy_aliases.values()))
        dict_obs = env is not None and isinstance(env.observation_space, gym.spaces.Dict)
        return _match_class("policy_class", entry, candidates, "MultiInputPolicy" if dict_obs else "CnnPolicy")
    if key == "replay_buffer_class":
        candidates = [*_DEFAULT_BUFFERS, HerReplayBuffer]
        found = _match_class("replay_buffer_class", entry, candidates)
        return None if found in _DEFAULT_BUFFERS else found
    if key == "policy_kwargs":
        return _policy_kwargs(entry)
    if key in ("learning_rate", "actor_learning_rate", "critic_learning_rate", "ent_coef_learning_rate"):
        return _schedule(key, entry)
    if key == "train_freq":
        return 1  # how often the saved model trained is not readable; callers that train pass train_freq
    raise UntrustedPickleError(f"{key} (a {entry[':type:']}) cannot be rebuilt from its description")


def load_model(
    path: str | os.PathLike[str],
    algo_class: type[BaseAlgorithm],
    env: gym.Env | VecEnv | None = None,
    *,
    device: str = "auto",
    trust_pickle: bool = False,
    **kwargs: Any,
) -> BaseAlgorithm:
    """
    ``algo_class.load`` that unpickles nothing (unless ``trust_pickle``).

    Pickled entries are rebuilt: the spaces are the env's (checked against the stored shape, bounds and dtype),
    the policy and replay buffer classes are matched by module and docstring among the algorithm's own, classes in
    ``policy_kwargs`` are looked up in torch/SB3/sb3-contrib/custom_sac by name, ``lin_`` schedules from their
    fields; runtime state (``_last_obs``, episode-info deques) is left for SB3 to rebuild. Any entry in ``kwargs``
    replaces the stored one (as with ``algo_class.load``) and is never read from the file.

    :param path: the model zip
    :param algo_class: the algorithm that saved it
    :param env: the env the model plays (needed whenever the spaces are pickled, which is always with SB3 >= 2)
    :param device: torch device
    :param trust_pickle: let SB3 unpickle what cannot be rebuilt (only for files from a trusted source)
    :param kwargs: attributes set on the model, as with ``algo_class.load`` (e.g. ``train_freq``, ``seed``)
    :return: the model
    :raises UntrustedPickleError: an entry needs unpickling and ``trust_pickle`` is False
    """
    data = read_zip_data(path)
    rebuilt: dict[str, Any] = {}
    for key in pickled_entries(data):
        if key in kwargs:
            if key == "policy_kwargs" and not _same_kwargs(kwargs[key], data[key]):
                raise ValueError(f"policy_kwargs {kwargs[key]} differ from the model's {_readable(data[key])}")
            rebuilt[key] = kwargs[key]
            continue
        try:
            rebuilt[key] = _rebuild(key, data[key], algo_class, env)
        except UntrustedPickleError as e:
            if not trust_pickle:
                raise UntrustedPickleError(
                    f"{os.fspath(path)}: {e}; opening it would unpickle it, which runs code from the file "
                    "(pass --trust-files only for a file you trust)"
                ) from None
    return algo_class.load(path, env=env, device=device, custom_objects=rebuilt, **kwargs)
