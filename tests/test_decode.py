import numpy as np

from edge.recognize.decode import decode, decode_batch

CHARS = list("0123456789ABCDEFGHIJKLMNPQRSTUVWXYZ")
BLANK = len(CHARS)


def ids_of(text):
    return [CHARS.index(c) for c in text]


def test_collapse_repeats_then_drop_blanks():
    a, b = ids_of("A")[0], ids_of("B")[0]
    ids = np.array([BLANK, a, a, BLANK, a, b, b, BLANK])
    probs = np.array([0.9, 0.8, 0.95, 0.9, 0.7, 0.6, 0.99, 0.9], np.float32)
    read = decode(ids, probs, CHARS)
    assert read.text == "AAB"
    # the kept character's probability is the first of its run (NVIDIA's decode_ctc_conf)
    assert read.char_scores == [np.float32(0.8), np.float32(0.7), np.float32(0.6)]
    assert abs(read.score - 0.8 * 0.7 * 0.6) < 1e-6
    assert read.invalid_ids == 0


def test_int32_and_int64_give_the_same_reads():
    ids = np.array([[BLANK] + ids_of("7ABC123") + [BLANK] * 16])
    probs = np.full(ids.shape, 0.9, np.float32)
    r64 = decode_batch(ids.astype(np.int64), probs, CHARS)
    r32 = decode_batch(ids.astype(np.int32), probs, CHARS)
    assert r64[0].text == r32[0].text == "7ABC123"


def test_ids_beyond_the_list_are_counted_not_printed():
    ids = np.array([5, BLANK + 3, 6])
    read = decode(ids, np.ones(3, np.float32), CHARS)
    assert read.text == "56" and read.invalid_ids == 1


def test_empty_read():
    read = decode(np.full(24, BLANK), np.ones(24, np.float32), CHARS)
    assert read.text == "" and read.score == 0.0
