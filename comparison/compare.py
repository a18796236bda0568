"""Side-by-side comparison of algorithms over seeds and envs: launch the runs (or read finished ones), compute the
statistics, write the report.

    from comparison.compare import compare
    result = compare(["Pendulum-v1", "MountainCarContinuous-v0"], algos=["custom", "sb3"], seeds=5, jobs=2)
    print(result.folder / "report.md")
"""

import itertools
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import gymnasium as gym

from comparison.aggregate import aggregate
from comparison.data import CompareError, Comparison, EnvResult, FailedRun, Run, find_runs, read_run
from comparison.launch import TRAIN_COMMAND, TrainJob, launch_runs
from comparison.report import write_outputs
from comparison.stats import algo_stats, verdict
from experiment.config import ALGOS, DEFAULT_N_TIMESTEPS, load_hyperparams, parse_overrides
from experiment.envs import check_env_id
from experiment.folders import new_numbered_folder
from experiment.run import TrainSettings

# A "solved" level for envs registered without a reward_threshold (others use theirs, or --threshold).
DEFAULT_THRESHOLDS = {"Pendulum-v1": -200.0}


def compare(
    envs: str | Sequence[str] | None = None,
    algos: Sequence[str] | None = None,
    seeds: int = 5,
    seed_start: int = 0,
    n_timesteps: int | Mapping[str, int] | None = None,
    config: str | Path | None = None,
    params: Sequence[str] | None = None,
    eval_freq: int | None = None,
    eval_episodes: int | None = None,
    jobs: int = 1,
    log_folder: str | Path = "logs",
    runs: Sequence[str | Path] | None = None,
    threshold: float | Mapping[str, float] | None = None,
    score_ranges: Mapping[str, tuple[float, float]] | None = None,
    last_evals: int = 2,
    device: str | None = None,
    n_boot: int = 10_000,
    command: str | None = None,
    train_command: Sequence[str] = TRAIN_COMMAND,
    echo: Callable[[str], None] = print,
) -> Comparison:
    """
    Train (or read) every algo over seeds on every env, then write ``<log_folder>/compare/<envs>_<id>/`` with
    ``report.md``, ``summary.csv``, the curves per env, ``runs.txt`` (the run folders, for ``--runs $(cat
    runs.txt)``) and, with several envs, the aggregate (``aggregate.png``, ``aggregate.csv``).

    :param envs: Gymnasium env ids (``None``: Pendulum-v1); with ``runs``: the envs to keep (``None``: every env
        found)
    :param algos: keys of :data:`experiment.config.ALGOS`; the first is the candidate, the others references.
        Default ``custom sb3``; with ``runs``, every algo found (in that order)
    :param seeds: seeds per algo, ``seed_start`` to ``seed_start + seeds - 1``, the same for every algo and env
    :param n_timesteps: env steps per run: one number, or env -> number; ``None`` (or an env left out): the config's
    :param config: hyperparameter YAML for every algo; ``None``: ``configs/sac.yml``
    :param params: ``key:value`` overrides, as train.py's ``-params``
    :param eval_freq: env steps between evaluations; ``None``: train.py's default
    :param eval_episodes: episodes per evaluation; ``None``: train.py's default
    :param jobs: training processes at a time
    :param log_folder: where the runs and the comparison go
    :param runs: finished run folders (or folders holding them) to compare instead of training
    :param threshold: return counted as reached: one number for every env, or env -> number; an env left out
        takes :data:`DEFAULT_THRESHOLDS`, else its registered ``reward_threshold``, else none
    :param score_ranges: env -> (return scored 0, return scored 1) for the aggregate; other envs: min-max over runs
    :param last_evals: the final return is the mean over this many last evaluations' episodes
    :param device: passed to train.py
    :param n_boot: bootstrap resamples
    :param command: the command line to print in the report
    :param train_command: the command that trains one run, before its arguments (tests replace it)
    :param echo: where progress lines go
    :return: the comparison
    """
    env_ids = [envs] if isinstance(envs, str) else list(envs or [])
    steps = n_timesteps.values() if isinstance(n_timesteps, Mapping) else [n_timesteps]
    algos = _check_options(algos, last_evals, jobs, *steps, eval_freq=eval_freq, eval_episodes=eval_episodes)
    if runs is not None:
        loaded, env_ids, algos = _read_finished(runs, env_ids, algos)
        _check_named_envs(env_ids, threshold=threshold, score_range=score_ranges)
        folder, failed = new_numbered_folder(Path(log_folder) / "compare", "+".join(env_ids)), []
    else:
        algos, env_ids = algos or ["custom", "sb3"], env_ids or ["Pendulum-v1"]
        if seeds < 1:
            raise CompareError(f"--seeds must be at least 1, got {seeds}")
        _check_named_envs(env_ids, n=n_timesteps, threshold=threshold, score_range=score_ranges)
        steps_of = n_timesteps if isinstance(n_timesteps, Mapping) else dict.fromkeys(env_ids, n_timesteps)
        train_args = _train_args(env_ids, algos, log_folder, config, params, eval_freq, eval_episodes, steps_of)
        train_args += ["--device", device] if device is not None else []
        # Seed-major within an env: with jobs == len(algos) the algos of one seed train side by side, under one load.
        seed_list = list(range(seed_start, seed_start + seeds))
        queue = [TrainJob(e, a, seed, steps_of.get(e)) for e, seed, a in itertools.product(env_ids, seed_list, algos)]
        folder = new_numbered_folder(Path(log_folder) / "compare", "+".join(env_ids))
        echo(f"comparing {', '.join(algos)} on {', '.join(env_ids)}, seeds {seed_list}, {jobs} at a time -> {folder}")
        loaded, failed = _train(queue, env_ids, algos, train_args, jobs, folder, train_command, echo)

    by_env = {
        env_id: _env_result(env_id, [r for r in loaded if r.env_id == env_id], algos, threshold, last_evals, n_boot)
        for env_id in env_ids
    }
    agg = aggregate(by_env, n_boot, score_ranges) if len(by_env) > 1 else None
    result = Comparison(folder, by_env, last_evals, n_boot, agg, failed, None if runs is not None else jobs)
    write_outputs(result, command or " ".join(sys.argv))
    return result


