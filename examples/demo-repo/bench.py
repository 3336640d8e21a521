"""Benchmark: checks calc against reference answers and writes metrics.json."""
import json
import time

import calc

CASES = [
    (calc.mean, [1, 2, 3, 4], 2.5),
    (calc.mean, [10], 10),
    (calc.median, [5, 1, 3], 3),
    (calc.median, [1, 2, 3, 4], 2.5),
]

start = time.perf_counter()
correct = sum(1 for fn, arg, want in CASES if fn(arg) == want)
elapsed = time.perf_counter() - start

with open("metrics.json.tmp", "w") as out:
    json.dump({"score": correct / len(CASES), "samples": len(CASES), "seconds": elapsed}, out)
import os

os.replace("metrics.json.tmp", "metrics.json")
print(f"score={correct}/{len(CASES)}")
