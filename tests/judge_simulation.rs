//! The judge's error rates and power, measured over many seeds through the library (no lake).
//!
//! Each scenario draws synthetic events per segment and arm (`promptgate::judge::simulate`) and
//! asks the judge, with the default policy, for a verdict: once, or at 20 looks as the data
//! accumulates (what `rollout step` or a cron job does). Every test prints the rate it measured
//! and asserts the bound the judge promises.

use promptgate::judge::simulate::{ArmSpec, Drawn, Tokens, Units, draw, samples_at};
use promptgate::judge::{Decision, Policy, judge};

const RUNS: u64 = 200;
const LOOKS: usize = 20;

fn healthy(n: usize) -> ArmSpec {
    ArmSpec::healthy(n)
}

/// The verdict on all drawn events (one look).
fn once(drawn: &Drawn, policy: &Policy) -> Decision {
    judge(samples_at(drawn, 1.0), policy, None).verdict
}

/// Whether any of `LOOKS` evenly spaced looks (1/20 of the data, 2/20, ..., all of it) gave
/// `decision`. A canary that is aborted or promoted stops there.
fn at_any_look(drawn: &Drawn, policy: &Policy, decision: Decision) -> bool {
    for look in 1..=LOOKS {
        let v = judge(samples_at(drawn, look as f64 / LOOKS as f64), policy, None).verdict;
        if v == decision {
            return true;
        }
        if matches!(v, Decision::Abort | Decision::Promote) {
            return false;
        }
    }
    false
}

/// Share of `runs` seeds (from `first_seed`) for which `f` is true; printed.
fn share(what: &str, runs: u64, first_seed: u64, f: impl Fn(u64) -> bool) -> f64 {
    let hits = (first_seed..first_seed + runs).filter(|s| f(*s)).count();
    let r = hits as f64 / runs as f64;
    eprintln!("{what}: {hits} of {runs} runs ({:.1}%)", 100.0 * r);
    r
}

#[track_caller]
fn at_most(measured: f64, bound: f64, what: &str) {
    assert!(
        measured <= bound,
        "{what} in {:.1}% of runs (bound {:.1}%)",
        100.0 * measured,
        100.0 * bound
    );
}

#[track_caller]
fn at_least(measured: f64, bound: f64, what: &str) {
    assert!(
        measured >= bound,
        "{what} in only {:.1}% of runs (bound {:.1}%)",
        100.0 * measured,
        100.0 * bound
    );
}

fn three_tiers(b: ArmSpec, c: ArmSpec) -> Vec<(&'static str, ArmSpec, ArmSpec)> {
    vec![("free", b, c), ("pro", b, c), ("enterprise", b, c)]
}

#[test]
fn identical_arms_abort_in_at_most_5_percent_over_20_looks() {
    let policy = Policy::default();
    let segs = three_tiers(healthy(2000), healthy(2000));
    let aborted = share("A/A aborted at some look", RUNS, 0, |s| {
        at_any_look(&draw(s, &segs), &policy, Decision::Abort)
    });
    at_most(aborted, 0.05, "A/A aborted");
}

#[test]
fn identical_tied_token_counts_abort_no_more_than_continuous_ones() {
    // Templated prompts: tokens_in is 800 or 1200, 1200 in 5% of calls, so the p95 sits on the
    // jump between the two values in both arms.
    let policy = Policy::default();
    let tied = ArmSpec {
        tokens: Tokens::Tied {
            low: 800.0,
            high: 1200.0,
            p_high: 0.05,
        },
        ..healthy(1000)
    };
    let segs = [("free", tied, tied), ("pro", tied, tied)];
    let aborted = share("A/A with tied tokens_in aborted", RUNS, 10_000, |s| {
        once(&draw(s, &segs), &policy) == Decision::Abort
    });
    at_most(aborted, 0.05, "A/A with tied tokens aborted");
    let aborted = share("... at some of 20 looks", RUNS, 10_000, |s| {
        at_any_look(&draw(s, &segs), &policy, Decision::Abort)
    });
    at_most(aborted, 0.05, "A/A with tied tokens aborted over 20 looks");
}

