#!/usr/bin/env python3
"""Cost grows with the window, not with the lake (issue #24): a lake of 100M events over 90
days against a lake of 10M events over the last 9 of those days (the same events per day, so
both hold the same one-day window), both streamed from `promptgate gen` into `ingest -` (no
NDJSON on disk).

    python3 benches/scale.py [--bin PATH] [--big 100000000] [--days 90] [--repeat 7]

Without --bin it builds the release binary (in $CARGO_TARGET_DIR, default
~/.cache/promptgate-target, the directory the tests build in).

Measures, as whole processes with wall time and peak RSS:
  * ingest of each lake (events/s, gen's own time included: it runs in the pipe on the same cores),
  * the judge of the last day (`judge --since D --until D+1`) and the one-day segmented rollup
    (`rollup --since D --until D+1`) on both lakes, interleaved, best and median,
  * on the big lake: a second ingest of 1% more events over the same days (every partition then
    holds two files), `compact` of all of them, and `lake vacuum --retention-hours 0`,
and the size of each lake on disk. Prints Markdown for BENCHMARKS.md.
"""
import argparse, datetime, json, os, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/promptgate-target"))
START = datetime.date(2026, 6, 1)


def timed(cmd, feed=None):
    """(seconds, peak RSS MiB of `cmd`'s own process, stdout), with `feed`'s stdout piped in."""
    t = time.perf_counter()
    src = subprocess.Popen(feed, stdout=subprocess.PIPE) if feed else None
    err_file = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, stdin=src.stdout if src else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=err_file)
    if src:
        src.stdout.close()
    # Read the output while waiting, then reap the process with wait4 for its own rusage.
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    err_file.seek(0)
    err = err_file.read()
    el = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if src:
        src.wait()
        if src.returncode != 0:
            raise SystemExit(f"{feed} failed with {src.returncode}")
    if p.returncode not in (0, 1, 3):
        raise SystemExit(f"{cmd} failed with {p.returncode}: {err.decode()[-2000:]}")
    return el, usage.ru_maxrss / 1024, out.decode()


def best_median(xs):
    xs = sorted(xs)
    return xs[0], xs[len(xs) // 2]


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(d, f))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=None, help="a release binary (default: build one)")
    ap.add_argument("--big", type=int, default=100_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--ratio", type=int, default=10, help="the small lake holds big/ratio events over days/ratio days")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    if not a.bin:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
    b = os.path.abspath(a.bin or os.path.join(TARGET, "release", "promptgate"))
    work = a.dir or tempfile.mkdtemp(prefix="promptgate-scale-")
    os.makedirs(work, exist_ok=True)
    small_days = a.days // a.ratio
    last = START + datetime.timedelta(days=a.days - 1)
    small_start = START + datetime.timedelta(days=a.days - small_days)
    lakes = {}
    rows = []
    for name, n, days, start in (("small", a.big // a.ratio, small_days, small_start),
                                 ("big", a.big, a.days, START)):
        lake = os.path.join(work, f"lake-{name}")
        shutil.rmtree(lake, ignore_errors=True)
        gen = [b, "gen", "--events", str(n), "--seed", "1", "--days", str(days), "--start", start.isoformat()]
        el, rss, _ = timed([b, "--lake", lake, "ingest", "--no-progress", "-"], feed=gen)
        lakes[name] = lake
        rows.append((name, n, days, el, rss, du(os.path.join(lake, "llm_events"))))
        print(f"ingested {name}: {n:,} events in {el:.1f} s, peak {rss:,.0f} MiB", file=sys.stderr)
    print(f"machine: {os.cpu_count()} cores; binary {b}; {time.strftime('%Y-%m-%d')}\n")
    print("| lake | events | days | ingest s (gen piped in) | events/s | ingest peak MiB | llm_events on disk |")
    print("|---|---|---|---|---|---|---|")
    for name, n, days, el, rss, size in rows:
        print(f"| {name} | {n:,} | {days} | {el:.1f} | {n / el:,.0f} | {rss:,.0f} | {size / 2**30:.2f} GiB |")
    day, next_day = last.isoformat(), (last + datetime.timedelta(days=1)).isoformat()
    queries = {}
    for name, lake in lakes.items():
        queries[f"judge {name}"] = [b, "--lake", lake, "judge", "--route", "support", "--baseline", "v1", "--canary", "v2",
                                    "--env", "prod", "--since", day, "--until", next_day, "--format", "json"]
        queries[f"rollup {name}"] = [b, "--lake", lake, "rollup", "--route", "support", "--env", "prod",
                                     "--since", day, "--until", next_day, "--format", "csv"]
    results = {k: [] for k in queries}
    outputs = {}
    for _ in range(a.repeat):
        for k, cmd in queries.items():
            el, rss, out = timed(cmd)
            results[k].append((el, rss))
            outputs[k] = out
    print(f"\nThe last day ({day}) of each lake, {a.repeat} interleaved rounds:\n")
    print("| work | 10x lake s (best / median) | peak MiB | 1x lake s (best / median) | peak MiB | ratio (best / median) |")
    print("|---|---|---|---|---|---|")
    for work_name in ("judge", "rollup"):
        (bb, bm), (sb, sm) = (best_median(x[0] for x in results[f"{work_name} {n}"]) for n in ("big", "small"))
        brss, srss = (max(x[1] for x in results[f"{work_name} {n}"]) for n in ("big", "small"))
        print(f"| {work_name} | {bb:.3f} / {bm:.3f} | {brss:,.0f} | {sb:.3f} / {sm:.3f} | {srss:,.0f} | {bb / sb:.2f} / {bm / sm:.2f} |")
    # The one-day window holds the same number of events in both lakes when gen spreads them
    # evenly: say what each judged.
    for name in ("big", "small"):
        v = json.loads(outputs[f"judge {name}"])
        print(f"\n`judge` on the {name} lake: exit code {v.get('exit_code')}, "
              f"{v.get('n_baseline'):,} baseline and {v.get('n_canary'):,} canary events in the window")
    # Maintenance on the big lake: two files per partition, then compact and vacuum.
    big = lakes["big"]
    extra = [b, "gen", "--events", str(a.big // 100), "--seed", "2", "--days", str(a.days), "--start", START.isoformat()]
    el_a, rss_a, _ = timed([b, "--lake", big, "ingest", "--no-progress", "-"], feed=extra)
    el_c, rss_c, _ = timed([b, "--lake", big, "compact"])
    before = du(big)
    el_v, rss_v, _ = timed([b, "--lake", big, "lake", "vacuum", "--retention-hours", "0"])
    after = du(big)
    print(f"\nMaintenance of the {a.big:,}-event lake:\n")
    print("| step | s | peak MiB | lake on disk after |")
    print("|---|---|---|---|")
    print(f"| ingest {a.big // 100:,} more events over the same {a.days} days (two files per partition) | {el_a:.1f} | {rss_a:,.0f} | - |")
    print(f"| compact (every partition back to one file) | {el_c:.1f} | {rss_c:,.0f} | {before / 2**30:.2f} GiB |")
    print(f"| lake vacuum --retention-hours 0 | {el_v:.1f} | {rss_v:,.0f} | {after / 2**30:.2f} GiB |")
    if a.dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
