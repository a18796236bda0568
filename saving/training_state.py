"""What a checkpoint needs besides the model: the state of every env layer and of the random generators."""

import random
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from saving.npz_tree import Unencodable, encode

# Attributes that describe how an env is displayed or configured rather than where it is: the new env keeps its own.
_NOT_STATE = frozenset(
    "env venv envs class_attributes results_writer render_mode screen clock window viewer metadata spec "
    "_cached_spec _metadata _saved_kwargs observation_space action_space _observation_space _action_space".split()
)


def _encodable_state(obj: Any) -> tuple[dict[str, Any], list[str]]:
    """Split ``vars(obj)`` into the attributes a state file holds and the names of those it can't (file handles...)."""
    kept, skipped = {}, []
    for key, value in vars(obj).items():
        if key in _NOT_STATE:
            continue
        try:
            encode(value, [])
            kept[key] = value
        except Unencodable:
            skipped.append(key)
    return kept, skipped


def _env_layers(env: gym.Env) -> list[Any]:
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def _vec_layers(venv: VecEnv) -> list[Any]:
    layers: list[Any] = [venv]
    while isinstance(layers[-1], VecEnvWrapper):
        layers.append(layers[-1].venv)
    return layers


def snapshot_env(venv: VecEnv) -> tuple[dict[str, Any] | None, str]:
    """
    Capture the state of every layer of ``venv``; (None, reason) when it cannot be captured faithfully.

    Attributes of *wrappers* that a state file cannot hold (Monitor's CSV writer) are skipped; such an attribute of
    the innermost env means its dynamics state would be lost, so the whole snapshot is refused instead.
    """
    vec_layers = _vec_layers(venv)
    if not isinstance(vec_layers[-1], DummyVecEnv):
        return None, f"{type(vec_layers[-1]).__name__} keeps its envs in other processes"
    snapshot: dict[str, Any] = {"vec": [], "envs": []}
    for layer in vec_layers:
        state, _ = _encodable_state(layer)
        snapshot["vec"].append((type(layer).__name__, state))
    for i, env in enumerate(vec_layers[-1].envs):
        chain = []
        for layer in _env_layers(env):
            state, skipped = _encodable_state(layer)
            if skipped and not isinstance(layer, gym.Wrapper):
                return None, f"env {i} ({type(layer).__name__}) has attributes no state file holds: {skipped}"
            chain.append((type(layer).__name__, state))
        snapshot["envs"].append(chain)
    return snapshot, ""


def restore_env(venv: VecEnv, snapshot: dict[str, Any]) -> None:
    """Write a snapshot back; raises ValueError when the env's layers differ from the saved ones."""
    vec_layers = _vec_layers(venv)
    saved_vec = [name for name, _ in snapshot["vec"]]
    if [type(x).__name__ for x in vec_layers] != saved_vec or not isinstance(vec_layers[-1], DummyVecEnv):
        raise ValueError(f"VecEnv layers {[type(x).__name__ for x in vec_layers]} differ from the saved {saved_vec}")
    envs = vec_layers[-1].envs
    if len(envs) != len(snapshot["envs"]):
        raise ValueError(f"{len(envs)} envs, the checkpoint has {len(snapshot['envs'])}")
    pairs: list[tuple[Any, dict[str, Any]]] = list(zip(vec_layers, [s for _, s in snapshot["vec"]], strict=True))
    for env, chain in zip(envs, snapshot["envs"], strict=True):
        layers = _env_layers(env)
        if [type(x).__name__ for x in layers] != [name for name, _ in chain]:
            raise ValueError(f"env layers {[type(x).__name__ for x in layers]} differ from {[n for n, _ in chain]}")
        pairs.extend(zip(layers, [s for _, s in chain], strict=True))
    # Only mutate once every layer has been checked, so a mismatch leaves the env as it was.
    for layer, state in pairs:
        vars(layer).update(state)  # bypasses properties on purpose: gymnasium wrappers proxy some attributes


def rng_states() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": th.get_rng_state()}
    if th.cuda.is_available() and th.cuda.is_initialized():
        state["torch_cuda"] = th.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    th.set_rng_state(state["torch"])
    if "torch_cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["torch_cuda"])


# What SB3's model zip pickles about the run in progress; a checkpoint keeps it in its own state file instead.
_MODEL_RUNTIME = ("_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer", "ep_success_buffer")


def model_runtime(model: Any) -> dict[str, Any]:
    """The model's between-steps state: last observations, episode-info deques, warm-up RNG, train_freq."""
    state = {key: getattr(model, key, None) for key in _MODEL_RUNTIME}
    state["action_space_rng"] = model.action_space._np_random  # warm-up actions are sampled from the space
    train_freq = getattr(model, "train_freq", None)
    if train_freq is not None:
        state["train_freq"] = (train_freq.frequency, train_freq.unit.value)
    return state


def restore_model_runtime(model: Any, state: dict[str, Any]) -> None:
    for key in _MODEL_RUNTIME:
        setattr(model, key, state[key])
    model.action_space._np_random = state["action_space_rng"]


def buffer_state(buffer: Any) -> dict[str, Any]:
    """
    A replay buffer's arrays, cut to the rows written so far, and its position.

    Rows ``[0, pos]`` are kept (row ``pos`` too: with ``optimize_memory_usage`` it holds the last next-observation).
    """
    rows = buffer.buffer_size if buffer.full else min(buffer.pos + 1, buffer.buffer_size)

    def cut(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        value = value[:rows] if len(value) == buffer.buffer_size else value
        # HerReplayBuffer keeps each transition's info dict in an object array: stored as nested lists of dicts,
        # which the checkpoint's state file encodes without pickle.
        return value.tolist() if value.dtype.hasobject else value

    arrays = {k: cut(v) for k, v in vars(buffer).items() if isinstance(v, np.ndarray) or _dict_of_arrays(v)}
    return {"pos": buffer.pos, "full": buffer.full, "arrays": arrays}


def _dict_of_arrays(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, np.ndarray) for v in value.values())


def restore_buffer(buffer: Any, state: dict[str, Any]) -> None:
    """Write :func:`buffer_state` back into a buffer of the same class, size and spaces (ValueError otherwise)."""

    def put(target: Any, saved: Any, name: str) -> None:
        if isinstance(target, dict):
            for key in target:
                put(target[key], saved[key], f"{name}[{key}]")
        elif isinstance(target, np.ndarray) and target.dtype.hasobject and isinstance(saved, list):
            for row, items in enumerate(saved):
                target[row] = np.array([*items, None], dtype=object)[:-1]  # one object per env, never broadcast
        elif not isinstance(target, np.ndarray) or (saved.shape[1:], saved.dtype) != (target.shape[1:], target.dtype):
            have = f"{target.dtype}{target.shape}" if isinstance(target, np.ndarray) else "none"
            raise ValueError(f"replay buffer {name}: the checkpoint has {saved.dtype}{saved.shape}, this model {have}")
        else:
            target[: len(saved)] = saved

    for name, saved in state["arrays"].items():
        put(getattr(buffer, name, None), saved, name)
    buffer.pos, buffer.full = state["pos"], state["full"]
