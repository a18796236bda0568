"""Side-by-side comparison of algorithms over seeds: launch runs (or read finished ones), then compute statistics.

    from experiment.compare import compare
    result = compare("Pendulum-v1", algos=["custom", "sb3"], seeds=5, n_timesteps=20_000, jobs=2)
    print(result.folder / "report.md")

Every run goes through ``scripts/train.py`` as its own process, so each is an ordinary run folder that can be
inspected, evaluated or re-compared later (``compare(runs=[...])``). The statistics live here; the figures and the
written report in :mod:`experiment.report`.
"""

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from experiment.config import ALGOS, ConfigError, load_hyperparams, parse_overrides, read_yaml
from experiment.envs import check_env_id
from experiment.stats import AlgoStats, Run, Verdict, algo_stats, verdict

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
# A "solved" level per env, for the steps/seconds-to-threshold columns; other envs need --threshold.
DEFAULT_THRESHOLDS = {"Pendulum-v1": -200.0}
RUN_FOLDER_LINE = "run folder:"
# Exact permutation tests enumerate every relabelling up to this many, then sample this many at random.


class CompareError(ConfigError):
    """A problem with a comparison's input, told in one line that names the fix (a :class:`ConfigError`, so every
    script's ``run_main`` prints it as ``error: ...``)."""


@dataclass
class FailedRun:
    """A training process that exited non-zero (or never announced its folder)."""

    algo: str
    seed: int
    returncode: int
    stderr_tail: str
    log: Path


@dataclass
class Comparison:
    """What :func:`compare` produced."""

    folder: Path
    env_id: str
    threshold: float | None
    last_evals: int
    stats: dict[str, AlgoStats]
    verdicts: list[Verdict]
    failed: list[FailedRun] = field(default_factory=list)
    jobs: int | None = None  # None when the runs were read from disk, not launched here


# ----------------------------------------------------------------------------------------------- reading runs
def read_run(path: str | Path) -> Run:
    """
    Read a run folder written by ``scripts/train.py``.

    :param path: the folder holding ``evaluations.npz`` and ``summary.json``
    :return: the run
    """
    path = Path(path)
    if not (path / "evaluations.npz").is_file():
        raise CompareError(f"{path} is not a run folder (no evaluations.npz); pass folders made by scripts/train.py")
    if not (path / "summary.json").is_file():
        raise CompareError(f"{path} has no summary.json (unfinished run?); finish it or leave it out of --runs")
    with np.load(path / "evaluations.npz") as data:
        timesteps = np.asarray(data["timesteps"], dtype=float)
        returns = np.asarray(data["results"], dtype=float).reshape(len(timesteps), -1)
        wall_time = np.asarray(data["wall_time"], dtype=float) if "wall_time" in data.files else None
    if len(timesteps) == 0:
        raise CompareError(f"{path} has no evaluations; train longer than --eval-freq steps")
    summary = json.loads((path / "summary.json").read_text())
    config = path / "config.yml"
    hyperparams = read_yaml(config, what="run config") if config.is_file() else {}
    command = (path / "command.txt").read_text().strip() if (path / "command.txt").is_file() else ""
    # The folder layout <log>/<algo>/<env>_<id> is the fallback for summaries that lack a field.
    algo = summary.get("algo") or path.parent.name
    env_id = summary.get("env_id") or path.name.rsplit("_", 1)[0]
    seed = summary.get("seed")
    return Run(path, algo, env_id, seed, timesteps, returns, wall_time, summary, hyperparams or {}, command)


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


# ----------------------------------------------------------------------------------------------- launching runs
def thread_env(jobs: int) -> dict[str, str]:
    """The environment for a training process: with parallel jobs, each gets its share of the cores, so that
    ``jobs`` processes with a thread per core each do not oversubscribe the machine (which slows all of them)."""
    env = dict(os.environ)
    if jobs > 1:
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUSTOM_SAC_TORCH_THREADS"):
            env[key] = threads
    return env


