"""
The workers of a study: start trials until the study holds its total, keep a heartbeat while a trial runs, and run
several workers of one command as processes.

``n_trials`` is the study's total, not each worker's: a worker starts a trial only while the study holds fewer than
``n_trials`` trials that count (complete, pruned, running, or failed and not queued again), and it counts and starts
under a lock shared by all workers (``StudyStorage.lock``). So any number of workers given ``--n-trials N`` finish
exactly N trials together, and running the command again resumes an interrupted study up to N; raise N to add trials.

A worker killed hard (SIGKILL, power loss) stops its trial's heartbeat; the next worker that counts marks that trial
FAIL and queues it again with the same parameters and seed, and the retry counts in its place. A worker that finds
the study full waits while trials with a heartbeat are still running elsewhere, so that when the command ends the
study is complete, retries included. (Journal storages keep no heartbeat: there a killed worker's trial stays RUNNING
and counts towards N.)

``n_jobs > 1`` runs the workers as processes, not threads: SB3 seeds the global numpy and torch generators, which
threads would share, so "trial k trains with seed + k" would not hold and a study could not be repeated.
"""

import contextlib
import multiprocessing
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch as th
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from experiment.errors import first_line
from tuning.objective import Objective, TrialSettings, make_pruner, run_trial, trial_line
from tuning.space import TuningError, make_sampler
from tuning.storage import StudyStorage, quiet_optuna

WAIT_POLL = 1.0  # seconds between looks at a full study whose last trials run elsewhere
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that count towards ``n_trials``: all but waiting ones and failed ones that were queued again."""
    trials = study.get_trials(deepcopy=False)
    # A retry names the trial it replaces. It is read from every trial, the WAITING retry included: a failed trial
    # whose retry has not started yet must not count, or a worker would find the study full and leave it unrun.
    with quiet_optuna():
        retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    return [t for t in trials if t.state in COUNTED and not (t.state == TrialState.FAIL and t.number in retried)]


def _fail_stale(study: optuna.Study) -> None:
    with quiet_optuna():  # the storage's callback queues each trial again and says so (``StudyStorage``)
        fail_stale_trials(study)


def _next_trial(
    study: optuna.Study, storage: StudyStorage, n_trials: int | None, log: Callable[[str], None]
) -> optuna.Trial | str:
    """A started trial, ``"full"`` when the study holds ``n_trials``, or ``"wait"`` while others' trials run."""
    with storage.lock() as held:
        _fail_stale(study)
        if n_trials is not None:
            counted = counted_trials(study)
            if len(counted) >= n_trials:
                waiting = any(t.state == TrialState.RUNNING and t.user_attrs.get("heartbeat") for t in counted)
                return "wait" if waiting else "full"
        with quiet_optuna():
            trial = study.ask()
        # Under the lock, so that every running trial a worker counts already has its first heartbeat.
        if storage.heartbeat_interval:
            storage.storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
            trial.set_user_attr("heartbeat", storage.heartbeat_interval)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    if held.throughout or n_trials is None:
        return trial
    # The database server dropped the lock while this worker counted (a restart): another worker may have counted
    # the same free place. The later trial of the two is given back (left WAITING, never run).
    with storage.lock():
        numbers = sorted(t.number for t in counted_trials(study))
        if trial.number in numbers[n_trials:]:
            storage.storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
            return "wait"
    return trial


@contextlib.contextmanager
def heartbeat(storage: StudyStorage, trial: optuna.Trial) -> Iterator[None]:
    """Record ``trial``'s heartbeat every ``storage.heartbeat_interval`` seconds while the block runs."""
    if not storage.heartbeat_interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(storage.heartbeat_interval):
            # A beat lost while the server restarts is made up by the next; the grace period is two intervals.
            with contextlib.suppress(Exception):
                storage.storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_worker(
    study: optuna.Study,
    storage: StudyStorage,
    objective: Objective,
    n_trials: int | None,
    timeout: float | None,
    log: Callable[[str], None] = print,
) -> int:
    """
    Run trials until the study holds ``n_trials`` (see the module docstring) or ``timeout`` seconds have passed
    (a running trial is finished, not cut). Returns how many trials this worker ran.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    ran = 0
    while deadline is None or time.monotonic() < deadline:
        trial = _next_trial(study, storage, n_trials, log)
        if trial == "full":
            break
        if trial == "wait":
            # Poll, not sleep a heartbeat interval: the others' last trials usually end long before one (60 s).
            time.sleep(min(storage.heartbeat_interval or WAIT_POLL, WAIT_POLL))
            continue
        assert isinstance(trial, optuna.Trial)
        try:
            with heartbeat(storage, trial):
                frozen = run_trial(study, trial, objective)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Its heartbeats were late by more than the grace period (a long database outage): another worker
            # failed it and queued it again, and that retry counts instead.
            log(f"trial {trial.number} was failed by another worker meanwhile (heartbeat late); its retry counts")
            continue
        ran += 1
        log(trial_line(frozen))
    return ran


@dataclass
class WorkerJob:
    """What a worker process needs to join a study (picklable: processes are spawned)."""

    url: str
    study_name: str
    log_folder: str | Path
    heartbeat_interval: int | None
    sampler: str
    pruner: str
    seed: int
    settings: TrialSettings
    n_trials: int | None
    timeout: float | None
    torch_threads: int

    def run(self, log: Callable[[str], None]) -> int:
        th.set_num_threads(self.torch_threads)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = make_sampler(self.sampler, self.seed)
        pruner = make_pruner(self.pruner, self.settings.n_evaluations)
        with StudyStorage(self.url, self.study_name, self.log_folder, self.heartbeat_interval, log) as storage:
            study = optuna.load_study(
                study_name=self.study_name, storage=storage.storage, sampler=sampler, pruner=pruner
            )
            return run_worker(study, storage, Objective(self.settings), self.n_trials, self.timeout, log)


def _worker_process(job: WorkerJob, messages: Any) -> None:
    try:
        messages.put(("done", job.run(messages.put)))
    except KeyboardInterrupt:
        messages.put(("done", 0))  # Ctrl-C reaches every process of the group: the parent reports it
    except Exception as e:
        text = str(e) if isinstance(e, TuningError) else f"{type(e).__name__}: {first_line(e)}"
        messages.put(("error", f"worker process {os.getpid()}: {text}"))


def run_workers(job: WorkerJob, n_jobs: int, log: Callable[[str], None] = print) -> int:
    """``n_jobs`` worker processes (one: this process); relays their lines to ``log``; returns trials run."""
    if n_jobs <= 1:
        return job.run(log)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or locks inherited
    messages = context.Queue()
    processes = [context.Process(target=_worker_process, args=(job, messages), daemon=True) for _ in range(n_jobs)]
    for process in processes:
        process.start()
    ran, errors = 0, []
    try:
        while any(p.is_alive() for p in processes) or not messages.empty():
            try:
                message = messages.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(message, str):
                log(message)
            elif message[0] == "done":
                ran += message[1]
            else:
                errors.append(message[1])
    finally:
        for process in processes:
            process.join(timeout=60)
    lost = [f"worker process {p.pid} exited with {p.exitcode}" for p in processes if p.exitcode]
    if errors or lost:
        raise TuningError("; ".join(errors + lost))
    return ran
