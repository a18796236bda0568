"""The data types of a comparison, and reading the run folders that ``scripts/train.py`` writes."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from experiment.errors import UserError
from experiment.yamlio import load_yaml_file


class CompareError(UserError):
    """A problem with a comparison's input (run folders, envs, options), told in one line that names the fix."""


@dataclass
class Run:
    """One finished run folder, as read from disk."""

    path: Path
    algo: str
    env_id: str
    seed: int | None
    timesteps: np.ndarray  # (K,) env steps at each evaluation
    returns: np.ndarray  # (K, n_eval_episodes)
    wall_time: np.ndarray | None  # (K,) seconds since training start; None for folders written without it
    summary: dict[str, Any]
    hyperparams: dict[str, Any]
    command: str

    @property
    def mean_returns(self) -> np.ndarray:
        return self.returns.mean(axis=1)


@dataclass
class FailedRun:
    """A training process that exited non-zero (or never announced its folder)."""

    env_id: str
    algo: str
    seed: int
    returncode: int
    stderr_tail: str
    log: Path
    reason: str = ""  # one line: the error the run reported, or what it failed to write


@dataclass
class AlgoStats:
    """Per-algorithm statistics over its runs on one env; arrays are per run, in seed order."""

    algo: str
    runs: list[Run]
    final_returns: np.ndarray
    final_mean: float
    final_ci: tuple[float, float]
    final_std: float
    steps_to_threshold: np.ndarray  # NaN where the run never reached it
    seconds_to_threshold: np.ndarray
    env_steps_per_s: np.ndarray
    wall_time_s: np.ndarray
    peak_rss_mib: np.ndarray

    @property
    def seeds(self) -> list[int | None]:
        return [run.seed for run in self.runs]

    @property
    def n_reached(self) -> int:
        return int(np.isfinite(self.steps_to_threshold).sum())


@dataclass
class Verdict:
    """Learning and speed of ``candidate`` against ``reference`` on one env: numbers and the sentences that state
    them."""

    candidate: str
    reference: str
    p_value: float
    learning: str
    speed_ratio: float  # geometric mean over seeds of candidate / reference env steps per second
    speed_ci: tuple[float, float]
    speed: str


@dataclass
class EnvResult:
    """Everything compared on one env."""

    env_id: str
    threshold: float | None
    threshold_source: str  # where the threshold came from, for the report
    stats: dict[str, AlgoStats]  # in the order of the algos, candidate first
    verdicts: list[Verdict]


@dataclass
class Estimate:
    """A point estimate with its 95% stratified-bootstrap CI (NaN bounds where a resample cannot be drawn)."""

    value: float
    low: float
    high: float


@dataclass
class Aggregate:
    """rliable's aggregate metrics across envs, on scores normalised per env."""

    normalisers: dict[str, tuple[float, float, str]]  # env -> (score 0, score 1, where they came from)
    scores: dict[str, dict[str, np.ndarray]]  # algo -> env -> normalised final return per run
    iqm: dict[str, Estimate]
    mean: dict[str, Estimate]
    improvement: dict[str, Estimate]  # reference -> probability that the candidate improves on it
    taus: np.ndarray  # performance-profile thresholds
    profiles: dict[str, np.ndarray]  # algo -> fraction of runs with normalised score > tau, averaged over envs
    verdict: list[str]  # sentences, one per reference


@dataclass
class Comparison:
    """What :func:`comparison.compare.compare` produced."""

    folder: Path
    envs: dict[str, EnvResult]
    last_evals: int
    n_boot: int
    aggregate: Aggregate | None  # None with one env
    failed: list[FailedRun] = field(default_factory=list)
    jobs: int | None = None  # None when the runs were read from disk, not launched here

    @property
    def algos(self) -> list[str]:
        return list(next(iter(self.envs.values())).stats)


# ----------------------------------------------------------------------------------------------- reading runs
def read_run(path: str | Path) -> Run:
    """
    Read a run folder written by ``scripts/train.py``.

    :param path: the folder holding ``evaluations.npz`` and ``summary.json``
    :return: the run
    """
    path = Path(path)
    if not (path / "evaluations.npz").is_file():
        raise CompareError(f"{path} is not a run folder (no evaluations.npz); pass folders made by custom-sac-train")
    if not (path / "summary.json").is_file():
        raise CompareError(f"{path} has no summary.json (unfinished run?); finish it or leave it out of --runs")
    with np.load(path / "evaluations.npz") as data:
        timesteps = np.asarray(data["timesteps"], dtype=float)
        returns = np.asarray(data["results"], dtype=float).reshape(len(timesteps), -1)
        wall_time = np.asarray(data["wall_time"], dtype=float) if "wall_time" in data.files else None
    if len(timesteps) == 0:
        raise CompareError(f"{path} has no evaluations; train longer than --eval-freq steps")
    summary = json.loads((path / "summary.json").read_text())
    hyperparams = _read_run_config(path / "config.yml")
    command = (path / "command.txt").read_text().strip() if (path / "command.txt").is_file() else ""
    # The folder layout <log>/<algo>/<env>_<id> is the fallback for summaries that lack a field.
    algo = summary.get("algo") or path.parent.name
    env_id = summary.get("env_id") or path.name.rsplit("_", 1)[0]
    seed = summary.get("seed")
    return Run(path, algo, env_id, seed, timesteps, returns, wall_time, summary, hyperparams, command)


def _read_run_config(path: Path) -> dict[str, Any]:
    """A run's ``config.yml`` (plain YAML written by ``yaml.safe_dump``), or ``{}`` where there is none."""
    if not path.is_file():
        return {}
    try:
        return load_yaml_file(path) or {}  # the safe reader every module shares (a file from elsewhere runs no code)
    except yaml.YAMLError as e:
        raise CompareError(
            f"{path} is not plain YAML ({str(e).splitlines()[0]}); was it written by train.py?"
        ) from None


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """
    Run folders named by ``paths``: each is a run folder itself, or a folder searched (three levels deep) for them,
    so that ``logs/`` or ``logs/custom`` work as well as a shell glob.

    :param paths: folders
    :return: run folders, sorted, without duplicates
    """
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CompareError(f"--runs: {path} does not exist")
        if (path / "evaluations.npz").is_file():
            found.add(path.resolve())
            continue
        for depth in ("*", "*/*", "*/*/*"):
            found.update(p.parent.resolve() for p in path.glob(f"{depth}/evaluations.npz"))
    if not found:
        raise CompareError(f"--runs: no run folders (with evaluations.npz) in {' '.join(map(str, paths))}")
    return sorted(found)