def launch_runs(
    algos: Sequence[str],
    seeds: Sequence[int],
    train_args: Sequence[str],
    jobs: int,
    log_dir: Path,
    train_script: str | Path = TRAIN_SCRIPT,
    echo: Callable[[str], None] = print,
    runs_file: Path | None = None,
) -> tuple[list[Path], list[FailedRun]]:
    """
    Train every algo on every seed, ``jobs`` processes at a time, printing a line as each finishes.

    :param algos: keys of :data:`experiment.config.ALGOS`
    :param seeds: the same seeds for every algo, so that runs pair up by seed
    :param train_args: arguments for ``train.py`` besides ``--algo`` and ``--seed``
    :param jobs: processes at a time
    :param log_dir: where each process's stdout and stderr are kept
    :param train_script: the training script
    :param echo: where progress lines go
    :param runs_file: each finished run folder is appended here at once, so an interrupted comparison can be
        completed from the runs that did finish (``--runs $(cat runs.txt)``)
    :return: the run folders of the runs that succeeded, and the failures
    """
    # Seed-major order: with jobs == len(algos) the algorithms of one seed train side by side, under the same load.
    queue = [(algo, seed) for seed, algo in itertools.product(seeds, algos)]
    total, done = len(queue), 0
    env = thread_env(jobs)
    log_dir.mkdir(parents=True, exist_ok=True)
    running: dict[subprocess.Popen, tuple[str, int, float, Path, Path]] = {}
    folders: list[Path] = []
    failed: list[FailedRun] = []
    try:
        while queue or running:
            while queue and len(running) < jobs:
                algo, seed = queue.pop(0)
                out, err = log_dir / f"{algo}_seed{seed}.out", log_dir / f"{algo}_seed{seed}.err"
                cmd = [sys.executable, str(train_script), "--algo", algo, "--seed", str(seed), *train_args]
                with open(out, "w") as f_out, open(err, "w") as f_err:  # the child keeps its own copies
                    proc = subprocess.Popen(cmd, stdout=f_out, stderr=f_err, stdin=subprocess.DEVNULL, env=env)
                running[proc] = (algo, seed, time.perf_counter(), out, err)
            time.sleep(0.1)
            for proc in [p for p in running if p.poll() is not None]:
                algo, seed, start, out, err = running.pop(proc)
                done += 1
                elapsed = time.perf_counter() - start
                folder = _announced_folder(out)
                if proc.returncode == 0 and folder is not None and (folder / "evaluations.npz").is_file():
                    folders.append(folder)
                    if runs_file is not None:
                        with open(runs_file, "a") as f:
                            f.write(f"{folder}\n")
                    echo(f"[{done}/{total}] {algo} seed {seed}: done in {elapsed:.0f} s -> {folder}")
                    continue
                tail = _tail(err) or _tail(out) or "no output"
                if proc.returncode == 0:
                    tail = f"exited 0 but wrote no run folder with evaluations.npz; {tail}"
                failed.append(FailedRun(algo, seed, proc.returncode, tail, err))
                last = tail.splitlines()[-1]
                echo(f"[{done}/{total}] {algo} seed {seed}: FAILED (exit {proc.returncode}, {elapsed:.0f} s): {last}")
    except KeyboardInterrupt:
        # Ctrl-C reached the children too; train.py then saves what it has, so give them time before ending them.
        for proc in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.terminate()
        raise
    finally:
        for proc in running:  # never leave orphans training in the background
            if proc.poll() is None:
                proc.terminate()
    return folders, failed


def _announced_folder(stdout_file: Path) -> Path | None:
    for line in reversed(stdout_file.read_text(errors="replace").splitlines()):
        if line.startswith(RUN_FOLDER_LINE):
            return Path(line[len(RUN_FOLDER_LINE) :].strip()).resolve()
    return None


def _tail(path: Path, n_lines: int = 15) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return "\n".join(lines[-n_lines:])


# ----------------------------------------------------------------------------------------------- statistics
# ----------------------------------------------------------------------------------------------- the command
def new_compare_folder(log_folder: str | Path, env_id: str) -> Path:
    """``<log_folder>/compare/<env>_<id>`` with id one above the highest there; never an existing folder."""
    root = Path(log_folder) / "compare"
    root.mkdir(parents=True, exist_ok=True)
    ids = [int(p.name.rsplit("_", 1)[1]) for p in root.glob(f"{env_id}_*") if p.name.rsplit("_", 1)[1].isdigit()]
    next_id = max(ids, default=0) + 1
    while True:  # another comparison may take the id between the listing and the mkdir
        folder = root / f"{env_id}_{next_id}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            next_id += 1


