"""Track/dedup: one event per passing plate, not one per frame."""
from edge.config.model import TrackingConfig
from edge.track import PlateRead, Tracker, edit_distance


def config(**kw):
    base = dict(min_confidence=0.5, min_plate_length=3, max_edit_distance=1, expire_s=1.0, min_reads=2,
                max_track_s=300.0, format=None)
    base.update(kw)
    return TrackingConfig(**base)


def read(text, ts, score=0.9, camera="gate", roi="lane1", box=(0, 0, 10, 5)):
    return PlateRead(camera, roi, ts, 1000.0 + ts, text, score, [score] * len(text), None, list(box))


def feed(tracker, reads):
    out = []
    for r in reads:
        out.extend(tracker.add(r))
    return out


def test_edit_distance():
    assert edit_distance("ABC123", "ABC123") == 0
    assert edit_distance("ABC123", "A8C123") == 1
    assert edit_distance("ABC123", "ABC12") == 1
    assert edit_distance("ABC123", "XYZ", limit=1) == 2


def test_one_event_per_plate_with_min_reads_confirmations():
    t = Tracker(config(min_reads=3))
    out = feed(t, [read("7ABC123", 0.0), read("7A8C123", 0.1, 0.6), read("7ABC123", 0.2), read("7ABC123", 0.3, 0.95)])
    assert len(out) == 1  # emitted at the third confirmation of 7ABC123 (the fourth read), not again after
    track = out[0]
    assert track.text == "7ABC123" and track.best.score == 0.95 and track.reads == 4
    out = feed(t, [read("7ABC123", 0.4), read("7ABC123", 0.5)])
    assert out == []  # the same car stays one track
    assert t.close_all() == []


def test_best_read_of_winning_text():
    t = Tracker(config(min_reads=3))  # no text gets 3 confirmations: emitted when the track ends
    feed(t, [read("7ABC123", 0.0, 0.7), read("7ABC123", 0.1, 0.93), read("7A8C123", 0.2, 0.99)])
    out = t.close_all()
    assert len(out) == 1 and out[0].text == "7ABC123" and out[0].best.score == 0.93 and out[0].reads == 3


def test_track_expires_and_next_car_is_new_event():
    t = Tracker(config(min_reads=2, expire_s=1.0))
    feed(t, [read("AAA111", 0.0), read("AAA111", 0.1)])
    out = feed(t, [read("AAA111", 5.0), read("AAA111", 5.1)])
    assert [x.text for x in out] == ["AAA111"]  # same plate again after a gap: a second passage, a second event


def test_short_tracks_are_dropped_and_counted():
    t = Tracker(config(min_reads=3))
    feed(t, [read("BBB222", 0.0), read("CCC333", 5.0)])
    assert t.close_all() == []
    assert t.dropped_tracks == 2


def test_rejections_are_counted_by_reason():
    t = Tracker(config(min_reads=1, format=r"[A-Z]{3}[0-9]{3}"))
    out = feed(t, [read("AB", 0), read("ABC123", 0.1, 0.2), read("1234567", 0.2), read("ABC123", 0.3)])
    assert [x.text for x in out] == ["ABC123"]
    assert t.rejected == {"too_short": 1, "low_confidence": 1, "format": 1}


def test_camera_format_overrides_default():
    t = Tracker(config(min_reads=1, format=r"[A-Z]+"), {"gate": r"[0-9]+"})
    assert [x.text for x in feed(t, [read("12345", 0.0)])] == ["12345"]


def test_cameras_and_rois_are_tracked_apart():
    t = Tracker(config(min_reads=1))
    out = feed(t, [read("ABC123", 0.0, camera="a"), read("ABC123", 0.0, camera="b"), read("ABC123", 0.0, roi="r2")])
    assert len(out) == 3


def test_idle_camera_tracks_close_by_wall_clock():
    t = Tracker(config(min_reads=2, expire_s=1.0))
    feed(t, [read("ABC123", 0.0), read("ABC124", 0.1)])  # 2 reads, 1 confirmation each: not yet emitted
    assert t.expire_idle(1000.0 + 0.1 + 1.0) == []
    out = t.expire_idle(1000.0 + 0.1 + 10.0)
    assert len(out) == 1 and out[0].reads == 2


def test_replace_rules_by_position():
    t = Tracker(config(min_reads=1, replace_rules=[(r"(?<=^[0-9])I", "1"), (r"O", "0")]))
    out = feed(t, [read("7IBC1O3", 0.0)])
    assert out[0].text == "71BC103"
    assert len(out[0].best.char_scores) == 7


def test_replace_rule_that_changes_length_keeps_the_plate_score():
    t = Tracker(config(min_reads=1, replace_rules=[(r"-", "")]))
    out = feed(t, [read("ABC-123", 0.0, 0.9)])
    product = 1.0
    for s in out[0].best.char_scores:
        product *= s
    assert out[0].text == "ABC123" and abs(product - 0.9) < 1e-9


def test_known_plates_match_within_distance():
    from edge.track import KnownPlates

    known = KnownPlates({"Alice's car": ["ABC-123"], "Bob": ["XYZ789", "XYZ780"]}, match_distance=1)
    assert known.match("ABC123") == "Alice's car"
    assert known.match("A8C123") == "Alice's car"
    assert known.match("XYZ780") == "Bob"
    assert known.match("QQQ111") is None
    assert KnownPlates({"A": ["ABC123"]}, 0).match("A8C123") is None


