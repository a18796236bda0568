"""
A tuning study: its storage, sampler and pruner, the worker loop, and what it leaves behind.

Storages: SQLite by default (``<log folder>/optuna/<study>.db``, one machine), any SQLAlchemy URL for a database
server (``postgresql://user@host/db``, ``mysql+pymysql://...``) so that workers on many machines share one study,
or a ``.log`` path for Optuna's journal file (many processes on one machine or on a shared file system).
Passwords belong in the environment (``PGPASSWORD``) or in a libpq service/pgpass file; any password given in a URL
is masked in every line this module prints or writes.

``n_trials`` is the study's total, not each worker's: a worker starts a trial only while the study holds fewer than
``n_trials`` trials that are finished (complete, pruned, failed) or running, and it checks and starts under a lock
shared by all workers (a file lock next to a SQLite/journal file, an advisory lock on PostgreSQL/MySQL). So any
number of workers given ``--n-trials N`` finish exactly N trials together, and running the command again resumes an
interrupted study up to N; raise N to add trials. A worker killed hard (SIGKILL, power loss) leaves its trial
RUNNING, and that trial keeps counting towards N.
"""

import contextlib
import fcntl
import importlib.util
import re
import shlex
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from experiment.config import load_hyperparams, validate
from experiment.errors import first_line
from tuning.objective import Objective, TrialSettings, make_pruner, run_trial, trial_line
from tuning.report import export_results, retrain_command
from tuning.space import TuningError, load_space, make_sampler

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (also for strings SQLAlchemy cannot parse)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", url)


def _scrub(message: str, url: str) -> str:
    try:
        password = sqlalchemy.engine.make_url(url).password
    except Exception:
        password = None
    message = message.replace(url, mask_url(url))
    return message.replace(password, "***") if password else message


# What a worker sees when another one creates Optuna's tables at the same moment (it retries).
_CREATE_RACE = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)
# Drivers tried, in order, for a URL that names none (SQLAlchemy 2.1 defaults to psycopg 3 for postgresql://, while
# psycopg2-binary is the one commonly installed).
DRIVERS = {"postgresql": ("psycopg", "psycopg2"), "mysql": ("MySQLdb", "pymysql")}


def _with_installed_driver(url: sqlalchemy.engine.URL) -> sqlalchemy.engine.URL:
    if "+" in url.drivername or url.drivername not in DRIVERS:
        return url
    for module in DRIVERS[url.drivername]:
        if importlib.util.find_spec(module) is not None:
            return url.set(drivername=f"{url.drivername}+{module.lower()}")
    return url


