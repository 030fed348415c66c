#!/usr/bin/env python3
"""Make the drive-through demo video: cars cross a wide camera's view from left to right without stopping,
each at its own distance (plate 60-150 px wide), height in the frame and angle, entering and leaving cut by
the frame's edge; each carries a synthetic US plate. The plate detector finds them anywhere (mode detect);
no fixed ROI could.

Writes <out>, <out>.plates.txt (the plates in order) and <out>.boxes.json (each frame's plate box,
x1 y1 x2 y2, for checking a detector on it). Deterministic for a given --seed.

    python scripts/make_drive_video.py --out samples/drive_us.mp4
"""
import argparse
import json
import os
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from edge.training import synth  # noqa: E402
from make_sample_video import FPS, H, W, draw_scene, write_video  # noqa: E402

FRAMES_PER_CAR, GAP = 36, 4


def plate_quad(cx, cy, width, tilt):
    """A plate's corners (TL, TR, BR, BL) at centre (cx, cy): `tilt` > 0 turns its right side away
    (that side shorter), as a car seen from the camera's left."""
    height = width * 0.5
    left, right = height * (1 + tilt) / 2.0, height * (1 - tilt) / 2.0
    return np.array([[cx - width / 2, cy - left], [cx + width / 2, cy - right],
                     [cx + width / 2, cy + right], [cx - width / 2, cy + left]], np.float32)


def draw_car(frame, plate, quad, colour):
    x0, y0 = quad.min(axis=0)
    x1, y1 = quad.max(axis=0)
    w = x1 - x0
    body = (int(x0 - 0.9 * w), int(y0 - 0.9 * w), int(x1 + 0.9 * w), int(y1 + 0.4 * w))
    cv2.rectangle(frame, body[:2], body[2:], colour, -1)
    cv2.rectangle(frame, (int(body[0] + 0.25 * w), int(body[1] + 0.1 * w)),
                  (int(body[2] - 0.25 * w), int(body[1] + 0.5 * w)), (40, 50, 60), -1)  # windscreen
    for wx in (body[0] + 0.2 * w, body[2] - 0.2 * w):  # wheels
        cv2.circle(frame, (int(wx), body[3]), int(0.25 * w), (20, 20, 20), -1)
    ph, pw = plate.shape[:2]
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    cv2.warpPerspective(plate, cv2.getPerspectiveTransform(src, quad), (W, H), dst=frame,
                        borderMode=cv2.BORDER_TRANSPARENT)


def render(plates, seed):
    rng = np.random.default_rng(seed)
    background = draw_scene(rng)
    frames, boxes = [], []
    for text in plates:
        plate, _ = synth.render_us(rng, text)
        colour = tuple(int(c) for c in rng.integers(30, 220, 3))
        width = float(rng.uniform(60, 150))  # near or far
        y = float(rng.uniform(170, 300))
        tilt = float(rng.uniform(-0.25, 0.25))
        rise = float(rng.uniform(-30, 30))  # the road runs a little up or down across the view
        for i in range(FRAMES_PER_CAR):
            t = i / float(FRAMES_PER_CAR - 1)
            cx = -width * 0.6 + t * (W + width * 1.2)
            quad = plate_quad(cx, y + rise * (t - 0.5), width * (0.9 + 0.2 * t), tilt)  # nearer as it goes
            frame = background.copy()
            draw_car(frame, plate, quad, colour)
            frame = cv2.GaussianBlur(frame, (3, 3), 0)
            frames.append(np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8))
            x0, y0 = np.clip(quad.min(axis=0), 0, [W, H])
            x1, y1 = np.clip(quad.max(axis=0), 0, [W, H])
            boxes.append([[round(float(v), 1) for v in (x0, y0, x1, y1)]] if x1 - x0 > 4 else [])
        for _ in range(GAP):
            frames.append(background.copy())
            boxes.append([])
    return frames, boxes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="samples/drive_us.mp4")
    parser.add_argument("--count", type=int, default=8, help="cars in the video")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    plates = []
    while len(plates) < args.count:
        text, _ = synth.random_us_text(rng)
        if 5 <= len(text) <= 7 and text not in plates:
            plates.append(text)
    frames, boxes = render(plates, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_video(frames, args.out)
    with open(args.out + ".plates.txt", "w") as f:
        f.write("\n".join(plates) + "\n")
    with open(args.out + ".boxes.json", "w") as f:
        json.dump({"size": [W, H], "fps": FPS, "frames": boxes}, f, separators=(",", ":"))
    cv2.imwrite(os.path.splitext(args.out)[0] + ".preview.jpg", frames[FRAMES_PER_CAR // 2][:, :, ::-1])
    print("wrote %s (%d frames, %d bytes); plates: %s" % (args.out, len(frames), os.path.getsize(args.out),
                                                           " ".join(plates)))


if __name__ == "__main__":
    main()
