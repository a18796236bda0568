"""
Where a study lives: the Optuna storage, its printable (masked) name, the workers' lock, and how a worker rides out
a database server that restarts.

Storages: SQLite by default (``<log folder>/optuna/<study>.db``, one machine), any SQLAlchemy URL for a database
server (``postgresql://user@host/db``, ``mysql+pymysql://...``) so that workers on many machines share one study,
or a ``.log`` path for Optuna's journal file (many processes on one machine or on a shared file system).
Passwords belong in the environment (``PGPASSWORD``) or in a libpq service/pgpass file; any password given in a URL
is masked in every line this module prints or writes.

On SQLite and database servers every running trial records a heartbeat; a trial whose heartbeat stops for
``2 * heartbeat_interval`` seconds (its worker was killed) is marked FAIL by the next worker that looks, and queued
again with the same parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``). On a database server, a call that
finds the connection gone (a server restart) is retried for up to :data:`RECONNECT_SECONDS` before the worker gives
up.
"""

import contextlib
import fcntl
import functools
import importlib.util
import itertools
import re
import shlex
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from experiment.errors import first_line
from tuning.space import TuningError

# How long a worker keeps retrying a database server it lost, before it gives up with an error
RECONNECT_SECONDS = 120.0
# A trial killed with its worker is queued again at most this often (a trial that kills every worker must stop)
MAX_RETRY = 2
# Drivers tried, in order, for a URL that names none (SQLAlchemy 2.1 defaults to psycopg 3 for postgresql://, while
# psycopg2-binary is the one commonly installed).
DRIVERS = {"postgresql": ("psycopg", "psycopg2"), "mysql": ("MySQLdb", "pymysql")}
# What a worker sees when another one creates Optuna's tables at the same moment (it retries).
_CREATE_RACE = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)
# What SQLAlchemy raises when the server went away or refuses connections (a restart).
_LOST = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """
    Optuna marks heartbeats and retries experimental, and warns when a heartbeat storage is used with ask/tell (its
    own loop would keep the heartbeat; ``tuning.workers`` keeps it instead): none of that is the user's concern.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (also for strings SQLAlchemy cannot parse)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", url)


def scrub(message: str, url: str) -> str:
    """``message`` with ``url`` masked and its password, wherever it appears, replaced by ``***``."""
    try:
        password = sqlalchemy.engine.make_url(url).password
    except Exception:
        password = None
    message = message.replace(url, mask_url(url))
    return message.replace(password, "***") if password else message


def _with_installed_driver(url: sqlalchemy.engine.URL) -> sqlalchemy.engine.URL:
    if "+" in url.drivername or url.drivername not in DRIVERS:
        return url
    for module in DRIVERS[url.drivername]:
        if importlib.util.find_spec(module) is not None:
            return url.set(drivername=f"{url.drivername}+{module.lower()}")
    return url


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it: Optuna wraps SQLAlchemy's errors) says the server connection is gone."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and (
            seen.connection_invalidated
            or isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retrying(call: Callable[[], Any], url: str) -> Any:
    """``call()``, retried while the database server at ``url`` is unreachable (up to :data:`RECONNECT_SECONDS`)."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    for attempt in itertools.count():
        try:
            return call()
        except Exception as e:
            if not connection_lost(e) or time.monotonic() > deadline:
                raise
            if attempt == 0:
                problem = scrub(first_line(getattr(e, "orig", None) or e), url)
                print(f"database connection lost ({problem}); reconnecting", file=sys.stderr, flush=True)
            time.sleep(min(0.25 * 2**attempt, 2.0))
    raise AssertionError("unreachable")