def compare(
    env_id: str = "Pendulum-v1",
    algos: Sequence[str] | None = None,
    seeds: int = 5,
    seed_start: int = 0,
    n_timesteps: int | None = None,
    config: str | Path | None = None,
    params: Sequence[str] | None = None,
    eval_freq: int | None = None,
    eval_episodes: int | None = None,
    jobs: int = 1,
    log_folder: str | Path = "logs",
    runs: Sequence[str | Path] | None = None,
    threshold: float | None = None,
    last_evals: int = 2,
    device: str | None = None,
    n_boot: int = 10_000,
    command: str | None = None,
    train_script: str | Path = TRAIN_SCRIPT,
    echo: Callable[[str], None] = print,
) -> Comparison:
    """
    Train (or read) every algo over seeds, then write ``<log_folder>/compare/<env>_<id>/`` with ``curves.png``,
    ``summary.csv``, ``report.md`` and ``runs.txt`` (the run folders, for ``--runs $(cat runs.txt)``).

    :param env_id: Gymnasium env id (with ``runs``: taken from the runs)
    :param algos: keys of :data:`experiment.config.ALGOS`; the first is the candidate, the others references.
        Default ``custom sb3``; with ``runs``, every algo found (in that order)
    :param seeds: seeds per algo, ``seed_start`` to ``seed_start + seeds - 1``, the same for every algo
    :param n_timesteps: env steps per run; ``None``: the config's
    :param config: hyperparameter YAML for every algo; ``None``: ``configs/sac.yml``
    :param params: ``key:value`` overrides, as train.py's ``-params``
    :param eval_freq: env steps between evaluations; ``None``: train.py's default
    :param eval_episodes: episodes per evaluation; ``None``: train.py's default
    :param jobs: training processes at a time
    :param log_folder: where the runs and the comparison go
    :param runs: finished run folders (or folders holding them) to compare instead of training
    :param threshold: return counted as reached; ``None``: :data:`DEFAULT_THRESHOLDS` for ``env_id``, else none
    :param last_evals: the final return is the mean over this many last evaluations' episodes
    :param device: passed to train.py
    :param n_boot: bootstrap resamples
    :param command: the command line to print in the report
    :param train_script: the training script (tests replace it)
    :param echo: where progress lines go
    :return: the comparison
    """
    from experiment.report import write_outputs  # the report imports this module's types

    if last_evals < 1:
        raise CompareError(f"--last-evals must be at least 1, got {last_evals}")
    for name, value in (
        ("--jobs", jobs),
        ("-n", n_timesteps),
        ("--eval-freq", eval_freq),
        ("--eval-episodes", eval_episodes),
    ):
        if value is not None and value < 1:
            raise CompareError(f"{name} must be at least 1, got {value}")
    unknown = [a for a in algos or [] if a not in ALGOS]
    if unknown:
        raise CompareError(f"unknown algo {unknown[0]!r}; choose from {', '.join(ALGOS)}")
    algos = list(dict.fromkeys(algos)) if algos else None  # repeated names would pair runs with themselves
    failed: list[FailedRun] = []

    if runs is not None:
        loaded = [read_run(path) for path in find_runs(runs)]
        envs = sorted({run.env_id for run in loaded})
        if len(envs) > 1:
            raise CompareError(f"--runs mixes envs ({', '.join(envs)}); compare runs of one env at a time")
        env_id = envs[0]
        if algos:
            loaded = [run for run in loaded if run.algo in algos]
            missing = [a for a in algos if a not in {run.algo for run in loaded}]
            if missing:
                raise CompareError(f"--runs has no runs of {', '.join(missing)}; drop it from --algos")
        else:
            found = {run.algo for run in loaded}
            algos = [a for a in ALGOS if a in found] + sorted(found - set(ALGOS))
        folder = new_compare_folder(log_folder, env_id)
        jobs_used = None
    else:
        algos = algos or ["custom", "sb3"]
        if seeds < 1:
            raise CompareError(f"--seeds must be at least 1, got {seeds}")
        check_env_id(env_id)
        overrides = parse_overrides(list(params or []))
        for algo in algos:  # fail before any training starts: every algo must accept the same hyperparameters
            load_hyperparams(algo, env_id, config, overrides)
        # No videos or checkpoints: they are not part of what is compared, and their disk time would blur the speeds.
        train_args = ["--env", env_id, "-f", str(Path(log_folder).resolve()), "--no-progress"]
        train_args += ["--video-freq", "0", "--save-freq", "0"]
        train_args += ["-tb", str((Path(log_folder) / "tensorboard").resolve())]
        for flag, value in (("-n", n_timesteps), ("--eval-freq", eval_freq), ("--eval-episodes", eval_episodes)):
            train_args += [flag, str(value)] if value is not None else []
        train_args += ["--config", str(Path(config).resolve())] if config is not None else []
        train_args += ["--device", device] if device is not None else []
        train_args += ["-params", *params] if params else []
        folder = new_compare_folder(log_folder, env_id)
        seed_list = list(range(seed_start, seed_start + seeds))
        echo(f"comparing {', '.join(algos)} on {env_id}, seeds {seed_list}, {jobs} at a time -> {folder}")
        runs_file = folder / "runs.txt"
        try:
            paths, failed = launch_runs(
                algos, seed_list, train_args, jobs, folder / "train_logs", train_script, echo, runs_file
            )
        except KeyboardInterrupt:
            done = len(runs_file.read_text().split()) if runs_file.is_file() else 0
            raise CompareError(
                f"interrupted with {done} of {len(algos) * len(seed_list)} runs finished; compare those with "
                f"python scripts/compare.py --runs $(cat {runs_file})"
            ) from None
        loaded = [read_run(path) for path in paths]
        missing = [a for a in algos if a not in {run.algo for run in loaded}]
        if missing:
            why = "; ".join(f"{f.algo} seed {f.seed}: {f.stderr_tail.splitlines()[-1]}" for f in failed)
            raise CompareError(f"every run of {', '.join(missing)} failed ({why}); logs in {folder / 'train_logs'}")
        jobs_used = jobs

    if threshold is None:
        threshold = DEFAULT_THRESHOLDS.get(env_id)
    by_algo = {algo: [run for run in loaded if run.algo == algo] for algo in algos}
    stats = {algo: algo_stats(algo, group, threshold, last_evals, n_boot) for algo, group in by_algo.items()}
    verdicts = [verdict(stats[algos[0]], stats[ref], n_boot) for ref in algos[1:]]
    result = Comparison(folder, env_id, threshold, last_evals, stats, verdicts, failed, jobs_used)
    write_outputs(result, command or " ".join(sys.argv), n_boot)
    return result


__all__ = ["CompareError", "Comparison", "Run", "compare", "find_runs", "launch_runs", "read_run"]
