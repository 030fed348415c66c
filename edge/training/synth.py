"""Synthetic license plates for pre-training LPRNet: US and Chinese layouts, rendered with fonts from
Debian's font packages, then augmented over the model card's envelope (roll/pitch +/-30 deg, yaw +/-15,
blur, noise, JPEG, dim/bright/rain-like light, loose and tight crops, 17-pixel-high plates upscaled).

`render_plate(region, rng)` gives a clean frontal plate (RGB uint8) and its label; `augment(...)` turns it
into a plate crop as a detector or a fixed ROI would deliver it; `make_sample(...)` does both at 96x48.
"""
import io
import math
import os

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts/opentype", "/usr/local/share/fonts")
LATIN_FONTS = (
    "liberation/LiberationSansNarrow-Bold.ttf",
    "liberation/LiberationSans-Bold.ttf",
    "liberation/LiberationMono-Bold.ttf",
    "dejavu/DejaVuSansCondensed-Bold.ttf",
    "dejavu/DejaVuSans-Bold.ttf",
    "dejavu/DejaVuSansMono-Bold.ttf",
)
CJK_FONTS = ("wqy/wqy-microhei.ttc", "wqy/wqy-zenhei.ttc")
SMALL_FONTS = ("dejavu/DejaVuSans-Bold.ttf", "liberation/LiberationSans-Regular.ttf", "dejavu/DejaVuSerif-Bold.ttf")

US_LETTERS = "ABCDEFGHIJKLMNPQRSTUVWXYZ"  # no O, as NVIDIA's us_lp_characters.txt
DIGITS = "0123456789"
CH_PROVINCES = "皖沪津渝冀晋蒙辽吉黑苏浙京闽赣鲁豫鄂湘粤桂琼川贵云藏陕甘青宁新"
CH_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, no O
US_STATES = (
    "CALIFORNIA", "TEXAS", "FLORIDA", "NEW YORK", "ILLINOIS", "OHIO", "GEORGIA", "MICHIGAN", "ARIZONA",
    "NEVADA", "OREGON", "WASHINGTON", "COLORADO", "UTAH", "VIRGINIA", "MARYLAND", "KANSAS", "IOWA",
    "INDIANA", "MINNESOTA", "NEW JERSEY", "PENNSYLVANIA", "TENNESSEE", "KENTUCKY", "ALABAMA", "MAINE",
)
US_SLOGANS = ("", "", "SUNSHINE STATE", "LAND OF LINCOLN", "THE LONE STAR STATE", "GREAT LAKES",
              "DMV.CA.GOV", "EMPIRE STATE", "GRAND CANYON STATE", "LIVE FREE OR DIE", "SPORTSMAN'S PARADISE")
# (letters-or-digits pattern, separator position or None); L = letter, D = digit, X = either
US_LAYOUTS = (
    ("DLLLDDD", None), ("LLLDDDD", 3), ("DDDLLL", 3), ("LLLDDD", 3), ("LLDDDDD", 2), ("DLLDDD", None),
    ("DDDDLL", None), ("LLLLDDD", None), ("DDLLLD", None), ("XXXXX", None), ("XXXXXX", None),
    ("XXXXXXX", None), ("LLLLLLLL", None), ("DDDDDDD", None), ("LDDDDD", None), ("DDDLDDD", 3),
)
US_BACKGROUNDS = ((250, 250, 250), (245, 245, 235), (235, 242, 255), (255, 250, 225), (240, 240, 240),
                  (225, 235, 245), (255, 244, 214))
US_INKS = ((20, 30, 110), (15, 15, 15), (150, 20, 30), (10, 60, 30), (30, 30, 60))


def _find_font(relpaths):
    found = []
    for rel in relpaths:
        for base in FONT_DIRS:
            path = os.path.join(base, rel)
            if os.path.exists(path):
                found.append(path)
                break
    return found


