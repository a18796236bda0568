"""
The zoo writes kwargs as Python source, ``"dict(net_arch=[64, 64], activation_fn=nn.ReLU)"``; such a string is
parsed with :mod:`ast` and built from its nodes, never evaluated, so a config cannot run code.

Accepted: literals (numbers, strings, ``True``, ``None``, ...), ``-x``, lists, tuples, ``{...}``, ``dict(k=v, ...)``,
and the classes under ``nn.``, ``th.nn.`` and ``th.optim.`` (activation functions, optimizers). That covers every
kwargs string in rl-baselines3-zoo's ``hyperparams/`` (``tests/zoo_kwargs.yml`` holds them).
"""

import ast
from types import ModuleType
from typing import Any

import torch as th

from experiment.errors import ConfigError

# The prefixes a class may be named under, as the zoo writes them (``nn`` is ``torch.nn`` there)
CLASS_MODULES: dict[str, ModuleType] = {"nn": th.nn, "th.nn": th.nn, "th.optim": th.optim}
ALLOWED = "literals, lists, tuples, {...}, dict(key=value) and classes under nn., th.nn. or th.optim."


def parse_kwargs(key: str, value: Any) -> dict[str, Any]:
    """
    The kwargs a hyperparameter holds: a mapping as it is, or a string parsed as described in this module.

    :param key: the hyperparameter's name, for the error messages
    :param value: a mapping, or a string such as ``"dict(net_arch=[256, 256])"``
    :return: the mapping
    :raises ConfigError: not a mapping, not Python syntax, or a node outside :data:`ALLOWED` (named in the message)
    """
    if isinstance(value, dict):
        return dict(value)
    example = "dict(net_arch=[256, 256])"
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a mapping or a string such as {example}, got {value!r}")
    try:
        tree = ast.parse(value.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise ConfigError(f"{key} must be a mapping such as {example}; {value!r} is not Python syntax") from None
    parsed = _build(tree.body, key)
    if not isinstance(parsed, dict):
        raise ConfigError(f"{key} must be a mapping such as {example}, got {value!r}")
    return parsed


def _build(node: ast.AST, key: str) -> Any:
    """The value of one node, or a ConfigError naming it."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _build(node.operand, key)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, ast.List):
        return [_build(item, key) for item in node.elts]
    elif isinstance(node, ast.Tuple):
        return tuple(_build(item, key) for item in node.elts)
    elif isinstance(node, ast.Dict) and None not in node.keys:  # a None key is ``**other``
        return _mapping([(_build(k, key), v) for k, v in zip(node.keys, node.values)], key, node)  # type: ignore[arg-type]
    elif _is_dict_call(node):
        return _mapping([(kw.arg, kw.value) for kw in node.keywords], key, node)  # type: ignore[attr-defined]
    elif isinstance(node, ast.Attribute):
        module, _, name = ast.unparse(node).rpartition(".")
        # vars(): a plain lookup, so that no module-level __getattr__ runs
        found = vars(CLASS_MODULES[module]).get(name) if module in CLASS_MODULES else None
        if isinstance(found, type):
            return found
    raise ConfigError(f"{key}: {ast.unparse(node)} is not allowed; use {ALLOWED}")


def _is_dict_call(node: ast.AST) -> bool:
    """``dict(k=v, ...)``: the name ``dict``, keywords only, no ``**other``."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "dict"
        and not node.args
        and all(kw.arg is not None for kw in node.keywords)
    )


def _mapping(items: list[tuple[Any, ast.AST]], key: str, node: ast.AST) -> dict[Any, Any]:
    """A dict from (key, value node) pairs; its keys must be hashable values."""
    built = {}
    for name, value in items:
        try:
            hash(name)
        except TypeError:
            raise ConfigError(f"{key}: {ast.unparse(node)} has a key that is not hashable") from None
        built[name] = _build(value, key)
    return built
