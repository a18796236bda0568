"""Python state (dicts, lists, arrays, random generators) in one ``.npz`` file, without pickle.

A checkpoint's env state, RNG states, replay buffer and VecNormalize statistics are trees of plain values, numpy
arrays and a few known types. :func:`save_tree` writes the tree's shape as JSON and each array as an array member
of an ``.npz``; :func:`load_tree` reads it back with ``np.load(allow_pickle=False)``, so reading a checkpoint from
elsewhere cannot run code. A value of any other type is :class:`Unencodable`: the caller skips it or gives up.
"""

from __future__ import annotations

import json
import os
from collections import deque
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.running_mean_std import RunningMeanStd

__all__ = ["Unencodable", "decode", "encode", "load_tree", "save_tree"]

_TREE = "__tree__"
# Plain classes rebuilt from their attributes (no constructor code from the file runs: only these classes).
_CLASSES: dict[str, type] = {"RunningMeanStd": RunningMeanStd}
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class Unencodable(TypeError):
    """A value this format cannot hold without pickle."""


def encode(obj: Any, arrays: list[np.ndarray]) -> Any:  # one case per supported type
    """``obj`` as a JSON-able tree; its arrays are appended to ``arrays`` and referenced by index."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.ndarray, np.generic)) and not isinstance(obj, np.void):
        if obj.dtype.hasobject:
            raise Unencodable("an array of Python objects")
        arrays.append(np.asarray(obj))
        return {"__array__": len(arrays) - 1, "scalar": isinstance(obj, np.generic)}
    if isinstance(obj, th.Tensor):
        arrays.append(obj.detach().cpu().numpy())
        return {"__tensor__": len(arrays) - 1}
    if isinstance(obj, list):
        return [encode(v, arrays) for v in obj]
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, arrays) for v in obj]}
    if isinstance(obj, deque):
        return {"__deque__": [encode(v, arrays) for v in obj], "maxlen": obj.maxlen}
    if isinstance(obj, (set, frozenset)):
        return {"__set__": [encode(v, arrays) for v in obj], "frozen": isinstance(obj, frozenset)}
    if isinstance(obj, dict):
        return {"__dict__": [[encode(k, arrays), encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, np.random.Generator):
        return {"__generator__": obj.bit_generator.state}
    if isinstance(obj, np.random.RandomState):
        return {"__randomstate__": encode(obj.get_state(legacy=False), arrays)}
    if type(obj).__name__ in _CLASSES and type(obj) is _CLASSES[type(obj).__name__]:
        return {"__object__": type(obj).__name__, "vars": encode(vars(obj), arrays)}
    raise Unencodable(f"a {type(obj).__module__}.{type(obj).__qualname__}")


def _generator(state: dict[str, Any]) -> np.random.Generator:
    if state.get("bit_generator") not in _BIT_GENERATORS:
        raise ValueError(f"unknown bit generator {state.get('bit_generator')!r}")
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def decode(tree: Any, arrays: Any) -> Any:  # the inverse of encode, case by case
    """The inverse of :func:`encode`; ``arrays`` maps ``"a<i>"`` to the i-th array."""
    if isinstance(tree, list):
        return [decode(v, arrays) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__array__" in tree:
        array = arrays[f"a{tree['__array__']}"]
        return array[()] if tree["scalar"] else array
    if "__tensor__" in tree:
        return th.from_numpy(np.array(arrays[f"a{tree['__tensor__']}"]))
    if "__tuple__" in tree:
        return tuple(decode(v, arrays) for v in tree["__tuple__"])
    if "__deque__" in tree:
        return deque((decode(v, arrays) for v in tree["__deque__"]), maxlen=tree["maxlen"])
    if "__set__" in tree:
        items = (decode(v, arrays) for v in tree["__set__"])
        return frozenset(items) if tree["frozen"] else set(items)
    if "__dict__" in tree:
        return {decode(k, arrays): decode(v, arrays) for k, v in tree["__dict__"]}
    if "__generator__" in tree:
        return _generator(tree["__generator__"])
    if "__randomstate__" in tree:
        random_state = np.random.RandomState()
        random_state.set_state(decode(tree["__randomstate__"], arrays))
        return random_state
    if "__object__" in tree:
        obj = _CLASSES[tree["__object__"]].__new__(_CLASSES[tree["__object__"]])
        vars(obj).update(decode(tree["vars"], arrays))
        return obj
    raise ValueError(f"unknown entry {sorted(tree)}")


def save_tree(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` to ``path`` (an ``.npz``); raises :class:`Unencodable` before writing anything."""
    arrays: list[np.ndarray] = []
    tree = json.dumps(encode(obj, arrays))
    with open(path, "wb") as f:
        tree_bytes = np.frombuffer(tree.encode(), dtype=np.uint8)  # UTF-8: a str array would take 4 bytes a char
        np.savez(f, **{_TREE: tree_bytes}, **{f"a{i}": a for i, a in enumerate(arrays)})


def load_tree(path: str | os.PathLike[str]) -> Any:
    """Read what :func:`save_tree` wrote; nothing in the file is unpickled."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if name != _TREE}
        return decode(json.loads(data[_TREE].tobytes().decode()), arrays)
