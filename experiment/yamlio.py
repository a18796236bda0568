"""The one way this project reads YAML: a safe loader, so a file from elsewhere never runs code.

``yaml.safe_load`` builds plain data only. rl-baselines3-zoo writes a run's ``config.yml`` and ``args.yml`` with
``yaml.dump`` of an ``OrderedDict``, which adds two Python tags; they are mapped here to the plain data they stand
for (a mapping, a tuple). Every other tag, ``!!python/object/apply:os.system`` included, is refused by PyYAML's
SafeLoader with a ``yaml.constructor.ConstructorError`` (a ``yaml.YAMLError``).
"""

from pathlib import Path
from typing import Any

import yaml

__all__ = ["SafeZooLoader", "load_yaml", "load_yaml_file"]


class SafeZooLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader plus the two data-only tags the zoo's own files use."""


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[Any, Any]:
    # `!!python/object/apply:collections.OrderedDict [[[key, value], ...]]`: the single argument is a list of pairs.
    if not isinstance(node, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(None, None, "OrderedDict expects a list of pairs", node.start_mark)
    args = loader.construct_sequence(node, deep=True)
    pairs = args[0] if args else []
    if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise yaml.constructor.ConstructorError(None, None, "OrderedDict expects [key, value] pairs", node.start_mark)
    return {key: value for key, value in pairs}


def _tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
    return tuple(loader.construct_sequence(node, deep=True))  # type: ignore[arg-type]


SafeZooLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)
SafeZooLoader.add_constructor("tag:yaml.org,2002:python/tuple", _tuple)


def load_yaml(text: str) -> Any:
    """
    Parse YAML text with :class:`SafeZooLoader`.

    :param text: YAML document
    :return: plain data (dicts, lists, tuples, strings, numbers, booleans, None)
    :raises yaml.YAMLError: bad syntax, or a tag that would build a Python object
    """
    return yaml.load(text, Loader=SafeZooLoader)  # SafeZooLoader is a SafeLoader


def load_yaml_file(path: str | Path) -> Any:
    """
    Read a YAML file with :class:`SafeZooLoader`.

    :param path: the file
    :return: plain data
    :raises OSError: the file cannot be read
    :raises yaml.YAMLError: bad syntax, or a tag that would build a Python object
    """
    return load_yaml(Path(path).read_text())
