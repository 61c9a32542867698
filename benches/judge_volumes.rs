//! What the judge's decisions cost in events and what they risk, measured by simulation
//! (`promptgate::judge::simulate`) with the default policy: the tables in the README.
//!
//! 1. Events per arm to promote a healthy canary (80% of runs, one look), over one segment and
//!    over nine uneven segments (one of them 30 events per arm).
//! 2. Events per arm to abort a doubled flagged rate and a +60% p95 duration (80% of runs, one
//!    look), each rule alone.
//! 3. Abort and promote rates at and inside each threshold, judged at 12 looks.
//! 4. An A/A canary over a 1 -> 5 -> 25 -> 50% ramp, judged three times a step.
//!
//! Run: `cargo bench --bench judge_volumes` (`--profile dev` for a quicker build; the numbers do
//! not depend on the profile).

use promptgate::judge::simulate::{
    ArmSpec, Tokens, draw, nine_uneven_segments, samples_at, samples_with,
};
use promptgate::judge::{Arm, Decision, Policy, judge};

const SEEDS: u64 = 100;
const GRID: [usize; 10] = [
    500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000,
];

fn only(rule: &str) -> Policy {
    let mut p = Policy::default();
    p.rules.retain(|r| r.name == rule);
    p
}

type Segments = Vec<(&'static str, ArmSpec, ArmSpec)>;

/// Share of seeds whose verdict at one look is `decision`.
fn rate(policy: &Policy, segments: &Segments, decision: Decision, salt: u64) -> f64 {
    let hits = (0..SEEDS)
        .filter(|s| {
            let drawn = draw(s * 7919 + salt, segments);
            judge(samples_at(&drawn, 1.0), policy, None).verdict == decision
        })
        .count();
    hits as f64 / SEEDS as f64
}

/// The smallest volume per arm on the grid at which `decision` happens in 80% of runs.
fn needed(policy: &Policy, segments: impl Fn(usize) -> Segments, decision: Decision) -> String {
    for n in GRID {
        let r = rate(policy, &segments(n), decision, n as u64);
        if r >= 0.8 {
            return format!("{} ({:.0}%)", thousands(n), 100.0 * r);
        }
    }
    format!("more than {}", thousands(GRID[GRID.len() - 1]))
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn healthy(n: usize) -> ArmSpec {
    ArmSpec::healthy(n)
}

/// Over `looks` evenly spaced looks at `n` per arm: shares of runs aborted and promoted.
fn over_looks(policy: &Policy, canary: ArmSpec, n: usize, salt: u64) -> (f64, f64) {
    let segs = vec![("all", healthy(n), ArmSpec { n, ..canary })];
    let (mut abort, mut promote) = (0, 0);
    for s in 0..SEEDS {
        let drawn = draw(s * 7919 + salt, &segs);
        for look in 1..=12 {
            match judge(samples_at(&drawn, look as f64 / 12.0), policy, None).verdict {
                Decision::Abort => {
                    abort += 1;
                    break;
                }
                Decision::Promote => {
                    promote += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    (abort as f64 / SEEDS as f64, promote as f64 / SEEDS as f64)
}

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

fn main() {
    let policy = Policy::default();
    println!("Events per arm, one look, 80% of {SEEDS} runs (default policy):\n");
    println!("| decision | events per arm |");
    println!("|---|---|");
    println!(
        "| promote a healthy canary, one segment | {} |",
        needed(
            &policy,
            |n| vec![("all", healthy(n), healthy(n))],
            Decision::Promote
        )
    );
    println!(
        "| promote a healthy canary, nine uneven segments (one of 30 events per arm) | {} |",
        needed(&policy, nine_uneven_segments, Decision::Promote)
    );
    let flagged2 = |n| ArmSpec {
        flagged: 0.06,
        ..healthy(n)
    };
    let slow = |n| ArmSpec {
        latency_mult: 1.6,
        ..healthy(n)
    };
    println!(
        "| abort a doubled flagged rate (flagged_rate alone) | {} |",
        needed(
            &only("flagged_rate"),
            |n| vec![("all", healthy(n), flagged2(n))],
            Decision::Abort
        )
    );
    println!(
        "| abort a +60% p95 duration (p95_duration_ms alone) | {} |",
        needed(
            &only("p95_duration_ms"),
            |n| vec![("all", healthy(n), slow(n))],
            Decision::Abort
        )
    );
    println!(
        "| abort a doubled flagged rate (default policy, Holm over its 3 gating rules) | {} |",
        needed(
            &policy,
            |n| vec![("all", healthy(n), flagged2(n))],
            Decision::Abort
        )
    );

    println!(
        "\nAt and inside each threshold, judged at 12 looks up to the volume ({SEEDS} runs each):\n"
    );
    println!("| canary | events per arm | aborted | promoted |");
    println!("|---|---|---|---|");
    let tokens = |m: f64| Tokens::LogNormal {
        median: 800.0,
        sigma: 0.6,
        mult: m,
    };
    let cases = [
        (
            "flagged 1.5x (at the threshold)",
            ArmSpec {
                flagged: 0.045,
                ..healthy(0)
            },
            12_000,
        ),
        (
            "flagged 1.4x (inside)",
            ArmSpec {
                flagged: 0.042,
                ..healthy(0)
            },
            20_000,
        ),
        (
            "p95 duration 1.25x (at)",
            ArmSpec {
                latency_mult: 1.25,
                ..healthy(0)
            },
            12_000,
        ),
        (
            "p95 duration 1.2x (inside)",
            ArmSpec {
                latency_mult: 1.2,
                ..healthy(0)
            },
            20_000,
        ),
        (
            "p95 tokens_in 1.25x (at)",
            ArmSpec {
                tokens: tokens(1.25),
                ..healthy(0)
            },
            12_000,
        ),
        (
            "p95 tokens_in 1.2x (inside)",
            ArmSpec {
                tokens: tokens(1.2),
                ..healthy(0)
            },
            20_000,
        ),
    ];
    for (i, (what, canary, n)) in cases.into_iter().enumerate() {
        let (a, p) = over_looks(&policy, canary, n, 1_000 + i as u64);
        println!("| {what} | {} | {} | {} |", thousands(n), pct(a), pct(p));
    }

    println!(
        "\nA/A over a ramp (1 -> 5 -> 25 -> 50%, 20,000 events a step, two tiers 70/30, three looks a step; {SEEDS} runs):\n"
    );
    let steps = [0.01, 0.05, 0.25, 0.5];
    let (mut looks, mut c, mut b) = (Vec::new(), 0.0, 0.0);
    for s in steps {
        for _ in 0..3 {
            c += s * 20_000.0 / 3.0;
            b += (1.0 - s) * 20_000.0 / 3.0;
            looks.push((b as usize, c as usize, s));
        }
    }
    let segs = vec![
        ("free", healthy(b as usize), healthy(c as usize)),
        ("pro", healthy(b as usize), healthy(c as usize)),
    ];
    let weights = [0.7, 0.3];
    let (mut abort, mut promote_at) = (0, vec![0; steps.len()]);
    for s in 0..SEEDS {
        let drawn = draw(s * 7919 + 77, &segs);
        for (i, (nb, nc, _)) in looks.iter().enumerate() {
            let v = judge(
                samples_with(&drawn, |seg, arm, _| {
                    let n = if arm == Arm::Canary { *nc } else { *nb };
                    (n as f64 * weights[seg]) as usize
                }),
                &policy,
                None,
            )
            .verdict;
            if v == Decision::Abort {
                abort += 1;
                break;
            }
            if v == Decision::Promote {
                promote_at[i / 3] += 1;
                break;
            }
        }
    }
    println!("| aborted | promoted at 1% | at 5% | at 25% | at 50% | still open |");
    println!("|---|---|---|---|---|---|");
    let promoted: usize = promote_at.iter().sum();
    println!(
        "| {} | {} | {} | {} | {} | {} |",
        pct(abort as f64 / SEEDS as f64),
        pct(promote_at[0] as f64 / SEEDS as f64),
        pct(promote_at[1] as f64 / SEEDS as f64),
        pct(promote_at[2] as f64 / SEEDS as f64),
        pct(promote_at[3] as f64 / SEEDS as f64),
        pct((SEEDS as usize - abort - promoted) as f64 / SEEDS as f64),
    );
}
