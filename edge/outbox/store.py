"""Durable outbox: SQLite in WAL mode with synchronous=FULL, so a committed event survives SIGKILL and
power loss. Rows leave only when the broker acknowledged them (QoS 1 PUBACK). Bounded by rows and bytes:
when full the oldest are dropped, counted (persistently) and reported, never silently.

Each thread that touches the outbox opens its own Outbox object (SQLite connections are per thread);
the database file is shared.
"""
import logging
import os
import sqlite3
import time
from collections import namedtuple

log = logging.getLogger("edge.outbox")

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
            os.makedirs(folder, exist_ok=True)
        self.db = self._open()

    def _open(self):
        for attempt in range(10):
            try:
                db = self._connect()
                db.execute("SELECT count(*) FROM outbox").fetchone()
                return db
            except sqlite3.DatabaseError as exc:
                if _is_corrupt(exc):
                    return self._set_aside(exc)
                # transient (another thread creating the schema, a lock): never a reason to move data aside
                if attempt == 9:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _set_aside(self, exc):
        """A damaged file must not stop the appliance: keep it for inspection, start a new one."""
        aside = "%s.corrupt-%d" % (self.path, int(time.time()))
        log.error("outbox %s is unreadable (%s); moved aside to %s, starting a new outbox", self.path, exc, aside)
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, aside + suffix)
        return self._connect()

    def _connect(self):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        _migrate(db)
        return db

    def add(self, event_id, topic, payload, retain=False, extra=()):
        """Commit one event, and `extra` (event_id, topic, payload, retain) rows that belong to it (a
        snapshot), in one transaction; returns how many old rows were dropped to stay within bounds."""
        with self._transaction():
            for row in ((event_id, topic, payload, retain),) + tuple(extra):
                self.db.execute("INSERT OR IGNORE INTO outbox (event_id, topic, payload, created, retain) "
                                "VALUES (?, ?, ?, ?, ?)",
                                (row[0], row[1], sqlite3.Binary(row[2]), time.time(), int(bool(row[3]))))
            dropped = self._enforce_bounds()
        if dropped:
            log.warning("outbox full (%d events / %d bytes max): dropped the %d oldest events",
                        self.max_events, self.max_bytes, dropped)
        return dropped

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
        rows = self.db.execute("SELECT seq, event_id, topic, payload, created, retain FROM outbox WHERE seq > ? "
                               "ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        return [OutboxRow(seq, eid, topic, bytes(payload), created, bool(retain))
                for seq, eid, topic, payload, created, retain in rows]

    def ack(self, seqs):
        if not seqs:
            return
        with self._transaction():
            self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def depth(self):
        """(events, payload bytes) waiting."""
        return tuple(self.db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone())

    def dropped_total(self):
        row = self.db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return row[0] if row else 0

    def close(self):
        self.db.close()


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


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
