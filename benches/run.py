#!/usr/bin/env python3
"""promptgate benchmark, side by side with DuckDB on the same files.

    python3 benches/run.py                 # 1M and 10M events
    python3 benches/run.py --sizes 1000000 # just 1M

Needs: a release build (built here with `cargo build --release`) and `pip install duckdb`.
For each size: generate NDJSON with `promptgate gen`, then measure
  * ingest: NDJSON -> Parquet lake (promptgate ingest) vs DuckDB COPY (read_json -> zstd Parquet),
  * the volume rollup (queries/prompt_version_rollup.sql, route=support env=prod) over each result,
  * judging one route (promptgate judge) on the same lake,
with wall time and peak RSS of each process. The rollup and the judge run in turn, --repeat
rounds, and both the best and the median time are reported (this VM's timings are noisy).
Prints Markdown.
"""
import argparse, json, os, platform, resource, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/promptgate-release"))
BIN = os.path.join(TARGET, "release", "promptgate")

DUCK_CONVERT = """
import duckdb, sys
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute(f\"\"\"COPY (SELECT * FROM read_json('{sys.argv[1]}', format='newline_delimited',
  columns={{event_id:'VARCHAR', ts:'TIMESTAMPTZ', route:'VARCHAR', env:'VARCHAR', model:'VARCHAR',
  tier:'VARCHAR', prompt_version:'VARCHAR', prompt_sha:'VARCHAR', duration_ms:'DOUBLE',
  tokens_in:'BIGINT', tokens_out:'BIGINT', status:'VARCHAR', input:'VARCHAR', output:'VARCHAR',
  attributes:'JSON', label:'VARCHAR'}}))
  TO '{sys.argv[2]}' (FORMAT parquet, COMPRESSION zstd)\"\"\")
"""

DUCK_ROLLUP = """
import duckdb, sys, time
con = duckdb.connect()
con.execute("SET threads TO 2")
sql = open(sys.argv[2]).read().replace('$route', "'support'").replace('$env', "'prod'")
sql = sql.replace('FROM llm_events', f"FROM read_parquet('{sys.argv[1]}', hive_partitioning=true)")
best = 1e9
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); rows = con.execute(sql).fetchall(); best = min(best, time.perf_counter() - t)
print(best)
"""


def measured(cmd, stdout=subprocess.DEVNULL):
    """Runs cmd in a fresh child; returns (seconds, peak RSS MiB, stdout)."""
    wrapper = ("import resource, subprocess, sys, time, json\n"
               "t = time.perf_counter()\n"
               "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)\n"
               "el = time.perf_counter() - t\n"
               "sys.stderr.write(json.dumps([el, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode]) + '\\n')\n"
               "sys.stdout.buffer.write(p.stdout)\n")
    p = subprocess.run([sys.executable, "-c", wrapper] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    el, rss_kb, rc = json.loads(p.stderr.decode().strip().splitlines()[-1])
    if rc not in (0, 1, 3):
        raise SystemExit(f"{cmd} failed with {rc}")
    return el, rss_kb / 1024, p.stdout.decode()


def interleaved(n, *cmds):
    """Runs the commands in turn, n rounds, so machine noise hits each alike. For each command:
    (best s, median s, peak RSS MiB)."""
    runs = [[] for _ in cmds]
    for _ in range(n):
        for i, cmd in enumerate(cmds):
            runs[i].append(measured(cmd))
    out = []
    for r in runs:
        times = sorted(x[0] for x in r)
        out.append((times[0], times[len(times) // 2], max(x[1] for x in r)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir, removed after)")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
    import duckdb
    work = a.dir or tempfile.mkdtemp(prefix="promptgate-bench-")
    os.makedirs(work, exist_ok=True)
    rollup_sql = os.path.join(ROOT, "queries", "prompt_version_rollup.sql")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
          f"{platform.platform()}; duckdb {duckdb.__version__} (2 threads)\n")
    print("| events | NDJSON MB | tool | ingest s | events/s | MB/s | ingest peak MiB | rollup s (best / median) | rollup peak MiB | judge s (best / median) | judge peak MiB | judge / rollup (best / median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    appends = []
    for n in [int(s) for s in a.sizes.split(",")]:
        nd = os.path.join(work, f"events-{n}.ndjson")
        with open(nd, "wb") as f:
            subprocess.run([BIN, "gen", "--events", str(n), "--seed", "1", "--days", "7"], stdout=f, check=True)
        os.sync()  # let the generated file's writeback finish before timing anything
        mb = os.path.getsize(nd) / 1e6
        lake = os.path.join(work, f"lake-{n}")
        shutil.rmtree(lake, ignore_errors=True)
        t, rss, _ = measured([BIN, "--lake", lake, "ingest", "--no-progress", nd])
        (rt, rmed, rrss), (jt, jmed, jrss) = interleaved(
            a.repeat,
            [BIN, "--lake", lake, "sql", "-f", rollup_sql, "--param", "route=support", "--param", "env=prod", "--format", "csv"],
            [BIN, "--lake", lake, "judge", "--route", "support", "--baseline", "v1", "--canary", "v2", "--env", "prod", "--format", "json"])
        print(f"| {n:,} | {mb:,.0f} | promptgate | {t:.2f} | {n / t:,.0f} | {mb / t:,.0f} | {rss:,.0f} | {rt:.3f} / {rmed:.3f} | {rrss:,.0f} | {jt:.3f} / {jmed:.3f} | {jrss:,.0f} | {jt / rt:.2f} / {jmed / rmed:.2f} |")
        pq = os.path.join(work, f"duck-{n}.parquet")
        os.sync()
        dt, drss, _ = measured([sys.executable, "-c", DUCK_CONVERT, nd, pq])
        _, drrss, out = measured([sys.executable, "-c", DUCK_ROLLUP, pq, rollup_sql, str(a.repeat)])
        drt = float(out.strip())
        print(f"| {n:,} | {mb:,.0f} | duckdb | {dt:.2f} | {n / dt:,.0f} | {mb / dt:,.0f} | {drss:,.0f} | {drt:.3f} | {drrss:,.0f} | - | - | - |")
        os.remove(nd)
        # Appending a tenth more (new events, another seed) to the lake just built: what a daily
        # ingest into a grown lake costs, against the same events into an empty lake.
        extra = os.path.join(work, f"append-{n}.ndjson")
        with open(extra, "wb") as f:
            subprocess.run([BIN, "gen", "--events", str(n // 10), "--seed", "2", "--days", "7"], stdout=f, check=True)
        os.sync()
        empty = os.path.join(work, f"empty-{n}")
        shutil.rmtree(empty, ignore_errors=True)
        et, _, _ = measured([BIN, "--lake", empty, "ingest", "--no-progress", extra])
        at, arss, _ = measured([BIN, "--lake", lake, "ingest", "--no-progress", extra])
        appends.append(f"| {n // 10:,} into {n:,} | {at:.2f} | {et:.2f} | {arss:,.0f} |")
        shutil.rmtree(empty, ignore_errors=True)
        os.remove(extra)
        sys.stdout.flush()
    print("\n| promptgate: append events into the lake | ingest s | same events into an empty lake s | peak MiB |")
    print("|---|---|---|---|")
    print("\n".join(appends))
    if a.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    print("\npromptgate rollup/judge times are whole-process (start, plan, read, print); DuckDB's rollup is the query alone in a warm connection.")


if __name__ == "__main__":
    main()
