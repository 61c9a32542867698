//! Synthetic canaries for measuring the judge itself: draw events per segment and arm from a
//! stated model (rates, long-tailed latency, continuous or tied token counts, correlated users),
//! then judge them at any number of looks as the data accumulates.
//!
//! The simulation tests (`tests/judge_simulation.rs`) assert the judge's error rates with it,
//! and `benches/judge_volumes.rs` measures how many events each default rule needs (the table
//! in the README). Deterministic for a given seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, LogNormal};

use super::policy::ValueColumn;
use super::samples::{Arm, EventObs, Samples, SegmentSample};

/// How `tokens_in` is distributed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tokens {
    /// Log-normal around `median` (continuous, few ties), times `mult`.
    LogNormal { median: f64, sigma: f64, mult: f64 },
    /// Templated prompts: `high` with probability `p_high`, else `low` (heavily tied).
    Tied { low: f64, high: f64, p_high: f64 },
}

/// Events grouped by unit (user), with per-unit propensities: the source of correlation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Units {
    /// Distinct units in the arm; without whales event `i` belongs to unit `i % count` (so
    /// units interleave in time as real users do).
    pub count: usize,
    /// Heavy users: this share of the units (at least one) sends `whale_events` of the events,
    /// each event drawn to a random unit of its group. 0 for none.
    pub whale_units: f64,
    pub whale_events: f64,
    /// Intra-class correlation of the flagged indicator (per-unit rate ~ Beta with this ICC).
    pub flagged_icc: f64,
    /// Standard deviation of a per-unit log-normal latency multiplier.
    pub latency_sigma: f64,
}

/// One arm of one segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmSpec {
    /// Events drawn (the most any look sees).
    pub n: usize,
    pub flagged: f64,
    pub latency_median: f64,
    pub latency_mult: f64,
    pub tokens: Tokens,
    /// Share of events with a label, and the share of labels that are bad.
    pub label_rate: f64,
    pub bad: f64,
    pub units: Option<Units>,
}

impl ArmSpec {
    /// A healthy arm: 3% flagged, latency median 600 ms (log-normal, sigma 0.5), tokens_in
    /// around 800 (sigma 0.6), 10% labeled of which 10% bad, independent events.
    pub fn healthy(n: usize) -> Self {
        ArmSpec {
            n,
            flagged: 0.03,
            latency_median: 600.0,
            latency_mult: 1.0,
            tokens: Tokens::LogNormal {
                median: 800.0,
                sigma: 0.6,
                mult: 1.0,
            },
            label_rate: 0.1,
            bad: 0.1,
            units: None,
        }
    }
}

/// Nine uneven segments of an A/A canary over `per_arm` events per arm: 40, 20, 12, 10, 8, 5, 3
/// and 2% of them, each with its own baseline levels (flagged rate, latency), and one rare
/// segment of 30 events per arm (10% flagged, 2.5 s): real traffic's shape, where judge v2's
/// percentile-per-segment rule held every canary.
pub fn nine_uneven_segments(per_arm: usize) -> Vec<(&'static str, ArmSpec, ArmSpec)> {
    let shares = [
        ("gpt-a/free", 0.40, 0.03, 600.0),
        ("gpt-a/pro", 0.20, 0.02, 900.0),
        ("gpt-b/free", 0.12, 0.05, 450.0),
        ("gpt-b/pro", 0.10, 0.03, 1200.0),
        ("gpt-c/free", 0.08, 0.04, 700.0),
        ("gpt-c/pro", 0.05, 0.02, 800.0),
        ("gpt-a/team", 0.03, 0.06, 650.0),
        ("gpt-b/team", 0.02, 0.03, 1500.0),
        ("rare", 0.0, 0.1, 2500.0),
    ];
    shares
        .iter()
        .map(|&(name, share, flagged, latency)| {
            let n = if share > 0.0 {
                (per_arm as f64 * share) as usize
            } else {
                30
            };
            let arm = ArmSpec {
                flagged,
                latency_median: latency,
                ..ArmSpec::healthy(n)
            };
            (name, arm, arm)
        })
        .collect()
}

/// One drawn event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimEvent {
    pub flagged: bool,
    pub label_bad: Option<bool>,
    pub duration_ms: f64,
    pub tokens_in: f64,
    pub unit: Option<u64>,
}

/// Drawn events of every segment: (segment name, [baseline events, canary events]).
pub type Drawn = Vec<(String, [Vec<SimEvent>; 2])>;

