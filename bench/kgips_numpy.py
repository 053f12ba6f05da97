"""Per-CoT KG-IPS (Eq. 3) with vectorized numpy, on the data `ocean bench estimator --write-data DIR`
wrote, for a side-by-side comparison on one core. Prints one JSON line.

    OMP_NUM_THREADS=1 python3 bench/kgips_numpy.py DIR [--repeats 5]

Checks its per-CoT values against Ocean's (DIR/values.parquet) to 1e-9 relative.
"""

import argparse
import json
import time

import numpy as np
import pyarrow.parquet as pq


def cot_values(cot, step, behavior, kg, target, n_cots, n_steps):
    """Eq. 3 per CoT: mean over steps of the mean contribution per step (steps dense from 0)."""
    log_lambda = np.where(np.isnan(kg), behavior, kg)
    log_target = np.where(np.isnan(target), behavior, target)
    contribution = np.exp(log_target - log_lambda) * behavior
    key = cot.astype(np.int64) * n_steps + step
    sums = np.bincount(key, weights=contribution, minlength=n_cots * n_steps)
    counts = np.bincount(key, minlength=n_cots * n_steps)
    present = counts > 0
    step_means = np.where(present, sums / np.maximum(counts, 1), 0.0).reshape(n_cots, n_steps)
    steps_per_cot = present.reshape(n_cots, n_steps).sum(axis=1)
    return step_means.sum(axis=1) / steps_per_cot


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    t = pq.read_table(f"{args.dir}/tokens.parquet")
    cot = t.column("cot").to_numpy()
    step = t.column("step").to_numpy().astype(np.int64)
    behavior = t.column("behavior").to_numpy()
    kg = t.column("kg").to_numpy(zero_copy_only=False)
    target = t.column("target").to_numpy(zero_copy_only=False)
    n_cots = int(cot.max()) + 1
    n_steps = int(step.max()) + 1
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        values = cot_values(cot, step, behavior, kg, target, n_cots, n_steps)
        times.append(time.perf_counter() - start)
    ocean = pq.read_table(f"{args.dir}/values.parquet").column("value").to_numpy()
    max_rel = float(np.max(np.abs(values - ocean) / np.maximum(np.abs(ocean), 1e-12)))
    best = min(times)
    print(json.dumps({
        "bench": "estimator-numpy",
        "numpy": np.__version__,
        "total_tokens": int(len(cot)),
        "cots": n_cots,
        "best_seconds": best,
        "median_seconds": sorted(times)[len(times) // 2],
        "tokens_per_second": len(cot) / best,
        "cots_per_second": n_cots / best,
        "estimate": float(values.mean()),
        "max_relative_difference_to_ocean": max_rel,
    }))
    if max_rel > 1e-9:
        raise SystemExit(f"numpy and Ocean disagree: max relative difference {max_rel}")


if __name__ == "__main__":
    main()
