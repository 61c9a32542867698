//! The judge's error rates and power, measured over many seeds through the library (no lake).
//!
//! Each scenario draws synthetic events per segment and arm (`promptgate::judge::simulate`) and
//! asks the judge, with the default policy, for a verdict: once, or at 12 looks as the data
//! accumulates (what `rollout step` or a cron job does). Every test prints the rate it measured
//! and asserts the bound the judge promises. `tests/judge_binary.rs` checks the main targets
//! again through the binary on data this crate did not generate.

use promptgate::judge::simulate::{
    ArmSpec, Drawn, Tokens, Units, draw, nine_uneven_segments, samples_at, samples_with,
};
use promptgate::judge::{Arm, Decision, Policy, judge};

const RUNS: u64 = 200;
const LOOKS: usize = 12;

fn healthy(n: usize) -> ArmSpec {
    ArmSpec::healthy(n)
}

/// The verdict on all drawn events (one look).
fn once(drawn: &Drawn, policy: &Policy) -> Decision {
    judge(samples_at(drawn, 1.0), policy, None).verdict
}

/// The first abort or promote over `LOOKS` evenly spaced looks (1/12 of the data, 2/12, ...,
/// all of it), or continue: a canary that is aborted or promoted stops there.
fn over_looks(drawn: &Drawn, policy: &Policy) -> Decision {
    for look in 1..=LOOKS {
        let v = judge(samples_at(drawn, look as f64 / LOOKS as f64), policy, None).verdict;
        if matches!(v, Decision::Abort | Decision::Promote | Decision::Invalid) {
            return v;
        }
    }
    Decision::Continue
}

/// Share of `runs` seeds (from `first_seed`) for which `f` is true; printed.
fn share(what: &str, runs: u64, first_seed: u64, f: impl Fn(u64) -> bool) -> f64 {
    let hits = (first_seed..first_seed + runs).filter(|s| f(*s)).count();
    let r = hits as f64 / runs as f64;
    eprintln!("{what}: {hits} of {runs} runs ({:.1}%)", 100.0 * r);
    r
}

