#!/usr/bin/env python3
"""Where a vcc step's memory goes: run `bin/vcc.py <step> ...` in this process while a thread
samples the resident set size and the main thread's stack every 50 ms.

Prints the peak with its stack, then each location (last three library frames) in the order it
was first seen, with the largest RSS observed there. Sampling adds ~0.1 GB and some time; use
vcc_scale.py for the numbers, this for the attribution.

    PYTHONPATH=src TXREPRO_NO_PROGRESS=1 python benchmarks/vcc_rss_profile.py evaluate --prepared P --reference R \\
        --predictions P/cell_mean_pred.h5ad --model cell_mean --outdir E --threads 1
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
import traceback
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("txrepro", "pdex", "numba_mwu", "anndata", "scipy", "cell_eval")


def _where(frame) -> str:
    frames = [f"{os.path.basename(f.filename)}:{f.name}:{f.lineno}" for f in traceback.extract_stack(frame) if any(k in f.filename for k in LIBRARIES)]
    return " > ".join(frames[-6:])


def main() -> None:
    proc, main_id = psutil.Process(), threading.main_thread().ident
    samples: list[tuple[float, int, str]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            frame = sys._current_frames().get(main_id)
            samples.append((time.perf_counter(), proc.memory_info().rss, _where(frame) if frame else ""))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    sys.argv = ["vcc.py", *sys.argv[1:]]
    try:
        runpy.run_path(str(REPO / "bin" / "vcc.py"), run_name="__main__")
    except SystemExit:
        pass
    done.set()
    thread.join()
    peak = max(samples, key=lambda s: s[1])
    print(f"\n== wall {time.perf_counter() - t0:.1f} s, peak sampled RSS {peak[1] / 1e9:.2f} GB at t={peak[0] - t0:.1f} s\n   {peak[2]}")
    seen: dict[str, tuple[int, float]] = {}
    for t, rss, where in samples:
        key = " > ".join(where.split(" > ")[-3:])
        top, first = seen.get(key, (0, t))
        seen[key] = (max(top, rss), first)
    print("== locations (first seen): t, max RSS")
    for key, (top, first) in seen.items():
        if top >= 0.5 * peak[1]:
            print(f"  t={first - t0:7.1f} s {top / 1e9:6.2f} GB  {key}")


if __name__ == "__main__":
    main()
