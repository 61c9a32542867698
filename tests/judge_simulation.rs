//! Simulation of the judge's error rates over many seeds, through the library (no lake).
//!
//! Each run draws synthetic events per segment and arm and asks the judge for a verdict with the
//! default policy. The thresholds are the ones the judge promises: A/A aborts in at most 5% of
//! runs; a doubled flagged rate at 4,000 events per arm and a +50% p95 duration at 1,000 per arm
//! abort in at least 90%; a tier-mix shift alone never aborts more than chance; too little
//! volume gives continue, never promote.

use promptgate::judge::policy::ValueColumn;
use promptgate::judge::{Arm, Decision, Policy, Samples, SegmentSample, judge};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

/// One arm of one segment: how many events and how they are distributed.
#[derive(Clone, Copy)]
struct ArmSpec {
    n: usize,
    flagged: f64,
    latency_median: f64,
    latency_mult: f64,
    label_rate: f64,
    bad: f64,
}

fn arm(n: usize) -> ArmSpec {
    ArmSpec {
        n,
        flagged: 0.03,
        latency_median: 600.0,
        latency_mult: 1.0,
        label_rate: 0.1,
        bad: 0.1,
    }
}

fn draw(rng: &mut ChaCha8Rng, spec: ArmSpec, seg: &mut SegmentSample, which: Arm) {
    let lat = LogNormal::new(spec.latency_median.ln(), 0.5).unwrap();
    let tok = LogNormal::new(800f64.ln(), 0.6).unwrap();
    let a = seg.arm_mut(which);
    for _ in 0..spec.n {
        let flagged = rng.random::<f64>() < spec.flagged;
        let label = (rng.random::<f64>() < spec.label_rate).then(|| rng.random::<f64>() < spec.bad);
        let d = lat.sample(rng) * spec.latency_mult;
        let t = tok.sample(rng).round().max(1.0);
        a.push(
            flagged,
            false,
            label,
            &[(ValueColumn::DurationMs, d), (ValueColumn::TokensIn, t)],
        );
    }
}

/// Asserts that `what` happened in at least `min` of the runs (`share` is the measured share).
fn at_least(share: f64, min: f64, what: &str) {
    assert!(share >= min, "{what} in only {:.1}% of runs", 100.0 * share);
}

/// Asserts that `what` happened in at most `max` of the runs.
fn at_most(share: f64, max: f64, what: &str) {
    assert!(share <= max, "{what} in {:.1}% of runs", 100.0 * share);
}

/// Segments as (name, baseline spec, canary spec).
fn run(seed: u64, segments: &[(&str, ArmSpec, ArmSpec)]) -> Decision {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut samples = Samples {
        segment_by: vec!["tier".into()],
        ..Samples::default()
    };
    for (name, b, c) in segments {
        let mut seg = SegmentSample::default();
        draw(&mut rng, *b, &mut seg, Arm::Baseline);
        draw(&mut rng, *c, &mut seg, Arm::Canary);
        samples.segments.insert(vec![name.to_string()], seg);
    }
    judge(samples, &Policy::default(), None).verdict
}

fn rate(runs: u64, decision: Decision, f: impl Fn(u64) -> Decision) -> f64 {
    let r = (0..runs).filter(|s| f(*s) == decision).count() as f64 / runs as f64;
    eprintln!("{decision:?} in {:.1}% of {runs} runs", 100.0 * r);
    r
}

const RUNS: u64 = 200;

#[test]
fn identical_arms_abort_in_at_most_5_percent_of_runs() {
    let segs = [
        ("free", arm(1000), arm(1000)),
        ("pro", arm(1000), arm(1000)),
        ("enterprise", arm(400), arm(400)),
    ];
    let aborted = rate(RUNS, Decision::Abort, |s| run(s, &segs));
    at_most(aborted, 0.05, "A/A aborted");
}

#[test]
fn doubled_flagged_rate_at_4000_per_arm_aborts_in_90_percent() {
    let c = ArmSpec {
        flagged: 0.06,
        ..arm(4000)
    };
    let segs = [("free", arm(4000), c)];
    let aborted = rate(RUNS, Decision::Abort, |s| run(1000 + s, &segs));
    at_least(aborted, 0.90, "aborted");
}

#[test]
fn p95_duration_up_50_percent_at_1000_per_arm_aborts_in_90_percent() {
    let c = ArmSpec {
        latency_mult: 1.5,
        ..arm(1000)
    };
    let segs = [("free", arm(1000), c)];
    let aborted = rate(RUNS, Decision::Abort, |s| run(2000 + s, &segs));
    at_least(aborted, 0.90, "aborted");
}

#[test]
fn a_tier_mix_shift_without_per_tier_change_is_not_aborted() {
    // Enterprise is 2.5x slower. The baseline is 90% free; the canary drew 50% enterprise, so
    // its pooled p95 is far worse, while no tier changed.
    let slow = |n| ArmSpec {
        latency_median: 1500.0,
        ..arm(n)
    };
    let segs = [
        ("free", arm(3600), arm(1000)),
        ("enterprise", slow(400), slow(1000)),
    ];
    let aborted = rate(RUNS, Decision::Abort, |s| run(3000 + s, &segs));
    at_most(aborted, 0.05, "tier-mix shift aborted");
}

#[test]
fn a_regression_in_one_tier_is_not_averaged_away() {
    let c = ArmSpec {
        latency_mult: 1.6,
        ..arm(800)
    };
    let segs = [
        ("free", arm(4000), arm(4000)),
        ("pro", arm(4000), arm(4000)),
        ("enterprise", arm(800), c),
    ];
    let aborted = rate(100, Decision::Abort, |s| run(4000 + s, &segs));
    at_least(aborted, 0.90, "aborted");
}

#[test]
fn too_little_volume_continues_and_never_promotes() {
    let segs = [("free", arm(150), arm(60)), ("pro", arm(300), arm(250))];
    for s in 0..RUNS {
        let d = run(5000 + s, &segs);
        assert_ne!(d, Decision::Promote, "seed {s}");
    }
    let continued = rate(RUNS, Decision::Continue, |s| run(5000 + s, &segs));
    at_least(continued, 0.95, "continued");
}

#[test]
fn a_catastrophe_aborts_before_min_events() {
    // 40% flagged instead of 3%, only 100 canary events: early abort at alpha 0.001.
    let c = ArmSpec {
        flagged: 0.4,
        ..arm(100)
    };
    let segs = [("free", arm(150), c)];
    let aborted = rate(50, Decision::Abort, |s| run(6000 + s, &segs));
    at_least(aborted, 0.95, "aborted");
}
