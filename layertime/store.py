"""The run store: every result kept in an embedded SQLite database.

One row per run (a profile, a cost estimate, a layer benchmark, one
configuration of a sweep) holding its full result JSON, its configuration,
environment and status.  Each run is committed as soon as it finishes, so an
interrupted sweep loses nothing already measured.  The database is opened in
WAL mode with a busy timeout, so two processes can write one file at once.

Location: ``--db PATH``, else ``$LAYERTIME_DB``, else
``$XDG_DATA_HOME/layertime/runs.db`` (``~/.local/share/layertime/runs.db``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import socket
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from layertime.errors import LayertimeError
from layertime.results.stored import StoredRun

#: Bumped when the tables change; ``_MIGRATIONS[v]`` upgrades v to v + 1.
SCHEMA_VERSION = 2
#: ``PRAGMA application_id``: marks a SQLite file as a layertime database ("LTRS").
APPLICATION_ID = 0x4C545253
RUN_KINDS = ("profile", "cost", "bench-layers", "sweep")
STATUSES = ("ok", "failed", "interrupted")

_V1 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    batch_size INTEGER,
    device TEXT,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    config_json TEXT NOT NULL,
    result_json TEXT,
    error TEXT
);
CREATE INDEX runs_created ON runs(created);
"""

_MIGRATIONS: dict[int, str] = {
    # v1 -> v2: runs remember the sweep they belong to, their configuration
    # key (for resuming) and the host that measured them.
    1: """
ALTER TABLE runs ADD COLUMN sweep_id INTEGER;
ALTER TABLE runs ADD COLUMN config_key TEXT;
ALTER TABLE runs ADD COLUMN host TEXT;
CREATE INDEX runs_config_key ON runs(config_key);
""",
}


def default_path() -> Path:
    env = os.environ.get("LAYERTIME_DB")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "layertime" / "runs.db"


def config_key(config: Mapping[str, Any]) -> str:
    """A stable key for a configuration: same settings, same key."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_COLUMNS = (
    "id, kind, model, batch_size, device, status, created, config_json, result_json, error, "
    "sweep_id, config_key, host"
)


def _row(r: tuple[Any, ...]) -> StoredRun:
    return StoredRun(
        id=r[0],
        kind=r[1],
        model=r[2],
        batch_size=r[3],
        device=r[4],
        status=r[5],
        created=r[6],
        config=json.loads(r[7]),
        result=json.loads(r[8]) if r[8] else None,
        error=r[9],
        sweep_id=r[10],
        config_key=r[11],
        host=r[12],
    )


class Store:
    """A layertime database; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        existed = self.path.exists() and self.path.stat().st_size > 0
        if not existed:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LayertimeError(f"cannot create {self.path.parent}: {e.strerror}") from e
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as e:
            raise LayertimeError(f"cannot open database {self.path}: {e}") from e
        try:
            self._open(existed)
        except BaseException:
            self._db.close()
            raise

    def _open(self, existed: bool) -> None:
        db = self._db
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise LayertimeError(f"{self.path} is not a layertime database ({e})") from e
        if existed and (app_id != APPLICATION_ID or "runs" not in tables):
            if tables or app_id:
                raise LayertimeError(
                    f"{self.path} is not a layertime database (left untouched)"
                )
        if version > SCHEMA_VERSION:
            raise LayertimeError(
                f"{self.path} was written by a newer layertime (schema {version}, "
                f"this one reads up to {SCHEMA_VERSION}); upgrade layertime"
            )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        with self._transaction():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for stmt in _split(_V1):
                    db.execute(stmt)
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                version = 1
            while version < SCHEMA_VERSION:
                for stmt in _split(_MIGRATIONS[version]):
                    db.execute(stmt)
                version += 1
            db.execute(f"PRAGMA user_version={version}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------
    def add(
        self,
        kind: str,
        *,
        model: str,
        config: Mapping[str, Any],
        result: Mapping[str, Any] | None = None,
        status: str = "ok",
        error: str | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        sweep_id: int | None = None,
        key: str | None = None,
    ) -> int:
        """Store one run and commit it at once; returns its id.  ``key`` (default: the
        configuration's :func:`config_key`) is what a resumed sweep looks for."""
        if kind not in RUN_KINDS:
            raise ValueError(f"unknown run kind {kind!r}")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
        with self._transaction():
            cur = self._db.execute(
                "INSERT INTO runs (kind, model, batch_size, device, status, created, config_json,"
                " result_json, error, sweep_id, config_key, host)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    model,
                    batch_size,
                    device,
                    status,
                    created,
                    json.dumps(dict(config), sort_keys=True, default=str),
                    json.dumps(result) if result is not None else None,
                    error,
                    sweep_id,
                    key if key is not None else config_key(config),
                    socket.gethostname(),
                ),
            )
            rid = cur.lastrowid
        assert rid is not None
        return int(rid)

    def update(
        self,
        run_id: int,
        *,
        status: str,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Set a run's status (and result), e.g. a sweep when it ends."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET status=?, result_json=COALESCE(?, result_json), error=? WHERE id=?",
                (status, json.dumps(result) if result is not None else None, error, run_id),
            )

    # -- reading -----------------------------------------------------------
    def get(self, run_id: int) -> StoredRun:
        r = self._db.execute(f"SELECT {_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
        if r is None:
            raise LayertimeError(f"no run {run_id} in {self.path}")
        return _row(r)

    def list(self, *, kind: str | None = None, limit: int | None = None) -> list[StoredRun]:
        """Stored runs, newest first."""
        sql = f"SELECT {_COLUMNS} FROM runs"
        args: list[Any] = []
        if kind is not None:
            sql += " WHERE kind=?"
            args.append(kind)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_row(r) for r in self._db.execute(sql, args)]

    def find_ok(self, key: str) -> StoredRun | None:
        """The newest successful run with this configuration key, if any."""
        r = self._db.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE config_key=? AND status='ok' ORDER BY id DESC",
            (key,),
        ).fetchone()
        return _row(r) if r else None

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
