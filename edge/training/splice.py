"""Real-crop splicing for fine-tuning: a real plate's left part (up to a gap every plate of the region has)
is replaced by the left part of another real plate, and the label follows. Chinese plates put a wide gap
(the dot, 34 of 440 mm) between the province + letter and the five characters after it, so a cut there
makes new real-looking plates whose province comes from another crop.

Why: a fine-tune set from one city (CCPD is 96% 皖) teaches the model that the first glyph is always 皖, and
synthetic plates with other provinces do not undo that prior on real-looking pixels. Donors are drawn
evenly over their first `chars` characters, so each province the set has is spliced in as often as 皖.
"""
from collections import OrderedDict, namedtuple

import numpy as np

SpliceConfig = namedtuple("SpliceConfig", "prob cut chars")


def splice_config(aug):
    """The splice keys of a spec's augmentation_config, or None when splicing is off."""
    prob = aug.get("real_splice_prob", 0.0)
    if prob <= 0:
        return None
    return SpliceConfig(prob, aug.get("real_splice_cut", 0.305), aug.get("real_splice_chars", 2))


class RealSplicer:
    """Splices crops of one training set; `first` is the index of its first real crop (synthetic plates before
    it are never donors nor spliced, as their layout is drawn, not fixed)."""

    def __init__(self, images, labels, first, config):
        self.images, self.labels, self.config = images, labels, config
        self.width = images.shape[2]
        self.cut_px = int(round(config.cut * self.width))
        groups = OrderedDict()
        seen = set()
        for k in range(first, len(labels)):
            text = labels[k]
            if len(text) <= config.chars or text in seen:  # repeats of one crop count once
                continue
            seen.add(text)
            groups.setdefault(text[:config.chars][0], []).append(k)
        self.groups = list(groups.values())
        self.first = first

    def __len__(self):
        return len(self.groups)

    def apply(self, x, idx, labels, rng):
        """Splice the real crops among batch rows `x` (indices `idx` into the set) in place, each with chance
        `prob`; returns the batch's labels, the spliced ones changed."""
        out = list(labels)
        if len(self.groups) < 2:
            return out
        for row, k in enumerate(idx):
            if k < self.first or len(out[row]) <= self.config.chars or rng.random() >= self.config.prob:
                continue
            group = self.groups[rng.integers(len(self.groups))]
            donor = group[rng.integers(len(group))]
            x[row, :, :self.cut_px] = self.images[donor, :, :self.cut_px]
            out[row] = self.labels[donor][:self.config.chars] + out[row][self.config.chars:]
        return out


def splice_preview(images, labels, config, count, seed=0):
    """`count` spliced crops with their labels, for checking the cut on a dataset by eye."""
    splicer = RealSplicer(images, labels, 0, config._replace(prob=1.0))
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(labels), size=count)
    x = images[idx].copy()
    return x, splicer.apply(x, idx, [labels[k] for k in idx], rng)
