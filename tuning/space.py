"""
The search space of a tuning study, as data: what is sampled, on which range and scale, and what is held fixed.

The defaults below are the whole space; a YAML file (``--space FILE.yml``) changes it without touching code::

    # every key is optional
    separate_learning_rates: false   # true: actor_learning_rate, critic_learning_rate, ent_coef_learning_rate
    extra: [gamma, batch_size]       # switch on optional parameters from EXTRA_PARAMS
    params:                          # change (or add) a parameter's spec; `null` removes one
      learning_rate: {low: 1.0e-6, high: 1.0e-1}
      tau: null
    fixed:                           # hyperparameters every trial uses, as in configs/sac.yml
      learning_starts: 50
      policy_kwargs: "dict(net_arch=[16, 16])"

A spec is ``{type: float, low, high, log}``, ``{type: int, low, high, log}`` or ``{type: categorical, choices}``.
Two names are not constructor arguments and are translated when a trial's hyperparameters are built:
``target_entropy_scale`` (target entropy = scale * -dim(A), so that one range means the same on every env: 1.0 is
SAC's default ``"auto"``) and ``net_width`` (``policy_kwargs: dict(net_arch=[w, w])``).
"""

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from experiment.config import read_yaml_mapping, validate
from experiment.errors import ConfigError, UserError

# Learning rates and tau span orders of magnitude, so they are sampled on a log scale.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
    "tau": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
    # 0.25..2 around SAC's -dim(A): lower asks for a more deterministic policy, higher for more exploration
    "target_entropy_scale": {"type": "float", "low": 0.25, "high": 2.0, "log": False},
}
# With `separate_learning_rates: true` these replace the shared learning_rate (CustomSAC only)
SEPARATE_LR_PARAMS: dict[str, dict[str, Any]] = {
    "actor_learning_rate": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
    "critic_learning_rate": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
    "ent_coef_learning_rate": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
}
# Switched on by name with `extra: [...]` (or `--extra` on the command line)
EXTRA_PARAMS: dict[str, dict[str, Any]] = {
    "gamma": {"type": "categorical", "choices": [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]},
    "batch_size": {"type": "categorical", "choices": [64, 128, 256, 512]},
    "net_width": {"type": "categorical", "choices": [64, 128, 256, 400]},
}
SAMPLERS = ("tpe", "random", "cmaes")
SPEC_KEYS = {"type", "low", "high", "log", "step", "choices"}


class TuningError(UserError):
    """A problem with a tuning run's input (space, storage, options), told in one line."""


@dataclass
class SearchSpace:
    """
    What a trial samples and what it keeps fixed.

    :param params: parameter name -> spec (see the module docstring)
    :param fixed: hyperparameters shared by every trial (they override the env's entry in configs/sac.yml)
    """

    params: dict[str, dict[str, Any]]
    fixed: dict[str, Any] = field(default_factory=dict)

    def sample(self, trial: optuna.Trial, action_dim: int) -> dict[str, Any]:
        """
        Sample one set of hyperparameters with ``trial`` (in the order of ``params``, so a seeded sampler gives the
        same values for the same seed).

        :param trial: the Optuna trial
        :param action_dim: dim(A) of the env, to turn ``target_entropy_scale`` into an absolute target entropy
        :return: constructor-ready hyperparameters (``fixed`` merged in), YAML-serialisable
        """
        sampled = {name: _suggest(trial, name, spec) for name, spec in self.params.items()}
        return {**self.fixed, **to_hyperparams(sampled, action_dim)}

    def describe(self) -> str:
        """One line per parameter, for the log."""
        lines = []
        for name, spec in self.params.items():
            if spec["type"] == "categorical":
                lines.append(f"  {name}: one of {spec['choices']}")
            else:
                lines.append(f"  {name}: {spec['low']:g} .. {spec['high']:g}{' (log)' if spec.get('log') else ''}")
        lines += [f"  {name} = {value!r} (fixed)" for name, value in self.fixed.items()]
        return "\n".join(lines)


def to_hyperparams(sampled: dict[str, Any], action_dim: int) -> dict[str, Any]:
    """Translate sampled values into hyperparameters (``target_entropy_scale``, ``net_width``)."""
    hyperparams = dict(sampled)
    if "target_entropy_scale" in hyperparams:
        # Stored as an absolute float: the exported YAML must not depend on this module to be read.
        hyperparams["target_entropy"] = float(-action_dim * hyperparams.pop("target_entropy_scale"))
    if "net_width" in hyperparams:
        width = int(hyperparams.pop("net_width"))
        hyperparams["policy_kwargs"] = f"dict(net_arch=[{width}, {width}])"
    return hyperparams


def _suggest(trial: optuna.Trial, name: str, spec: dict[str, Any]) -> Any:
    log = bool(spec.get("log", False))
    if spec["type"] == "float":
        return trial.suggest_float(name, spec["low"], spec["high"], log=log, step=spec.get("step"))
    if spec["type"] == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], log=log, step=spec.get("step", 1))
    return trial.suggest_categorical(name, spec["choices"])


def check_space(space: SearchSpace, algo: str, base: dict[str, Any], action_dim: int) -> None:
    """
    Check every sampled parameter before the first trial: its name, and that each end of its range (each choice of
    a categorical) makes valid hyperparameters with ``base`` and the fixed values. The range checks are intervals, so
    valid ends mean a valid range.

    :param space: the search space
    :param algo: key of ``experiment.config.ALGOS``
    :param base: the hyperparameters a trial starts from (the env's entry, ``n_timesteps`` included)
    :param action_dim: dim(A) of the env (``target_entropy_scale``)
    :raises TuningError: naming the parameter and the value that is wrong
    """
    for name, spec in space.params.items():
        values = spec["choices"] if spec["type"] == "categorical" else (spec["low"], spec["high"])
        for value in values:
            hyperparams = {**base, **space.fixed, **to_hyperparams({name: value}, action_dim)}
            try:
                validate(algo, hyperparams)
            except ConfigError as e:
                raise TuningError(f"space parameter {name}: {value!r} does not work: {e}") from None


