"""A contact sheet of misreads for a person to look at: each crop (enlarged), its label and what was read,
in a grid, as PNG. Text is drawn with Pillow and a CJK font where both are installed (Chinese plates), else
with OpenCV, which draws ASCII only (other characters become '?')."""
import os

import cv2
import numpy as np

from edge.dataset import read_image

CELL_W, CELL_H, TEXT_H = 192, 96, 40
CJK_FONTS = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def write_contact_sheet(path, misreads, columns=6, limit=120, prepare=None):
    """misreads: (image path, label, read, score); `prepare(image, path)` turns the stored crop into what the
    model read (evaluate --crops detector). Writes PNG atomically; returns how many cells it drew."""
    items = list(misreads)[:limit]
    rows = max(1, (len(items) + columns - 1) // columns)
    sheet = np.full((rows * (CELL_H + TEXT_H), columns * CELL_W, 3), 255, np.uint8)
    texts = []
    for i, (image_path, label, text, score) in enumerate(items):
        y, x = (i // columns) * (CELL_H + TEXT_H), (i % columns) * CELL_W
        crop = read_image(image_path)
        if crop is not None and prepare is not None:
            crop = prepare(crop, image_path)
        if crop is not None:
            sheet[y:y + CELL_H, x:x + CELL_W] = cv2.resize(crop, (CELL_W, CELL_H), interpolation=cv2.INTER_NEAREST)
        texts.append((x + 4, y + CELL_H + 2, "truth %s" % label, (0, 110, 0)))
        texts.append((x + 4, y + CELL_H + 20, "read  %s %.2f" % (text or "-", score), (190, 0, 0)))
    sheet = _draw_texts(sheet, texts)
    tmp = path + ".part"
    ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    with open(tmp, "wb") as f:
        f.write(buf.tobytes())
    os.replace(tmp, path)
    return len(items)


def _draw_texts(sheet, texts):
    font_path = next((p for p in CJK_FONTS if os.path.exists(p)), None)
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        font_path = None
    if font_path:
        image = Image.fromarray(sheet)
        draw = ImageDraw.Draw(image)
        font = ImageFont.truetype(font_path, 15)
        for x, y, text, colour in texts:
            draw.text((x, y), text, fill=colour, font=font)
        return np.array(image)
    for x, y, text, colour in texts:
        cv2.putText(sheet, text.encode("ascii", "replace").decode("ascii"), (x, y + 14), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, colour, 1, cv2.LINE_AA)
    return sheet