/// Draws every segment's arms (`(name, baseline, canary)`) from `seed`.
pub fn draw(seed: u64, segments: &[(&str, ArmSpec, ArmSpec)]) -> Drawn {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    segments
        .iter()
        .enumerate()
        .map(|(s, (name, b, c))| {
            let b = draw_arm(&mut rng, b, (s as u64) << 40);
            let c = draw_arm(&mut rng, c, ((s as u64) << 40) | (1 << 39));
            (name.to_string(), [b, c])
        })
        .collect()
}

fn draw_arm(rng: &mut ChaCha8Rng, spec: &ArmSpec, unit_base: u64) -> Vec<SimEvent> {
    let lat = LogNormal::new(spec.latency_median.ln(), 0.5).expect("valid sigma");
    // Per-unit propensities.
    let (flag_p, lat_m): (Vec<f64>, Vec<f64>) = match spec.units {
        Some(u) => {
            let icc = u.flagged_icc.clamp(1e-6, 0.999);
            let k = 1.0 / icc - 1.0;
            let beta = Beta::new(
                spec.flagged.max(1e-9) * k,
                (1.0 - spec.flagged).max(1e-9) * k,
            )
            .expect("valid beta");
            let lm = LogNormal::new(0.0, u.latency_sigma.max(0.0)).expect("valid sigma");
            (0..u.count.max(1))
                .map(|_| (beta.sample(rng), lm.sample(rng)))
                .unzip()
        }
        None => (vec![spec.flagged], vec![1.0]),
    };
    let whales = spec.units.and_then(|u| {
        (u.whale_events > 0.0 && u.count >= 2).then(|| {
            let w = ((u.count as f64 * u.whale_units).round() as usize).clamp(1, u.count - 1);
            (w, u.whale_events)
        })
    });
    (0..spec.n)
        .map(|i| {
            let u = spec.units.map(|u| match whales {
                Some((w, share)) if rng.random::<f64>() < share => rng.random_range(0..w),
                Some((w, _)) => rng.random_range(w..u.count),
                None => i % u.count.max(1),
            });
            let p = flag_p[u.unwrap_or(0)];
            let m = lat_m[u.unwrap_or(0)];
            let flagged = rng.random::<f64>() < p;
            let label_bad =
                (rng.random::<f64>() < spec.label_rate).then(|| rng.random::<f64>() < spec.bad);
            let duration_ms = lat.sample(rng) * spec.latency_mult * m;
            let tokens_in = match spec.tokens {
                Tokens::LogNormal {
                    median,
                    sigma,
                    mult,
                } => {
                    let t = LogNormal::new(median.ln(), sigma).expect("valid sigma");
                    (t.sample(rng) * mult).round().max(1.0)
                }
                Tokens::Tied { low, high, p_high } => {
                    if rng.random::<f64>() < p_high {
                        high
                    } else {
                        low
                    }
                }
            };
            SimEvent {
                flagged,
                label_bad,
                duration_ms,
                tokens_in,
                unit: u.map(|u| unit_base + u as u64),
            }
        })
        .collect()
}

/// The samples a judge sees at one look: the first `share` (0..=1) of every arm's events.
pub fn samples_at(drawn: &Drawn, share: f64) -> Samples {
    samples_with(drawn, |_, _, len| (len as f64 * share).round() as usize)
}

/// The samples a judge sees when `take(segment index, arm, events drawn)` of each arm's events
/// have arrived (capped at what was drawn): for looks where the arms grow at different paces,
/// as in a ramped rollout.
pub fn samples_with(drawn: &Drawn, take: impl Fn(usize, Arm, usize) -> usize) -> Samples {
    let mut samples = Samples {
        segment_by: vec!["tier".into()],
        ..Samples::default()
    };
    for (s, (name, arms)) in drawn.iter().enumerate() {
        let mut seg = SegmentSample::default();
        for (arm, events) in [Arm::Baseline, Arm::Canary].into_iter().zip(arms) {
            let take = take(s, arm, events.len()).min(events.len());
            let a = seg.arm_mut(arm);
            for e in &events[..take] {
                a.push(
                    EventObs {
                        flagged: e.flagged,
                        error: false,
                        label_bad: e.label_bad,
                    },
                    &[
                        (ValueColumn::DurationMs, e.duration_ms),
                        (ValueColumn::TokensIn, e.tokens_in),
                    ],
                    e.unit,
                );
            }
        }
        if seg.baseline.n + seg.canary.n > 0 {
            samples.segments.insert(vec![name.clone()], seg);
        }
    }
    samples
}
