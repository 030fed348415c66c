"""Durable outbox on a real SQLite file."""
import os
import sqlite3

from edge.outbox import Outbox


def test_add_pending_ack_in_order(tmp_path):
    box = Outbox(str(tmp_path / "o.db"))
    for i in range(5):
        box.add("id%d" % i, "t/events", b"payload%d" % i)
    rows = box.pending(0, 10)
    assert [r.event_id for r in rows] == ["id0", "id1", "id2", "id3", "id4"]
    box.ack([rows[0].seq, rows[1].seq])
    assert [r.event_id for r in box.pending(0, 10)] == ["id2", "id3", "id4"]
    assert [r.event_id for r in box.pending(rows[2].seq, 10)] == ["id3", "id4"]
    assert box.depth() == (3, len(b"payload2") * 3)


def test_survives_reopen(tmp_path):
    path = str(tmp_path / "o.db")
    box = Outbox(path)
    box.add("a", "t", b"x")
    del box  # no close: as after SIGKILL the committed row must be there
    again = Outbox(path)
    assert [r.event_id for r in again.pending()] == ["a"]


def test_duplicate_event_id_is_kept_once(tmp_path):
    box = Outbox(str(tmp_path / "o.db"))
    box.add("a", "t", b"x")
    box.add("a", "t", b"x")
    assert box.depth()[0] == 1


def test_bounded_by_rows_drops_oldest_and_counts(tmp_path):
    path = str(tmp_path / "o.db")
    box = Outbox(path, max_events=10, max_bytes=10 ** 6)
    dropped = sum(box.add("id%02d" % i, "t", b"p") for i in range(15))
    assert dropped == 5
    assert [r.event_id for r in box.pending(0, 100)][0] == "id05"
    assert box.dropped_total() == 5
    assert Outbox(path).dropped_total() == 5  # the count survives a restart


def test_bounded_by_bytes(tmp_path):
    box = Outbox(str(tmp_path / "o.db"), max_events=1000, max_bytes=10000)
    for i in range(30):
        box.add("id%02d" % i, "t", b"x" * 1000)
    events, size = box.depth()
    assert size <= 10000 and events == 10
    assert box.dropped_total() == 20


def test_corrupt_file_is_moved_aside(tmp_path):
    path = str(tmp_path / "o.db")
    with open(path, "wb") as f:
        f.write(b"this is not a database" * 100)
    box = Outbox(path)
    box.add("a", "t", b"x")
    assert box.depth()[0] == 1
    assert any(n.startswith("o.db.corrupt-") for n in os.listdir(str(tmp_path)))


def test_wal_mode(tmp_path):
    path = str(tmp_path / "o.db")
    Outbox(path).add("a", "t", b"x")
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_outbox_from_an_older_version_is_upgraded_keeping_rows(tmp_path):
    path = str(tmp_path / "o.db")
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
                             topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL);
        INSERT INTO outbox (event_id, topic, payload, created) VALUES ('old1', 't', x'7b7d', 1.0);
    """)
    old.commit()
    old.close()
    box = Outbox(path)
    box.add("new1", "t", b"{}", retain=False)
    rows = box.pending()
    assert [r.event_id for r in rows] == ["old1", "new1"] and rows[0].retain is False


def test_event_and_its_snapshot_commit_together(tmp_path):
    box = Outbox(str(tmp_path / "o.db"))
    box.add("e1", "p/d/events", b"{}", extra=(("e1.snapshot", "p/d/gate/snapshot", b"\xff\xd8jpeg", True),))
    rows = box.pending()
    assert [(r.event_id, r.retain) for r in rows] == [("e1", False), ("e1.snapshot", True)]
