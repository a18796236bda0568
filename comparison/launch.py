"""Train every (env, algo, seed) as its own ``python -m experiment.train_command`` process, a few at a time.

Each run is an ordinary run folder that can be inspected, evaluated or compared again later (``--runs``).
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from comparison.data import FailedRun

# The module, not a path into a checkout: an installed copy trains with its own code.
TRAIN_COMMAND = (sys.executable, "-m", "experiment.train_command")
RUN_FOLDER_LINE = "run folder:"


@dataclass(frozen=True)
class TrainJob:
    """One training process: ``train.py --env env_id --algo algo --seed seed [-n n_timesteps]`` plus the shared
    arguments."""

    env_id: str
    algo: str
    seed: int
    n_timesteps: int | None = None  # None: the config's

    @property
    def name(self) -> str:
        return f"{self.env_id}_{self.algo}_seed{self.seed}"


@dataclass
class _Running:
    job: TrainJob
    start: float
    out: Path
    err: Path


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
    queue: Sequence[TrainJob],
    train_args: Sequence[str],
    jobs: int,
    log_dir: Path,
    train_command: Sequence[str] = TRAIN_COMMAND,
    echo: Callable[[str], None] = print,
    runs_file: Path | None = None,
) -> tuple[list[Path], list[FailedRun]]:
    """
    Run every job, ``jobs`` processes at a time, printing a line as each finishes.

    :param queue: the jobs, in the order they start
    :param train_args: arguments for ``train.py`` besides the job's own
    :param jobs: processes at a time
    :param log_dir: where each process's stdout and stderr are kept
    :param train_command: the command that trains one run, before its arguments (``custom-sac-train``'s)
    :param echo: where progress lines go
    :param runs_file: each finished run folder is appended here at once, so an interrupted comparison can be
        completed from the runs that did finish (``--runs $(cat runs.txt)``)
    :return: the run folders of the runs that succeeded, and the failures
    """
    pending, total = list(queue), len(queue)
    env = thread_env(jobs)
    log_dir.mkdir(parents=True, exist_ok=True)
    running: dict[subprocess.Popen, _Running] = {}
    folders: list[Path] = []
    failed: list[FailedRun] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                job = pending.pop(0)
                proc, entry = _start(job, train_args, log_dir, train_command, env)
                running[proc] = entry
            time.sleep(0.1)
            for proc in [p for p in running if p.poll() is not None]:
                done = total - len(pending) - len(running) + 1
                line = _collect(proc, running.pop(proc), folders, failed, runs_file)
                echo(f"[{done}/{total}] {line}")
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


def _start(
    job: TrainJob, train_args: Sequence[str], log_dir: Path, train_command: Sequence[str], env: dict[str, str]
) -> tuple[subprocess.Popen, _Running]:
    out, err = log_dir / f"{job.name}.out", log_dir / f"{job.name}.err"
    cmd = [*train_command, "--env", job.env_id, "--algo", job.algo, "--seed", str(job.seed)]
    cmd += ["-n", str(job.n_timesteps)] if job.n_timesteps is not None else []
    with open(out, "w") as f_out, open(err, "w") as f_err:  # the child keeps its own copies
        proc = subprocess.Popen([*cmd, *train_args], stdout=f_out, stderr=f_err, stdin=subprocess.DEVNULL, env=env)
    return proc, _Running(job, time.perf_counter(), out, err)


def _collect(
    proc: subprocess.Popen, entry: _Running, folders: list[Path], failed: list[FailedRun], runs_file: Path | None
) -> str:
    """File a finished process under ``folders`` or ``failed``; the progress line that says which."""
    job, elapsed = entry.job, time.perf_counter() - entry.start
    what = f"{job.env_id} {job.algo} seed {job.seed}"
    folder = _announced_folder(entry.out)
    if proc.returncode == 0 and folder is not None and (folder / "evaluations.npz").is_file():
        folders.append(folder)
        if runs_file is not None:
            with open(runs_file, "a") as f:
                f.write(f"{folder}\n")
        return f"{what}: done in {elapsed:.0f} s -> {folder}"
    tail = _tail(entry.err) or _tail(entry.out) or "no output"
    if proc.returncode == 0:
        reason = f"exited 0 but wrote no {'run folder' if folder is None else folder / 'evaluations.npz'}"
    else:
        reason = failure_reason(entry.err.read_text(errors="replace"), proc.returncode)
    failed.append(FailedRun(job.env_id, job.algo, job.seed, proc.returncode, tail, entry.err, reason))
    return f"{what}: FAILED (exit {proc.returncode}, {elapsed:.0f} s): {reason}"


def failure_reason(stderr: str, returncode: int) -> str:
    """
    The line of a failed run's stderr that says why: the scripts' ``error:`` line, else the exception that ended
    the last traceback, else the last line; warnings and hints printed after it are not the reason.
    """
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:  # a traceback's frames are indented; the exception line that ends it is not
        ends = [line for line in lines[starts[-1] + 1 :] if not line.startswith((" ", "\t"))]
        if ends:
            return ends[0]
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return lines[-1] if lines else "no output"


def _announced_folder(stdout_file: Path) -> Path | None:
    for line in reversed(stdout_file.read_text(errors="replace").splitlines()):
        if line.startswith(RUN_FOLDER_LINE):
            return Path(line[len(RUN_FOLDER_LINE) :].strip()).resolve()
    return None


def _tail(path: Path, n_lines: int = 15) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return "\n".join(lines[-n_lines:])