def test_a_fragment_of_an_open_track_is_no_second_event():
    """A car leaving the frame: its plate half hidden reads as a strict part of the plate (`4455` after
    `SG94455`), the box far from the last one. That is the same car: no track, no event, counted
    `fragment`; the fragments keep the track alive, so the plate read again a moment later is no new car."""
    t = Tracker(config(min_reads=2, expire_s=1.0))
    out = feed(t, [read("SG94455", 0.0), read("SG94455", 0.1)])
    assert [x.text for x in out] == ["SG94455"]
    out = feed(t, [read("4455", 0.2 + 0.2 * i) for i in range(4)])
    out += feed(t, [read("94455", 1.0), read("94455", 1.1)])  # within expire_s of the last whole read
    assert out == [] and t.rejected["fragment"] == 6 and t.open_tracks() == 1
    assert feed(t, [read("SG94455", 1.9)]) == []  # within expire_s of the last fragment: the same track
    assert t.close_all() == []
    # a plate that merely shares characters, or any text once the track has expired, is a car of its own
    t = Tracker(config(min_reads=2, expire_s=1.0))
    feed(t, [read("SG94455", 0.0), read("SG94455", 0.1)])
    assert [x.text for x in feed(t, [read("4455X", 0.2), read("4455X", 0.3)])] == ["4455X"]
    assert [x.text for x in feed(t, [read("4455", 5.0), read("4455", 5.1)])] == ["4455"]


def test_a_plate_coming_into_view_joins_the_track_of_its_part():
    """The plate entering the frame reads `SG94` first: the whole plate then joins that track and outvotes
    the part, one event with the whole text."""
    t = Tracker(config(min_reads=3, expire_s=1.0))
    out = feed(t, [read("SG94", 0.0), read("SG94", 0.1)])
    out += feed(t, [read("SG94455", 0.2 + 0.1 * i) for i in range(3)])
    assert [(x.text, x.reads) for x in out] == [("SG94455", 5)]
    assert t.close_all() == [] and t.rejected["fragment"] == 0


def test_detected_fragment_far_from_the_last_box_is_no_second_event():
    """Mode detect: the plate leaving the frame, its box small and away from the last one (no box match)."""
    t = Tracker(config(min_reads=2, expire_s=1.0))
    feed(t, [read("SG94455", 0.1 * i, roi="plate", box=(600 + 40 * i, 300, 120, 40)) for i in range(3)])
    out = feed(t, [read("4455", 0.4 + 0.1 * i, roi="plate", box=(900, 310, 50, 30)) for i in range(3)])
    assert out == [] and t.rejected["fragment"] == 3 and t.close_all() == []


def test_a_plate_that_is_part_of_the_previous_cars_is_a_car_of_its_own():
    """Swiss plates are a canton and 1-6 digits: ZH1234 after ZH123456 is another car once the first has
    gone (fragments extend a track only within expire_s of its last vote), as is a known plate at once, and
    in mode detect a part read far from the track's box."""
    t = Tracker(config(min_reads=2, expire_s=1.0))
    feed(t, [read("ZH123456", 0.0), read("ZH123456", 0.1)])
    out = feed(t, [read("ZH1234", 0.3 + 0.5 * i) for i in range(40)])  # waits 20 s at the gate
    assert [x.text for x in out] == ["ZH1234"] and t.rejected["fragment"] <= 2
    t = Tracker(config(min_reads=2, known_plates={"neighbour": ["zh-1234"]}))  # as written in a config
    feed(t, [read("ZH123456", 0.0), read("ZH123456", 0.1)])
    assert [x.text for x in feed(t, [read("ZH1234", 0.2), read("ZH1234", 0.3)])] == ["ZH1234"]
    t = Tracker(config(min_reads=2))
    feed(t, [read("ZH123456", 0.1 * i, roi="plate", box=(100, 600, 120, 40)) for i in range(2)])
    out = feed(t, [read("ZH1234", 0.2 + 0.1 * i, roi="plate", box=(900, 100, 100, 35)) for i in range(2)])
    assert [x.text for x in out] == ["ZH1234"] and t.rejected["fragment"] == 0


def test_a_tie_goes_to_the_whole_plate_not_its_part():
    """One read each of SG94 and SG94455: the part's score is a product of fewer characters, so higher; the
    event still carries the whole plate."""
    t = Tracker(config(min_reads=2))
    feed(t, [read("SG94", 0.0, score=0.95), read("SG94455", 0.1, score=0.8)])
    assert [(x.text, x.reads) for x in t.close_all()] == [("SG94455", 2)]


def test_detected_part_far_away_does_not_join_another_cars_track():
    t = Tracker(config(min_reads=3))
    feed(t, [read("1234", 0.0, roi="plate", box=(0, 0, 60, 20))])
    feed(t, [read("XY12345", 0.1, roi="plate", box=(900, 400, 120, 40))])
    assert t.open_tracks() == 2


def test_a_stray_longer_misread_does_not_swallow_the_real_plate():
    """Only a published plate hosts fragments: one read of XX1234 (a sticker beside the plate) then 1234 again
    and again is the car 1234, not fragments of a track that never confirms."""
    t = Tracker(config(min_reads=2))
    out = feed(t, [read("XX1234", 0.0)] + [read("1234", 0.1 * i) for i in range(1, 9)])
    assert [x.text for x in out] == ["1234"] and t.rejected["fragment"] == 0
