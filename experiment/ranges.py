"""The valid range of every numeric hyperparameter, as one table, and the check that reads it.

A value outside its range is refused before any run folder exists, in one line that says what would be right.
The README's "Valid ranges" table is this table in prose.
"""

import math
from dataclasses import dataclass
from typing import Any


class RangeError(ValueError):
    """A hyperparameter outside its range; the message names the key, the value and the range."""


@dataclass(frozen=True)
class Range:
    """
    Numbers ``low <= x <= high`` (``low < x`` when ``low_open``), of type ``kind``, plus the values in ``also``.

    :param kind: ``int`` or ``float``; floats must be finite
    :param low: smallest valid value (None: unbounded)
    :param high: largest valid value (None: unbounded)
    :param low_open: exclude ``low`` itself
    :param also: extra valid values outside the interval (``-1`` for gradient_steps)
    :param prefix: string form also accepted, ``prefix + number`` (``lin_`` schedules, ``auto_`` ent_coef)
    :param words: strings accepted as they are (``auto``)
    :param meaning: what the value is, shown in the error
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    also: tuple[int, ...] = ()
    prefix: str = ""
    words: tuple[str, ...] = ()
    meaning: str = ""

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            text = f"{noun} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            text = f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = f"a finite {noun[2:]}" if self.kind is float else noun
        extras = [str(v) for v in self.also] + [repr(w) for w in self.words]
        if self.prefix:
            extras.append(f"{self.prefix}<{text.split(' ', 1)[1]}>")
        return " or ".join([text, *extras])

    def contains(self, number: float) -> bool:
        if number in self.also:
            return True
        if not math.isfinite(number):
            return False
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return False
        return self.high is None or number <= self.high


LEARNING_RATE = Range(float, 0, low_open=True, prefix="lin_", meaning="step size, or a linear schedule from it to 0")
RANGES: dict[str, Range] = {
    "n_timesteps": Range(int, 1, meaning="environment steps to train for"),
    "n_envs": Range(int, 1, meaning="parallel environments"),
    "buffer_size": Range(int, 1, meaning="transitions the replay buffer holds"),
    "learning_starts": Range(int, 0, meaning="random-action steps before the first gradient step"),
    "batch_size": Range(int, 1, meaning="transitions per gradient step"),
    "tau": Range(float, 0, 1, low_open=True, meaning="share of the critics copied into the targets per update"),
    "gamma": Range(float, 0, 1, meaning="discount factor"),
    "gradient_steps": Range(int, 1, also=(-1,), meaning="gradient steps per rollout; -1: as many as env steps"),
    "target_update_interval": Range(int, 1, meaning="gradient steps between two target updates"),
    "n_steps": Range(int, 1, meaning="steps of the n-step return"),
    "stats_window_size": Range(int, 1, meaning="episodes averaged in rollout/ logs"),
    "sde_sample_freq": Range(int, -1, meaning="steps between gSDE noise samples; -1: once per rollout"),
    "top_quantiles_to_drop_per_net": Range(int, 0, meaning="TQC: quantiles dropped per critic"),
    "policy_delay": Range(int, 1, meaning="CrossQ: critic updates per actor update"),
    "frame_stack": Range(int, 1, meaning="observations stacked by VecFrameStack"),
    "noise_std": Range(float, 0, meaning="standard deviation of the action noise (noise_type)"),
    "learning_rate": LEARNING_RATE,
    "actor_learning_rate": LEARNING_RATE,
    "critic_learning_rate": LEARNING_RATE,
    "ent_coef_learning_rate": LEARNING_RATE,
    "ent_coef": Range(float, 0, low_open=True, prefix="auto_", words=("auto",), meaning="entropy coefficient"),
    "target_entropy": Range(float, words=("auto",), meaning="entropy target; auto: -dim(action space)"),
    # inside policy_kwargs
    "n_critics": Range(int, 1, meaning="critics (Q networks)"),
    "n_quantiles": Range(int, 1, meaning="TQC: quantiles per critic"),
}
# Keys whose None means "use another key's value" (CustomSAC's per-network learning rates default to learning_rate).
NONE_ALLOWED = {"actor_learning_rate", "critic_learning_rate", "ent_coef_learning_rate"}
TRAIN_FREQ_UNITS = ("step", "episode")


def _as_number(value: Any, kind: type) -> float | None:
    """``value`` as a number of ``kind`` (YAML may give ``1e-3`` as a string), None if it is none."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if kind is int and math.isfinite(number):
        return int(number) if number == int(number) else None
    return number


def _within(value: Any, rule: Range) -> Any:
    """The value as the algorithm takes it, or None when it is outside ``rule``."""
    if isinstance(value, str) and value in rule.words:
        return value
    if isinstance(value, str) and rule.prefix and value.startswith(rule.prefix):
        inner = Range(rule.kind, rule.low, rule.high, rule.low_open)
        return value if _within(value[len(rule.prefix) :], inner) is not None else None
    number = _as_number(value, rule.kind)
    return number if number is not None and rule.contains(number) else None


def check_value(key: str, value: Any, rule: Range) -> Any:
    """
    Check one value against its range.

    :return: the value as the algorithm takes it (numbers given as strings become numbers; schedules stay strings)
    :raises RangeError: with the range and the key's meaning
    """
    if value is None and key in NONE_ALLOWED:
        return None
    checked = _within(value, rule)
    if checked is None:
        meaning = f" ({rule.meaning})" if rule.meaning else ""
        raise RangeError(f"{key} must be {rule.describe()}{meaning}, got {value!r}")
    return checked


def check_train_freq(value: Any) -> Any:
    """SB3's ``train_freq``: an integer >= 1 (steps), or ``[n, "step"|"episode"]``; returns the YAML form."""
    steps = Range(int, 1)
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[1] in TRAIN_FREQ_UNITS:
        n = _within(value[0], steps)
        if n is not None:
            return [n, value[1]]
    elif not isinstance(value, (list, tuple)) and (n := _within(value, steps)) is not None:
        return n
    right = 'an integer >= 1 or [n, "step"|"episode"] with n >= 1 (how often to train: env steps or episodes)'
    raise RangeError(f"train_freq must be {right}, got {value!r}")


def check_ranges(hyperparams: dict[str, Any], policy_kwargs: dict[str, Any] | None = None) -> None:
    """
    Check every numeric hyperparameter against :data:`RANGES`, in place (numbers given as strings become numbers).

    :param hyperparams: resolved hyperparameters (zoo keys included)
    :param policy_kwargs: the evaluated ``policy_kwargs``, whose numeric keys (n_critics, ...) are checked too
    :raises RangeError: on the first value out of range
    """
    for key, value in hyperparams.items():
        if key in RANGES:
            hyperparams[key] = check_value(key, value, RANGES[key])
        elif key == "train_freq":
            hyperparams[key] = check_train_freq(value)
    for key, value in (policy_kwargs or {}).items():
        if key in RANGES:
            check_value(f"policy_kwargs {key}", value, RANGES[key])
