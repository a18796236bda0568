"""What a checkpoint needs besides the model: the state of every env layer and of the random generators."""

import pickle
import random
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

# Attributes that describe how an env is displayed or configured rather than where it is: the new env keeps its own.
_NOT_STATE = frozenset(
    "env venv envs class_attributes results_writer render_mode screen clock window viewer metadata spec "
    "_cached_spec _metadata _saved_kwargs".split()
)


def _picklable_state(obj: Any) -> tuple[dict[str, Any], list[str]]:
    """Split ``vars(obj)`` into the attributes that pickle and the names of those that don't (file handles...)."""
    kept, skipped = {}, []
    for key, value in vars(obj).items():
        if key in _NOT_STATE:
            continue
        try:
            pickle.dumps(value)
            kept[key] = value
        except Exception:
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

    Unpicklable attributes of *wrappers* (Monitor's CSV writer) are skipped; an unpicklable attribute of the
    innermost env means its dynamics state would be lost, so the whole snapshot is refused instead.
    """
    vec_layers = _vec_layers(venv)
    if not isinstance(vec_layers[-1], DummyVecEnv):
        return None, f"{type(vec_layers[-1]).__name__} keeps its envs in other processes"
    snapshot: dict[str, Any] = {"vec": [], "envs": []}
    for layer in vec_layers:
        state, _ = _picklable_state(layer)
        snapshot["vec"].append((type(layer).__name__, state))
    for i, env in enumerate(vec_layers[-1].envs):
        chain = []
        for layer in _env_layers(env):
            state, skipped = _picklable_state(layer)
            if skipped and not isinstance(layer, gym.Wrapper):
                return None, f"env {i} ({type(layer).__name__}) has unpicklable attributes {skipped}"
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
