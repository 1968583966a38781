"""Compare two runs' hierarchy tables: the largest difference per metric, and whether the verdicts agree.

    python benchmarks/compare_scores.py results_cpu/hierarchy results/hierarchy --tolerance 0.05 --out cmp.json

Each argument is a hierarchy folder (``scores.csv``, and ``verdicts.csv`` for planted studies) or a ``scores.csv``.
Rows are matched on (dataset, model, subject, kind, metric). Per metric it prints the rows, the largest and the
median absolute difference and where the largest is; then every verdict (planted organisation recovered or not)
that differs. Two runs agree when they have the same rows and verdicts and every difference is within
``--tolerance`` x max(1, |reference value|): absolute for scores, correlations and p-values, relative for counts
such as ``n_significant`` (NaN equals NaN). Exit status 0 when they agree, 1 otherwise.

Why a tolerance and not equality: runs on two devices differ in rounding (CUDA kernels, TF32 convolutions), and a
metric built on a best layer (an argmax over layers) or a time window (samples above 95 % of a peak) moves by a
step when rounding flips a near tie.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KEYS = ["dataset", "model", "subject", "kind", "metric"]
VERDICT_KEYS = ["dataset", "scenario", "model", "subject", "kind", "metric"]


def _tables(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    folder = path if path.is_dir() else path.parent
    scores = pd.read_csv(path / "scores.csv" if path.is_dir() else path)
    verdicts = folder / "verdicts.csv"
    return scores, pd.read_csv(verdicts) if verdicts.exists() else None


def compare(
    a: pd.DataFrame, b: pd.DataFrame, verdicts_a: pd.DataFrame | None, verdicts_b: pd.DataFrame | None, tolerance: float
) -> dict[str, Any]:
    """Per-metric differences of ``b`` against ``a`` and the verdicts that differ (pure: tables in, dict out)."""
    merged = a.merge(b, on=KEYS, how="outer", suffixes=("_a", "_b"), indicator=True)
    only = merged[merged._merge != "both"]
    both = merged[merged._merge == "both"].copy()
    va, vb = both.value_a.to_numpy(float), both.value_b.to_numpy(float)
    both["diff"] = np.where(np.isnan(va) & np.isnan(vb), 0.0, np.abs(va - vb))
    both.loc[np.isnan(va) != np.isnan(vb), "diff"] = np.inf
    both["over"] = both["diff"] > tolerance * np.maximum(1.0, np.nan_to_num(np.abs(va)))
    metrics = {}
    for metric, rows in both.groupby("metric"):
        worst = rows.loc[rows["diff"].idxmax()]
        metrics[metric] = {
            "rows": len(rows),
            "max_abs_diff": float(rows["diff"].max()),
            "median_abs_diff": float(rows["diff"].median()),
            "rows_over_tolerance": int(rows["over"].sum()),
            "worst": {k: str(worst[k]) for k in KEYS} | {"a": float(worst.value_a), "b": float(worst.value_b)},
        }
    out: dict[str, Any] = {
        "tolerance": tolerance,
        "rows": len(both),
        "rows_only_in_a": int((only._merge == "left_only").sum()),
        "rows_only_in_b": int((only._merge == "right_only").sum()),
        "metrics": metrics,
        "max_abs_diff": float(both["diff"].max()) if len(both) else 0.0,
        "rows_over_tolerance": int(both["over"].sum()),
    }
    if verdicts_a is not None and verdicts_b is not None:
        v = verdicts_a.merge(verdicts_b, on=VERDICT_KEYS, how="outer", suffixes=("_a", "_b"), indicator=True)
        differ = v[(v._merge != "both") | (v.recovered_a != v.recovered_b)]
        out["verdicts"] = {
            "total": len(v),
            "agree": int(len(v) - len(differ)),
            "recovered_a": int(v.recovered_a.fillna(False).astype(bool).sum()),
            "recovered_b": int(v.recovered_b.fillna(False).astype(bool).sum()),
            "differ": [
                {k: str(r[k]) for k in VERDICT_KEYS} | {"a": r.value_a, "b": r.value_b, "expected": r.expected_a}
                for _, r in differ.iterrows()
            ],
        }
    verdicts_ok = "verdicts" not in out or not out["verdicts"]["differ"]
    out["agree"] = bool(
        not out["rows_only_in_a"] and not out["rows_only_in_b"] and not out["rows_over_tolerance"] and verdicts_ok
    )
    return out


def print_report(result: dict[str, Any], name_a: str, name_b: str) -> None:
    print(f"{name_b} against {name_a}: {result['rows']} rows in both, {result['rows_only_in_a']} only in {name_a}, "
          f"{result['rows_only_in_b']} only in {name_b}; tolerance {result['tolerance']}")  # fmt: skip
    print(f"{'metric':>28} {'rows':>5} {'max |diff|':>11} {'median':>9} {'> tol':>5}  largest at")
    for metric, m in sorted(result["metrics"].items(), key=lambda kv: -kv[1]["max_abs_diff"]):
        w = m["worst"]
        where = f"{w['dataset']}/{w['model']}/sub-{w['subject']}/{w['kind']}: {w['a']:.4g} vs {w['b']:.4g}"
        print(f"{metric:>28} {m['rows']:>5} {m['max_abs_diff']:>11.3g} {m['median_abs_diff']:>9.2g} "
              f"{m['rows_over_tolerance']:>5}  {where}")  # fmt: skip
    if "verdicts" in result:
        v = result["verdicts"]
        print(f"verdicts: {v['agree']} of {v['total']} agree (recovered: {v['recovered_a']} in {name_a}, "
              f"{v['recovered_b']} in {name_b})")  # fmt: skip
        for d in v["differ"]:
            print(f"  differs: {d}")
    print("AGREE" if result["agree"] else "DISAGREE")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="reference run: hierarchy folder or scores.csv (e.g. the CPU run)")
    p.add_argument("b", type=Path, help="run under test: hierarchy folder or scores.csv (e.g. the CUDA run)")
    p.add_argument("--tolerance", type=float, default=0.05, help="largest absolute difference of a metric value")
    p.add_argument("--out", type=Path, default=None, help="write the comparison as JSON here")
    args = p.parse_args(argv)
    (a, va), (b, vb) = _tables(args.a), _tables(args.b)
    result = compare(a, b, va, vb, args.tolerance)
    print_report(result, str(args.a), str(args.b))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
