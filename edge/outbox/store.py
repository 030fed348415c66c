"""Durable outbox: SQLite in WAL mode with synchronous=FULL, so a committed event survives SIGKILL and
power loss. Rows leave only when the broker acknowledged them (QoS 1 PUBACK). Bounded by rows and bytes:
when full the oldest are dropped, counted (persistently) and reported, never silently.

Each thread that touches the outbox opens its own Outbox object (SQLite connections are per thread);
the database file is shared.

Faults it survives (issue: never down, never silent):
- a full disk: `add` and `ack` raise OutboxWriteError (the caller holds the event and retries, see
  CommitBuffer); the WAL is kept small (checkpoint every 100 pages, truncated to 1 MB) so it does not
  grow into the last free space;
- a damaged file: `PRAGMA quick_check` at open, and any "malformed" error later, moves the file aside
  and salvages every readable row into a new outbox; what could not be read is counted and reported.
"""
import collections
import logging
import os
import sqlite3
import threading
import time
from collections import namedtuple

log = logging.getLogger("edge.outbox")

WAL_CHECKPOINT_PAGES = 100
WAL_LIMIT_BYTES = 1 << 20


class OutboxWriteError(RuntimeError):
    """A commit (or a delete) that could not be written: disk full or an I/O error. Nothing was changed."""