class FontBook:
    """Fonts found on this machine; a clear error names the Debian packages when none are."""

    def __init__(self):
        self.latin = _find_font(LATIN_FONTS)
        self.cjk = _find_font(CJK_FONTS)
        self.small = _find_font(SMALL_FONTS) or self.latin
        if not self.latin:
            raise RuntimeError("no plate fonts found: install Debian's fonts-dejavu-core and fonts-liberation")
        self._cache = {}

    def get(self, path, size):
        key = (path, size)
        if key not in self._cache:
            self._cache[key] = ImageFont.truetype(path, size)
        return self._cache[key]


_FONTS = None


def fonts():
    global _FONTS
    if _FONTS is None:
        _FONTS = FontBook()
    return _FONTS


def random_us_text(rng, i_weight=1.0):
    """A US plate number and its separator position; `i_weight` < 1 makes I rarer than other letters."""
    pattern, sep = US_LAYOUTS[rng.integers(len(US_LAYOUTS))]
    out = []
    for p in pattern:
        pool = {"L": US_LETTERS, "D": DIGITS, "X": US_LETTERS + DIGITS}[p]
        ch = pool[rng.integers(len(pool))]
        while ch == "I" and i_weight < 1.0 and rng.random() >= i_weight:
            ch = pool[rng.integers(len(pool))]
        out.append(ch)
    return "".join(out), sep


def random_ch_text(rng, kind):
    province = CH_PROVINCES[rng.integers(len(CH_PROVINCES))]
    city = CH_LETTERS[rng.integers(len(CH_LETTERS))]
    tail_len = 6 if kind == "green" else 5
    pool = CH_LETTERS + DIGITS
    tail = []
    for _ in range(tail_len):
        # real plates carry at most two letters in the tail; digits dominate
        tail.append(pool[rng.integers(len(pool))] if rng.random() < 0.3 else DIGITS[rng.integers(10)])
    return province + city + "".join(tail)


_BOXES = {}


def _text_box(draw, text, font):
    """(left, top, width, height) of `text` in `font`; cached, since plates draw the same glyphs over and
    over and FreeType's measuring was a third of the US generator's time."""
    key = (font, text)
    box = _BOXES.get(key)
    if box is None:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        box = _BOXES[key] = (left, top, right - left, bottom - top)
    return box


def _draw_fitted(draw, text, font_path, box, fill, book, spacing=0.0):
    """Draw `text` so that it fills box (x, y, w, h) in height and fits it in width, glyph by glyph."""
    x0, y0, bw, bh = box
    size = max(6, int(bh * 1.25))
    font = book.get(font_path, size)
    widths = [_text_box(draw, ch, font)[2] for ch in text]
    heights = [_text_box(draw, ch, font) for ch in text]
    glyph_h = max(h[3] for h in heights) or 1
    scale = bh / float(glyph_h)
    gap = spacing * bh
    total = sum(widths) * scale + gap * (len(text) - 1)
    if total > bw:
        scale *= bw / total
        gap *= bw / total
        total = bw
    size = max(6, int(size * scale))
    font = book.get(font_path, size)
    x = x0 + (bw - total) / 2.0
    for ch in text:
        left, top, w, h = _text_box(draw, ch, font)
        y = y0 + (bh - h) / 2.0 - top
        draw.text((x - left, y), ch, font=font, fill=fill)
        x += w + gap
    return font


