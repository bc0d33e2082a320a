#!/usr/bin/env python3
"""p50 / p99 of each hop by when the records were sent, from `loadrun --timelines FILE`.

Usage: tests/load/timelines.py FILE [SLICE_SECONDS=1] [SLICES=15]

The whole run's percentiles mix the first seconds (owners' accounts created, caches and
connections warming) with the steady state; this shows which is which.
"""
import csv
import sys
from collections import defaultdict

HOPS = {
    "ingest": ("sent", "answered"),
    "events topic": ("answered", "outcome_produced"),
    "evaluator": ("outcome_produced", "outcome_visible"),
    "matches topic": ("outcome_visible", "provisioner_began"),
    "provisioner": ("provisioner_began", "change_produced"),
    "end to end": ("sent", "change_visible"),
}


def percentile(values, q):
    values = sorted(values)
    return values[round((len(values) - 1) * q)] if values else float("nan")


def main():
    path = sys.argv[1]
    step = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    slices = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    with open(path, newline="") as f:
        rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(f)]
    start = min(r["sent"] for r in rows if r["sent"])
    by_slice = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if not r["sent"]:
            continue
        at = int((r["sent"] - start) / 1e6 / step)
        for hop, (a, b) in HOPS.items():
            if r[a] and r[b]:
                by_slice[at][hop].append((r[b] - r[a]) / 1000)
    print("sent at (s) | " + " | ".join(f"{h} p50 / p99 (ms)" for h in HOPS))
    for at in sorted(by_slice)[:slices]:
        cells = [
            f"{percentile(by_slice[at][h], 0.5):.0f} / {percentile(by_slice[at][h], 0.99):.0f}"
            for h in HOPS
        ]
        print(f"{at * step:.2f} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