def _reconnecting(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        return _retrying(lambda: method(self, *args, **kwargs), self.url)

    return call


class ReconnectingRDBStorage(RDBStorage):
    """``RDBStorage`` whose calls wait for a lost database server to come back (up to :data:`RECONNECT_SECONDS`)."""

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        tries = 0

        def once() -> bool:
            nonlocal tries
            tries += 1
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # A retried tell whose first try was committed just before the connection dropped: done already.
                if tries > 1 and RDBStorage.get_trial(self, trial_id).state == state:
                    return True
                raise

        return _retrying(once, self.url)


# The other storage calls a worker makes; each one is idempotent, so a retry after a lost connection is safe.
for _name in (
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_trial_id_from_study_id_trial_number",
    "get_best_trial",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "record_heartbeat",
    "_get_stale_trial_ids",
):
    setattr(ReconnectingRDBStorage, _name, _reconnecting(getattr(RDBStorage, _name)))


class RetryAndSay(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose heartbeat stopped (at most :data:`MAX_RETRY` times), and one line saying so."""

    def __init__(self, log: Callable[[str], None]):
        super().__init__(max_retry=MAX_RETRY)
        self.log = log

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        retries = len(self.retry_history(trial))
        super().__call__(study, trial)
        then = "queued again with its parameters" if retries < MAX_RETRY else f"retried {retries} times already: left"
        self.log(f"trial {trial.number} FAIL (its worker stopped sending heartbeats); {then}")


class StudyStorage:
    """
    An opened Optuna storage, its printable (masked) name and the lock that serialises "count, then start a trial".

    :param url: storage URL or ``.log`` path; ``None`` means SQLite at ``<log_folder>/optuna/<study_name>.db``
    :param study_name: the study (names the default file and the lock)
    :param log_folder: root of the run outputs
    :param heartbeat_interval: seconds between a running trial's heartbeats (SQLite and servers; ``None``: none)
    :param log: where the line about a trial failed for its silent heartbeat goes
    """

    def __init__(
        self,
        url: str | None,
        study_name: str,
        log_folder: str | Path,
        heartbeat_interval: int | None = 60,
        log: Callable[[str], None] = print,
    ):
        if url is None:
            path = Path(log_folder) / "optuna" / f"{study_name}.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}"
        self.url = url
        self.display = mask_url(url)
        self.study_name = study_name
        self.heartbeat_interval = heartbeat_interval
        self.log = log
        self._thread_lock = threading.Lock()
        self._lock_path: Path | None = None
        self.storage: BaseStorage = self._open()

    def _open(self) -> BaseStorage:
        if self.url.endswith(".log") and "://" not in self.url:
            path = Path(self.url)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_path = path.with_name(path.name + ".workers.lock")  # ".lock" is Optuna's own
            self.heartbeat_interval = None  # the journal storage keeps no heartbeats
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
        if backend == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                self._lock_path = Path(parsed.database + ".workers.lock")
            connect_args = {"timeout": 60}  # workers wait for each other's writes instead of failing
        elif backend in ("postgresql", "mysql"):
            connect_args = {"connect_timeout": 10}  # an unreachable server is an error in seconds, not minutes
        else:
            raise TuningError(f"unsupported storage {backend!r} in {self.display}; use sqlite, postgresql, mysql, .log")
        url = _with_installed_driver(parsed).render_as_string(hide_password=False)
        storage_class = RDBStorage if backend == "sqlite" else ReconnectingRDBStorage
        heartbeat: dict[str, Any] = {}
        if self.heartbeat_interval:
            with quiet_optuna():
                retry = RetryAndSay(self.log)
            heartbeat = {"heartbeat_interval": self.heartbeat_interval, "heartbeat_stale_trial_callback": retry}
        engine_kwargs = {"pool_pre_ping": True, "connect_args": connect_args}
        return self._open_rdb(lambda: storage_class(url, engine_kwargs=engine_kwargs, **heartbeat))

    def _open_rdb(self, make: Callable[[], RDBStorage]) -> RDBStorage:
        try:
            for attempt in range(5):
                try:
                    # Workers starting together on an empty database race to create Optuna's tables: on one machine
                    # the file lock orders them; on a server the loser finds the tables there on its next try.
                    with self._file_lock(), quiet_optuna():
                        return make()
                except sqlalchemy.exc.DatabaseError as e:
                    if attempt == 4 or (not isinstance(e, _CREATE_RACE) and "already exists" not in str(e)):
                        raise
                    time.sleep(0.5 + attempt)
        except ImportError:
            raise TuningError(
                f"storage {self.display} needs a database driver: pip install psycopg2-binary "
                "(PostgreSQL) or pymysql (MySQL)"
            ) from None
        except Exception as e:
            # Optuna wraps the driver's error in StorageInternalError ("An exception is raised during the commit"):
            # the driver's own line says what went wrong.
            cause = e.__cause__ if isinstance(e, optuna.exceptions.StorageInternalError) and e.__cause__ else e
            cause = getattr(cause, "orig", None) or cause
            raise TuningError(f"cannot open storage {self.display}: {scrub(first_line(cause), self.url)}") from None
        raise AssertionError("unreachable")

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
    def lock(self) -> Iterator["LockHeld"]:
        """
        Exclusive between all workers of the study (threads, processes, and machines for database servers). On a
        server the lock lives with its connection: when the connection dies (a server restart), the lock is gone
        too, and the yielded :class:`LockHeld` says so afterwards (``held.throughout`` is False).
        """
        held = LockHeld()
        with self._thread_lock:
            if self._lock_path is not None:
                with self._file_lock():
                    yield held
                return
            with self._server_lock(held):
                yield held

    @contextlib.contextmanager
    def _server_lock(self, held: "LockHeld") -> Iterator[None]:
        engine = self.storage.engine  # type: ignore[attr-defined]
        key = zlib.crc32(f"custom_sac:{self.study_name}".encode())
        postgres = engine.dialect.name == "postgresql"
        lock, unlock = ("pg_advisory_lock", "pg_advisory_unlock") if postgres else ("GET_LOCK", "RELEASE_LOCK")
        args = {"k": key} if postgres else {"k": str(key)}
        statement = f"SELECT {lock}(:k{'' if postgres else ', -1'})"
        conn = _retrying(lambda: _locked_connection(engine, statement, args), self.url)
        try:
            yield
        finally:
            try:
                conn.execute(sqlalchemy.text(f"SELECT {unlock}(:k)"), args)
                conn.commit()
            except Exception as e:
                if not connection_lost(e):
                    raise
                held.throughout = False  # the server dropped the session, and the lock with it
            finally:
                conn.close()

    def close(self) -> None:
        """Give the database connections back: a server has a fixed number of them (PostgreSQL: 100 by default)."""
        engine = getattr(self.storage, "engine", None)
        if engine is not None:
            self.storage.remove_session()  # type: ignore[attr-defined]
            engine.dispose()

    def __enter__(self) -> "StudyStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dashboard_command(self) -> str:
        return f"optuna-dashboard {shlex.quote(self.display)}"


class LockHeld:
    """Set by :meth:`StudyStorage.lock`: ``throughout`` is False when the lock was lost while it was held."""

    def __init__(self) -> None:
        self.throughout = True


def _locked_connection(engine: sqlalchemy.engine.Engine, statement: str, args: dict[str, Any]) -> Any:
    conn = engine.connect()
    try:
        conn.execute(sqlalchemy.text(statement), args)
    except Exception:
        conn.close()
        raise
    return conn