def _check_options(
    algos: Sequence[str] | None, last_evals: int, jobs: int, *steps: int | None, **counts: int | None
) -> list[str] | None:
    """Refuse bad numbers and unknown algos before anything is made; the algos without repeats."""
    if last_evals < 1:
        raise CompareError(f"--last-evals must be at least 1, got {last_evals}")
    named = [("--jobs", jobs), *(("-n", n) for n in steps)]
    named += [(f"--{key.replace('_', '-')}", value) for key, value in counts.items()]
    for name, value in named:
        if value is not None and value < 1:
            raise CompareError(f"{name} must be at least 1, got {value}")
    unknown = [a for a in algos or [] if a not in ALGOS]
    if unknown:
        raise CompareError(f"unknown algo {unknown[0]!r}; choose from {', '.join(ALGOS)}")
    return list(dict.fromkeys(algos)) if algos else None  # repeated names would pair runs with themselves


def _read_finished(
    paths: Sequence[str | Path], env_ids: list[str], algos: list[str] | None
) -> tuple[list[Run], list[str], list[str]]:
    """The finished runs to compare, the envs (``env_ids``, else every env found) and the algos (``algos``, else
    every algo found); every env must have runs of every algo."""
    loaded = [read_run(path) for path in find_runs(paths)]
    found_envs = sorted({run.env_id for run in loaded})
    missing = [e for e in env_ids if e not in found_envs]
    if missing:
        raise CompareError(f"--runs has no runs on {', '.join(missing)}; found {', '.join(found_envs)}")
    env_ids = env_ids or found_envs
    loaded = [run for run in loaded if run.env_id in env_ids]
    if algos:
        loaded = [run for run in loaded if run.algo in algos]
    else:
        found = {run.algo for run in loaded}
        algos = [a for a in ALGOS if a in found] + sorted(found - set(ALGOS))
    for env_id in env_ids:
        have = {run.algo for run in loaded if run.env_id == env_id}
        missing = [a for a in algos if a not in have]
        if missing:
            raise CompareError(f"--runs has no runs of {', '.join(missing)} on {env_id}; drop it or add its runs")
    return loaded, env_ids, algos


def _train_args(
    env_ids: list[str],
    algos: list[str],
    log_folder: str | Path,
    config: str | Path | None,
    params: Sequence[str] | None,
    eval_freq: int | None,
    eval_episodes: int | None,
    steps_of: Mapping[str, int | None],
) -> list[str]:
    """Check every (env, algo) before any training starts; the arguments every ``train.py`` process shares."""
    overrides = parse_overrides(list(params or []))
    for env_id in env_ids:
        check_env_id(env_id)
        for algo in algos:  # every algo must accept the same hyperparameters
            hyperparams = load_hyperparams(algo, env_id, config, overrides)
            _check_budget(env_id, steps_of.get(env_id) or hyperparams.get("n_timesteps"), eval_freq)
    # No videos, landscapes or checkpoints: they are not part of what is compared, and their time would blur the speeds.
    args = ["-f", str(Path(log_folder).resolve()), "--no-progress", "--video-freq", "0", "--save-freq", "0"]
    args += ["--landscape-freq", "0"]
    args += ["-tb", str((Path(log_folder) / "tensorboard").resolve())]
    for flag, value in (("--eval-freq", eval_freq), ("--eval-episodes", eval_episodes)):
        args += [flag, str(value)] if value is not None else []
    args += ["--config", str(Path(config).resolve())] if config is not None else []
    return args + (["-params", *params] if params else [])


