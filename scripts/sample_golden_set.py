#!/usr/bin/env python3
"""Write a golden set (image/<id>.png, label/<id>.txt) of real plate crops from the bundled sample video:
the demo ROI of samples/gate_us.mp4, each crop labelled with the plate of samples/gate_us.mp4.plates.txt the
shipped US model reads there (at most --per-plate crops a plate). For `lpr-edge model pack --golden` in the
README's update walk-through and in the tests; a real fleet's golden set is labelled crops of its own cameras."""
import argparse
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEMO_ROI = [[255, 229], [385, 224], [387, 291], [257, 294]]  # configs/demo.yaml's lane1


def sample_golden_set(out_dir, per_plate=2, model=None, characters=None):
    import cv2

    from edge.config.model import RoiConfig
    from edge.crop.roi import RoiCropper
    from edge.ota.check import load_recognizer

    model = model or os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")
    characters = characters or os.path.join(ROOT, "models", "us_lp_characters.txt")
    with open(os.path.join(ROOT, "samples", "gate_us.mp4.plates.txt")) as f:
        plates = set(line.strip() for line in f if line.strip())
    recognizer = load_recognizer(model, characters)
    cropper = RoiCropper("gate", [RoiConfig("lane1", DEMO_ROI)])
    os.makedirs(os.path.join(out_dir, "image"))
    os.makedirs(os.path.join(out_dir, "label"))
    cap = cv2.VideoCapture(os.path.join(ROOT, "samples", "gate_us.mp4"))
    counts = {}
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        index += 1
        if index % 3:
            continue
        crop = cropper.crops(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))[0].image
        text = recognizer.read([crop])[0].text
        if text in plates and counts.get(text, 0) < per_plate:
            counts[text] = counts.get(text, 0) + 1
            stem = "%04d" % index
            cv2.imwrite(os.path.join(out_dir, "image", stem + ".png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            with open(os.path.join(out_dir, "label", stem + ".txt"), "w") as f:
                f.write(text + "\n")
    cap.release()
    recognizer.close()
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder to create")
    parser.add_argument("--per-plate", type=int, default=2)
    args = parser.parse_args()
    if os.path.exists(args.out):
        print("error: %s exists" % args.out, file=sys.stderr)
        return 2
    sys.path.insert(0, ROOT)
    counts = sample_golden_set(args.out, args.per_plate)
    print("wrote %d crops of %d plates to %s" % (sum(counts.values()), len(counts), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
