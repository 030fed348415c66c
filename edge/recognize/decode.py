"""Greedy CTC decoding of LPRNet's deployable outputs (NVIDIA's decode_ctc_conf, shared/docs/lprnet.md 1.4).

Walk the per-timestep class ids, keep an id when it differs from the previous one (with its probability),
then drop blanks. The blank is the last class, `len(characters)`. The plate score is the product of the
kept characters' probabilities, as NVIDIA's DeepStream parser computes it.
"""
from collections import namedtuple

import numpy as np

Read = namedtuple("Read", "text score char_scores invalid_ids format_match at_edge")
Read.__new__.__defaults__ = (None, False)
"""One decoded plate: text, plate score, per-character scores, count of ids outside the character list,
whether the text fits the plate format (None: no format set), and whether characters reach the crop's left
or right edge (a plate cut by a misplaced ROI: see at_edge)."""

EDGE_STEPS = 2  # of LPRNet's 24 time steps (4 px each of the 96-px crop): the outer 8 px on each side
EDGE_PROB = 0.5


def at_edge(ids, class_probs, blank):
    """[N] bools: a character in the outer EDGE_STEPS time steps of either side. With class_probs, a step
    counts when its non-blank probability passes EDGE_PROB; NVIDIA's two-output files: when its argmax is
    not the blank. A well-placed ROI leaves the plate's frame there (on the sample, no read of 45 reaches
    it); a ROI 10-15 px off cuts characters and they do."""
    ids = np.asarray(ids)
    if class_probs is not None:
        nonblank = 1.0 - np.asarray(class_probs)[:, :, blank]
        edges = np.concatenate([nonblank[:, :EDGE_STEPS], nonblank[:, -EDGE_STEPS:]], axis=1)
        return (edges > EDGE_PROB).any(axis=1)
    edges = np.concatenate([ids[:, :EDGE_STEPS], ids[:, -EDGE_STEPS:]], axis=1)
    return (edges != blank).any(axis=1)


def decode(ids, probs, characters):
    """Decode one plate from 1-D `ids` (int32 or int64) and `probs`."""
    blank = len(characters)
    text, scores = [], []
    previous = None
    invalid = 0
    for class_id, prob in zip(ids.tolist(), probs.tolist()):
        if class_id != previous:
            if 0 <= class_id < blank:
                text.append(characters[class_id])
                scores.append(float(prob))
            elif class_id != blank:
                invalid += 1  # a character list shorter than the model's classes: counted, never printed
        previous = class_id
    score = float(np.prod(scores)) if scores else 0.0
    return Read("".join(text), score, scores, invalid)


def decode_batch(ids, probs, characters):
    """Decode a batch: `ids` and `probs` are [N, T]."""
    ids = np.asarray(ids).astype(np.int64, copy=False)
    probs = np.asarray(probs, dtype=np.float32)
    return [decode(ids[i], probs[i], characters) for i in range(ids.shape[0])]
