"""Plate formats: what a region's plates can look like, and CTC decoding held to it.

A format is written as a small subset of a regular expression: top-level alternatives (`|`), each a sequence
of character classes (`[A-HJ-NP-Z0-9]`), `\\d`, `.` or literal characters, each optionally repeated (`{4}`,
`{5,6}`). Chinese blue plates, for example, are a province, a letter and five letters or digits. That
subset is what a CTC best-path search can follow position by position; groups, anchors and `*`/`+` are
refused with a message saying so.

Greedy decoding takes the most probable class per timestep; a read that cannot be a plate of the format (a
character too many, a province where a letter must be) is then decoded again as the most probable CTC path
whose text fits (Viterbi over the format's positions), when the model gives per-class probabilities. A read
that already fits is left alone: the greedy path is the most probable of all paths, so it is also the best
that fits.
"""
from collections import namedtuple

import numpy as np

NEG = -1e30
MAX_EXPANSIONS = 64
MAX_LENGTH = 16

FormatLayout = namedtuple("FormatLayout", "masks")
"""One fixed-length alternative: a bool mask over the characters list per position, [length, n_chars]."""


class PlateFormatError(ValueError):
    """A format that cannot be used; the message names the pattern and the problem."""


def _class_chars(body, pattern):
    if body.startswith("^"):
        raise PlateFormatError("plate format %r: negated classes [^...] are not supported" % pattern)
    chars, i = set(), 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            chars.update("0123456789" if body[i + 1] == "d" else body[i + 1])
            i += 2
        elif i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = ord(c), ord(body[i + 2])
            if hi < lo:
                raise PlateFormatError("plate format %r: range %s-%s runs backwards" % (pattern, c, body[i + 2]))
            chars.update(chr(x) for x in range(lo, hi + 1))
            i += 3
        else:
            chars.add(c)
            i += 1
    if not chars:
        raise PlateFormatError("plate format %r: an empty character class" % pattern)
    return chars


def _atoms(alternative, pattern):
    """Split one alternative into (set of characters or None for any, min count, max count)."""
    atoms, i = [], 0
    while i < len(alternative):
        c = alternative[i]
        if c == "[":
            end = alternative.find("]", i + 2)  # a ']' right after '[' is a literal, as in re
            if end < 0:
                raise PlateFormatError("plate format %r: '[' without a closing ']'" % pattern)
            chars, i = _class_chars(alternative[i + 1:end], pattern), end + 1
        elif c == "\\":
            if i + 1 >= len(alternative):
                raise PlateFormatError("plate format %r: ends with a lone backslash" % pattern)
            chars, i = (set("0123456789") if alternative[i + 1] == "d" else {alternative[i + 1]}), i + 2
        elif c in "()^$*+?{}":
            raise PlateFormatError("plate format %r: %r is not supported (use character classes, {n} or {m,n} "
                                   "counts and top-level | alternatives)" % (pattern, c))
        else:
            chars, i = (None if c == "." else {c}), i + 1
        lo = hi = 1
        if i < len(alternative) and alternative[i] == "{":
            end = alternative.find("}", i)
            try:
                parts = [int(p) for p in alternative[i + 1:end].split(",")] if end > 0 else []
            except ValueError:
                parts = []
            if len(parts) not in (1, 2) or min(parts) < 0 or parts[0] > parts[-1]:
                raise PlateFormatError("plate format %r: bad count %r (use {n} or {m,n})"
                                       % (pattern, alternative[i:end + 1 if end > 0 else None]))
            lo, hi, i = parts[0], parts[-1], end + 1
        atoms.append((chars, lo, hi))
    return atoms


def _lengths(atoms, pattern):
    """Every fixed sequence of character sets an alternative can expand to."""
    seqs = [[]]
    for chars, lo, hi in atoms:
        seqs = [s + [chars] * n for s in seqs for n in range(lo, hi + 1)]
        if len(seqs) > MAX_EXPANSIONS:
            raise PlateFormatError("plate format %r: more than %d fixed-length variants; use fewer {m,n} ranges"
                                   % (pattern, MAX_EXPANSIONS))
    return seqs


def pattern_problem(pattern):
    """Why `pattern` cannot be a plate format, or None (the checks that need no characters list)."""
    try:
        if not pattern or not pattern.strip():
            raise PlateFormatError("plate format is empty")
        for alternative in pattern.split("|"):
            if not alternative:
                raise PlateFormatError("plate format %r: an empty alternative" % pattern)
            for seq in _lengths(_atoms(alternative, pattern), pattern):
                if not seq or len(seq) > MAX_LENGTH:
                    raise PlateFormatError("plate format %r: plates of %d characters (1 to %d allowed)"
                                           % (pattern, len(seq), MAX_LENGTH))
    except PlateFormatError as exc:
        return str(exc)
    return None