class StudyStorage:
    """
    An opened Optuna storage, its printable (masked) name and the lock that serialises "count, then start a trial".

    :param url: storage URL or ``.log`` path; ``None`` means SQLite at ``<log_folder>/optuna/<study_name>.db``
    :param study_name: the study (names the default file and the lock)
    :param log_folder: root of the run outputs
    """

    def __init__(self, url: str | None, study_name: str, log_folder: str | Path):
        if url is None:
            path = Path(log_folder) / "optuna" / f"{study_name}.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}"
        self.url = url
        self.display = mask_url(url)
        self.study_name = study_name
        self._thread_lock = threading.Lock()
        self._lock_path: Path | None = None
        self.storage: BaseStorage = self._open()

    def _open(self) -> BaseStorage:
        if self.url.endswith(".log") and "://" not in self.url:
            path = Path(self.url)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_path = path.with_name(path.name + ".workers.lock")  # ".lock" is Optuna's own
            try:
                return JournalStorage(JournalFileBackend(str(path)))
            except OSError as e:
                raise TuningError(f"cannot open journal storage {path}: {e.strerror or e}") from None
        try:
            parsed = sqlalchemy.engine.make_url(self.url)
        except Exception:
            raise TuningError(
                f"bad storage URL {self.display!r}; use sqlite:///FILE.db, postgresql://USER@HOST/DB, "
                "mysql+pymysql://USER@HOST/DB or a FILE.log journal path"
            ) from None
        backend = parsed.get_backend_name()
        connect_args: dict[str, Any] = {}
        if backend == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                self._lock_path = Path(parsed.database + ".workers.lock")
            connect_args = {"timeout": 60}  # workers wait for each other's writes instead of failing
        elif backend == "postgresql":
            connect_args = {"connect_timeout": 10}  # an unreachable server is an error in seconds, not minutes
        elif backend == "mysql":
            connect_args = {"connect_timeout": 10}
        else:
            raise TuningError(f"unsupported storage {backend!r} in {self.display}; use sqlite, postgresql, mysql, .log")
        url = _with_installed_driver(parsed).render_as_string(hide_password=False)
        try:
            for attempt in range(5):
                try:
                    # Workers starting together on an empty database race to create Optuna's tables: on one machine
                    # the file lock orders them; on a server the loser finds the tables there on its next try.
                    with self._file_lock():
                        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args})
                except sqlalchemy.exc.DatabaseError as e:
                    if attempt == 4 or (not isinstance(e, _CREATE_RACE) and "already exists" not in str(e)):
                        raise
                    time.sleep(0.5 + attempt)
        except ImportError:
            raise TuningError(f"storage {self.display} needs a database driver: pip install psycopg2-binary "
                              "(PostgreSQL) or pymysql (MySQL)") from None  # fmt: skip
        except Exception as e:
            cause = getattr(e, "orig", None) or e
            raise TuningError(f"cannot open storage {self.display}: {_scrub(first_line(cause), self.url)}") from None

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self._lock_path is None:
            yield
            return
        with open(self._lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive between all workers of the study (threads, processes, and machines for database servers)."""
        with self._thread_lock:
            if self._lock_path is not None:
                with self._file_lock():
                    yield
                return
            engine = self.storage.engine  # type: ignore[attr-defined]
            key = zlib.crc32(f"custom_sac:{self.study_name}".encode())
            with engine.connect() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                    unlock = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
                else:
                    conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, -1)"), {"k": str(key)})
                    unlock = sqlalchemy.text("SELECT RELEASE_LOCK(:k)")
                    key = str(key)  # type: ignore[assignment]
                try:
                    yield
                finally:
                    conn.execute(unlock, {"k": key})
                    conn.commit()

    def dashboard_command(self) -> str:
        return f"optuna-dashboard {shlex.quote(self.display)}"


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
            problem = _scrub(first_line(cause), storage.url)
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
        with storage.lock():
            if n_trials is not None:
                counted = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
                if len(counted) >= n_trials:
                    break
            trial = study.ask()
        frozen = run_trial(study, trial, objective)
        ran += 1
        log(trial_line(frozen))
    return ran


def run_workers(
    study: optuna.Study,
    storage: StudyStorage,
    objective: Objective,
    n_trials: int | None,
    timeout: float | None,
    n_jobs: int = 1,
    log: Callable[[str], None] = print,
) -> int:
    """``n_jobs`` worker threads in this process (each trial still trains on one core); returns trials run."""
    if n_jobs <= 1:
        return run_worker(study, storage, objective, n_trials, timeout, log)
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        futures = [pool.submit(run_worker, study, storage, objective, n_trials, timeout, log) for _ in range(n_jobs)]
        return sum(f.result() for f in futures)


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
    :param n_jobs: worker threads in this process
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
    validate(algo, {**base, **search.fixed})  # a bad fixed value fails here, not in every trial
    n_steps = n_timesteps or retrain_timesteps or 20_000
    settings = TrialSettings(algo, env_id, base, search, n_steps, n_evaluations, eval_episodes, seed,
                             max_episode_steps=max_episode_steps)  # fmt: skip
    name = study_name or f"{algo}_{env_id}".replace("/", "-")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise TuningError(f"study name {name!r} is used in file names: use letters, digits, '.', '_' and '-'")
    if n_trials is not None and n_trials <= 0:
        raise TuningError(f"--n-trials must be positive, got {n_trials}")
    out_dir = Path(log_folder) / "optuna" / name
    record_command(out_dir, list(argv) if argv is not None else sys.argv)
    store = StudyStorage(storage, name, log_folder)
    study = open_study(store, make_sampler(sampler, seed), make_pruner(pruner, n_evaluations), algo, env_id)
    log(
        f"study {name} in {store.display}: {algo} on {env_id}, {n_steps} steps per trial, {n_evaluations} "
        f"evaluations of {eval_episodes} episodes, sampler {sampler}, pruner {pruner}, up to {n_trials} trials"
    )
    log("search space:\n" + search.describe())
    try:
        run_workers(study, store, Objective(settings), n_trials, timeout, n_jobs, log)
    finally:
        # Also after Ctrl-C: the outputs always describe everything the study holds.
        export_results(study, out_dir, settings, retrain_timesteps)
    log(summary(study, store, settings, out_dir))
    return study