class _PathState:
    """Shared by every Outbox object on one file in this process: a salvage replaces the file, so each
    connection must notice (generation) and reopen, and no write may run while it happens (lock)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.generation = 0
        self.salvage = None  # the last salvage report (dict) for health and logs


_PATHS = collections.defaultdict(_PathState)
_PATHS_LOCK = threading.Lock()


def path_state(path):
    with _PATHS_LOCK:
        return _PATHS[os.path.abspath(path)]

OutboxRow = namedtuple("OutboxRow", "seq event_id topic payload created retain")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Outbox:
    def __init__(self, path, max_events=100000, max_bytes=256 * 1024 * 1024):
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700, exist_ok=True)
        self.shared = path_state(path)
        with self.shared.lock:
            self.generation = self.shared.generation
            self.db = self._open()

    def _open(self):
        for attempt in range(10):
            try:
                db = self._connect()
                problem = _quick_check(db)
                if problem:
                    db.close()
                    return self._salvage(problem)
                return db
            except sqlite3.DatabaseError as exc:
                if _is_corrupt(exc):
                    return self._salvage(str(exc))
                if _is_write_failure(exc):
                    raise OutboxWriteError("outbox %s: cannot open: %s" % (self.path, exc))
                # transient (another thread creating the schema, a lock): never a reason to move data aside
                if attempt == 9:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _salvage(self, problem):
        """A damaged file must not stop the appliance, nor lose what can still be read: move it aside, copy
        every readable row into a new outbox, say how many could not be read."""
        aside = "%s.corrupt-%d" % (self.path, int(time.time()))
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, aside + suffix)
        rows, dropped, expected = _read_what_can_be_read(aside)
        db = self._connect()
        with _Transaction(db):
            for row in rows:
                db.execute("INSERT OR IGNORE INTO outbox (event_id, topic, payload, created, retain) "
                           "VALUES (?, ?, ?, ?, ?)", row)
            if dropped:
                db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', ?)", (dropped,))
        lost = max(0, expected - len(rows)) if expected is not None else None
        self.shared.generation += 1
        self.generation = self.shared.generation
        self.shared.salvage = {"time": time.time(), "problem": problem, "aside": aside, "salvaged": len(rows),
                               "lost": lost}
        log.error("outbox %s is damaged (%s): moved aside to %s; %d pending events salvaged into a new outbox, "
                  "%s could not be read", self.path, problem, aside, len(rows),
                  "%d" % lost if lost is not None else "an unknown number")
        return db

    def _connect(self):
        existed = os.path.exists(self.path)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        if not existed:
            os.chmod(self.path, 0o600)  # plate data: readable by the service user only
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA wal_autocheckpoint=%d" % WAL_CHECKPOINT_PAGES)
        db.execute("PRAGMA journal_size_limit=%d" % WAL_LIMIT_BYTES)
        db.executescript(_SCHEMA)
        _migrate(db)
        return db

    def _current(self):
        """Reopen when another connection salvaged the file since ours was opened."""
        if self.generation != self.shared.generation:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self.generation = self.shared.generation
            self.db = self._open()
        return self.db

    def _guarded(self, write, fn, *args):
        """Run fn under the path's lock; salvage and retry once on damage; a failed write is OutboxWriteError."""
        with self.shared.lock:
            for attempt in (0, 1):
                self._current()
                try:
                    return fn(*args)
                except sqlite3.DatabaseError as exc:
                    if _is_corrupt(exc) and attempt == 0:
                        self.db.close()
                        self.db = self._salvage(str(exc))
                        continue
                    if write and _is_write_failure(exc):
                        raise OutboxWriteError("%s (%s)" % (exc, self.path))
                    raise

    def add(self, event_id, topic, payload, retain=False, extra=()):
        """Commit one event, and `extra` (event_id, topic, payload, retain) rows that belong to it (a
        snapshot), in one transaction; returns how many old rows were dropped to stay within bounds.
        OutboxWriteError when it could not be written (nothing of it is in the outbox then)."""
        dropped = self._guarded(True, self._add, event_id, topic, payload, retain, extra)
        if dropped:
            log.warning("outbox full (%d events / %d bytes max): dropped the %d oldest events",
                        self.max_events, self.max_bytes, dropped)
        return dropped

    def _add(self, event_id, topic, payload, retain, extra):
        with self._transaction():
            for row in ((event_id, topic, payload, retain),) + tuple(extra):
                self.db.execute("INSERT OR IGNORE INTO outbox (event_id, topic, payload, created, retain) "
                                "VALUES (?, ?, ?, ?, ?)",
                                (row[0], row[1], sqlite3.Binary(row[2]), time.time(), int(bool(row[3]))))
            return self._enforce_bounds()

    def _enforce_bounds(self):
        count, size = self.db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
        dropped = 0
        while count > self.max_events or size > self.max_bytes:
            over_rows = max(0, count - self.max_events)
            victims = self.db.execute("SELECT seq, length(payload) FROM outbox ORDER BY seq LIMIT ?",
                                      (max(over_rows, 1),)).fetchall()
            if not victims or count <= 1:
                break
            for seq, length in victims:
                self.db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                count -= 1
                size -= length
                dropped += 1
                if count <= self.max_events and size <= self.max_bytes:
                    break
        if dropped:
            # no UPSERT: JetPack 4.6 (Ubuntu 18.04) has SQLite 3.22, UPSERT needs 3.24
            self.db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0)")
            self.db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (dropped,))
        return dropped

    def _transaction(self):
        return _Transaction(self.db)

    def pending(self, after_seq=0, limit=100):
        return self._guarded(False, self._pending, after_seq, limit)

    def _pending(self, after_seq, limit):
        rows = self.db.execute("SELECT seq, event_id, topic, payload, created, retain FROM outbox WHERE seq > ? "
                               "ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        return [OutboxRow(seq, eid, topic, bytes(payload), created, bool(retain))
                for seq, eid, topic, payload, created, retain in rows]

    def ack(self, seqs):
        """Delete acknowledged rows; OutboxWriteError on a full disk (the caller keeps the seqs and retries)."""
        if seqs:
            self._guarded(True, self._ack, seqs)

    def _ack(self, seqs):
        with self._transaction():
            self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def expire(self, max_age_s):
        """Delete rows older than max_age_s (plate data kept no longer than the site allows); counted as dropped."""
        return self._guarded(True, self._expire, time.time() - max_age_s)

    def _expire(self, before):
        with self._transaction():
            gone = self.db.execute("DELETE FROM outbox WHERE created < ?", (before,)).rowcount
            if gone:
                self.db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0)")
                self.db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (gone,))
        return gone

    def depth(self):
        """(events, payload bytes) waiting; snapshot rows are not events (see depth_detail)."""
        detail = self.depth_detail()
        return detail[0], detail[2]

    def depth_detail(self):
        """(events, snapshots, payload bytes) waiting."""
        return self._guarded(False, self._depth_detail)

    def _depth_detail(self):
        total, size, snapshots = self.db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0), coalesce(sum(event_id LIKE '%.snapshot'), 0) "
            "FROM outbox").fetchone()
        return total - snapshots, snapshots, size

    def dropped_total(self):
        row = self._guarded(False, lambda: self.db.execute("SELECT value FROM counters WHERE name = 'dropped'")
                            .fetchone())
        return row[0] if row else 0

    def close(self):
        self.db.close()


