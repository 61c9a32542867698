//! How many events per arm each default rule needs: to promote a healthy canary, to abort a
//! regression the size of its threshold, and to abort one twice that size. Measured by
//! simulation (`promptgate::judge::simulate`), one segment, equal arms, one look at the stated
//! volume, with the default policy's settings and only the rule in question.
//!
//! Run: `cargo bench --bench judge_volumes` (prints the Markdown table in the README).

use promptgate::judge::simulate::{ArmSpec, Tokens, draw, samples_at};
use promptgate::judge::{Decision, Policy, judge};

const SEEDS: u64 = 100;
const GRID: [usize; 11] = [
    250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000,
];

fn policy(rule: &str) -> Policy {
    let default = Policy::default();
    let mut p = default.clone();
    p.rules.retain(|r| r.name == rule);
    // The bad-label rule is abort-only by default; to measure what proving it would take,
    // treat it as gating here.
    for r in &mut p.rules {
        r.abort_only = false;
    }
    p
}

/// Share of seeds whose verdict is `decision` at `n` events per arm.
fn rate(rule: &str, n: usize, canary: impl Fn(usize) -> ArmSpec, decision: Decision) -> f64 {
    let p = policy(rule);
    let hits = (0..SEEDS)
        .filter(|s| {
            let drawn = draw(
                s * 7919 + n as u64,
                &[("all", ArmSpec::healthy(n), canary(n))],
            );
            judge(samples_at(&drawn, 1.0), &p, None).verdict == decision
        })
        .count();
    hits as f64 / SEEDS as f64
}

/// The smallest volume on the grid at which `decision` happens in at least `target` of runs.
fn needed(
    rule: &str,
    canary: impl Fn(usize) -> ArmSpec + Copy,
    decision: Decision,
    target: f64,
) -> String {
    for n in GRID {
        let r = rate(rule, n, canary, decision);
        if r >= target {
            return format!("{n} ({:.0}%)", 100.0 * r);
        }
    }
    format!("> {}", GRID[GRID.len() - 1])
}

fn main() {
    let healthy = ArmSpec::healthy;
    let flagged = |m: f64| {
        move |n| ArmSpec {
            flagged: 0.03 * m,
            ..ArmSpec::healthy(n)
        }
    };
    let latency = |m: f64| {
        move |n| ArmSpec {
            latency_mult: m,
            ..ArmSpec::healthy(n)
        }
    };
    let tokens = |m: f64| {
        move |n| ArmSpec {
            tokens: Tokens::LogNormal {
                median: 800.0,
                sigma: 0.6,
                mult: m,
            },
            ..ArmSpec::healthy(n)
        }
    };
    let bad = |m: f64| {
        move |n| ArmSpec {
            bad: 0.1 * m,
            ..ArmSpec::healthy(n)
        }
    };
    println!(
        "| rule (default threshold) | promote a healthy canary (80% of runs) | abort at the threshold (50% of runs) | abort at twice the threshold's excess (80% of runs) |"
    );
    println!("|---|---|---|---|");
    println!(
        "| flagged_rate (1.5x, base 3%) | {} | {} | {} |",
        needed("flagged_rate", healthy, Decision::Promote, 0.8),
        needed("flagged_rate", flagged(1.5), Decision::Abort, 0.5),
        needed("flagged_rate", flagged(2.0), Decision::Abort, 0.8),
    );
    println!(
        "| p95_duration_ms (1.25x) | {} | {} | {} |",
        needed("p95_duration_ms", healthy, Decision::Promote, 0.8),
        needed("p95_duration_ms", latency(1.25), Decision::Abort, 0.5),
        needed("p95_duration_ms", latency(1.5), Decision::Abort, 0.8),
    );
    println!(
        "| p95_tokens_in (1.25x) | {} | {} | {} |",
        needed("p95_tokens_in", healthy, Decision::Promote, 0.8),
        needed("p95_tokens_in", tokens(1.25), Decision::Abort, 0.5),
        needed("p95_tokens_in", tokens(1.5), Decision::Abort, 0.8),
    );
    println!(
        "| bad_label_rate (1.1x, base 10%, 10% of events labeled) | {} | {} | {} |",
        needed("bad_label_rate", healthy, Decision::Promote, 0.8),
        needed("bad_label_rate", bad(1.1), Decision::Abort, 0.5),
        needed("bad_label_rate", bad(1.2), Decision::Abort, 0.8),
    );
}
