"""
A tuning study: open (or join, or resume) it, run its workers, and leave its outputs behind.

Where the study lives is ``tuning.storage``; how workers share it (the study's total of trials, heartbeats and
retries, processes) is ``tuning.workers``.
"""

import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import torch as th
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from experiment.config import load_hyperparams, validate
from experiment.errors import first_line
from tuning.objective import TrialSettings, make_pruner
from tuning.report import export_results, retrain_command
from tuning.space import TuningError, check_space, load_space, make_sampler
from tuning.storage import StudyStorage, mask_url, scrub
from tuning.workers import WorkerJob, run_workers

__all__ = ["StudyStorage", "mask_url", "open_study", "record_command", "summary", "tune"]


def open_study(
    storage: StudyStorage, sampler: BaseSampler, pruner: optuna.pruners.BasePruner, algo: str, env_id: str
) -> optuna.Study:
    """Create the study, or load it when it exists (after checking it was made for the same algo and env)."""
    # Under the workers' lock: a worker must not read the study's algo/env while another is still writing them.
    with storage.lock():
        try:
            study = optuna.create_study(
                storage=storage.storage,
                sampler=sampler,
                pruner=pruner,
                study_name=storage.study_name,
                direction="maximize",
                load_if_exists=True,
            )
        except Exception as e:
            cause = getattr(e, "orig", None) or e
            problem = scrub(first_line(cause), storage.url)
            raise TuningError(f"cannot open study {storage.study_name!r} in {storage.display}: {problem}") from None
        wanted = {"algo": algo, "env_id": env_id}
        attrs = study.user_attrs  # one storage read; a key missing means its writer died before writing it
        made_for = {key: attrs.get(key, value) for key, value in wanted.items()}
        if made_for != wanted:
            raise TuningError(
                f"study {storage.study_name!r} in {storage.display} tunes --algo {made_for['algo']} on "
                f"{made_for['env_id']}; pass another --study-name"
            )
        for key in wanted.keys() - attrs.keys():
            study.set_user_attr(key, wanted[key])
    return study


def record_command(out_dir: str | Path, argv: Sequence[str]) -> Path:
    """Append the command line (passwords masked) to ``command.txt``: one line per run, earlier ones kept."""
    masked = [mask_url(arg) if "://" in arg else arg for arg in argv]
    masked = [f"{a.split('=', 1)[0]}={mask_url(a.split('=', 1)[1])}" if "=" in a and "://" in a else a for a in masked]
    path = Path(out_dir) / "command.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + shlex.join(masked) + "\n")
    return path