class CommitBuffer:
    """Events the outbox could not take (disk full), held in memory in order and committed again before any
    newer one, so a full disk costs no event while the daemon runs. Bounded: past `limit` the oldest held
    event is dropped and counted (the outbox's own drop-oldest rule, applied in memory)."""

    def __init__(self, limit=10000):
        self.limit = limit
        self.held = collections.deque()
        self.failures = 0  # commits that failed, all time
        self.dropped = 0  # held events given up because the buffer was full
        self.last_error = None

    def commit(self, outbox, event_id, topic, payload, extra=()):
        """Commit this event after every held one; returns rows dropped by the outbox's bounds."""
        self.held.append((event_id, topic, payload, tuple(extra)))
        return self.flush(outbox)

    def flush(self, outbox):
        dropped = 0
        while self.held:
            event_id, topic, payload, extra = self.held[0]
            try:
                dropped += outbox.add(event_id, topic, payload, extra=extra)
            except OutboxWriteError as exc:
                self.failed(exc)
                return dropped
            self.held.popleft()
            if self.last_error is not None and not self.held:
                log.warning("outbox writable again: every held event is committed")
                self.last_error = None
        return dropped

    def hold(self, event_id, topic, payload, extra, exc):
        """Hold an event the outbox could not even be opened for."""
        self.held.append((event_id, topic, payload, tuple(extra)))
        self.failed(exc)

    def failed(self, exc):
        self.failures += 1
        if self.last_error is None:
            log.error("outbox: cannot commit (%s); holding %d event(s) in memory and retrying", exc, len(self.held))
        self.last_error = str(exc)
        while len(self.held) > self.limit:
            self.held.popleft()
            self.dropped += 1
            log.error("outbox: %d events held in memory (limit): dropped the oldest", self.limit)


def _migrate(db):
    """Bring an outbox written by an older version up to this schema, keeping its rows."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(outbox)")]
    if "retain" not in columns:  # added with snapshots on their own retained topic
        try:
            db.execute("ALTER TABLE outbox ADD COLUMN retain INTEGER NOT NULL DEFAULT 0")
            log.info("outbox: added column retain (schema upgrade)")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another connection did it first
                raise


def _is_corrupt(exc):
    text = str(exc).lower()
    return any(m in text for m in ("file is not a database", "malformed", "file is encrypted"))


def _is_write_failure(exc):
    text = str(exc).lower()
    return any(m in text for m in ("disk is full", "disk i/o error", "readonly", "unable to open"))


def _quick_check(db):
    """None for a sound file, else what SQLite's quick_check found (its first line)."""
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if rows and rows[0][0] == "ok":
        return None
    return "quick_check: %s" % (rows[0][0] if rows else "no answer")


def _read_what_can_be_read(path):
    """([(event_id, topic, payload, created, retain)], dropped counter, row count the file claims or None)
    from a damaged outbox: an ordered scan in small batches; where a batch fails, row by row across the gap."""
    rows, dropped, expected = [], 0, None
    try:
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, isolation_level=None)
    except sqlite3.Error:
        return rows, dropped, expected
    try:
        expected = _try(db, "SELECT count(*) FROM outbox")
        dropped = _try(db, "SELECT value FROM counters WHERE name = 'dropped'") or 0
        top = _try(db, "SELECT max(seq) FROM outbox") or _try(db, "SELECT seq FROM sqlite_sequence "
                                                                 "WHERE name = 'outbox'") or 0
        seq = 0
        select = "SELECT seq, event_id, topic, payload, created, retain FROM outbox"
        while seq < top:
            try:
                batch = db.execute(select + " WHERE seq > ? ORDER BY seq LIMIT 64", (seq,)).fetchall()
            except sqlite3.DatabaseError:
                batch = None
            if batch is None:  # step over the damaged stretch one row at a time
                for probe in range(seq + 1, min(top, seq + 64) + 1):
                    try:
                        rows.extend(r[1:] for r in db.execute(select + " WHERE seq = ?", (probe,)).fetchall())
                    except sqlite3.DatabaseError:
                        pass
                seq = min(top, seq + 64)
                continue
            if not batch:
                break
            rows.extend(r[1:] for r in batch)
            seq = batch[-1][0]
    finally:
        db.close()
    good = [r for r in rows if _row_ok(r)]
    return good, dropped, expected


def _row_ok(row):
    event_id, topic, payload, created, retain = row
    return isinstance(event_id, str) and isinstance(topic, str) and isinstance(payload, (bytes, str)) \
        and isinstance(created, (int, float))


def _try(db, sql):
    try:
        row = db.execute(sql).fetchone()
        return row[0] if row else None
    except sqlite3.DatabaseError:
        return None


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.Error:  # a COMMIT that fails (disk full) leaves the transaction open: end it
                self._rollback()
                raise
        self._rollback()
        return False

    def _rollback(self):
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