#[test]
fn identical_arms_of_correlated_users_abort_in_at_most_5_percent() {
    // 20 users per arm with 200 events each, each user with its own flagged rate (ICC 0.05)
    // and latency: events of one user are far from independent.
    let policy = Policy::default();
    let users = ArmSpec {
        units: Some(Units {
            count: 20,
            flagged_icc: 0.05,
            latency_sigma: 0.3,
        }),
        ..healthy(4000)
    };
    let segs = [("free", users, users)];
    let aborted = share("A/A with correlated users aborted", RUNS, 20_000, |s| {
        at_any_look(&draw(s, &segs), &policy, Decision::Abort)
    });
    at_most(aborted, 0.05, "A/A with correlated users aborted");
}

#[test]
fn a_canary_exactly_at_each_threshold_is_promoted_in_at_most_5_percent_over_20_looks() {
    let policy = Policy::default();
    let n = 12_000;
    let at_flagged = ArmSpec {
        flagged: 0.045, // 1.5 x 3%
        ..healthy(n)
    };
    let at_latency = ArmSpec {
        latency_mult: 1.25,
        ..healthy(n)
    };
    let at_tokens = ArmSpec {
        tokens: Tokens::LogNormal {
            median: 800.0,
            sigma: 0.6,
            mult: 1.25,
        },
        ..healthy(n)
    };
    for (what, canary, seed) in [
        ("flagged_rate at 1.5x", at_flagged, 30_000),
        ("p95_duration_ms at 1.25x", at_latency, 31_000),
        ("p95_tokens_in at 1.25x", at_tokens, 32_000),
    ] {
        let segs = [("free", healthy(n), canary)];
        let promoted = share(
            &format!("{what} promoted at some of 20 looks"),
            100,
            seed,
            |s| at_any_look(&draw(s, &segs), &policy, Decision::Promote),
        );
        at_most(promoted, 0.05, what);
    }
}

#[test]
fn a_doubled_flagged_rate_at_250_events_per_arm_is_never_promoted() {
    let policy = Policy::default();
    let c = ArmSpec {
        flagged: 0.06,
        ..healthy(250)
    };
    let segs = [("free", healthy(250), c)];
    let promoted = share(
        "3% -> 6% flagged at 250 per arm promoted",
        RUNS,
        40_000,
        |s| once(&draw(s, &segs), &policy) == Decision::Promote,
    );
    at_most(promoted, 0.05, "a doubled flagged rate promoted");
}

#[test]
fn large_regressions_abort_with_high_power() {
    let policy = Policy::default();
    let flagged = ArmSpec {
        flagged: 0.06,
        ..healthy(4000)
    };
    let segs = [("free", healthy(4000), flagged)];
    let power = share(
        "doubled flagged rate at 4,000 per arm aborted",
        RUNS,
        50_000,
        |s| once(&draw(s, &segs), &policy) == Decision::Abort,
    );
    at_least(power, 0.80, "a doubled flagged rate aborted");

    let slow = ArmSpec {
        latency_mult: 1.5,
        ..healthy(1000)
    };
    let segs = [("free", healthy(1000), slow)];
    let power = share(
        "+50% p95 duration at 1,000 per arm aborted",
        RUNS,
        51_000,
        |s| once(&draw(s, &segs), &policy) == Decision::Abort,
    );
    at_least(power, 0.90, "+50% p95 duration aborted");
}

#[test]
fn a_healthy_canary_at_production_volume_promotes() {
    // Three tiers, 5% canary: 100,000 baseline and 5,000 canary events per tier.
    let policy = Policy::default();
    let segs = three_tiers(healthy(100_000), healthy(5_000));
    let promoted = share("healthy canary promoted", 50, 60_000, |s| {
        once(&draw(s, &segs), &policy) == Decision::Promote
    });
    at_least(promoted, 0.90, "a healthy canary promoted");
}