/// Shares of runs ending in abort and in promote over 12 looks; printed.
fn outcomes(what: &str, runs: u64, first_seed: u64, f: impl Fn(u64) -> Decision) -> (f64, f64) {
    let (mut abort, mut promote) = (0, 0);
    for s in first_seed..first_seed + runs {
        match f(s) {
            Decision::Abort => abort += 1,
            Decision::Promote => promote += 1,
            _ => {}
        }
    }
    eprintln!("{what}: aborted {abort}, promoted {promote} of {runs} runs");
    (abort as f64 / runs as f64, promote as f64 / runs as f64)
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

fn flagged_times(m: f64, n: usize) -> ArmSpec {
    ArmSpec {
        flagged: 0.03 * m,
        ..healthy(n)
    }
}

fn latency_times(m: f64, n: usize) -> ArmSpec {
    ArmSpec {
        latency_mult: m,
        ..healthy(n)
    }
}

fn tokens_times(m: f64, n: usize) -> ArmSpec {
    ArmSpec {
        tokens: Tokens::LogNormal {
            median: 800.0,
            sigma: 0.6,
            mult: m,
        },
        ..healthy(n)
    }
}

#[test]
fn identical_arms_abort_in_at_most_5_percent_over_12_looks() {
    let policy = Policy::default();
    let segs = three_tiers(healthy(2000), healthy(2000));
    let aborted = share("A/A aborted at some look", RUNS, 0, |s| {
        over_looks(&draw(s, &segs), &policy) == Decision::Abort
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
    let aborted = share("... at some of 12 looks", RUNS, 10_000, |s| {
        over_looks(&draw(s, &segs), &policy) == Decision::Abort
    });
    at_most(aborted, 0.05, "A/A with tied tokens aborted over 12 looks");
}

#[test]
fn a_percentile_on_a_jump_is_said_to_be_unshowable_not_given_a_number() {
    // One segment, 40,000 per arm, tokens_in exactly at the jump in both arms: the p95 bound
    // does not narrow with volume, so the judge must not promise "about N more events".
    let mut policy = Policy::default();
    policy.rules.retain(|r| r.name == "p95_tokens_in");
    let tied = ArmSpec {
        tokens: Tokens::Tied {
            low: 800.0,
            high: 1200.0,
            p_high: 0.05,
        },
        ..healthy(40_000)
    };
    let (mut unshowable, mut open) = (0, 0);
    for seed in 0..20 {
        let v = judge(
            samples_at(&draw(seed, &[("free", tied, tied)]), 1.0),
            &policy,
            None,
        );
        assert_ne!(v.verdict, Decision::Abort, "{}", v.reason);
        if v.verdict != Decision::Continue {
            continue;
        }
        open += 1;
        // No promise of events, for the rule or for the segment it holds...
        assert!(v.overall[0].needs_canary.is_none(), "{:#?}", v.overall[0]);
        assert_eq!(v.segments[0].needs_canary, 0, "{:#?}", v.segments[0]);
        // ... and the reason names the jump.
        if v.reason.contains("jump between tied values 800 and 1200") {
            unshowable += 1;
        }
    }
    eprintln!("p95 on a jump: {open} of 20 runs open, {unshowable} said cannot be shown");
    assert!(open >= 10 && unshowable == open, "{unshowable} of {open}");
}

#[test]
fn identical_arms_of_correlated_users_abort_in_at_most_5_percent() {
    // 20 users per arm with 200 events each, each user with its own flagged rate (ICC 0.05)
    // and latency: events of one user are far from independent.
    let policy = Policy::default();
    let users = ArmSpec {
        units: Some(Units {
            count: 20,
            whale_units: 0.0,
            whale_events: 0.0,
            flagged_icc: 0.05,
            latency_sigma: 0.3,
        }),
        ..healthy(4000)
    };
    let segs = [("free", users, users)];
    let aborted = share("A/A with correlated users aborted", RUNS, 20_000, |s| {
        over_looks(&draw(s, &segs), &policy) == Decision::Abort
    });
    at_most(aborted, 0.05, "A/A with correlated users aborted");
}

#[test]
fn fixed_horizon_a_a_with_whales_aborts_in_at_most_10_percent() {
    // 2% of 500 units send 40% of the events; per-unit flagged rates (ICC 0.1) and latency.
    // Fixed-horizon bounds, one look: the per-unit variance must not be trusted on a handful
    // of units, nor taken below the independent-events variance.
    let policy = Policy::from_toml(
        &promptgate::judge::DEFAULT_POLICY_TOML.replace("sequential = true", "sequential = false"),
    )
    .unwrap();
    let whales = ArmSpec {
        units: Some(Units {
            count: 500,
            whale_units: 0.02,
            whale_events: 0.4,
            flagged_icc: 0.1,
            latency_sigma: 0.4,
        }),
        label_rate: 0.3,
        ..healthy(3000)
    };
    let segs = three_tiers(whales, whales);
    let aborted = share("fixed-horizon A/A with whales aborted", RUNS, 25_000, |s| {
        once(&draw(s, &segs), &policy) == Decision::Abort
    });
    at_most(aborted, 0.10, "fixed-horizon A/A with whales aborted");
}

#[test]
fn at_each_threshold_abort_and_promote_each_stay_rare_over_12_looks() {
    // A canary exactly at a threshold is neither shown past it nor within it: over 12 looks
    // each error stays at its nominal 5% (the target is 10%).
    let policy = Policy::default();
    let n = 12_000;
    for (what, canary, seed) in [
        ("flagged_rate at 1.5x", flagged_times(1.5, n), 30_000),
        ("p95_duration_ms at 1.25x", latency_times(1.25, n), 31_000),
        ("p95_tokens_in at 1.25x", tokens_times(1.25, n), 32_000),
    ] {
        let segs = [("free", healthy(n), canary)];
        let (aborted, promoted) = outcomes(&format!("{what} over 12 looks"), 100, seed, |s| {
            over_looks(&draw(s, &segs), &policy)
        });
        at_most(aborted, 0.10, &format!("{what}: aborted"));
        at_most(promoted, 0.10, &format!("{what}: promoted"));
    }
}

#[test]
fn inside_each_threshold_a_canary_is_not_aborted_over_12_looks() {
    // Judge v2 aborted a canary at 1.4x flagged against 1.5x in 60% of runs judged 12 times.
    let policy = Policy::default();
    let n = 20_000;
    for (what, canary, seed) in [
        ("flagged_rate at 1.4x", flagged_times(1.4, n), 34_000),
        ("p95_duration_ms at 1.2x", latency_times(1.2, n), 35_000),
        ("p95_tokens_in at 1.2x", tokens_times(1.2, n), 36_000),
    ] {
        let segs = [("free", healthy(n), canary)];
        let (aborted, _) = outcomes(&format!("{what} over 12 looks"), 100, seed, |s| {
            over_looks(&draw(s, &segs), &policy)
        });
        at_most(aborted, 0.05, &format!("{what}: aborted"));
    }
}

#[test]
fn a_healthy_canary_promotes_over_one_segment_and_over_nine_uneven_ones() {
    let policy = Policy::default();
    let segs = [("free", healthy(20_000), healthy(20_000))];
    let promoted = share(
        "one healthy segment at 20,000 per arm promoted",
        100,
        60_000,
        |s| once(&draw(s, &segs), &policy) == Decision::Promote,
    );
    at_least(
        promoted,
        0.90,
        "one healthy segment at 20,000 per arm promoted",
    );

    // 400,000 events, half per arm, over nine uneven segments, one of them 30 events per arm.
    let segs = nine_uneven_segments(200_000);
    let promoted = share(
        "A/A over 9 uneven segments at 400K promoted",
        40,
        61_000,
        |s| {
            let v = judge(samples_at(&draw(s, &segs), 1.0), &policy, None);
            if v.verdict != Decision::Promote {
                eprintln!("  seed {s}: {}", v.reason);
            }
            v.verdict == Decision::Promote
        },
    );
    at_least(promoted, 0.80, "A/A over 9 uneven segments promoted");
}

#[test]
fn a_regression_confined_to_a_tenth_of_traffic_is_never_promoted() {
    // p95 duration +60% in a segment with 10% of the traffic: the stratified p95 moves by
    // about 5%, well inside 1.25x; the material-segment rule must hold the canary.
    let policy = Policy::default();
    for (per_arm, seed) in [(4_000, 70_000), (40_000, 71_000)] {
        let segs = [
            ("main", healthy(per_arm * 9 / 10), healthy(per_arm * 9 / 10)),
            (
                "mid",
                healthy(per_arm / 10),
                latency_times(1.6, per_arm / 10),
            ),
        ];
        let (aborted, promoted) = outcomes(
            &format!("+60% p95 in 10% of traffic, {per_arm} per arm, over 12 looks"),
            40,
            seed,
            |s| over_looks(&draw(s, &segs), &policy),
        );
        assert_eq!(promoted, 0.0, "a confined regression was promoted");
        if per_arm >= 40_000 {
            at_least(aborted, 0.9, "a confined regression at volume aborted");
        }
    }
}

#[test]
fn a_constant_segment_does_not_decide_a_mean() {
    // avg_tokens_in +50% in one segment; in the other tokens_in is constant (templated), so
    // its log ratio has no variance. Judge v2 took that segment as the whole answer and
    // promoted 5 of 5 times.
    let policy = Policy::from_toml(
        "segment_by = ['tier']\n[[rules]]\nmetric = 'avg_tokens_in'\nmax_ratio = 1.25\n",
    )
    .unwrap();
    let constant = ArmSpec {
        tokens: Tokens::Tied {
            low: 800.0,
            high: 800.0,
            p_high: 0.0,
        },
        ..healthy(5_000)
    };
    let segs = [
        ("templated", constant, constant),
        ("free", healthy(5_000), tokens_times(1.5, 5_000)),
    ];
    let (aborted, promoted) = outcomes("constant segment beside +50% tokens", 20, 72_000, |s| {
        over_looks(&draw(s, &segs), &policy)
    });
    assert_eq!(promoted, 0.0, "the constant segment decided the mean");
    at_least(aborted, 0.9, "the regression aborted");
}

#[test]
fn a_ramped_a_a_canary_keeps_its_error_rates() {
    // A rollout 1% -> 5% -> 25% -> 50%, 20,000 events a step, three looks a step: the canary
    // and baseline grow at different paces, and the expected split changes at every step.
    let policy = Policy::default();
    let steps = [0.01, 0.05, 0.25, 0.5];
    let per_step = 20_000.0;
    let (mut canary_at, mut baseline_at) = (vec![], vec![]);
    let (mut c, mut b) = (0.0, 0.0);
    for s in steps {
        for _ in 0..3 {
            c += s * per_step / 3.0;
            b += (1.0 - s) * per_step / 3.0;
            canary_at.push(c as usize);
            baseline_at.push(b as usize);
        }
    }
    let segs = [
        (
            "free",
            healthy(b as usize * 7 / 10),
            healthy(c as usize * 7 / 10),
        ),
        (
            "pro",
            healthy(b as usize * 3 / 10),
            healthy(c as usize * 3 / 10),
        ),
    ];
    let weights = [0.7, 0.3];
    let (aborted, promoted) = outcomes("A/A over a 1-5-25-50% ramp, 12 looks", RUNS, 80_000, |s| {
        let drawn = draw(s, &segs);
        for look in 0..canary_at.len() {
            let v = judge(
                samples_with(&drawn, |seg, arm, _| {
                    let total = if arm == Arm::Canary {
                        canary_at[look]
                    } else {
                        baseline_at[look]
                    };
                    (total as f64 * weights[seg]) as usize
                }),
                &policy,
                None,
            )
            .verdict;
            if matches!(v, Decision::Abort | Decision::Promote | Decision::Invalid) {
                return v;
            }
        }
        Decision::Continue
    });
    at_most(aborted, 0.05, "ramped A/A aborted");
    at_least(promoted, 0.5, "ramped A/A promoted by the 50% step");
}

#[test]
fn a_doubled_flagged_rate_at_250_events_per_arm_is_never_promoted() {
    let policy = Policy::default();
    let segs = [("free", healthy(250), flagged_times(2.0, 250))];
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
    // Aborting on the threshold (the lower bound past 1.5x, not merely above 1) costs events:
    // see the README's table of volumes.
    let policy = Policy::default();
    let segs = [("free", healthy(10_000), flagged_times(2.0, 10_000))];
    let power = share(
        "doubled flagged rate at 10,000 per arm aborted over 12 looks",
        100,
        50_000,
        |s| over_looks(&draw(s, &segs), &policy) == Decision::Abort,
    );
    at_least(
        power,
        0.75,
        "a doubled flagged rate at 10,000 per arm aborted",
    );
    let segs = [("free", healthy(16_000), flagged_times(2.0, 16_000))];
    let power = share(
        "doubled flagged rate at 16,000 per arm aborted over 12 looks",
        100,
        50_000,
        |s| over_looks(&draw(s, &segs), &policy) == Decision::Abort,
    );
    at_least(
        power,
        0.90,
        "a doubled flagged rate at 16,000 per arm aborted",
    );

    let segs = [("free", healthy(1000), latency_times(1.6, 1000))];
    let power = share(
        "+60% p95 duration at 1,000 per arm aborted",
        RUNS,
        51_000,
        |s| once(&draw(s, &segs), &policy) == Decision::Abort,
    );
    at_least(power, 0.90, "+60% p95 duration aborted");
}

#[test]
fn any_harm_is_an_opt_in_that_aborts_sooner() {
    // The same doubled rate at 4,000 per arm: on the threshold it rarely aborts yet; with
    // abort_on = "any_harm" (lower bound above 1) it does.
    let threshold = Policy::from_toml(
        "segment_by = ['tier']\n[[rules]]\nmetric = 'flagged_rate'\nmax_ratio = 1.5\n",
    )
    .unwrap();
    let any_harm = Policy::from_toml(
        "segment_by = ['tier']\n[[rules]]\nmetric = 'flagged_rate'\nmax_ratio = 1.5\nabort_on = 'any_harm'\n",
    )
    .unwrap();
    let segs = [("free", healthy(4_000), flagged_times(2.0, 4_000))];
    let on_threshold = share("doubled at 4,000, abort on threshold", 100, 52_000, |s| {
        once(&draw(s, &segs), &threshold) == Decision::Abort
    });
    let on_harm = share("doubled at 4,000, abort on any harm", 100, 52_000, |s| {
        once(&draw(s, &segs), &any_harm) == Decision::Abort
    });
    assert!(on_harm > on_threshold + 0.3, "{on_harm} vs {on_threshold}");
    // ... and a canary inside the threshold but worse (1.3x) is aborted only with the opt-in.
    let segs = [("free", healthy(40_000), flagged_times(1.3, 40_000))];
    let inside = share("1.3x at 40,000, abort on threshold", 50, 53_000, |s| {
        once(&draw(s, &segs), &threshold) == Decision::Abort
    });
    at_most(inside, 0.05, "1.3x aborted on the threshold");
    let inside = share("1.3x at 40,000, abort on any harm", 50, 53_000, |s| {
        once(&draw(s, &segs), &any_harm) == Decision::Abort
    });
    at_least(inside, 0.9, "1.3x aborted with any_harm");
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
    let segs = [
        ("free", healthy(4000), healthy(4000)),
        ("pro", healthy(4000), healthy(4000)),
        ("enterprise", healthy(1500), latency_times(1.6, 1500)),
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
        ("pro", healthy(300), healthy(100)),
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
    // 40% flagged instead of 3%, only 100 canary events: early abort at alpha 0.001, as soon as
    // the lower bound is past 1.5x at that level. That needs a baseline with some evidence: on
    // 150 baseline events (4 or 5 flagged) even a fixed-horizon test cannot place a ratio above
    // 1.5 at 0.001 (judge v2, testing above 1, could); 1,000 baseline events give it.
    let policy = Policy::default();
    let segs = [("free", healthy(1_000), flagged_times(40.0 / 3.0, 100))];
    let aborted = share("catastrophe aborted early", 50, 95_000, |s| {
        once(&draw(s, &segs), &policy) == Decision::Abort
    });
    at_least(aborted, 0.95, "a catastrophe aborted");
}

#[test]
fn repeated_fixed_horizon_looks_promote_a_canary_at_the_threshold_more_often() {
    // Why `sequential = true` is the default: the same canary at exactly 1.5x flagged, judged
    // at 12 looks with fixed-horizon bounds, is promoted far more often than 5%.
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
    let segs = [("free", healthy(12_000), flagged_times(1.5, 12_000))];
    let with_fixed = share(
        "fixed-horizon bounds: promoted at 1.5x at some of 12 looks",
        100,
        33_000,
        |s| over_looks(&draw(s, &segs), &fixed) == Decision::Promote,
    );
    let with_sequential = share(
        "always-valid bounds: promoted at 1.5x at some of 12 looks",
        100,
        33_000,
        |s| over_looks(&draw(s, &segs), &sequential) == Decision::Promote,
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