def summary(study: optuna.Study, storage: StudyStorage, settings: TrialSettings, out_dir: str | Path) -> str:
    """The closing lines: trial counts, best trial and parameters, the retrain and dashboard commands."""
    counts = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    lines = [f"study {study.study_name} in {storage.display}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)]
    if counts["COMPLETE"]:
        best = study.best_trial
        lines.append(f"best trial {best.number}: score {best.value:.2f}")
        lines += [f"  {k}: {v}" for k, v in best.params.items()]
        yaml_path = Path(out_dir) / "best_hyperparams.yml"
        lines.append(f"retrain: {retrain_command(settings.algo, settings.env_id, yaml_path)}")
    else:
        lines.append("no trial completed yet")
    lines.append(f"dashboard: {storage.dashboard_command()}  (pip install optuna-dashboard)")
    return "\n".join(lines)


def _check_options(name: str, n_trials: int | None, n_jobs: int, heartbeat_interval: int | None) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise TuningError(f"study name {name!r} is used in file names: use letters, digits, '.', '_' and '-'")
    if n_trials is not None and n_trials <= 0:
        raise TuningError(f"--n-trials must be positive, got {n_trials}")
    if n_jobs <= 0:
        raise TuningError(f"--n-jobs must be positive, got {n_jobs}")
    if heartbeat_interval is not None and heartbeat_interval <= 0:
        raise TuningError(f"--heartbeat must be a positive number of seconds, got {heartbeat_interval}")


def _check_settings(settings: TrialSettings) -> None:
    """Raise a user error for a bad fixed value or search space, before any trial or file."""
    base, search = settings.base_hyperparams, settings.space
    validate(settings.algo, {**base, **search.fixed})  # a bad fixed value fails here, not in every trial
    check_space(search, settings.algo, {**base, "n_timesteps": settings.n_timesteps}, settings.action_dim)


def tune(
    algo: str,
    env_id: str = "Pendulum-v1",
    *,
    n_trials: int | None = 100,
    timeout: float | None = None,
    n_timesteps: int | None = None,
    n_evaluations: int = 10,
    eval_episodes: int = 5,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    n_jobs: int = 1,
    heartbeat_interval: int | None = 60,
    seed: int = 0,
    log_folder: str | Path = "logs",
    space: str | Path | None = None,
    separate_learning_rates: bool | None = None,
    extra: list[str] | None = None,
    config: str | Path | None = None,
    max_episode_steps: int | None = None,
    argv: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> optuna.Study:
    """
    Run (or join, or resume) a study and refresh its outputs in ``<log_folder>/optuna/<study>/``.

    :param algo: ``custom`` or ``sb3`` (any key of ``experiment.config.ALGOS``)
    :param env_id: Gymnasium env id
    :param n_trials: the study's total of trials, shared by all workers (module docstring); ``None``: no limit
    :param timeout: stop starting trials after this many seconds
    :param n_timesteps: training steps per trial (``None``: the env's ``n_timesteps`` in the config, else 20,000)
    :param n_evaluations: evaluations per trial, reported to the pruner
    :param eval_episodes: episodes per evaluation
    :param storage: storage URL or ``.log`` journal path (``None``: SQLite in ``<log_folder>/optuna/``)
    :param study_name: the study (``None``: ``<algo>_<env>``); the same name resumes it
    :param sampler: ``tpe``, ``random`` or ``cmaes``
    :param pruner: ``median``, ``halving`` or ``none``
    :param n_jobs: worker processes this command runs (``tuning.workers``)
    :param heartbeat_interval: seconds between a running trial's heartbeats; a trial silent for two intervals is
        failed and queued again (``None``: no heartbeat)
    :param seed: sampler seed and base of the trial seeds (trial ``k`` trains with ``seed + k``)
    :param log_folder: root of the outputs
    :param space: search-space YAML (``tuning.space``); ``None``: the defaults
    :param separate_learning_rates: sample actor/critic/entropy learning rates separately
    :param extra: optional parameters to sample too (``gamma``, ``batch_size``, ``net_width``)
    :param config: hyperparameter YAML the trials start from (``None``: configs/sac.yml)
    :param max_episode_steps: shorten episodes (smoke runs)
    :param argv: the command line to record in ``command.txt`` (passwords masked)
    :param log: where progress lines go
    :return: the study
    """
    base = load_hyperparams(algo, env_id, config)
    retrain_timesteps = base.pop("n_timesteps", None)
    search = load_space(space, separate_learning_rates, extra, algo)
    n_steps = n_timesteps or retrain_timesteps or 20_000
    settings = TrialSettings(
        algo, env_id, base, search, n_steps, n_evaluations, eval_episodes, seed, max_episode_steps=max_episode_steps
    )
    _check_settings(settings)
    name = study_name or f"{algo}_{env_id}".replace("/", "-")
    _check_options(name, n_trials, n_jobs, heartbeat_interval)
    out_dir = Path(log_folder) / "optuna" / name
    record_command(out_dir, list(argv) if argv is not None else sys.argv)
    # Closed on every way out (Ctrl-C, a failed worker); the returned study still reads: the engine opens a
    # connection again when asked
    with StudyStorage(storage, name, log_folder, heartbeat_interval, log) as store:
        study = open_study(store, make_sampler(sampler, seed), make_pruner(pruner, n_evaluations), algo, env_id)
        log(
            f"study {name} in {store.display}: {algo} on {env_id}, {n_steps} steps per trial, {n_evaluations} "
            f"evaluations of {eval_episodes} episodes, sampler {sampler}, pruner {pruner}, up to {n_trials} trials"
        )
        log("search space:\n" + search.describe())
        try:
            study_at = (store.url, name, log_folder, store.heartbeat_interval)  # where the workers find the study
            job = WorkerJob(*study_at, sampler, pruner, seed, settings, n_trials, timeout, th.get_num_threads())
            run_workers(job, n_jobs, log)
        finally:
            # Also after Ctrl-C: the outputs always describe everything the study holds.
            export_results(study, out_dir, settings, retrain_timesteps)
        log(summary(study, store, settings, out_dir))
    return study
