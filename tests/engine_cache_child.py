"""A process that uses the engine cache, for tests that need two real processes or a real SIGKILL.

    engine_cache_child.py FOLDER build LOG SLEEP_S     build (or reuse) an engine; the builder sleeps, then
                                                       appends its pid to LOG; prints the record as JSON
    engine_cache_child.py FOLDER hang-in-write MARKER  build, and stop forever inside the engine's fsync
                                                       (after MARKER is written): the parent SIGKILLs us
"""
import json
import os
import sys
import time

from edge.infer import engine_cache

PARTS = {"model": "m", "model_sha256": "a" * 64, "tensorrt": "8.2.1.8", "gpu": "NVIDIA Tegra X1",
         "compute_capability": "5.3", "jetson_module": "nano", "l4t": "32.7.1", "precision": "fp16",
         "batch_profile": [1, 8, 8], "dla_core": -1, "workspace_mb": 256, "layout": engine_cache.LAYOUT}
PLAN = b"PLAN" * 300000


def main():
    folder, mode, path = sys.argv[1:4]
    cache = engine_cache.EngineCache(folder)
    if mode == "build":
        sleep_s = float(sys.argv[4])

        def build():
            time.sleep(sleep_s)
            with open(path, "a") as f:
                f.write("%d\n" % os.getpid())
            return PLAN, ["a warning"]

        _, record = cache.get_or_build(PARTS, build, lambda plan: plan)
        print(json.dumps(record))
    else:
        real_fsync = os.fsync

        def hang(fd):
            if os.fstat(fd).st_size >= len(PLAN):  # the engine's data is written, the rename not done
                with open(path, "w") as f:
                    f.write("in write\n")
                while True:
                    time.sleep(1)
            real_fsync(fd)

        os.fsync = hang
        cache.get_or_build(PARTS, lambda: (PLAN, []), lambda plan: plan)


if __name__ == "__main__":
    main()