def _glyph_mask(ch, font_path, book, size=64):
    """A tight grayscale mask of one character, rendered large once and cached."""
    key = ("glyph", ch, font_path)
    mask = book._cache.get(key)
    if mask is None:
        font = book.get(font_path, size)
        img = Image.new("L", (size * 2, size * 2), 0)
        ImageDraw.Draw(img).text((size // 2, size // 4), ch, font=font, fill=255)
        arr = np.asarray(img)
        ys, xs = np.nonzero(arr > 32)
        mask = arr[ys.min():ys.max() + 1, xs.min():xs.max() + 1] if len(xs) else arr[:1, :1]
        book._cache[key] = mask
    return mask


def draw_stretched(canvas, text, font_path, box, ink, book, gap_frac=0.08, squeeze=1.0, seps=(), sep_style="dot",
                   bold=0.0):
    """Draw `text` glyph by glyph into box (x, y, w, h) of an RGB uint8 array: every glyph fills the box's
    height and a slot's width (times `squeeze`), as plate characters do. `seps` are indexes after which
    a separator is drawn: a short dash or a small dot (`sep_style`). `bold` thickens strokes by that share
    of the glyph's height (CJK fonts draw thinner strokes than plate fonts)."""
    x0, y0, bw, bh = box
    n = len(text)
    units = n + gap_frac * (n - 1) + 0.6 * len(seps)
    slot = bw / units
    x = float(x0)
    ink_arr = np.array(ink, np.float32)
    for i, ch in enumerate(text):
        mask = _glyph_mask(ch, font_path, book)
        gw = max(2, int(round(slot * squeeze * (0.55 if ch in "1I" else 1.0))))
        gh = max(2, int(bh))
        glyph = cv2.resize(mask, (gw, gh), interpolation=cv2.INTER_AREA)
        k = int(round(bold * gh))
        if k > 0:
            glyph = cv2.dilate(glyph, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k + 1, k + 1)))
        glyph = glyph.astype(np.float32) / 255.0
        gx = int(round(x + (slot - gw) / 2.0))
        gy = int(y0)
        h = min(gh, canvas.shape[0] - gy)
        w = min(gw, canvas.shape[1] - gx)
        if h > 0 and w > 0 and gx >= 0 and gy >= 0:
            alpha = glyph[:h, :w, None]
            region = canvas[gy:gy + h, gx:gx + w].astype(np.float32)
            canvas[gy:gy + h, gx:gx + w] = (region * (1 - alpha) + ink_arr * alpha).astype(np.uint8)
        x += slot * (1 + gap_frac)
        if i in seps:
            cx = int(x + slot * 0.2)
            cy = int(y0 + bh / 2)
            if sep_style == "dash":
                cv2.line(canvas, (cx - int(slot * 0.15), cy), (cx + int(slot * 0.15), cy), ink, max(1, int(bh / 10)))
            else:
                cv2.circle(canvas, (cx, cy), max(1, int(bh / 14)), ink, -1)
            x += slot * 0.6


