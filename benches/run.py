#!/usr/bin/env python3
"""promptgate benchmark, side by side with DuckDB on the same files.

    python3 benches/run.py                 # issue #24's table: every row, one command
    python3 benches/run.py --before-bin OLD  # ... and the old binary's results must be identical
    python3 benches/run.py --targets '' --sizes 1000000,10000000
                                           # the older sections: `gen` input, 1M and 10M events
    python3 benches/run.py --targets '' --shuffled 1000000:7,5000000:7,1000000:365
                                           # ... input written by DuckDB in random order
    python3 benches/run.py --targets '' --s3 1000000
                                           # ... local disk against a local S3 server (moto)

Needs: a release build (built here with `cargo build --release` unless --bin names one), and
`pip install duckdb duckdb-cli` (DuckDB's Python module generates the input; its CLI is the
other side of every query row, as a whole process like promptgate's).

The targets table (the default): inputs written by DuckDB in random time order (events:days:unit
pool, `--targets`), each ingested once by promptgate into a fresh lake and once by DuckDB's
sorted, partitioned `COPY` (3 interleaved rounds). DuckDB's queries then read exactly the lake's
live files (`promptgate lake files --json`), so both sides read the same bytes. Per input,
`--repeat` rounds interleave, as whole processes:
  * the seed rollup (queries/prompt_version_rollup.sql, route=support env=prod): promptgate's
    `sql -f` against DuckDB's CLI running the same SQL;
  * the judge (`judge --route support --baseline v1 --canary v2 --env prod`) against DuckDB's CLI
    computing the judge's inputs: the canary's span, then per segment (model, tier) and arm the
    count, distinct units, per-unit sums and sums of squares of events, flags, duration and
    tokens_in, and the 93/95/97th percentiles of duration and tokens_in.
Best and median of each, and the ratio promptgate / DuckDB of each. Prints Markdown.
"""
import argparse, json, os, platform, resource, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/promptgate-target"))
BIN = os.path.join(TARGET, "release", "promptgate")

DUCK_CONVERT = """
import duckdb, sys
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
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
con.execute("SET enable_progress_bar = false")
con.execute("SET threads TO 2")
sql = sys.argv[1]
best = 1e9
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); rows = con.execute(sql).fetchall(); best = min(best, time.perf_counter() - t)
print(best)
"""


# Events written by DuckDB, not by promptgate: random timestamps over `days` days (so the file is
# in random time order), random segments, text of random length. NDJSON with RFC 3339 times.
DUCK_GEN = """
import duckdb, sys
n, days, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
pool = int(sys.argv[4]) if len(sys.argv) > 4 else 0
# Units drawn from a pool of `pool` ids (none when 0): a pool of N/50 makes heavy units.
unit = f", 'user-' || (random() * {pool})::BIGINT::VARCHAR AS unit_id" if pool else ""
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("SET threads TO 2")
con.execute(f\"\"\"COPY (
  SELECT 'ev-' || i::VARCHAR || '-' || md5(i::VARCHAR)[1:12] AS event_id,
    strftime(TIMESTAMP '2026-01-01' + to_microseconds((random() * {days} * 86400e6)::BIGINT),
             '%Y-%m-%dT%H:%M:%S.%fZ') AS ts,
    ['chat', 'search', 'summarize', 'support'][1 + (random() * 4)::INT % 4] AS route,
    CASE WHEN random() < 0.8 THEN 'prod' ELSE 'staging' END AS env,
    ['model-a', 'model-b', 'model-c'][1 + (random() * 3)::INT % 3] AS model,
    ['free', 'pro', 'enterprise'][1 + (random() * 3)::INT % 3] AS tier,
    v AS prompt_version, 'sha-' || v AS prompt_sha,
    round(40 + random() * random() * 3000, 3) AS duration_ms,
    (random() * 3000)::BIGINT AS tokens_in, (random() * 600)::BIGINT AS tokens_out,
    CASE WHEN random() < 0.03 THEN 'flagged' WHEN random() < 0.01 THEN 'error' ELSE 'ok' END AS status,
    repeat('the quick brown fox ', 1 + (random() * 12)::INT) AS input,
    repeat('jumps over the lazy dog ', 1 + (random() * 12)::INT) AS output,
    '{{"temperature":0.' || (random() * 9)::INT::VARCHAR || '}}' AS attributes{unit}
  FROM (SELECT i, CASE WHEN random() < 0.05 THEN 'v2' ELSE 'v1' END AS v FROM range({n}) t(i))
) TO '{out}' (FORMAT json)\"\"\")
"""

