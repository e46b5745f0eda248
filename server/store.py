"""The task store: accounts, tasks, the callbacks outbox, and the stored output files.

`Store` names the operations after the task's lifecycle (insert_batch, claim, requeue,
record_progress, finish); `SqliteStore` is the embedded implementation over aiosqlite. No SQL
lives outside this module, so a PostgreSQL store can come later behind the same methods.

Writes are grouped: every write joins the pending list, and one writer coroutine commits all
that is pending in a single transaction, so many concurrent creates cost few commits. A write
returns once its transaction is committed (durable), which is when the bus may publish it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from server.statuses import Status, Task, new_key, now_iso


class StoreError(Exception):
    """The store could not do what was asked (the database failed underneath)."""


@dataclass(frozen=True)
class Account:
    id: int
    secret: str
    created_at: str


@dataclass(frozen=True)
class ApiKey:
    key: str
    account: Account
    referrers: tuple[str, ...]


@dataclass(frozen=True)
class FileRecord:
    """One output file kept in a managed storage system (persistent or volatile).

    `path` is the backend's path (`persistent/1/KEY/x.jpg`), `name` the account's view of it
    (`KEY/x.jpg`), `created` a Unix time, and `url` the URL given out, without its query string
    (a presigned URL's signature changes, its address does not).
    """

    account_id: int
    storage: str
    backend: str
    path: str
    name: str
    task_key: str
    size: int
    created: float
    url: str
    id: int | None = None


@dataclass
class Delivery:
    """One callback or errback owed to a client: the outbox row."""

    id: str
    task_key: str
    account_id: int
    event: str  # "callback" or "errback"
    url: str
    body: bytes
    state: str = "pending"  # pending, delivered, failed
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str | None = None
    delivered_at: str | None = None
    secret: str = ""  # the account's secret, which signs the POST; never sent or shown

    def describe(self) -> dict[str, Any]:
        """The delivery outcome as `details=true` shows it."""
        return {
            "id": self.id,
            "event": self.event,
            "url": self.url,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "delivered_at": self.delivered_at,
        }


SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    secret TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_key_referrers (
    key TEXT NOT NULL REFERENCES api_keys(key) ON DELETE CASCADE,
    origin TEXT NOT NULL,
    PRIMARY KEY (key, origin)
);
CREATE INDEX IF NOT EXISTS api_key_referrers_origin ON api_key_referrers(origin);
CREATE TABLE IF NOT EXISTS tasks (
    key TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL,
    task_name TEXT NOT NULL,
    params BLOB NOT NULL,
    task_store BLOB NOT NULL,
    task_metas BLOB,
    status TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    progress BLOB,
    result BLOB,
    error BLOB,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_unfinished ON tasks(queued_at)
    WHERE status IN ('queued', 'executing');
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    task_key TEXT NOT NULL,
    account_id INTEGER NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_task ON deliveries(task_key);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_attempt) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    storage TEXT NOT NULL,
    backend TEXT NOT NULL,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    task_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    url TEXT NOT NULL,
    UNIQUE (backend, path)
);
CREATE INDEX IF NOT EXISTS files_account ON files(account_id, storage, name);
CREATE INDEX IF NOT EXISTS files_url ON files(account_id, url);
CREATE INDEX IF NOT EXISTS files_age ON files(storage, created);
CREATE TABLE IF NOT EXISTS storage_expiration (
    account_id INTEGER PRIMARY KEY,
    days INTEGER NOT NULL
);
"""

_TASK_COLUMNS = (
    "key, account_id, task_name, params, task_store, task_metas, status, queued_at, "
    "started_at, completed_at, progress, result, error, attempts"
)
_DELIVERY_COLUMNS = (
    "d.id, d.task_key, d.account_id, d.event, d.url, d.body, d.state, d.attempts, "
    "d.next_attempt, d.last_error, d.delivered_at, a.secret"
)


def _json(value: Any) -> bytes | None:
    return None if value is None else orjson.dumps(value)


def _unjson(blob: bytes | str | None) -> Any:
    return None if blob is None else orjson.loads(blob)


def _task_from_row(row: Sequence[Any]) -> Task:
    return Task(
        key=row[0],
        account_id=row[1],
        task_name=row[2],
        params=_unjson(row[3]),
        task_store=_unjson(row[4]),
        task_metas=_unjson(row[5]),
        status=Status(row[6]),
        queued_at=row[7],
        started_at=row[8],
        completed_at=row[9],
        progress=_unjson(row[10]),
        result=_unjson(row[11]),
        error=_unjson(row[12]),
        attempts=row[13],
    )


def _task_row(t: Task, new: bool = True) -> tuple[Any, ...]:
    """A task's row. For an existing task (`new=False`) the parameters are blanks (not NULL:
    the columns are NOT NULL), which the upsert's update of the changing columns never reads."""
    fixed = (_json(t.params), _json(t.task_store), _json(t.task_metas)) if new else (b"", b"", None)
    return (
        t.key,
        t.account_id,
        t.task_name,
        *fixed,
        t.status,
        t.queued_at,
        t.started_at,
        t.completed_at,
        _json(t.progress),
        _json(t.result),
        _json(t.error),
        t.attempts,
    )


def _delivery_row(d: Delivery) -> tuple[Any, ...]:
    return (d.id, d.task_key, d.account_id, d.event, d.url, d.body, d.state, d.next_attempt)


def _delivery_from_row(row: Sequence[Any]) -> Delivery:
    return Delivery(*row[:6], *row[6:11], secret=row[11])


# A statement, its parameters, and the future of the write call it ends (if it ends one).
_Op = tuple[str, tuple[Any, ...], asyncio.Future[None] | None]


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode, a writer connection that commits grouped
    writes and a reader connection for queries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: list[_Op] = []
        # Claims wait here, by task key, until the writer takes them (ahead of the pending
        # statements: _phase orders them anyway), so that a finish can drop one in O(1).
        self._unsent_claims: dict[str, _Op] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._writer_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop  # set by open()
        # Accounts are never deleted and their secrets never change, so a secret that once
        # matched always does; API keys can be removed and are always read from the database.
        self._accounts_by_secret: dict[str, Account] = {}

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit: a batch of task rows alone is one statement, so its own transaction
            # (see _write_loop); any other batch opens one explicitly.
            self._writer = await self._connect(isolation_level=None)
            await self._writer.executescript(SCHEMA)
            self._reader = await self._connect(isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the task store at {self.path}: {e}") from e
        # Kept, not looked up per write: Python 3.11's get_running_loop makes a getpid system
        # call, and py-spy showed those calls among the largest costs of a create.
        self._loop = asyncio.get_running_loop()
        self._writer_task = asyncio.create_task(self._write_loop(), name="store-writer")

    async def _connect(self, isolation_level: str | None) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=isolation_level)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=10000")
        await db.execute("PRAGMA foreign_keys=ON")
        return db

    async def close(self) -> None:
        """Commits what is pending, then closes the connections (whatever happens)."""
        try:
            if self._writer_task:
                # The writer commits the batch in flight and what is pending, then returns.
                self._closing = True
                self._wake.set()
                await self._writer_task
        finally:
            for db in (self._writer, self._reader):
                if db is not None:
                    await db.close()

    # -- grouped writes ----------------------------------------------------------------------

    async def _write(self, ops: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        """Queues statements and returns once the transaction holding them is committed."""
        future = self._loop.create_future()
        ops = list(ops)
        for sql, params in ops[:-1]:
            self._pending.append((sql, params, None))
        self._pending.append((*ops[-1], future))
        self._wake.set()
        # A cancelled caller stops waiting, but its statements stay queued and are committed.
        await future

    def _write_soon(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queues a statement without waiting for its commit (progress updates)."""
        self._pending.append((sql, params, None))
        self._wake.set()

    async def _write_loop(self) -> None:
        assert self._writer is not None
        while True:
            if not self._pending and not self._unsent_claims:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            batch = [*self._unsent_claims.values(), *self._pending]
            self._pending, self._unsent_claims = [], {}
            batch.sort(key=_phase)
            rows = [op[1] for op in batch if op[0] is _TASK_ROW]
            others = batch[len(rows) :]
            try:
                if not others and len(rows) <= _ROWS_PER_STATEMENT:
                    # One statement: atomic on its own, and a single call to the database
                    # thread for the whole commit, which the creates of the batch wait on.
                    await self._writer.execute(
                        _upsert_tasks(len(rows)), [value for row in rows for value in row]
                    )
                else:
                    await self._writer.execute("BEGIN IMMEDIATE")
                    if rows:
                        await self._writer.executemany(_upsert_tasks(1), rows)
                    for sql, ops in groupby(others, itemgetter(0)):
                        await self._writer.executemany(sql, [op[1] for op in ops])
                    await self._writer.execute("COMMIT")
            except Exception as e:  # the writer must outlive any failure, or writes would hang
                with contextlib.suppress(Exception):
                    await self._writer.execute("ROLLBACK")
                error = StoreError(f"task store write failed: {e}")
                for *_, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(error)
                continue
            for *_, future in batch:
                if future is not None and not future.done():
                    future.set_result(None)

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        assert self._reader is not None
        try:
            # One call on the reader's thread: a cursor left open across an await would let
            # the next query start while it is unfinished, and SQLite then keeps serving the
            # connection's old snapshot, blind to newer commits, for as long as reads overlap.
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as e:
            raise StoreError(f"task store query failed: {e}") from e

    async def _query_in(
        self, sql: str, account_id: int, values: Sequence[str]
    ) -> list[sqlite3.Row]:
        """Rows of `sql` (whose `{marks}` is an IN list) for the distinct `values`, queried 500
        at a time to stay under SQLite's limit on parameters."""
        unique = list(dict.fromkeys(values))
        rows: list[sqlite3.Row] = []
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows += await self._query(sql.format(marks=marks), (account_id, *chunk))
        return rows

    # -- accounts -----------------------------------------------------------------------------

    async def create_account(self, secret: str | None = None) -> Account:
        """Creates an account (with a random secret unless one is given)."""
        account_secret = secret or secrets.token_hex(24)  # no leading "-" for the CLI
        await self._write(
            [
                (
                    "INSERT OR IGNORE INTO accounts(secret, created_at) VALUES (?, ?)",
                    (account_secret, now_iso()),
                )
            ]
        )
        account = await self.account_by_secret(account_secret)
        assert account is not None
        return account

    async def account_by_secret(self, secret: str) -> Account | None:
        account = self._accounts_by_secret.get(secret)
        if account is None:
            rows = await self._query(
                "SELECT id, secret, created_at FROM accounts WHERE secret = ?", (secret,)
            )
            if not rows:
                return None
            account = self._accounts_by_secret[secret] = Account(*rows[0])
        return account

    async def accounts(self) -> list[tuple[Account, list[ApiKey]]]:
        """Every account with its API keys."""
        accounts = [
            Account(*r) for r in await self._query("SELECT id, secret, created_at FROM accounts")
        ]
        by_id: dict[int, list[ApiKey]] = {a.id: [] for a in accounts}
        by_key: dict[str, list[str]] = {}
        for key, origin in await self._query("SELECT key, origin FROM api_key_referrers"):
            by_key.setdefault(key, []).append(origin)
        lookup = {a.id: a for a in accounts}
        for key, account_id in await self._query("SELECT key, account_id FROM api_keys"):
            by_id[account_id].append(
                ApiKey(key, lookup[account_id], tuple(sorted(by_key.get(key, []))))
            )
        return [(a, by_id[a.id]) for a in accounts]

    async def add_api_key(self, account: Account, referrers: Iterable[str]) -> str:
        """Adds an API key with its Referer whitelist (normalized origins) and returns it."""
        key = secrets.token_hex(20)  # no leading "-" for the CLI
        ops: list[tuple[str, tuple[Any, ...]]] = [
            (
                "INSERT INTO api_keys(key, account_id, created_at) VALUES (?, ?, ?)",
                (key, account.id, now_iso()),
            )
        ]
        ops += [
            ("INSERT OR IGNORE INTO api_key_referrers(key, origin) VALUES (?, ?)", (key, origin))
            for origin in referrers
        ]
        await self._write(ops)
        return key

    async def remove_api_key(self, key: str) -> bool:
        existed = bool(await self._query("SELECT 1 FROM api_keys WHERE key = ?", (key,)))
        await self._write(
            [
                ("DELETE FROM api_key_referrers WHERE key = ?", (key,)),
                ("DELETE FROM api_keys WHERE key = ?", (key,)),
            ]
        )
        return existed

    async def api_key(self, key: str) -> ApiKey | None:
        rows = await self._query(
            "SELECT a.id, a.secret, a.created_at FROM api_keys k "
            "JOIN accounts a ON a.id = k.account_id WHERE k.key = ?",
            (key,),
        )
        if not rows:
            return None
        origins = await self._query("SELECT origin FROM api_key_referrers WHERE key = ?", (key,))
        return ApiKey(key, Account(*rows[0]), tuple(r[0] for r in origins))

    async def origin_whitelisted(self, origin: str) -> bool:
        """Whether any API key lists this origin (answers CORS preflights, which carry no key)."""
        return bool(
            await self._query("SELECT 1 FROM api_key_referrers WHERE origin = ? LIMIT 1", (origin,))
        )

    # -- task lifecycle -----------------------------------------------------------------------

    async def insert_batch(self, tasks: Sequence[Task], deliveries: Sequence[Delivery]) -> None:
        """Stores new tasks (queued, or already in error) and the errbacks those errors owe."""
        ops = [(_TASK_ROW, _task_row(t)) for t in tasks]
        ops += [(_INSERT_DELIVERY, _delivery_row(d)) for d in deliveries]
        await self._write(ops)

    def claim(self, task: Task) -> None:
        """Records that a worker took the task (status, start time and attempt count), without
        waiting for the commit."""
        self._unsent_claims[task.key] = (_TASK_ROW, _task_row(task, new=False), None)
        self._wake.set()

    async def requeue(self, task: Task) -> None:
        """Puts an interrupted task back in the queue for another attempt."""
        await self._write([(_TASK_ROW, _task_row(task, new=False))])

    def record_progress(self, task: Task) -> None:
        """Saves progress and a partial result, without waiting for the commit."""
        self._write_soon(_TASK_ROW, _task_row(task, new=False))

    async def finish(self, tasks: Sequence[Task], deliveries: Sequence[Delivery]) -> None:
        """Records final statuses and, in the same transaction, the callbacks they owe. A task
        that ends before its claim was sent to the database (hello takes microseconds) has the
        claim dropped: its row records the start as well."""
        for task in tasks:
            self._unsent_claims.pop(task.key, None)
        ops = [(_TASK_ROW, _task_row(task, new=False)) for task in tasks]
        ops += [(_INSERT_DELIVERY, _delivery_row(d)) for d in deliveries]
        await self._write(ops)

    async def tasks(self, account_id: int, keys: Sequence[str]) -> dict[str, Task]:
        """The account's tasks among `keys`; keys of other accounts are simply absent."""
        rows = await self._query_in(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE account_id = ? AND key IN ({{marks}})",
            account_id,
            keys,
        )
        return {row[0]: _task_from_row(row) for row in rows}

    async def unfinished(self) -> list[Task]:
        """Tasks found queued or executing (the server stopped under them), oldest first."""
        rows = await self._query(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status IN ('queued', 'executing') "
            "ORDER BY queued_at"
        )
        return [_task_from_row(r) for r in rows]

    # -- callbacks outbox ---------------------------------------------------------------------

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        rows = await self._query(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN accounts a "
            "ON a.id = d.account_id WHERE d.state = 'pending' AND d.next_attempt <= ? "
            "ORDER BY d.next_attempt LIMIT ?",
            (now, limit),
        )
        return [_delivery_from_row(r) for r in rows]

    async def next_delivery_time(self) -> float | None:
        rows = await self._query("SELECT MIN(next_attempt) FROM deliveries WHERE state = 'pending'")
        return rows[0][0] if rows else None

    async def record_delivery(self, d: Delivery) -> None:
        await self._write(
            [
                (
                    "UPDATE deliveries SET state = ?, attempts = ?, next_attempt = ?, "
                    "last_error = ?, delivered_at = ? WHERE id = ?",
                    (d.state, d.attempts, d.next_attempt, d.last_error, d.delivered_at, d.id),
                )
            ]
        )

    async def deliveries_of(self, keys: Sequence[str]) -> dict[str, list[Delivery]]:
        out: dict[str, list[Delivery]] = {}
        if not keys:
            return out
        rows = await self._query(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN accounts a "
            f"ON a.id = d.account_id WHERE d.task_key IN ({','.join('?' * len(keys))})",
            tuple(keys),
        )
        for row in rows:
            d = _delivery_from_row(row)
            out.setdefault(d.task_key, []).append(d)
        return out

    async def pending_delivery_count(self) -> int:
        rows = await self._query("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
        return rows[0][0]

    # -- stored files ------------------------------------------------------------------------
    # Every file of the managed storage systems has a row, so listing, usage, deletion by URL
    # or date and the expiration sweep are queries, whatever the backend.

    async def record_file(self, f: FileRecord) -> None:
        """Records a file once it is stored."""
        await self._write(
            [
                (
                    f"INSERT OR REPLACE INTO files({_FILE_COLUMNS}) VALUES ({','.join('?' * 9)})",
                    (
                        f.account_id,
                        f.storage,
                        f.backend,
                        f.path,
                        f.name,
                        f.task_key,
                        f.size,
                        f.created,
                        f.url,
                    ),
                )
            ]
        )

    async def find_files(
        self,
        account_id: int,
        storage: str,
        *,
        name: str | None = None,
        prefix: str = "",
        created_from: float | None = None,
        created_to: float | None = None,
    ) -> list[FileRecord]:
        """The account's files of one storage system: the one called `name`, or those whose
        name starts with `prefix`; created within [created_from, created_to] when given.
        Sorted by name."""
        sql = f"SELECT {_FILE_COLUMNS}, id FROM files WHERE account_id = ? AND storage = ?"
        params: list[Any] = [account_id, storage]
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        elif prefix:
            # substr, not LIKE: LIKE ignores case and treats % and _ as wildcards.
            sql += " AND substr(name, 1, ?) = ?"
            params += [len(prefix), prefix]
        if created_from is not None:
            sql += " AND created >= ?"
            params.append(created_from)
        if created_to is not None:
            sql += " AND created <= ?"
            params.append(created_to)
        rows = await self._query(sql + " ORDER BY name", params)
        return [FileRecord(*r) for r in rows]

    async def files_by_url(self, account_id: int, urls: Sequence[str]) -> list[FileRecord]:
        """The account's files among these URLs (given without their query strings)."""
        rows = await self._query_in(
            f"SELECT {_FILE_COLUMNS}, id FROM files WHERE account_id = ? AND url IN ({{marks}})",
            account_id,
            urls,
        )
        return sorted((FileRecord(*r) for r in rows), key=lambda f: f.name)

    async def forget_files(self, ids: Sequence[int]) -> None:
        """Drops the rows of files deleted from their backend."""
        if ids:
            await self._write([("DELETE FROM files WHERE id = ?", (i,)) for i in ids])

    async def storage_usage(self, account_id: int, storage: str = "persistent") -> int:
        """Bytes of the account's files in one storage system."""
        rows = await self._query(
            "SELECT COALESCE(SUM(size), 0) FROM files WHERE account_id = ? AND storage = ?",
            (account_id, storage),
        )
        return rows[0][0]

    async def set_expiration(self, account_id: int, days: int) -> None:
        """Sets the lifetime of the account's persistent files (0: kept until deleted)."""
        await self._write(
            [
                (
                    "INSERT INTO storage_expiration(account_id, days) VALUES (?, ?) "
                    "ON CONFLICT(account_id) DO UPDATE SET days = excluded.days",
                    (account_id, days),
                )
            ]
        )

    async def expiration(self, account_id: int) -> int:
        rows = await self._query(
            "SELECT days FROM storage_expiration WHERE account_id = ?", (account_id,)
        )
        return rows[0][0] if rows else 0

    async def expired_files(
        self, now: float, volatile_max_age: float, backends: Sequence[str], limit: int
    ) -> list[FileRecord]:
        """Volatile files older than `volatile_max_age` seconds and persistent files past
        their account's expiration, kept on one of `backends`, oldest first."""
        rows = await self._query(
            f"SELECT {_FILE_COLUMNS_F}, f.id FROM files f "
            "LEFT JOIN storage_expiration e ON e.account_id = f.account_id "
            "WHERE ((f.storage = 'volatile' AND f.created < ?) "
            "OR (f.storage = 'persistent' AND e.days > 0 AND f.created < ? - e.days * 86400.0)) "
            f"AND f.backend IN ({','.join('?' * len(backends))}) "
            "ORDER BY f.created LIMIT ?",
            (now - volatile_max_age, now, *backends, limit),
        )
        return [FileRecord(*r) for r in rows]


_FILE_COLUMNS = "account_id, storage, backend, path, name, task_key, size, created, url"
_FILE_COLUMNS_F = ", ".join(f"f.{c}" for c in _FILE_COLUMNS.split(", "))

# Every write of a task row (new task, claim, progress, requeue, end) is one statement: an
# insert that updates the task's changing columns when the key exists. A batch of them is one
# multi-row statement. For an existing task, the row's params, task_store and task_metas are
# blanks the update never reads.
_TASK_ROW = "task row"
_TASK_ROW_WIDTH = 14
# 999 variables per statement is SQLite's smallest default limit; larger batches take a
# transaction of several statements.
_ROWS_PER_STATEMENT = 999 // _TASK_ROW_WIDTH


@lru_cache(maxsize=256)
def _upsert_tasks(count: int) -> str:
    """The statement writing `count` task rows."""
    row = f"({','.join('?' * _TASK_ROW_WIDTH)})"
    return (
        f"INSERT INTO tasks({_TASK_COLUMNS}) VALUES {','.join([row] * count)} "
        "ON CONFLICT(key) DO UPDATE SET status = excluded.status, "
        "started_at = excluded.started_at, completed_at = excluded.completed_at, "
        "progress = excluded.progress, result = excluded.result, error = excluded.error, "
        "attempts = excluded.attempts"
    )


# The order of statements in one transaction: task rows first, then all the others in the order
# they came. A task's own rows come in the order of its history (it is claimed only once its
# insert is committed, and a requeue is committed before the next claim), and the other
# statements (callbacks owed, files, accounts) never depend on a task row of the same batch.
def _phase(op: _Op) -> int:
    return 0 if op[0] is _TASK_ROW else 1


_INSERT_DELIVERY = (
    "INSERT INTO deliveries(id, task_key, account_id, event, url, body, state, next_attempt) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def new_delivery_id() -> str:
    """A Standard Webhooks message id, the same on every retry of one delivery."""
    return "msg_" + new_key().lower()