class TrialSeededSampler(BaseSampler):
    """
    Wraps a sampler so that trial ``k`` samples with a sampler seeded ``seed + k``.

    Seeding one sampler per process would make every worker of a shared study draw the same "random" parameters;
    trial numbers are unique in a study, so per-trial seeds keep workers apart and keep a study reproducible (the same
    ``--seed`` gives the same first trials).

    :param factory: builds the wrapped sampler from a seed
    :param seed: base seed (``None``: unseeded)
    """

    def __init__(self, factory: Callable[[int | None], BaseSampler], seed: int | None):
        self._factory = factory
        self._seed = seed
        self._samplers: dict[int, BaseSampler] = {}
        self._lock = threading.Lock()

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        with self._lock:
            if trial.number not in self._samplers:
                self._samplers[trial.number] = self._factory(None if self._seed is None else self._seed + trial.number)
            return self._samplers[trial.number]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, name: str, distribution: Any) -> Any:
        return self._for(trial).sample_independent(study, trial, name, distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        with self._lock:
            self._samplers.pop(trial.number, None)


def make_sampler(name: str, seed: int | None) -> BaseSampler:
    """``tpe`` (default), ``random`` or ``cmaes`` (needs the ``cmaes`` package), seeded per trial."""
    if name == "tpe":
        return TrialSeededSampler(lambda s: optuna.samplers.TPESampler(seed=s), seed)
    if name == "random":
        return TrialSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise TuningError("--sampler cmaes needs the cmaes package: pip install cmaes") from None
        return TrialSeededSampler(lambda s: optuna.samplers.CmaEsSampler(seed=s, warn_independent_sampling=False), seed)
    raise TuningError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def load_space(
    path: str | Path | None = None,
    separate_learning_rates: bool | None = None,
    extra: list[str] | None = None,
    algo: str = "custom",
) -> SearchSpace:
    """
    Build the search space: the defaults, then the YAML file, then the command-line switches.

    :param path: YAML file (see the module docstring); ``None`` for the defaults
    :param separate_learning_rates: sample actor, critic and entropy learning rates separately (``None``: as the
        file says, default no)
    :param extra: names from :data:`EXTRA_PARAMS` to sample too
    :param algo: the algorithm; separate learning rates exist only for ``custom``
    :return: the validated space
    """
    data = read_yaml_mapping(path) if path is not None else {}
    unknown = set(data) - {"separate_learning_rates", "extra", "params", "fixed"}
    if unknown:
        raise TuningError(
            f"space file {path}: unknown keys {sorted(unknown)}; use separate_learning_rates, extra, params, fixed"
        )
    separate = separate_learning_rates
    if separate is None:
        separate = bool(data.get("separate_learning_rates", False))
    if separate and algo != "custom":
        raise TuningError(f"separate learning rates exist only for --algo custom, not {algo}")
    params = copy.deepcopy(DEFAULT_PARAMS)
    if separate:
        del params["learning_rate"]
        params.update(copy.deepcopy(SEPARATE_LR_PARAMS))
    for name in list(data.get("extra") or []) + list(extra or []):
        if name not in EXTRA_PARAMS:
            raise TuningError(f"unknown extra parameter {name!r}; choose from {', '.join(EXTRA_PARAMS)}")
        params[name] = copy.deepcopy(EXTRA_PARAMS[name])
    for name, spec in (data.get("params") or {}).items():
        if spec is None:
            params.pop(name, None)
        elif not isinstance(spec, dict):
            raise TuningError(
                f"space parameter {name}: expected a mapping like {{low: 1e-5, high: 1e-3}}, not {spec!r}"
            )
        else:
            params[name] = {**params.get(name, {}), **spec}
    fixed = dict(data.get("fixed") or {})
    for name, spec in params.items():
        _check_spec(name, spec)
    overlap = set(params) & set(fixed)
    if overlap:
        raise TuningError(f"space: {sorted(overlap)} both sampled and fixed; remove one")
    return SearchSpace(params=params, fixed=fixed)


def _check_spec(name: str, spec: dict[str, Any]) -> None:
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise TuningError(f"space parameter {name}: unknown fields {sorted(unknown)}; use {sorted(SPEC_KEYS)}")
    kind = spec.get("type")
    if kind == "categorical":
        if not spec.get("choices"):
            raise TuningError(f"space parameter {name}: categorical needs a non-empty `choices` list")
        return
    if kind not in ("float", "int"):
        raise TuningError(f"space parameter {name}: type must be float, int or categorical, got {kind!r}")
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise TuningError(f"space parameter {name}: needs numeric `low` and `high`") from None
    if not low <= high or (spec.get("log") and low <= 0):
        raise TuningError(f"space parameter {name}: need low <= high (and low > 0 on a log scale), got {low}, {high}")
    spec["low"], spec["high"] = (low, high) if kind == "float" else (int(low), int(high))
    try:  # Optuna's own checks of a range (a step that is not positive, log with step, ...)
        if kind == "float":
            FloatDistribution(spec["low"], spec["high"], log=bool(spec.get("log")), step=spec.get("step"))
        else:
            IntDistribution(spec["low"], spec["high"], log=bool(spec.get("log")), step=spec.get("step", 1))
    except (ValueError, TypeError) as e:
        raise TuningError(f"space parameter {name}: {e}") from None