# DuckDB's sorted, partitioned COPY of the same NDJSON: the like-for-like layout to promptgate's.
DUCK_COPY_SORTED = """
import duckdb, sys
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("SET threads TO 2")
con.execute(f\"\"\"COPY (SELECT *, CAST(ts AS DATE) AS date FROM read_json('{sys.argv[1]}',
  format='newline_delimited', columns={{event_id:'VARCHAR', ts:'TIMESTAMP', route:'VARCHAR',
  env:'VARCHAR', model:'VARCHAR', tier:'VARCHAR', prompt_version:'VARCHAR', prompt_sha:'VARCHAR',
  duration_ms:'DOUBLE', tokens_in:'BIGINT', tokens_out:'BIGINT', status:'VARCHAR', input:'VARCHAR',
  output:'VARCHAR', attributes:'VARCHAR', unit_id:'VARCHAR'}}) ORDER BY route, ts)
  TO '{sys.argv[2]}' (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd)\"\"\")
"""

# One round of DuckDB's queries on its partitioned output, warm connection (a first run warms it):
# the volume rollup, and the segmented rollup that is DuckDB's nearest equivalent of the judge.
DUCK_ROUND = """
import duckdb, sys, time
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("SET threads TO 2")
out = []
for q in sys.argv[1:]:
    con.execute(q).fetchall()
    t = time.perf_counter(); con.execute(q).fetchall(); out.append(time.perf_counter() - t)
print(*out)
"""


def duck_rollup(src, rollup_sql):
    """The volume rollup (queries/prompt_version_rollup.sql, route=support env=prod) for DuckDB,
    reading `src` (a `read_parquet(...)` expression) in place of `llm_events`."""
    rollup = "\n".join(line for line in open(rollup_sql).read().splitlines() if not line.startswith("--"))
    return rollup.replace('$route', "'support'").replace('$env', "'prod'").replace('FROM llm_events', 'FROM ' + src)


def duck_queries(out, rollup_sql):
    """DuckDB's volume rollup and segmented rollup (the judge's aggregates without its tests)
    over the partitioned Parquet in `out`."""
    src = f"read_parquet('{out}/*/*.parquet', hive_partitioning=true)"
    rollup = duck_rollup(src, rollup_sql)
    segmented = f"""SELECT model, tier, prompt_version, COUNT(*),
  quantile_cont(duration_ms, 0.95), quantile_cont(tokens_in, 0.95),
  AVG(CASE WHEN status = 'flagged' THEN 1.0 ELSE 0.0 END)
  FROM {src} WHERE route = 'support' AND env = 'prod' AND prompt_version IN ('v1', 'v2')
  GROUP BY ALL"""
    return rollup, segmented


def duckdb_cli_version():
    cli = duckdb_cli()
    if not cli:
        return "none"
    return subprocess.run([cli, "--version"], stdout=subprocess.PIPE).stdout.decode().split()[0]


def commit():
    """The checkout's commit (with `+changes` when its tree differs from it)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE).stdout.decode().strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src"], cwd=ROOT).returncode != 0
    return head + ("+changes" if dirty else "")


def duckdb_cli():
    """The DuckDB command-line binary (`pip install duckdb-cli`), or None: with it, DuckDB's
    queries are also timed as whole processes, like promptgate's."""
    try:
        import duckdb_cli
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(duckdb_cli.__file__), "duckdb")
    return path if os.access(path, os.X_OK) else None