def _graphic_background(rng, w, h, base):
    """Colourful plate art: gradients, arcs, blobs, as many US state designs have."""
    canvas = np.empty((h, w, 3), np.float32)
    top = np.array(base, np.float32)
    bottom = np.clip(top + rng.integers(-80, 40, 3), 0, 255)
    t = np.linspace(0, 1, h)[:, None, None]
    canvas[:] = top * (1 - t) + bottom * t
    canvas = canvas.astype(np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        kind = rng.integers(3)
        if kind == 0:
            cv2.ellipse(canvas, (int(rng.integers(0, w)), int(rng.integers(h // 2, h * 2))),
                        (int(rng.integers(w // 4, w)), int(rng.integers(h // 4, h))), 0, 180, 360, colour,
                        int(rng.integers(3, 12)))
        elif kind == 1:
            cv2.circle(canvas, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(8, h // 2)),
                       colour, -1)
        else:
            pts = rng.integers(0, [w, h], (int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.fillPoly(canvas, [pts], colour)
    # pale the art so characters keep their contrast, as real plates do
    pale = rng.uniform(0.35, 0.75)
    return (canvas * (1 - pale) + np.array(base, np.float32) * pale).astype(np.uint8)


SIDE_TEXTS = ("RT", "TRK", "US", "DV", "PL", "APP", "CMB", "VET")  # stacked letters beside the number


def _draw_side_text(canvas, rng, box, ink, book):
    """Small letters stacked in a column (x, y, w, h), as some states print beside the number; the plate's
    label leaves them out, so the model learns to ignore them."""
    x, y, w, h = box
    letters = SIDE_TEXTS[rng.integers(len(SIDE_TEXTS))]
    cell = h / float(len(letters))
    font = book.small[rng.integers(len(book.small))]
    for i, ch in enumerate(letters):
        draw_stretched(canvas, ch, font, (x, int(y + i * cell), w, max(2, int(cell * 0.85))), ink, book)


def render_us_v2(rng, text=None, style=None):
    """US plate with tall, narrow, slot-filling characters, plate art, stickers and small distractor text.
    `style`: augmentation_config keys side_text_prob and letter_i_weight (see the spec schema)."""
    style = style or {}
    book = fonts()
    w, h = 240, 120
    base = US_BACKGROUNDS[rng.integers(len(US_BACKGROUNDS))]
    ink = US_INKS[rng.integers(len(US_INKS))]
    canvas = _graphic_background(rng, w, h, base) if rng.random() < 0.7 else \
        np.full((h, w, 3), base, np.uint8)
    if rng.random() < 0.06:  # dark plates with light characters
        canvas = (255 - canvas) // 3
        ink = (235, 235, 230)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    small = book.small[rng.integers(len(book.small))]
    header_h = int(h * rng.uniform(0.12, 0.22))
    header_ink = US_INKS[rng.integers(len(US_INKS))] if rng.random() < 0.5 else ink
    state = US_STATES[rng.integers(len(US_STATES))]
    _draw_fitted(draw, state, small, (int(w * 0.2), 3, int(w * 0.6), header_h), header_ink, book, 0.05)
    slogan = US_SLOGANS[rng.integers(len(US_SLOGANS))]
    if slogan:
        sh = int(h * rng.uniform(0.08, 0.14))
        _draw_fitted(draw, slogan, small, (int(w * 0.15), h - sh - 4, int(w * 0.7), sh), header_ink, book, 0.05)
    for corner in range(int(rng.integers(0, 3))):  # registration stickers with month/year text
        sw, sh = int(rng.integers(22, 40)), int(rng.integers(14, 24))
        sx = 4 if corner == 0 else w - sw - 4
        sy = 4 if rng.random() < 0.6 else h - sh - 4
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.rectangle((sx, sy, sx + sw, sy + sh), fill=colour)
        label = ("JAN", "FEB", "MAR", "NOV", "DEC", "10", "24", "25", "2026")[rng.integers(9)]
        _draw_fitted(draw, label, small, (sx + 2, sy + 2, sw - 4, sh - 4), (255, 255, 255), book)
    canvas = np.asarray(img).copy()
    if text is None:
        text, sep = random_us_text(rng, style.get("letter_i_weight", 1.0))
    else:
        sep = None
    seps = (sep - 1,) if sep and rng.random() < 0.7 else ()
    char_h = int(h * rng.uniform(0.45, 0.64))
    top = int(header_h + 4 + rng.uniform(0, max(1, h - header_h - char_h - 20)))
    margin = int(w * rng.uniform(0.04, 0.14))
    font = book.latin[rng.integers(len(book.latin))]
    x0, text_w = margin, w - 2 * margin
    side_prob = style.get("side_text_prob", 0.0)
    if side_prob > 0 and rng.random() < side_prob:
        col_w = int(w * rng.uniform(0.05, 0.08))
        left = rng.random() < 0.5
        col_x = x0 if left else x0 + text_w - col_w
        _draw_side_text(canvas, rng, (col_x, top, col_w, char_h), ink, book)
        text_w -= col_w + 4
        x0 += (col_w + 4) if left else 0
    draw_stretched(canvas, text, font, (x0, top, text_w, char_h), ink, book,
                   gap_frac=rng.uniform(0.03, 0.15), squeeze=rng.uniform(0.75, 1.0), seps=seps,
                   sep_style="dash" if rng.random() < 0.6 else "dot")
    if rng.random() < 0.7:
        cv2.rectangle(canvas, (1, 1), (w - 2, h - 2), ink, int(rng.integers(1, 3)))
    return canvas, text


def render_us(rng, text=None):
    book = fonts()
    w, h = 240, 120
    bg = np.array(US_BACKGROUNDS[rng.integers(len(US_BACKGROUNDS))], dtype=np.int32)
    ink = US_INKS[rng.integers(len(US_INKS))]
    dark = rng.random() < 0.08
    if dark:
        bg, ink = np.array((25, 30, 45)), (240, 240, 235)
    img = Image.new("RGB", (w, h), tuple(int(c) for c in bg))
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5 and not dark:  # a soft band of colour, as many state designs have
        band = tuple(int(c) for c in np.clip(bg + rng.integers(-60, 10, 3), 0, 255))
        y = int(rng.integers(h // 2, h))
        draw.rectangle((0, y, w, y + int(rng.integers(8, 30))), fill=band)
    if rng.random() < 0.7:
        draw.rounded_rectangle((2, 2, w - 3, h - 3), radius=10, outline=ink, width=int(rng.integers(1, 4)))
    state = US_STATES[rng.integers(len(US_STATES))]
    small = book.small[rng.integers(len(book.small))]
    _draw_fitted(draw, state, small, (30, 6, w - 60, int(rng.integers(13, 20))), ink, book, 0.05)
    if text is None:
        text, sep = random_us_text(rng)
    else:
        sep = None
    shown = text if sep is None or rng.random() < 0.5 else text[:sep] + ("-" if rng.random() < 0.5 else " ") + text[sep:]
    font = book.latin[rng.integers(len(book.latin))]
    char_h = int(h * rng.uniform(0.42, 0.55))
    _draw_fitted(draw, shown, font, (12, int(h * 0.25), w - 24, char_h), ink, book, rng.uniform(0.02, 0.12))
    slogan = US_SLOGANS[rng.integers(len(US_SLOGANS))]
    if slogan:
        _draw_fitted(draw, slogan, small, (40, h - 20, w - 80, 11), ink, book, 0.05)
    return np.asarray(img), text


CH_STYLES = {  # background, ink
    "blue": ((20, 60, 190), (245, 245, 245)),
    "yellow": ((240, 190, 30), (15, 15, 15)),
    "green": ((120, 210, 140), (15, 15, 15)),
}


def render_ch(rng, text=None, kind=None, style=None):
    """Chinese plate: province glyph, city letter, dot, 5 (6 on green new-energy plates) characters.
    `style`: augmentation_config key province_bold (see the spec schema)."""
    style = style or {}
    book = fonts()
    if kind is None:
        kind = ("blue", "blue", "blue", "blue", "yellow", "green")[rng.integers(6)]
    bg, ink = CH_STYLES[kind]
    bg = tuple(int(c) for c in np.clip(np.array(bg) + rng.integers(-20, 20, 3), 0, 255))
    w, h = 330, 105
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    if kind == "green":  # new-energy plates fade from white to green
        for y in range(h):
            t = y / float(h)
            c = tuple(int((1 - t) * 245 + t * v) for v in bg)
            draw.line((0, y, w, y), fill=c)
    draw.rounded_rectangle((3, 3, w - 4, h - 4), radius=8, outline=ink, width=2)
    if text is None:
        text = random_ch_text(rng, kind)
    cjk = book.cjk[0] if book.cjk else None
    latin = book.latin[rng.integers(len(book.latin))]
    char_h = int(h * rng.uniform(0.66, 0.8))
    y0 = (h - char_h) // 2
    canvas = np.asarray(img).copy()
    margin = int(w * rng.uniform(0.03, 0.06))
    bw = w - 2 * margin
    units = len(text) + 0.12 * (len(text) - 1) + 0.6
    slot = bw / units
    # province in the CJK font, then the rest with a dot after the second character
    max_bold = style.get("province_bold", 0.0)
    bold = rng.uniform(0.0, max_bold) if max_bold > 0 else 0.0
    draw_stretched(canvas, text[0], cjk or latin, (margin, y0, int(slot), char_h), ink, book, squeeze=0.92,
                   bold=bold)
    draw_stretched(canvas, text[1:], latin, (int(margin + slot * 1.12), y0, int(bw - slot * 1.12), char_h), ink,
                   book, gap_frac=0.12, squeeze=rng.uniform(0.8, 0.95), seps=(0,))
    return canvas, text


def render_plate(region, rng, text=None, style=None):
    """`style`: the plate-drawing keys of a spec's augmentation_config (PLATE_STYLE_KEYS)."""
    if region == "us":
        return render_us_v2(rng, text, style) if rng.random() < 0.75 else render_us(rng, text)
    if region == "ch":
        return render_ch(rng, text, style=style)
    raise ValueError("unknown plate region %r (expected 'us' or 'ch')" % region)


def _rotation(roll, pitch, yaw):
    r, p, y = (math.radians(a) for a in (roll, pitch, yaw))
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    return rz @ rx @ ry


def project_plate(plate_w, plate_h, roll, pitch, yaw, focal=3.0):
    """Image positions of the plate's corners after a 3-D rotation, seen by a pinhole camera."""
    corners = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], dtype=np.float64)
    corners[:, 0] *= plate_w
    corners[:, 1] *= plate_h
    rot = _rotation(roll, pitch, yaw)
    pts = corners @ rot.T
    dist = focal * plate_w
    pts[:, 2] += dist
    return (pts[:, :2] * dist / pts[:, 2:3]).astype(np.float32)


def _background(rng, h, w):
    kind = rng.integers(3)
    base = rng.integers(0, 255, 3)
    if kind == 0:
        bg = np.tile(base.astype(np.uint8), (h, w, 1))
    elif kind == 1:
        grad = np.linspace(0, 1, h)[:, None, None]
        other = rng.integers(0, 255, 3)
        bg = (grad * base + (1 - grad) * other).astype(np.uint8) * np.ones((1, w, 1), np.uint8)
    else:
        bg = rng.integers(0, 255, (max(1, h // 8), max(1, w // 8), 3)).astype(np.uint8)
        bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(bg)


def augment(plate, rng, out_w=96, out_h=48, strength=1.0, tight_crop_prob=0.4, capture_size=None):
    """A crop of `plate` as a camera sees it: pose, crop margin, blur, noise, light, low resolution, JPEG.

    `tight_crop_prob`: share of crops cut at the warped plate's own box, as a plate detector delivers them
    (the rest get a loose margin, as a fixed ROI). `capture_size` (w, h): a resolution every crop passes
    through before the final resize, for datasets whose crops are stored small (CCPD-style 94x24)."""
    ph, pw = plate.shape[:2]
    s = strength
    roll = rng.uniform(-30, 30) * s if rng.random() < 0.5 else rng.uniform(-6, 6) * s
    pitch = rng.uniform(-30, 30) * s
    yaw = rng.uniform(-15, 15) * s
    pts = project_plate(pw, ph, roll, pitch, yaw)
    # crop margin as a fraction of the warped plate's box: tight (may cut the border) or loose
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    size = hi - lo
    margin = rng.uniform(-0.04, 0.04) if rng.random() < tight_crop_prob else rng.uniform(0.0, 0.25) * s
    mx = size[0] * margin * rng.uniform(0.5, 1.5)
    my = size[1] * margin * rng.uniform(0.5, 1.5)
    box_lo = lo - np.array([mx, my]) + rng.uniform(-0.03, 0.03, 2) * size
    box_hi = hi + np.array([mx, my]) + rng.uniform(-0.03, 0.03, 2) * size
    # render straight into a canvas at roughly the plate's resolution
    scale = float(pw) / max(1.0, box_hi[0] - box_lo[0])
    cw = int(round((box_hi[0] - box_lo[0]) * scale))
    ch = int(round((box_hi[1] - box_lo[1]) * scale))
    cw, ch = max(cw, 16), max(ch, 8)
    dst = (pts - box_lo) * scale
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    canvas = _background(rng, ch, cw)
    warped = cv2.warpPerspective(plate, m, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT,
                                 dst=canvas)
    img = warped.astype(np.float32)
    # illumination: dim, bright, uneven, low contrast; colour cast
    if rng.random() < 0.8:
        gain = rng.uniform(0.35, 1.35)
        bias = rng.uniform(-40, 40)
        img = img * gain + bias
        if rng.random() < 0.3:
            ramp = np.linspace(rng.uniform(0.5, 1.2), rng.uniform(0.5, 1.2), cw)[None, :, None]
            img = img * ramp
        img = img * rng.uniform(0.85, 1.15, 3)[None, None, :]
    if rng.random() < 0.15:  # rain-like streaks
        streaks = np.zeros((ch, cw), np.float32)
        for _ in range(int(rng.integers(5, 30))):
            x = int(rng.integers(0, cw))
            y = int(rng.integers(0, ch))
            length = int(rng.integers(5, max(6, ch // 2)))
            dx = int(rng.integers(-3, 4))
            cv2.line(streaks, (x, y), (x + dx, y + length), float(rng.uniform(40, 120)), 1)
        img = img + streaks[:, :, None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        k = int(rng.choice([3, 5, 7]))
        if rng.random() < 0.5:
            img = cv2.GaussianBlur(img, (k, k), 0)
        else:  # motion blur along a random direction
            kern = np.zeros((k, k), np.float32)
            kern[k // 2, :] = 1.0 / k
            rot = cv2.getRotationMatrix2D((k / 2.0 - 0.5, k / 2.0 - 0.5), float(rng.uniform(0, 180)), 1.0)
            kern = cv2.warpAffine(kern, rot, (k, k))
            kern /= max(kern.sum(), 1e-6)
            img = cv2.filter2D(img, -1, kern)
    # resolution: plates as small as 17 px high, upscaled again by the crop stage
    target_h = int(rng.uniform(17, 60)) if rng.random() < 0.6 else ch
    if capture_size is not None:
        img = cv2.resize(img, tuple(capture_size), interpolation=cv2.INTER_AREA)
    elif target_h < ch:
        small_w = max(8, int(cw * target_h / float(ch)))
        img = cv2.resize(img, (small_w, target_h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        noise = rng.normal(0, rng.uniform(2, 14), img.shape)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 95))])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    if rng.random() < 0.05:  # inverted colours, as TAO's reverse_color augmentation
        img = 255 - img
    return cv2.resize(np.ascontiguousarray(img), (out_w, out_h), interpolation=cv2.INTER_LINEAR)


def detector_cut(crop, rng, jitter=0.08, margin=0.05, heights=(18, 40), out_w=96, out_h=48):
    """A tight real crop as a plate detector's box cuts it: each side off by up to `jitter` of the plate's
    size around `margin`, the plate seen `heights` px high (a gate camera's frame) and upscaled again,
    sometimes JPEG'd. Outside the crop there is no scene: edge pixels repeated, mirrored or a background."""
    from edge.evaluate import cut_as_detector

    h, w = crop.shape[:2]
    grow = margin + rng.uniform(-jitter, jitter, 4)
    pad = int(np.ceil(max(0.0, grow.max()) * max(h, w))) + 1
    fill = rng.random()
    if fill < 0.4:
        img = cut_as_detector(crop, grow, rng.uniform(*heights), cv2.BORDER_REPLICATE)
    elif fill < 0.7:
        img = cut_as_detector(crop, grow, rng.uniform(*heights), cv2.BORDER_REFLECT)
    else:
        img = cut_as_detector(crop, grow, rng.uniform(*heights), background=_background(rng, h + 2 * pad, w + 2 * pad))
    if rng.random() < 0.4:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    return cv2.resize(np.ascontiguousarray(img), (out_w, out_h), interpolation=cv2.INTER_LINEAR)


PLATE_STYLE_KEYS = ("side_text_prob", "letter_i_weight", "province_bold")


def make_sample(region, rng, out_w=96, out_h=48, strength=1.0, clean_prob=0.1, tight_crop_prob=0.4,
                capture_size=None, style=None):
    plate, text = render_plate(region, rng, style=style)
    if rng.random() < clean_prob:
        return cv2.resize(plate, (out_w, out_h), interpolation=cv2.INTER_AREA), text
    return augment(plate, rng, out_w, out_h, strength, tight_crop_prob, capture_size), text


def encode_jpeg(rgb, quality=95):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