class PlateFormat:
    """A compiled format for one characters list (the model's classes)."""

    def __init__(self, pattern, characters):
        problem = pattern_problem(pattern)
        if problem:
            raise PlateFormatError(problem)
        self.pattern = pattern
        self.characters = list(characters)
        self._index = index = {c: i for i, c in enumerate(self.characters)}
        layouts, seen = [], set()
        for alternative in pattern.split("|"):
            for seq in _lengths(_atoms(alternative, pattern), pattern):
                masks = np.zeros((len(seq), len(self.characters)), bool)
                for pos, chars in enumerate(seq):
                    if chars is None:
                        masks[pos] = True
                        continue
                    for c in chars:
                        if c in index:
                            masks[pos, index[c]] = True
                    if not masks[pos].any():
                        raise PlateFormatError("plate format %r: position %d allows only %s, none of them in the "
                                               "model's characters list" % (pattern, pos + 1, "".join(sorted(chars))))
                key = masks.tobytes() + bytes([len(seq)])
                if key not in seen:
                    seen.add(key)
                    layouts.append(FormatLayout(masks))
        self.layouts = layouts

    def matches(self, text):
        ids = [self._index.get(c, -1) for c in text]
        if -1 in ids:
            return False
        for layout in self.layouts:
            if len(ids) == len(layout.masks) and all(layout.masks[p, k] for p, k in enumerate(ids)):
                return True
        return False

    def best_path(self, class_probs):
        """The most probable per-timestep class ids whose CTC text fits the format.

        class_probs: [T, n_chars + 1] probabilities (blank last). Returns ids [T] or None when no path of T
        timesteps can spell a plate of the format."""
        logp = np.log(np.maximum(np.asarray(class_probs, np.float64), 1e-30))
        best_score, best_ids = NEG, None
        for layout in self.layouts:
            score, ids = _viterbi(logp, layout.masks)
            if ids is not None and score > best_score:
                best_score, best_ids = score, ids
        return best_ids


def _viterbi(logp, masks):
    """Best CTC alignment of T frames to a label of len(masks) characters, character p drawn from masks[p].

    States per frame: A[i, k] = i characters spelled, the i-th is k and this frame emits k;
    B[i, k] = the same but this frame is a blank. B0 = only blanks so far. A repeat of k needs a blank in
    between (CTC merges repeats), which is why entering A[i, k] from A[i-1, k] is not allowed."""
    t_len, k1 = logp.shape
    k = k1 - 1
    n = len(masks)
    if n > t_len:
        return NEG, None
    classes = np.arange(k)
    a = np.full((n + 1, k), NEG)
    b = np.full((n + 1, k), NEG)
    a[1] = np.where(masks[0], logp[0, :k], NEG)
    b0 = logp[0, k]
    back = []
    for t in range(1, t_len):
        lp = logp[t]
        # entering position i (1..n) from a blank after position i-1, or straight from a different class
        from_blank = np.concatenate([[b0], b[1:n].max(1)])
        blank_arg = np.concatenate([[-1], b[1:n].argmax(1)])
        order = np.argsort(-a[:n], 1)[:, :2]
        first = np.take_along_axis(a[:n], order[:, :1], 1)
        second = np.take_along_axis(a[:n], order[:, 1:2], 1)
        same = classes[None, :] == order[:, :1]
        from_char = np.where(same, second, first)
        char_arg = np.where(same, order[:, 1:2], order[:, :1])
        from_char[0] = NEG  # nothing spelled before position 1
        enter = np.maximum(from_blank[:, None], from_char)
        stay = a[1:]
        new_a = np.full_like(a, NEG)
        new_a[1:] = np.where(masks, np.maximum(stay, enter) + lp[None, :k], NEG)
        how_a = np.zeros(a.shape, np.int8)  # 0 stay, 1 from a blank, 2 from a character
        how_a[1:] = np.where(stay >= enter, 0, np.where(from_blank[:, None] >= from_char, 1, 2))
        new_b = np.full_like(b, NEG)
        new_b[1:] = lp[k] + np.maximum(a[1:], b[1:])
        back.append((how_a, b >= a, blank_arg, char_arg))
        a, b, b0 = new_a, new_b, b0 + lp[k]
    end_a, end_b = a[n].max(), b[n].max()
    if max(end_a, end_b) <= NEG / 2:
        return NEG, None
    in_blank = end_b > end_a
    cls = int(b[n].argmax() if in_blank else a[n].argmax())
    pos = n
    ids = np.empty(t_len, np.int64)
    for t in range(t_len - 1, -1, -1):
        ids[t] = k if (in_blank or pos == 0) else cls
        if t == 0:
            break
        how_a, b_stays, blank_arg, char_arg = back[t - 1]
        if pos == 0:
            continue
        if in_blank:
            in_blank = bool(b_stays[pos, cls])
            continue
        how = how_a[pos, cls]
        if how == 1:
            pos -= 1
            in_blank = True
            if pos > 0:
                cls = int(blank_arg[pos])
        elif how == 2:
            cls = int(char_arg[pos - 1, cls])
            pos -= 1
    return max(end_a, end_b), ids
