"""Where a sweep's study lives: a SQLite file on one machine, a journal file on a cluster's
shared file system, a database server for several machines; opened by any number of workers at
once, its errors said in one line without the password.

SQLite gets its write lock when a transaction begins (lock_on_begin), which makes a claim of a
waiting trial atomic; a database server's `SELECT ... FOR UPDATE`, which Optuna uses, does that,
and so does Optuna's journal: an append-only log of operations, locked with a symlink (atomic on
NFS, where SQLite's locks are not), in which the first worker to move a trial to running owns it.
A journal has no heartbeats: a worker lost with its trial is found by its process on the same
machine, or by its SLURM job when that job runs again (study.recover_lost).
"""

import random
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend

from mnist_lit.errors import ConfigError

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60  # a running trial silent this long has lost its worker
SETUP_ATTEMPTS = 5  # to open the storage, while other workers create its tables


class StorageError(ConfigError):
    """The study's storage cannot be reached, or holds another sweep under this name."""


def open_storage(url: str) -> BaseStorage:
    """A database URL (`sqlite:///`, `postgresql://`), or else the path of a journal file."""
    # Optuna warns about ask() with heartbeats outside study.optimize (Heartbeat below sends
    # them) and about its experimental stale-trial API, which it has had since 2.8
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if "://" not in url:
        return open_journal(url)
    # SQLite: wait for a busy database rather than fail when workers write together
    sqlite_wait = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(SETUP_ATTEMPTS):
        try:
            storage = RDBStorage(
                with_installed_driver(url),
                engine_kwargs=sqlite_wait,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=retry,
            )
            break
        except Exception as error:  # SQLAlchemy's driver and connection errors vary by database
            if not made_by_another(error) or attempt == SETUP_ATTEMPTS - 1:
                raise storage_error(url, error) from None
            time.sleep(random.uniform(0.2, 1.0))
    if url.startswith("sqlite"):
        lock_on_begin(storage.engine)
    return storage


def open_journal(path: str) -> JournalStorage:
    """Optuna's journal file at `path` (made when missing; its folder must exist)."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise StorageError(f"--storage {path}: no folder {folder} for the journal file")
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as error:
        raise StorageError(f"--storage {path}: cannot open it ({error.strerror})") from None


def made_by_another(error: Exception) -> bool:
    """Workers started together on a new database all create Optuna's tables: all but one fail
    on a table or row another has just made (PostgreSQL: DuplicateTable, UniqueViolation;
    SQLite: "table ... already exists"), and find it when they try again."""
    if isinstance(error, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError):
        return True
    return isinstance(error, sqlalchemy.exc.OperationalError) and "already exists" in str(error)


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """The storage failing mid-sweep (a read-only file, a lost server) as one line."""
    try:
        yield
    except OSError as error:  # a journal file that cannot be written (read-only, disk full)
        written = Path(str(error.filename or "")).name
        if "://" in url or not written.startswith(Path(url).name):  # the file or its lock
            raise
        raise StorageError(f"--storage {url}: {error.strerror}") from None
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as error:
        cause = error.__cause__ or error  # Optuna wraps the database's own error
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise StorageError(f"--storage {safe_url(url)}: {reason}") from None


def storage_error(url: str, error: Exception) -> StorageError:
    reason = str(error).splitlines()[0]
    return StorageError(f"--storage {safe_url(url)}: cannot open it ({reason})")


def lock_on_begin(engine: sqlalchemy.Engine) -> None:
    """SQLite transactions take the database's write lock when they begin (SQLAlchemy's recipe
    for serializable SQLite). By default pysqlite begins a transaction only at the first write,
    so two workers both read a trial as waiting and both claim it; a database server's
    `SELECT ... FOR UPDATE`, which Optuna uses, already prevents that."""

    @sqlalchemy.event.listens_for(engine, "connect")
    def no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def begin_immediate(connection: sqlalchemy.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners are replaced


def safe_url(url: str) -> str:
    """The URL without its secrets, for messages: the password, and every query value
    (`?password=...`, `sslpassword`, tokens)."""
    scheme, sep, rest = url.partition("://")
    rest, question, query = rest.partition("?")
    credentials, at, host = rest.rpartition("@")
    rest = f"{credentials.split(':')[0]}:***@{host}" if at else rest
    masked = "&".join(f"{pair.partition('=')[0]}=***" for pair in query.split("&") if pair)
    return f"{scheme}{sep}{rest}{question}{masked}"


def with_installed_driver(url: str) -> str:
    """`postgresql://` as documented: SQLAlchemy 2.1 reads it as psycopg (3), while the
    `postgres` extra installs psycopg2; name the driver that is installed."""
    scheme, sep, rest = url.partition("://")
    psycopg2_only = find_spec("psycopg") is None and find_spec("psycopg2") is not None
    return f"postgresql+psycopg2{sep}{rest}" if scheme == "postgresql" and psycopg2_only else url


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a copy of a failed trial: same parameters, user attributes (its finished seeds)
    and intermediate values, and the numbers it retries."""
    RetryHeartbeatStaleTrialCallback(max_retry=None, inherit_intermediate_values=True)(study, trial)