#[test]
fn a_tier_mix_shift_without_per_tier_change_is_not_aborted() {
    // Enterprise is 2.5x slower. The baseline is 90% free; the canary drew 50% enterprise, so
    // its pooled p95 is far worse, while no tier changed.
    let policy = Policy::default();
    let slow = |n| ArmSpec {
        latency_median: 1500.0,
        ..healthy(n)
    };
    let segs = [
        ("free", healthy(3600), healthy(1000)),
        ("enterprise", slow(400), slow(1000)),
    ];
    let aborted = share("tier-mix shift aborted", RUNS, 70_000, |s| {
        once(&draw(s, &segs), &policy) == Decision::Abort
    });
    at_most(aborted, 0.05, "a tier-mix shift aborted");
}

#[test]
fn a_regression_in_one_tier_is_not_averaged_away() {
    let policy = Policy::default();
    let slow = ArmSpec {
        latency_mult: 1.6,
        ..healthy(800)
    };
    let segs = [
        ("free", healthy(4000), healthy(4000)),
        ("pro", healthy(4000), healthy(4000)),
        ("enterprise", healthy(800), slow),
    ];
    let aborted = share("regression in one tier aborted", 100, 80_000, |s| {
        once(&draw(s, &segs), &policy) == Decision::Abort
    });
    at_least(aborted, 0.90, "a regression in one tier aborted");
}

#[test]
fn too_little_volume_continues_and_never_promotes() {
    let policy = Policy::default();
    let segs = [
        ("free", healthy(150), healthy(60)),
        ("pro", healthy(300), healthy(250)),
    ];
    let continued = share("too little volume continued", RUNS, 90_000, |s| {
        let d = once(&draw(s, &segs), &policy);
        assert_ne!(d, Decision::Promote, "seed {s}");
        d == Decision::Continue
    });
    at_least(continued, 0.95, "too little volume continued");
}

#[test]
fn a_catastrophe_aborts_before_min_events() {
    // 40% flagged instead of 3%, only 100 canary events: early abort at alpha 0.001.
    let policy = Policy::default();
    let c = ArmSpec {
        flagged: 0.4,
        ..healthy(100)
    };
    let segs = [("free", healthy(150), c)];
    let aborted = share("catastrophe aborted early", 50, 95_000, |s| {
        once(&draw(s, &segs), &policy) == Decision::Abort
    });
    at_least(aborted, 0.95, "a catastrophe aborted");
}

#[test]
fn repeated_fixed_horizon_looks_promote_a_canary_at_the_threshold_more_often() {
    // Why `sequential = true` is the default: the same canary at exactly 1.5x flagged, judged
    // at 20 looks with fixed-horizon bounds, is promoted far more often than 5%.
    let sequential = Policy::default();
    let fixed = Policy::from_toml(
        &promptgate::judge::DEFAULT_POLICY_TOML.replace("sequential = true", "sequential = false"),
    )
    .unwrap();
    assert!(!fixed.sequential);
    let only_flagged = |p: &Policy| {
        let mut p = p.clone();
        p.rules.retain(|r| r.name == "flagged_rate");
        p
    };
    let (sequential, fixed) = (only_flagged(&sequential), only_flagged(&fixed));
    let at = ArmSpec {
        flagged: 0.045,
        ..healthy(12_000)
    };
    let segs = [("free", healthy(12_000), at)];
    let with_fixed = share(
        "fixed-horizon bounds: promoted at 1.5x at some of 20 looks",
        100,
        33_000,
        |s| at_any_look(&draw(s, &segs), &fixed, Decision::Promote),
    );
    let with_sequential = share(
        "always-valid bounds: promoted at 1.5x at some of 20 looks",
        100,
        33_000,
        |s| at_any_look(&draw(s, &segs), &sequential, Decision::Promote),
    );
    at_most(
        with_sequential,
        0.05,
        "always valid, at the threshold, promoted",
    );
    assert!(
        with_fixed > with_sequential,
        "fixed {with_fixed} vs sequential {with_sequential}"
    );
}