def _check_budget(env_id: str, n_timesteps: int | None, eval_freq: int | None) -> None:
    """Refuse runs that would end before their first evaluation: they would write no ``evaluations.npz``."""
    steps = n_timesteps or DEFAULT_N_TIMESTEPS
    freq = eval_freq or TrainSettings.eval_freq
    if steps < freq:
        source = "--eval-freq" if eval_freq else "train.py's default"
        raise CompareError(
            f"{env_id}: {steps} steps per run end before the first evaluation (every {freq} steps, {source}), so no "
            f"run would have a result; pass --eval-freq {max(steps // 2, 1)} (or less), or a larger -n"
        )


def _check_named_envs(env_ids: list[str], **per_env: object) -> None:
    """Refuse a per-env option (``-n ENV=...``) that names an env not compared: a typo would go unnoticed."""
    for option, values in per_env.items():
        unknown = [env for env in values if env not in env_ids] if isinstance(values, Mapping) else []
        if unknown:
            flag = f"--{option.replace('_', '-')}" if len(option) > 1 else f"-{option}"
            raise CompareError(
                f"{flag} {unknown[0]}=...: {unknown[0]} is not compared; the envs are {', '.join(env_ids)}"
            )


def _train(
    queue: list[TrainJob],
    env_ids: list[str],
    algos: list[str],
    train_args: list[str],
    jobs: int,
    folder: Path,
    train_command: Sequence[str],
    echo: Callable[[str], None],
) -> tuple[list[Run], list[FailedRun]]:
    """Run the queue and read the runs back; an error if every run of an algo on an env failed."""
    runs_file = folder / "runs.txt"
    try:
        paths, failed = launch_runs(queue, train_args, jobs, folder / "train_logs", train_command, echo, runs_file)
    except KeyboardInterrupt:
        done = len(runs_file.read_text().split()) if runs_file.is_file() else 0
        raise CompareError(
            f"interrupted with {done} of {len(queue)} runs finished; compare those with "
            f"custom-sac-compare --runs $(cat {runs_file})"
        ) from None
    loaded = [read_run(path) for path in paths]
    for env_id in env_ids:
        missing = [a for a in algos if a not in {run.algo for run in loaded if run.env_id == env_id}]
        if missing:
            why = "; ".join(f"{f.algo} seed {f.seed}: {f.reason}" for f in failed)
            raise CompareError(
                f"every run of {', '.join(missing)} failed on {env_id} ({why}); logs in {folder / 'train_logs'}"
            )
    return loaded, failed


def env_threshold(env_id: str, threshold: float | Mapping[str, float] | None) -> tuple[float | None, str]:
    """The threshold for ``env_id`` and where it came from (the report states it)."""
    if isinstance(threshold, Mapping) and env_id in threshold:
        return float(threshold[env_id]), "--threshold"
    if threshold is not None and not isinstance(threshold, Mapping):
        return float(threshold), "--threshold"
    if env_id in DEFAULT_THRESHOLDS:
        return DEFAULT_THRESHOLDS[env_id], "this project's default for the env"
    try:
        registered = gym.spec(env_id).reward_threshold
    except gym.error.Error:  # an env registered by a module that is not imported here
        registered = None
    return (float(registered), "the env's registered reward_threshold") if registered is not None else (None, "")


def _env_result(
    env_id: str,
    runs: list[Run],
    algos: list[str],
    threshold: float | Mapping[str, float] | None,
    last_evals: int,
    n_boot: int,
) -> EnvResult:
    """Statistics per algo on one env, and the verdicts of the first algo against each other."""
    value, source = env_threshold(env_id, threshold)
    by_algo = {algo: [run for run in runs if run.algo == algo] for algo in algos}
    stats = {algo: algo_stats(algo, group, value, last_evals, n_boot) for algo, group in by_algo.items()}
    verdicts = [verdict(stats[algos[0]], stats[ref], n_boot) for ref in algos[1:]]
    return EnvResult(env_id, value, source, stats, verdicts)


__all__ = ["DEFAULT_THRESHOLDS", "compare", "env_threshold"]
