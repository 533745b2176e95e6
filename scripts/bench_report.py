"""Run the benchmark suites and print a markdown table of native/python ratios.

    python scripts/bench_report.py                # runs benches/, then prints the table
    python scripts/bench_report.py --json FILE    # prints the table of an earlier run

Each benchmark group holds the same work done by both implementations (or a cold
and a warm build); the ratio is the slower mean over the faster, from one run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict


def _machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


SLOW = ("python", "miditok", "cold", "seed")  # the baseline of a group, in order of preference


def table(data: dict) -> str:
    """A markdown table: one row per fast implementation, against its group's baseline.

    Args:
        data: A pytest-benchmark JSON report.

    Returns:
        The table.
    """
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for b in data["benchmarks"]:
        impl = b["extra_info"].get("impl") or b["name"]
        groups[b["group"] or b["name"]][impl] = b
    rows = [
        "| benchmark | fast | mean (s) | baseline | mean (s) | ratio | outputs equal |",
        "|---|---|---:|---|---:|---:|:---:|",
    ]
    for group, impls in groups.items():
        base = next((i for i in SLOW if i in impls), None)
        if base is None:
            continue
        slow = impls[base]
        for impl, fast in impls.items():
            if impl == base:
                continue
            tf, ts = fast["stats"]["mean"], slow["stats"]["mean"]
            equal = fast["extra_info"].get("equal", slow["extra_info"].get("equal", "-"))
            rows.append(
                f"| {group} | {impl} | {tf:.4g} | {base} | {ts:.4g} | {ts / tf:.1f}x | {equal} |"
            )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", help="a pytest-benchmark JSON file to report instead of running")
    ap.add_argument("pytest_args", nargs="*", help="files to run (default: benches/bench_*.py)")
    a = ap.parse_args()
    if not a.pytest_args:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        a.pytest_args = sorted(glob.glob(os.path.join(root, "benches", "bench_*.py")))
    path = a.json
    if path is None:
        path = os.path.join(tempfile.mkdtemp(), "bench.json")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-only"]
        subprocess.run([*cmd, f"--benchmark-json={path}", *a.pytest_args], check=True)
    with open(path) as f:
        data = json.load(f)
    print(f"Machine: {_machine()}\n")
    print(table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
