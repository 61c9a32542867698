#!/usr/bin/env python3
"""The judge's decision targets (#19), measured through the binary on data promptgate did not make.

Each run draws one canary's events with this script's own generator (Python's `random`, seeded;
not `promptgate gen`), in shuffled order, with unit ids, heavy users and rare segments where the
scenario says so, writes them as NDJSON, ingests them into a fresh lake, and asks
`promptgate judge` for a verdict: once at the end, or at 12 looks (`--until` at 1/12, 2/12, ...
of the day; a canary aborted or promoted stops there). It prints, per scenario, the share of runs
aborted and promoted with a 95% Wilson interval, as a Markdown table for BENCHMARKS.md.

    python3 benches/judge_targets.py [--bin PATH] [--runs 20] [--only NAME]

The binary defaults to $CARGO_TARGET_DIR/debug/promptgate (the test build; the judge's numbers
do not depend on the profile).
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

DAY0 = 1_796_083_200_000  # 2026-12-01T00:00:00Z in epoch ms
DAY_MS = 86_400_000
LOOKS = 12


def wilson(k, n, z=1.959964):
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


class Arm:
    """One arm of one segment: how many events and how they are drawn."""

    def __init__(self, n, flagged=0.03, latency=600.0, latency_mult=1.0, tokens=800.0,
                 tokens_mult=1.0, tied=None, constant_tokens=None, units=None, whales=None):
        self.n, self.flagged, self.latency, self.latency_mult = n, flagged, latency, latency_mult
        self.tokens, self.tokens_mult, self.tied, self.constant_tokens = tokens, tokens_mult, tied, constant_tokens
        self.units, self.whales = units, whales

    def events(self, rng, version, model, tier, prefix):
        # Per-unit propensities: flagged rate and latency multiplier.
        units = []
        if self.units:
            for _ in range(self.units):
                a = max(self.flagged * 9, 1e-6)
                units.append((rng.betavariate(a, max((1 - self.flagged) * 9, 1e-6)), rng.lognormvariate(0, 0.3)))
        out = []
        for i in range(self.n):
            unit = None
            p, m = self.flagged, 1.0
            if units:
                if self.whales and rng.random() < self.whales[1]:
                    u = rng.randrange(max(1, int(len(units) * self.whales[0])))
                elif self.whales:
                    u = rng.randrange(max(1, int(len(units) * self.whales[0])), len(units))
                else:
                    u = rng.randrange(len(units))
                p, m = units[u]
                unit = f"{prefix}-u{u}"
            if self.constant_tokens is not None:
                tokens = self.constant_tokens
            elif self.tied:
                tokens = self.tied[1] if rng.random() < self.tied[2] else self.tied[0]
            else:
                tokens = max(1, round(rng.lognormvariate(math.log(self.tokens), 0.6) * self.tokens_mult))
            ev = {
                "event_id": f"{prefix}-{i}",
                "ts": DAY0 + rng.randrange(DAY_MS),
                "route": "support",
                "env": "prod",
                "model": model,
                "tier": tier,
                "prompt_version": version,
                "duration_ms": round(rng.lognormvariate(math.log(self.latency), 0.5) * self.latency_mult * m, 3),
                "tokens_in": int(tokens),
                "tokens_out": rng.randrange(50, 400),
                "status": "flagged" if rng.random() < p else "ok",
            }
            if unit:
                ev["unit_id"] = unit
            out.append(ev)
        return out


def healthy(n, **kw):
    return Arm(n, **kw)


def nine_uneven(per_arm, canary=lambda name, b: b):
    shares = [("gpt-a", "free", .40, .03, 600.0), ("gpt-a", "pro", .20, .02, 900.0),
              ("gpt-b", "free", .12, .05, 450.0), ("gpt-b", "pro", .10, .03, 1200.0),
              ("gpt-c", "free", .08, .04, 700.0), ("gpt-c", "pro", .05, .02, 800.0),
              ("gpt-a", "team", .03, .06, 650.0), ("gpt-b", "team", .02, .03, 1500.0)]
    segs = []
    for model, tier, share, flagged, latency in shares:
        b = healthy(int(per_arm * share), flagged=flagged, latency=latency, units=max(50, int(per_arm * share / 20)))
        segs.append((model, tier, b, canary(tier, b)))
    rare = healthy(30, flagged=0.1, latency=2500.0)
    segs.append(("rare-model", "enterprise", rare, canary("rare", rare)))
    return segs


def one(b, c):
    return [("gpt-a", "free", b, c)]


SCENARIOS = {
    # name: (segments(per run), looks, policy TOML or None, target text)
    "flagged at the threshold (1.5x), 12K per arm": (lambda: one(healthy(12000), healthy(12000, flagged=0.045)), LOOKS, None, "abort <= 10%, promote <= 10%"),
    "p95 duration at the threshold (1.25x), 12K per arm": (lambda: one(healthy(12000), healthy(12000, latency_mult=1.25)), LOOKS, None, "abort <= 10%, promote <= 10%"),
    "p95 tokens_in at the threshold (1.25x), 12K per arm": (lambda: one(healthy(12000), healthy(12000, tokens_mult=1.25)), LOOKS, None, "abort <= 10%, promote <= 10%"),
    "flagged inside the threshold (1.4x), 20K per arm": (lambda: one(healthy(20000), healthy(20000, flagged=0.042)), LOOKS, None, "abort <= 10%"),
    "p95 duration inside (1.2x), 20K per arm": (lambda: one(healthy(20000), healthy(20000, latency_mult=1.2)), LOOKS, None, "abort <= 10%"),
    "A/A over 9 uneven segments (one of 30 per arm), 400K events": (lambda: nine_uneven(200000), 1, None, "promote >= 80%"),
    "A/A, one segment, 20K per arm": (lambda: one(healthy(20000), healthy(20000)), 1, None, "promote >= 90%"),
    "doubled flagged rate, 10K per arm": (lambda: one(healthy(10000), healthy(10000, flagged=0.06)), LOOKS, None, "abort >= 90%"),
    # The restatement of the target above (README: the price of honoring the threshold).
    "doubled flagged rate, 16K per arm": (lambda: one(healthy(16000), healthy(16000, flagged=0.06)), LOOKS, None, "abort >= 90%"),
    "p95 +60% in one segment of 10% of traffic, 40K per arm": (
        lambda: [("gpt-a", "free", healthy(36000), healthy(36000)), ("gpt-b", "pro", healthy(4000), healthy(4000, latency_mult=1.6))],
        LOOKS, None, "promote 0%"),
    "avg_tokens_in +50% beside a constant segment, 5K per arm each": (
        lambda: [("gpt-a", "templated", healthy(5000, constant_tokens=800), healthy(5000, constant_tokens=800)),
                 ("gpt-a", "free", healthy(5000), healthy(5000, tokens_mult=1.5))],
        LOOKS, "segment_by = ['model', 'tier']\n[[rules]]\nmetric = 'avg_tokens_in'\nmax_ratio = 1.25\n", "promote 0%"),
    "fixed-horizon A/A with whales (2% of units, 40% of events), 3 x 3K per arm": (
        lambda: [(m, "free", a, a) for m in ("gpt-a", "gpt-b", "gpt-c")
                 for a in [healthy(3000, units=500, whales=(0.02, 0.4))]],
        1, "FIXED", "abort <= 10%"),
}


def default_policy(binary):
    return subprocess.run([binary, "judge", "--print-default-policy"], check=True,
                          capture_output=True, text=True).stdout


def run_once(binary, name, seed, policy_path):
    make, looks, _, _ = SCENARIOS[name]
    rng = random.Random(f"{name}/{seed}")
    events = []
    for s, (model, tier, b, c) in enumerate(make()):
        events += b.events(rng, "v1", model, tier, f"s{s}b")
        events += c.events(rng, "v2", model, tier, f"s{s}c")
    rng.shuffle(events)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "events.ndjson")
        with open(path, "w") as f:
            for e in events:
                f.write(json.dumps(e, separators=(",", ":")))
                f.write("\n")
        lake = os.path.join(d, "lake")
        subprocess.run([binary, "--lake", lake, "ingest", path], check=True, capture_output=True)
        for look in range(1, looks + 1):
            until = DAY0 + DAY_MS * look // looks
            iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(until / 1000)) + "Z"
            args = [binary, "--lake", lake, "judge", "--route", "support", "--baseline", "v1",
                    "--canary", "v2", "--env", "prod", "--until", iso, "--format", "json"]
            if policy_path:
                args += ["--policy", policy_path]
            out = subprocess.run(args, capture_output=True, text=True)
            if out.returncode == 2:
                sys.exit(f"judge failed: {out.stderr}")
            v = json.loads(out.stdout)["verdict"]
            if v in ("abort", "promote", "invalid"):
                return v
        return "continue"


def main():
    ap = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/promptgate-target"))
    ap.add_argument("--bin", default=os.path.join(target, "debug", "promptgate"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--only", default=None, help="run the scenarios whose name contains this")
    a = ap.parse_args()
    print("| scenario (through the binary, seeded runs) | looks | runs | aborted [95% CI] | promoted [95% CI] | target |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name, (_, looks, policy, target_text) in SCENARIOS.items():
            if a.only and a.only not in name:
                continue
            path = None
            if policy == "FIXED":
                path = os.path.join(d, "fixed.toml")
                with open(path, "w") as f:
                    f.write(default_policy(a.bin).replace("sequential = true", "sequential = false"))
            elif policy:
                path = os.path.join(d, "policy.toml")
                with open(path, "w") as f:
                    f.write(policy)
            t = time.time()
            counts = {"abort": 0, "promote": 0, "continue": 0, "invalid": 0}
            for seed in range(a.runs):
                counts[run_once(a.bin, name, seed, path)] += 1
            cell = lambda k: "{} ({:.0f}%) [{:.0f}, {:.0f}]".format(
                counts[k], 100 * counts[k] / a.runs, *(100 * x for x in wilson(counts[k], a.runs)))
            print(f"| {name} | {looks} | {a.runs} | {cell('abort')} | {cell('promote')} | {target_text} |", flush=True)
            print(f"  ({time.time() - t:.0f} s; invalid {counts['invalid']}, continue {counts['continue']})", file=sys.stderr)


if __name__ == "__main__":
    main()
