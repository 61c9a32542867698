#!/usr/bin/env python3
"""Ingest of shuffled events over more and more days (issue #25, item 6).

For each day count: `promptgate gen` writes the events, Python shuffles them (seeded), and one
`promptgate ingest` loads them into a fresh lake; /usr/bin/time gives its wall time, CPU time and
peak RSS. One file per `date=` partition is the lake's layout, so each day costs a Parquet file,
its id-hash file, two directories and their fsyncs whatever its events: the table shows how the
cost grows with the days.

    python3 benches/many_days.py --bin target/release/promptgate [--events 200000] [--days 1000,4000,10000,20000]
"""

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--days", default="1000,4000,10000,20000")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="many-days-")
    rows = []
    try:
        for days in [int(d) for d in a.days.split(",")]:
            lines = subprocess.run(
                [a.bin, "gen", "--events", str(a.events), "--days", str(days), "--seed", str(a.seed)],
                check=True, capture_output=True, text=True,
            ).stdout.splitlines(keepends=True)
            random.Random(a.seed).shuffle(lines)
            src = os.path.join(work, "events.ndjson")
            with open(src, "w") as f:
                f.writelines(lines)
            lake = os.path.join(work, "lake")
            shutil.rmtree(lake, ignore_errors=True)
            r = subprocess.run(
                ["/usr/bin/time", "-f", "TIME %e %U %S %M", a.bin, "--lake", lake,
                 "ingest", "--no-progress", "--json", src],
                capture_output=True, text=True,
            )
            if r.returncode != 0:
                sys.exit(f"ingest failed for {days} days: {r.stderr}")
            m = re.search(r"TIME ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", r.stderr)
            wall, user, system, kb = float(m[1]), float(m[2]), float(m[3]), int(m[4])
            rows.append((days, wall, user + system, kb / 1024))
            print(f"{days} days: {wall:.1f} s wall, {user + system:.1f} s CPU, {kb / 1024:.0f} MiB peak", flush=True)
            shutil.rmtree(lake, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    print()
    print("| days | events/day | wall | CPU | peak RSS | wall vs first | ms per day (wall) |")
    print("|---|---|---|---|---|---|---|")
    for days, wall, cpu, mib in rows:
        print(f"| {days:,} | {a.events / days:.0f} | {wall:.1f} s | {cpu:.1f} s | {mib:.0f} MiB | "
              f"{wall / base[1]:.2f}x | {1000 * wall / days:.1f} |")


if __name__ == "__main__":
    main()
