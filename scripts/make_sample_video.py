#!/usr/bin/env python3
"""Make the bundled demo video: a fixed gate camera looking down at a lane; cars stop at the barrier
one after another, each with a synthetic US plate that sits inside one fixed ROI (seen at an angle).

Writes <out> (H.264 through ffmpeg when it is installed, else OpenCV's MPEG-4) and <out>.plates.txt with
the plates in order, and prints the ROI to put in the config. Deterministic for a given --seed.

    python scripts/make_sample_video.py --out samples/gate_us.mp4
"""
import argparse
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from edge.training import synth  # noqa: E402

W, H, FPS = 640, 360, 10
# where a stopped car's plate sits: top-left, top-right, bottom-right, bottom-left (a slight perspective)
PLATE_QUAD = np.array([[262, 232], [378, 228], [380, 288], [264, 290]], dtype=np.float32)
ROI_MARGIN = 0.12


def roi_points():
    """The configured ROI: the plate quad grown by ROI_MARGIN around its centre."""
    centre = PLATE_QUAD.mean(axis=0)
    return (centre + (PLATE_QUAD - centre) * (1 + ROI_MARGIN)).round().astype(int).tolist()


def draw_scene(rng):
    scene = np.full((H, W, 3), 95, np.uint8)
    cv2.rectangle(scene, (0, 0), (W, 120), (150, 165, 175), -1)  # wall and sky
    cv2.rectangle(scene, (40, 40), (110, 120), (80, 80, 80), -1)  # gate post
    cv2.line(scene, (110, 70), (600, 70), (230, 40, 40), 6)  # barrier (raised)
    for x in range(0, W, 80):  # lane markings
        cv2.line(scene, (x, 330), (x + 40, 330), (220, 220, 220), 3)
    noise = rng.normal(0, 6, scene.shape)
    return np.clip(scene + noise, 0, 255).astype(np.uint8)


def place_car(frame, plate, offset_y, colour):
    """Draw a car body and warp the plate onto it, shifted down by offset_y pixels (entering/leaving)."""
    quad = PLATE_QUAD + np.array([0, offset_y], np.float32)
    x0, y0 = quad.min(axis=0)
    x1, y1 = quad.max(axis=0)
    body = (int(x0 - 110), int(y0 - 110), int(x1 + 110), int(y1 + 60))
    cv2.rectangle(frame, body[:2], body[2:], colour, -1)
    cv2.rectangle(frame, (body[0] + 30, body[1] + 10), (body[2] - 30, body[1] + 60), (40, 50, 60), -1)  # window
    ph, pw = plate.shape[:2]
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    m = cv2.getPerspectiveTransform(src, quad)
    cv2.warpPerspective(plate, m, (W, H), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)


def render_frames(plates, seed):
    rng = np.random.default_rng(seed)
    background = draw_scene(rng)
    frames = []
    enter, stay, leave, gap = 4, 16, 4, 6
    for text in plates:
        plate, _ = synth.render_us(rng, text)
        colour = tuple(int(c) for c in rng.integers(30, 220, 3))
        path = [60 - 15 * i for i in range(enter)] + [0] * stay + [15 * (i + 1) for i in range(leave)]
        for offset in path:
            frame = background.copy()
            jitter = rng.normal(0, 0.8)
            place_car(frame, plate, offset + jitter, colour)
            frame = cv2.GaussianBlur(frame, (3, 3), 0)
            frame = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
            frames.append(frame)
        frames.extend([background.copy() for _ in range(gap)])
    return frames


def write_video(frames, out):
    tmp = out + ".part.mp4"
    if shutil.which("ffmpeg"):
        cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "%dx%d" % (W, H),
               "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "slow", "-crf", "23", "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", tmp]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        for frame in frames:
            proc.stdin.write(frame.tobytes())
        proc.stdin.close()
        if proc.wait() != 0:
            raise SystemExit("ffmpeg failed")
    else:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
        for frame in frames:
            writer.write(frame[:, :, ::-1])
        writer.release()
    os.replace(tmp, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="samples/gate_us.mp4")
    parser.add_argument("--count", type=int, default=8, help="cars in the video")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    plates = []
    while len(plates) < args.count:
        text, _ = synth.random_us_text(rng)
        if 5 <= len(text) <= 8 and text not in plates:
            plates.append(text)
    frames = render_frames(plates, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_video(frames, args.out)
    with open(args.out + ".plates.txt", "w") as f:
        f.write("\n".join(plates) + "\n")
    cv2.imwrite(os.path.splitext(args.out)[0] + ".preview.jpg", frames[20][:, :, ::-1])
    print("wrote %s (%d frames, %d bytes); plates: %s" % (args.out, len(frames), os.path.getsize(args.out),
                                                           " ".join(plates)))
    print("roi points: %s" % roi_points())


if __name__ == "__main__":
    main()
