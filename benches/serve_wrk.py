#!/usr/bin/env python3
"""`promptgate serve` under load and under idle connections (BENCHMARKS.md, "serve").

    python3 benches/serve_wrk.py [--bin PATH] [--secs 8]

Needs a release binary (default: $CARGO_TARGET_DIR/release/promptgate, else
target/release/promptgate) and Debian's `wrk`. Everything runs on loopback on this machine:
the server, wrk and the idle clients share its cores.

1. A registry like the resolve bench's: route `support` with three versions, a default and an
   active rollout at 5% on `prod`.
2. wrk at 8, 64 and 256 keep-alive connections against `/livez` (a constant answer: the ceiling
   of the HTTP stack) and `/v1/resolve` (a new unit every request, so the canary bucket is
   computed each time), one after the other in the same run.
3. 2,000 idle connections (connected, sending nothing): the server's open descriptors and
   resident memory before, while they are held, and after the header timeout has closed them,
   and how many were answered 503 over the connection cap.
"""

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_bin():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "promptgate")


def run(binary, lake, *args):
    out = subprocess.run([binary, "--lake", lake, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)}: exit {out.returncode}: {out.stderr}")
    return out.stdout


def registry(binary, lake):
    for v in ("v1", "v2", "v3"):
        run(binary, lake, "registry", "add", "--route", "support", "--version", v,
            "--file", os.path.join(ROOT, "testdata", "prompts", f"support-{v}.txt"))
    run(binary, lake, "registry", "set-default", "--route", "support", "--version", "v1")
    run(binary, lake, "rollout", "start", "--route", "support", "--env", "prod",
        "--canary", "v2", "--plan", "5,100", "--id", "r-bench")


def proc_status(pid):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss_kib = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return fds, rss_kib


LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/v1/resolve?route=support&env=prod&tier=pro&unit=u" .. counter)
end
"""


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url, conns, secs, script=None):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout", "5s"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": total,
        "rps": rps,
        "p50": to_ms(pct["50"]),
        "p99": to_ms(pct["99"]),
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else "none",
    }


def idle(addr, pid, n):
    host, port = addr.rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 256)), hard))
    before = proc_status(pid)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        socks.append(s)
    time.sleep(1.0)
    held = proc_status(pid)
    refused = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(64).startswith(b"HTTP/1.1 503"):
                refused += 1
        except OSError:
            pass  # nothing to read: a held connection
    return before, held, refused, socks


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=default_bin())
    p.add_argument("--secs", type=int, default=8)
    p.add_argument("--idle", type=int, default=2000)
    a = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: as root, run: apt-get install -y wrk")
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"{a.bin} is missing: run `cargo build --release` first")
    tmp = tempfile.mkdtemp(prefix="promptgate-serve-bench-")
    lake = os.path.join(tmp, "lake")
    registry(a.bin, lake)
    server = subprocess.Popen([a.bin, "--lake", lake, "serve", "--addr", "127.0.0.1:0"],
                              stderr=subprocess.PIPE, text=True)
    try:
        banner = server.stderr.readline()
        addr = re.search(r"http://(\S+)", banner).group(1)
        base = f"http://{addr}"
        lua = os.path.join(tmp, "units.lua")
        with open(lua, "w") as f:
            f.write(LUA)
        print(f"promptgate serve at {base}; wrk -t2, {a.secs} s a run, on {os.cpu_count()} cores "
              "shared with the server")
        print()
        print("| connections | endpoint | requests | req/s | p50 | p99 | non-2xx | socket errors |")
        print("|---|---|---|---|---|---|---|---|")
        for conns in (8, 64, 256):
            for name, url, script in (("GET /livez (ceiling)", f"{base}/livez", None),
                                      ("GET /v1/resolve", base, lua)):
                r = wrk(url, conns, a.secs, script)
                print(f"| {conns} | {name} | {r['requests']:,} | {r['rps']:,.0f} | "
                      f"{r['p50']:.2f} ms | {r['p99']:.2f} ms | {r['non2xx']} | "
                      f"{r['socket_errors']} |", flush=True)
        before, held, refused, socks = idle(addr, server.pid, a.idle)
        print()
        print(f"{a.idle:,} idle connections (server pid {server.pid}):")
        print()
        print("| | open fds | RSS |")
        print("|---|---|---|")
        print(f"| before | {before[0]} | {before[1] / 1024:.1f} MiB |")
        print(f"| {a.idle:,} connected, 1 s later | {held[0]} | {held[1] / 1024:.1f} MiB |")
        start = time.time()
        while time.time() - start < 30 and proc_status(server.pid)[0] > before[0] + 5:
            time.sleep(0.5)
        after = proc_status(server.pid)
        print(f"| {time.time() - start + 1:.1f} s later (header timeout 10 s) | {after[0]} | "
              f"{after[1] / 1024:.1f} MiB |")
        print()
        print(f"answered 503 over the connection cap: {refused:,} of {a.idle:,}")
        for s in socks:
            s.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
