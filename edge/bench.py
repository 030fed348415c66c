"""`lpr-edge bench`: recognizer throughput per batch size, measured in one run so the figures compare as
ratios (absolute numbers on a shared machine are noisy). Crops are random pixels: LPRNet's cost does
not depend on content."""
import time

import numpy as np


def bench(recognizer, batch_sizes, seconds, warmup=3):
    rng = np.random.default_rng(0)
    rows = []
    for batch in batch_sizes:
        crops = [rng.integers(0, 256, (48, 96, 3), dtype=np.uint8) for _ in range(batch)]
        for _ in range(warmup):
            recognizer.read(crops)
        runs, latencies = 0, []
        end = time.monotonic() + seconds
        while time.monotonic() < end or runs < 3:
            t0 = time.monotonic()
            recognizer.read(crops)
            latencies.append(time.monotonic() - t0)
            runs += 1
        total = sum(latencies)
        rows.append({"batch": batch, "plates_per_s": round(batch * runs / total, 1),
                     "batch_ms_median": round(1000 * float(np.median(latencies)), 2), "runs": runs})
    base = rows[0]["plates_per_s"]
    for row in rows:
        row["speedup_vs_first"] = round(row["plates_per_s"] / base, 2) if base else None
    return rows