# The judge's two reads (issue #8's floor), as plain SQL over the same lake: the canary's span,
# and every column the default policy's scan decodes, for both arms in the window.
JUDGE_SPAN_SQL = ("SELECT min(ts), max(ts) FROM llm_events "
                  "WHERE route = 'support' AND env = 'prod' AND prompt_version = 'v2'")
JUDGE_SCAN_SQL = ("SELECT count(*), max(model), max(tier), max(prompt_version), max(prompt_sha), "
                  "max(status), max(unit_id), max(duration_ms), max(tokens_in) FROM llm_events "
                  "WHERE route = 'support' AND env = 'prod' AND prompt_version IN ('v1', 'v2')")


def files_per_partition(table_dir):
    """(partitions, min, max) Parquet files per `date=` partition."""
    counts = [len([f for f in os.listdir(os.path.join(table_dir, d)) if f.endswith(".parquet")])
              for d in os.listdir(table_dir) if d.startswith("date=")]
    return len(counts), min(counts), max(counts)


def shuffled_section(spec, repeat, work, rollup_sql):
    """Input written by DuckDB in random timestamp order: ingest, files per partition, and the
    rollup and judge on the freshly ingested lake, each beside DuckDB, interleaved."""
    print("\n### Input written by DuckDB, in random timestamp order\n")
    print("| events | days | NDJSON MB | tool | ingest s (best / median) | events/s (best) | peak MiB | partitions | files per partition | rollup s (best / median) | judge or segmented rollup s (best / median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    processes = []
    for item in spec.split(","):
        n, days = (int(x) for x in item.split(":"))
        nd = os.path.join(work, f"duck-{n}-{days}.ndjson")
        subprocess.run([sys.executable, "-c", DUCK_GEN, str(n), str(days), nd], check=True)
        os.sync()
        mb = os.path.getsize(nd) / 1e6
        lake, out = os.path.join(work, "lake-shuffled"), os.path.join(work, "duck-partitioned")
        ingests = {"promptgate": [], "duckdb": []}
        for _ in range(3):
            shutil.rmtree(lake, ignore_errors=True)
            ingests["promptgate"].append(measured([BIN, "--lake", lake, "ingest", "--no-progress", nd]))
            shutil.rmtree(out, ignore_errors=True)
            os.sync()
            ingests["duckdb"].append(measured([sys.executable, "-c", DUCK_COPY_SORTED, nd, out]))
            os.sync()
        rounds = {k: [] for k in ("pg_rollup", "pg_judge", "duck_rollup", "duck_segmented",
                                  "pg_floor", "cli_rollup", "cli_segmented")}
        queries = duck_queries(out, rollup_sql)
        cli = duckdb_cli()
        for _ in range(repeat):
            rounds["pg_rollup"].append(measured(rollup_cmd(BIN, lake, rollup_sql))[0])
            rounds["pg_judge"].append(measured(judge_cmd(BIN, lake))[0])
            r, sgm = (float(x) for x in measured([sys.executable, "-c", DUCK_ROUND, *queries])[2].split())
            rounds["duck_rollup"].append(r)
            rounds["duck_segmented"].append(sgm)
            # Whole processes on both sides: promptgate opening the lake and answering `SELECT 1`
            # (its floor: start, read the lake's version, register the tables), and DuckDB's CLI.
            rounds["pg_floor"].append(measured([BIN, "--lake", lake, "sql", "SELECT 1", "--format", "csv"])[0])
            if cli:
                for key, q in zip(("cli_rollup", "cli_segmented"), queries):
                    rounds[key].append(measured([cli, "-c", f"SET threads TO 2; {q};"])[0])
        for tool, table_dir, q1, q2 in (("promptgate", os.path.join(lake, "llm_events"), "pg_rollup", "pg_judge"),
                                         ("duckdb", out, "duck_rollup", "duck_segmented")):
            ib, imed = best_median(x[0] for x in ingests[tool])
            peak = max(x[1] for x in ingests[tool])
            parts, lo, hi = files_per_partition(table_dir)
            (rb, rmed), (jb, jmed) = best_median(rounds[q1]), best_median(rounds[q2])
            files = f"{lo}" if lo == hi else f"{lo}-{hi}"
            print(f"| {n:,} | {days} | {mb:,.0f} | {tool} | {ib:.2f} / {imed:.2f} | {n / ib:,.0f} | {peak:,.0f} | {parts} | {files} | {rb:.3f} / {rmed:.3f} | {jb:.3f} / {jmed:.3f} |")
        if cli:
            fb, (pr, _), (pj, _), (cr, _), (cs, _) = (best_median(rounds[k]) for k in
                                                      ("pg_floor", "pg_rollup", "pg_judge", "cli_rollup", "cli_segmented"))
            (wr, _), (ws, _) = best_median(rounds["duck_rollup"]), best_median(rounds["duck_segmented"])
            processes.append(f"| {n:,} | {days} | {fb[0]:.3f} / {fb[1]:.3f} | {pr:.3f} | {cr:.3f} | {pr / cr:.2f} | {pj:.3f} | {cs:.3f} | {pj / cs:.2f} | {wr:.3f} | {ws:.3f} | {fb[0] / wr:.2f} |")
        sys.stdout.flush()
        os.remove(nd)
        shutil.rmtree(lake, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    print("\npromptgate's rollup and judge are whole processes; DuckDB's queries run alone in a warm connection. "
          "DuckDB's ingest is `COPY (SELECT ... ORDER BY route, ts) TO ... (PARTITION_BY (date))` of the same NDJSON, no validation or dedupe.")
    if processes:
        print("\nWhole processes on both sides (best of the same rounds), and promptgate's floor: `sql 'SELECT 1'` on the lake.\n")
        print("| events | days | promptgate floor s (best / median) | promptgate rollup s | DuckDB CLI rollup s | ratio | promptgate judge s | DuckDB CLI segmented rollup s | ratio | DuckDB warm rollup s | DuckDB warm segmented s | floor / warm rollup |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(processes))


# DuckDB computing the judge's inputs over `{src}`: the canary's span within route/env, then per
# segment (model, tier) and arm, over that span: events, distinct units, per-unit sums and sums
# of squares (events, flags, duration, tokens_in, and their cross products with the events, as
# cluster-robust ratio variances need), and the 93/95/97th percentiles of duration and tokens_in.
DUCK_JUDGE_INPUTS = """WITH ev AS (
  SELECT model, tier, prompt_version, unit_id, ts, duration_ms, tokens_in,
         CASE WHEN status = 'flagged' THEN 1 ELSE 0 END AS flagged
  FROM {src}
  WHERE route = 'support' AND env = 'prod' AND prompt_version IN ('v1', 'v2')),
span AS (SELECT min(ts) AS lo, max(ts) AS hi FROM ev WHERE prompt_version = 'v2'),
w AS (SELECT ev.* FROM ev, span WHERE ev.ts BETWEEN span.lo AND span.hi),
per_unit AS (
  SELECT model, tier, prompt_version, unit_id, count(*) AS n, sum(flagged) AS f,
         sum(duration_ms) AS d, sum(tokens_in) AS t
  FROM w GROUP BY ALL),
units AS (
  SELECT model, tier, prompt_version, count(*) AS units, sum(n) AS n, sum(n * n) AS nn,
         sum(f) AS f, sum(f * f) AS ff, sum(f * n) AS fn, sum(d) AS d, sum(d * d) AS dd,
         sum(d * n) AS dn, sum(t) AS t, sum(t * t) AS tt, sum(t * n) AS tn
  FROM per_unit GROUP BY ALL),
pct AS (
  SELECT model, tier, prompt_version,
         quantile_cont(duration_ms, [0.93, 0.95, 0.97]) AS duration_q,
         quantile_cont(tokens_in, [0.93, 0.95, 0.97]) AS tokens_q
  FROM w GROUP BY ALL)
SELECT * FROM units JOIN pct USING (model, tier, prompt_version) ORDER BY ALL"""


def live_files_source(lake):
    """A DuckDB `read_parquet([...])` of exactly the files the lake's latest version of
    `llm_events` reads (`promptgate lake files --json`), with the `date=` partition column."""
    out = subprocess.run([BIN, "--lake", lake, "lake", "files", "--table", "llm_events", "--json"],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    paths = [json.loads(line)["path"] for line in out.splitlines() if line.strip()]
    paths = [p if os.path.isabs(p) else os.path.join(os.path.abspath(lake), p) for p in paths]
    for p in paths:
        if not os.path.exists(p):
            raise SystemExit(f"lake files listed {p}, which does not exist")
    listed = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
    return f"read_parquet([{listed}], hive_partitioning = true)", len(paths)


def identical_results(before, after, lake_before, lake_after):
    """The old and the new binary's lakes of the same input give identical `SELECT * ... ORDER
    BY` output (each binary reading its own lake), and their judges identical verdicts and
    bounds on it. Returns a list of differences (empty: identical)."""
    diffs = []
    for table, order in (("llm_events", "event_id"), ("llm_labels", "label_id")):
        outs = [subprocess.run([b, "--lake", l, "sql", f"SELECT * FROM {table} ORDER BY {order}", "--format", "csv"],
                               stdout=subprocess.PIPE, check=True).stdout
                for b, l in ((before, lake_before), (after, lake_after))]
        if outs[0] != outs[1]:
            diffs.append(f"{table}: SELECT * ORDER BY {order} differs")
    verdicts = [subprocess.run(judge_cmd(b, l), stdout=subprocess.PIPE).stdout
                for b, l in ((before, lake_before), (after, lake_after))]
    if verdicts[0] != verdicts[1]:
        diffs.append("judge --format json differs")
    return diffs


def targets_section(spec, repeat, work, rollup_sql, before_bin):
    """Issue #24's table: per input (events:days:unit pool), ingest against DuckDB's sorted,
    partitioned COPY, and the seed rollup and the judge against DuckDB's CLI on the lake's live
    files, all whole processes, interleaved."""
    cli = duckdb_cli()
    if not cli:
        raise SystemExit("the targets table needs DuckDB's CLI: pip install duckdb-cli")
    rows, checks = [], []
    for item in spec.split(","):
        n, days, pool = (int(x) for x in item.split(":"))
        nd = os.path.join(work, f"target-{n}-{days}-{pool}.ndjson")
        subprocess.run([sys.executable, "-c", DUCK_GEN, str(n), str(days), nd, str(pool)], check=True)
        os.sync()
        lake, out = os.path.join(work, "lake-target"), os.path.join(work, "duck-target")
        ingests = {"promptgate": [], "duckdb": []}
        for _ in range(3):
            shutil.rmtree(lake, ignore_errors=True)
            os.sync()
            ingests["promptgate"].append(measured([BIN, "--lake", lake, "ingest", "--no-progress", nd]))
            shutil.rmtree(out, ignore_errors=True)
            os.sync()
            ingests["duckdb"].append(measured([sys.executable, "-c", DUCK_COPY_SORTED, nd, out]))
            os.sync()
        if before_bin:
            old_lake = os.path.join(work, "lake-target-before")
            shutil.rmtree(old_lake, ignore_errors=True)
            measured([before_bin, "--lake", old_lake, "ingest", "--no-progress", nd])
            diffs = identical_results(before_bin, BIN, old_lake, lake)
            checks.append(f"| {n:,} | {days} | {pool:,} | {'identical' if not diffs else '; '.join(diffs)} |")
            shutil.rmtree(old_lake, ignore_errors=True)
        src, nfiles = live_files_source(lake)
        script = os.path.join(work, "duck-query.sql")
        cmds = {"pg_rollup": rollup_cmd(BIN, lake, rollup_sql), "pg_judge": judge_cmd(BIN, lake)}
        for key, sql in (("duck_rollup", duck_rollup(src, rollup_sql)),
                         ("duck_judge", DUCK_JUDGE_INPUTS.format(src=src))):
            path = f"{script}.{key}"
            with open(path, "w") as f:
                f.write(f"SET threads TO 2;\n{sql};\n")
            cmds[key] = [cli, "-init", "/dev/null", "-batch", "-f", path]
        runs = {k: [] for k in cmds}
        for _ in range(repeat):
            for k in ("pg_rollup", "duck_rollup", "pg_judge", "duck_judge"):
                runs[k].append(measured(cmds[k])[0])
        (pi, pimed), (di, dimed) = (best_median(x[0] for x in ingests[t]) for t in ("promptgate", "duckdb"))
        label = f"{n / 1e6:g}M / {days} days, units from a pool of N/{n // pool}" if pool else f"{n / 1e6:g}M / {days} days"
        rows.append((label, nfiles, "ingest (vs DuckDB's sorted, partitioned COPY)", (pi, pimed), (di, dimed)))
        rows.append((label, nfiles, "seed rollup (vs DuckDB CLI)", best_median(runs["pg_rollup"]), best_median(runs["duck_rollup"])))
        rows.append((label, nfiles, "judge (vs DuckDB CLI computing its inputs)", best_median(runs["pg_judge"]), best_median(runs["duck_judge"])))
        os.remove(nd)
        shutil.rmtree(lake, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    print("| input (written by DuckDB, random time order) | lake files | work | promptgate s (best / median) | DuckDB s (best / median) | ratio (best / median) |")
    print("|---|---|---|---|---|---|")
    for label, nfiles, work_name, (pb, pm), (db, dm) in rows:
        print(f"| {label} | {nfiles} | {work_name} | {pb:.3f} / {pm:.3f} | {db:.3f} / {dm:.3f} | {pb / db:.2f} / {pm / dm:.2f} |")
    if checks:
        print("\nThe old binary's lake and judge against the new one's, same input:\n")
        print("| events | days | unit pool | result |")
        print("|---|---|---|---|")
        print("\n".join(checks))
    sys.stdout.flush()


def s3_section(n, repeat, work, rollup_sql):
    """The same lake on local disk and on a local S3-compatible server (moto, `pip install
    'moto[server]'`): ingest into a fresh lake, then the rollup and the judge on each, interleaved.
    moto is a Python server on this machine, so this measures promptgate's store path (uploads,
    conditional puts, listing, ranged reads over HTTP) plus moto, not AWS."""
    import socket, urllib.request
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true",
           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
           "PROMPTGATE_WORK_DIR": os.path.join(work, "s3-work")}
    os.environ.update(env)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except Exception:
                time.sleep(0.2)
        import boto3
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bench-lake")
        nd = os.path.join(work, f"s3-{n}.ndjson")
        with open(nd, "wb") as f:
            subprocess.run([BIN, "gen", "--events", str(n), "--seed", "1", "--days", "7"], stdout=f, check=True)
        os.sync()
        ingests = {"local": [], "s3": []}
        for r in range(3):
            local = os.path.join(work, f"s3-local-{r}")
            shutil.rmtree(local, ignore_errors=True)
            ingests["local"].append(measured([BIN, "--lake", local, "ingest", "--no-progress", nd])[0])
            ingests["s3"].append(measured([BIN, "--lake", f"s3://bench-lake/l{r}", "ingest", "--no-progress", nd])[0])
        lakes = {"local": os.path.join(work, "s3-local-0"), "s3": "s3://bench-lake/l0"}
        queries = []
        for name in ("local", "s3"):
            queries.append(rollup_cmd(BIN, lakes[name], rollup_sql))
            queries.append(judge_cmd(BIN, lakes[name]))
        timed = interleaved(repeat, *queries)
        print(f"\n### The same {n:,} events on local disk and on a local S3 server (moto)\n")
        print("| lake | ingest s (best of 3) | rollup s (best / median) | judge s (best / median) |")
        print("|---|---|---|---|")
        for i, name in enumerate(("local", "s3")):
            (rt, rmed, _), (jt, jmed, _) = timed[2 * i], timed[2 * i + 1]
            print(f"| {name} | {min(ingests[name]):.2f} | {rt:.3f} / {rmed:.3f} | {jt:.3f} / {jmed:.3f} |")
        os.remove(nd)
    finally:
        moto.kill()
        moto.wait()


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
    return [summary(r) for r in runs]


def best_median(times):
    """(best, median) of a list of seconds."""
    times = sorted(times)
    return times[0], times[len(times) // 2]


def summary(runs):
    """(best s, median s, peak RSS MiB) of `measured` results of one command."""
    return (*best_median(x[0] for x in runs), max(x[1] for x in runs))


def rollup_cmd(binary, lake, rollup_sql):
    """The volume rollup of route `support` in env `prod` (queries/prompt_version_rollup.sql)."""
    return [binary, "--lake", lake, "sql", "-f", rollup_sql, "--param", "route=support", "--param", "env=prod", "--format", "csv"]


def judge_cmd(binary, lake):
    """The judge of canary v2 against baseline v1 on route `support` in env `prod`."""
    return [binary, "--lake", lake, "judge", "--route", "support", "--baseline", "v1", "--canary", "v2", "--env", "prod", "--format", "json"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="5000000:7:1250000,5000000:7:100000,1000000:365:250000",
                    help="events:days:unit pool of issue #24's table ('' for none)")
    ap.add_argument("--sizes", default="", help="events of `gen` input for the older table, e.g. 1000000,10000000")
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir, removed after)")
    ap.add_argument("--bin", default=None, help="a release binary to measure (default: build one)")
    ap.add_argument("--before-bin", default=None,
                    help="an earlier release binary, measured on the same input in the same rounds (before/after)")
    ap.add_argument("--shuffled", default="",
                    help="events:days of input written by DuckDB in random order ('' for none)")
    ap.add_argument("--s3", type=int, default=0,
                    help="events to measure on local disk against a local S3 server (moto); 0: none")
    a = ap.parse_args()
    global BIN
    if a.bin:
        BIN = os.path.abspath(a.bin)
    else:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
    import duckdb
    work = a.dir or tempfile.mkdtemp(prefix="promptgate-bench-")
    os.makedirs(work, exist_ok=True)
    rollup_sql = os.path.join(ROOT, "queries", "prompt_version_rollup.sql")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
          f"{platform.platform()}; duckdb {duckdb.__version__} (2 threads), CLI {duckdb_cli_version()}; "
          f"commit {commit()}; {time.strftime('%Y-%m-%d')}\n")
    if a.targets:
        targets_section(a.targets, a.repeat, work, rollup_sql,
                        os.path.abspath(a.before_bin) if a.before_bin else None)
    sizes = [int(s) for s in a.sizes.split(",") if s and int(s) > 0]
    if sizes:
        print("\n| events | NDJSON MB | tool | ingest s (best / median) | events/s (best) | MB/s | ingest peak MiB | rollup s (best / median) | rollup peak MiB | judge s (best / median) | judge peak MiB | judge / rollup (best / median) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    appends = []
    floors = []
    for n in sizes:
        nd = os.path.join(work, f"events-{n}.ndjson")
        with open(nd, "wb") as f:
            subprocess.run([BIN, "gen", "--events", str(n), "--seed", "1", "--days", "7"], stdout=f, check=True)
        os.sync()  # let the generated file's writeback finish before timing anything
        mb = os.path.getsize(nd) / 1e6
        lake = os.path.join(work, f"lake-{n}")
        shutil.rmtree(lake, ignore_errors=True)
        bins = [("promptgate", BIN, lake)]
        if a.before_bin:
            before_lake = os.path.join(work, f"lake-before-{n}")
            shutil.rmtree(before_lake, ignore_errors=True)
            bins.insert(0, ("promptgate (before)", os.path.abspath(a.before_bin), before_lake))
        # Ingest rounds interleaved with DuckDB's conversion of the same file (single runs of a
        # whole ingest vary by a third on this VM): best and median of 3, peak RSS of all.
        pq = os.path.join(work, f"duck-{n}.parquet")
        rounds = [[] for _ in range(len(bins) + 1)]
        for _ in range(3):
            for i, (_, b, l) in enumerate(bins):
                shutil.rmtree(l, ignore_errors=True)
                os.sync()
                rounds[i].append(measured([b, "--lake", l, "ingest", "--no-progress", nd]))
            if os.path.exists(pq):
                os.remove(pq)
            os.sync()
            rounds[-1].append(measured([sys.executable, "-c", DUCK_CONVERT, nd, pq]))
        ingests = [summary(r) for r in rounds[:-1]]
        duck_ingest = summary(rounds[-1])
        queries = []
        for _, b, l in bins:
            queries.append(rollup_cmd(b, l, rollup_sql))
            queries.append(judge_cmd(b, l))
        # What the judge must read, through the same engine: the canary's span, and the columns
        # of the default policy's scan (segments, arm, sha, status, unit, two values) with
        # trivial aggregates. Their sum is a floor under the judge's time (issue #8).
        for sql in (JUDGE_SPAN_SQL, JUDGE_SCAN_SQL):
            queries.append([BIN, "--lake", lake, "sql", sql, "--format", "csv"])
        timed = interleaved(a.repeat, *queries)
        floors.append((n, timed[-2], timed[-1], timed[-4], timed[-3]))
        timed = timed[:-2]
        for i, (name, _, _) in enumerate(bins):
            t, tmed, rss = ingests[i]
            (rt, rmed, rrss), (jt, jmed, jrss) = timed[2 * i], timed[2 * i + 1]
            print(f"| {n:,} | {mb:,.0f} | {name} | {t:.2f} / {tmed:.2f} | {n / t:,.0f} | {mb / t:,.0f} | {rss:,.0f} | {rt:.3f} / {rmed:.3f} | {rrss:,.0f} | {jt:.3f} / {jmed:.3f} | {jrss:,.0f} | {jt / rt:.2f} / {jmed / rmed:.2f} |")
        dt, dtmed, drss = duck_ingest
        _, drrss, out = measured([sys.executable, "-c", DUCK_ROLLUP,
                                   duck_rollup(f"read_parquet('{pq}', hive_partitioning=true)", rollup_sql), str(a.repeat)])
        drt = float(out.strip())
        print(f"| {n:,} | {mb:,.0f} | duckdb | {dt:.2f} / {dtmed:.2f} | {n / dt:,.0f} | {mb / dt:,.0f} | {drss:,.0f} | {drt:.3f} | {drrss:,.0f} | - | - | - |")
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
    if floors:
        print("\n| events | canary span query s | the judge's columns read s | span + read s | judge s | rollup s | (span + read) / rollup | judge / (span + read) |")
        print("|---|---|---|---|---|---|---|---|")
        for n, span, scan, rollup, judge in floors:
            floor = span[0] + scan[0]
            print(f"| {n:,} | {span[0]:.3f} / {span[1]:.3f} | {scan[0]:.3f} / {scan[1]:.3f} | {floor:.3f} | {judge[0]:.3f} | {rollup[0]:.3f} | {floor / rollup[0]:.2f} | {judge[0] / floor:.2f} |")
    if appends:
        print("\n| promptgate: append events into the lake | ingest s | same events into an empty lake s | peak MiB |")
        print("|---|---|---|---|")
        print("\n".join(appends))
    if a.shuffled:
        shuffled_section(a.shuffled, a.repeat, work, rollup_sql)
    if a.s3:
        s3_section(a.s3, a.repeat, work, rollup_sql)
    if a.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    if sizes:
        print("\npromptgate rollup/judge times are whole-process (start, plan, read, print); DuckDB's rollup is the query alone in a warm connection.")


if __name__ == "__main__":
    main()
