//! Evidence about one canary/baseline ratio: bounds at any level, an always-valid one-sided
//! p-value for "the canary is worse", and a projection of the events that would settle it.
//!
//! Two kinds, because two kinds of metric need different care:
//! - [`Evidence::LogNormal`]: rates and means, whose log ratio is asymptotically normal with a
//!   standard error from counts (Poisson), from per-unit totals (clustered, delta method for
//!   ratio metrics), or pooled across segments (Mantel-Haenszel, inverse-variance weighting).
//! - [`Evidence::Quantiles`]: percentiles. Each arm gets a distribution-free order-statistic
//!   bound (the rank of the true quantile among `n` events is binomial), and the ratio's bounds
//!   are the ratios of the arms' opposite bounds, each arm at half the level (a union bound).
//!   This stays valid on tied and discrete data (templated prompts give `tokens_in` a handful
//!   of values), where a standard error read off an interval's width is 0 and a delta-method
//!   test reports p-values like 1e-6 for a jump that an exact test puts at 0.02: an order
//!   statistic bound is conservative when values tie, never anti-conservative.

use super::samples::{ArmSample, NO_UNIT, RatioMoments};
use super::sequential::{Boundary, MIN_LEVEL, log_beta_mixture};
use super::stats::{self, LogRatio, ratio_metric_var};

/// One arm's quantile: the point estimate and the order statistics its bounds can need.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantileArm {
    pub n: usize,
    pub q: f64,
    /// As SQL `percentile_cont` (linear interpolation), `None` without events.
    pub estimate: Option<f64>,
    /// Sorted order statistics at 1-based ranks `first ..= first + window.len() - 1`.
    first: usize,
    window: Vec<f64>,
    /// `sqrt(n·q·(1-q)·design_effect)`: the standard deviation of the count of events below the
    /// quantile, inflated when events of one unit are correlated.
    rank_sd: f64,
    /// Design effect of the count below the quantile (1 without unit ids).
    pub design_effect: f64,
    boundary: Boundary,
}

impl QuantileArm {
    /// Summarizes an arm's values of one column. Reorders the arm's values of that column
    /// unless the arm is clustered (its values must stay aligned with their units, so a copy
    /// is reordered instead).
    pub fn new(arm: &mut ArmSample, column: usize, q: f64, boundary: Boundary) -> Self {
        if arm.values[column].is_empty() || !(q > 0.0 && q < 1.0) {
            return Self::from_values(&mut [], q, 1.0, boundary);
        }
        if arm.clustered() {
            arm.finish_units();
            let mut copy = arm.values[column].clone();
            let estimate = percentile_cont(&mut copy, q);
            // Design effect of the share at or below the estimate, from per-unit counts (Deng,
            // Knoblich & Lu 2018, quantile metrics under user-level randomization).
            let de = design_effect(arm, column, estimate);
            Self::from_values(&mut copy, q, de, boundary)
        } else {
            Self::from_values(&mut arm.values[column], q, 1.0, boundary)
        }
    }

    fn from_values(values: &mut [f64], q: f64, design_effect: f64, boundary: Boundary) -> Self {
        let n = values.len();
        let mut me = QuantileArm {
            n,
            q,
            estimate: None,
            first: 1,
            window: Vec::new(),
            rank_sd: 0.0,
            design_effect,
            boundary,
        };
        if n == 0 || !(q > 0.0 && q < 1.0) {
            return me;
        }
        me.estimate = Some(percentile_cont(values, q));
        me.rank_sd = (n as f64 * q * (1.0 - q) * design_effect).sqrt();
        // Keep the order statistics any level down to MIN_LEVEL can ask for.
        let half = boundary.z(MIN_LEVEL, n as f64).min(1e6) * me.rank_sd;
        let center = n as f64 * q;
        let first = ((center - half).floor().max(1.0)) as usize;
        let last = ((center + half).ceil().min(n as f64)).max(first as f64) as usize;
        // Partition so ranks first..=last sit at positions first-1..last, then sort that part.
        values.select_nth_unstable_by(first - 1, f64::total_cmp);
        let tail = &mut values[first - 1..];
        if last - first + 1 < tail.len() {
            tail.select_nth_unstable_by(last - first, f64::total_cmp);
        }
        let mut window = values[first - 1..last].to_vec();
        window.sort_unstable_by(f64::total_cmp);
        me.first = first;
        me.window = window;
        me
    }

    /// Rank half-width at one-sided `level`.
    fn half(&self, level: f64) -> f64 {
        self.boundary.z(level, self.n as f64) * self.rank_sd
    }

    fn order_statistic(&self, rank: f64) -> Option<f64> {
        if !(rank >= 1.0 && rank <= self.n as f64) {
            return None;
        }
        let rank = rank as usize;
        let i = rank.checked_sub(self.first)?;
        self.window.get(i).copied()
    }

    /// Lower bound of the quantile at one-sided `level`: the order statistic at rank
    /// `floor(n·q - half)`; 0 when that rank is below 1 (the metrics are non-negative).
    pub fn lower(&self, level: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let rank = (self.n as f64 * self.q - self.half(level)).floor();
        self.order_statistic(rank).unwrap_or(0.0)
    }

    /// Upper bound at one-sided `level`: the order statistic at rank `ceil(n·q + half)`;
    /// infinite when that rank is past `n`.
    pub fn upper(&self, level: f64) -> f64 {
        if self.n == 0 {
            return f64::INFINITY;
        }
        let rank = (self.n as f64 * self.q + self.half(level)).ceil();
        self.order_statistic(rank).unwrap_or(f64::INFINITY)
    }
}

/// The q-quantile as SQL `percentile_cont` and numpy's default: linear interpolation between
/// the order statistics at 0-based positions `floor((n-1)q)` and `ceil((n-1)q)`. Reorders
/// `values`; `values` must not be empty.
fn percentile_cont(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    let h = (n - 1) as f64 * q;
    let below = h.floor() as usize;
    let lo = *values.select_nth_unstable_by(below, f64::total_cmp).1;
    if below + 1 >= n || h == below as f64 {
        return lo;
    }
    let hi = values[below + 1..]
        .iter()
        .copied()
        .min_by(f64::total_cmp)
        .unwrap_or(lo);
    lo + (hi - lo) * (h - below as f64)
}

/// Design effect of the share of an arm's values at or below `cut`: the clustered variance of
/// that share over the independent-events variance, at least 1.
fn design_effect(arm: &ArmSample, column: usize, cut: f64) -> f64 {
    let mut below = vec![0u32; arm.units().len()];
    let mut singles_below = 0u64;
    let mut singles = 0u64;
    for (&v, &u) in arm.values[column].iter().zip(arm.value_units(column)) {
        let hit = (v <= cut) as u32;
        if u == NO_UNIT {
            singles += 1;
            singles_below += hit as u64;
        } else {
            below[u as usize] += hit;
        }
    }
    let mut m = RatioMoments::default();
    for (u, b) in arm.units().iter().zip(&below) {
        m.add(*b as f64, u.n as f64);
    }
    if singles > 0 {
        let s = singles_below as f64;
        m.merge(&RatioMoments {
            units: singles,
            s,
            n: singles as f64,
            ss: s,
            sn: s,
            nn: singles as f64,
        });
    }
    let n = m.n;
    let p = m.s / n;
    let iid = p * (1.0 - p) / n;
    match ratio_metric_var(&m) {
        Some(v) if iid > 0.0 => (v / iid).max(1.0),
        _ => 1.0,
    }
}

/// `exp(θ̂ ± z·se)` at one-sided `level` (`side` +1 upper, -1 lower); the estimate itself when
/// no variance is left.
fn log_normal_bound(ratio: &LogRatio, boundary: Boundary, level: f64, side: f64) -> f64 {
    if ratio.se == 0.0 {
        return ratio.log_estimate.exp();
    }
    let z = boundary.z(level, 1.0 / (ratio.se * ratio.se));
    (ratio.log_estimate + side * z * ratio.se).exp()
}

/// What a ratio rule is decided on.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// Counts of a rate in one segment, events independent: the exact conditional test (x_c of
    /// the k = x_c + x_b events are the canary's), always valid through a beta mixture
    /// ([`log_beta_mixture`]) or fixed-horizon through Clopper-Pearson.
    ExactRate {
        x_c: u64,
        n_c: u64,
        x_b: u64,
        n_b: u64,
        boundary: Boundary,
    },
    /// A log ratio with a normal standard error.
    LogNormal { ratio: LogRatio, boundary: Boundary },
    /// Two arms' order-statistic bounds.
    Quantiles {
        canary: QuantileArm,
        baseline: QuantileArm,
    },
}

impl Evidence {
    /// The point estimate of canary / baseline (may be infinite or NaN when undefined).
    pub fn estimate(&self) -> f64 {
        match self {
            Evidence::ExactRate {
                x_c, n_c, x_b, n_b, ..
            } => {
                if *x_b == 0 {
                    return if *x_c > 0 { f64::INFINITY } else { f64::NAN };
                }
                (*x_c as f64 / *n_c as f64) / (*x_b as f64 / *n_b as f64)
            }
            Evidence::LogNormal { ratio, .. } => ratio.log_estimate.exp(),
            Evidence::Quantiles { canary, baseline } => {
                match (canary.estimate, baseline.estimate) {
                    (Some(c), Some(b)) if b > 0.0 => c / b,
                    (Some(c), Some(_)) if c > 0.0 => f64::INFINITY,
                    _ => f64::NAN,
                }
            }
        }
    }

    /// Upper bound of the ratio at one-sided `level` (always valid when sequential).
    pub fn upper(&self, level: f64) -> f64 {
        match self {
            Evidence::ExactRate { .. } => self.exact_rate_bound(level, false),
            Evidence::LogNormal { ratio, boundary } => {
                log_normal_bound(ratio, *boundary, level, 1.0)
            }
            Evidence::Quantiles { canary, baseline } => {
                let (c, b) = (canary.upper(level / 2.0), baseline.lower(level / 2.0));
                if b > 0.0 { c / b } else { f64::INFINITY }
            }
        }
    }

    /// Lower bound of the ratio at one-sided `level`.
    pub fn lower(&self, level: f64) -> f64 {
        match self {
            Evidence::ExactRate { .. } => self.exact_rate_bound(level, true),
            Evidence::LogNormal { ratio, boundary } => {
                log_normal_bound(ratio, *boundary, level, -1.0)
            }
            Evidence::Quantiles { canary, baseline } => {
                let (c, b) = (canary.lower(level / 2.0), baseline.upper(level / 2.0));
                if b.is_finite() && b > 0.0 {
                    c / b
                } else if b.is_finite() && c > 0.0 {
                    f64::INFINITY
                } else {
                    0.0
                }
            }
        }
    }

    /// A one-sided bound of the rate ratio at `level` from the exact conditional test: the
    /// smallest (lower) or largest (upper) ratio `R₀` that the test of `R = R₀` against the
    /// matching one-sided alternative does not reject. Fixed horizon: Clopper-Pearson mapped to
    /// the ratio; always valid: the beta mixture inverted by bisection on `ln R₀`.
    fn exact_rate_bound(&self, level: f64, lower: bool) -> f64 {
        let Evidence::ExactRate {
            x_c,
            n_c,
            x_b,
            n_b,
            boundary,
        } = *self
        else {
            return f64::NAN;
        };
        let k = x_c + x_b;
        if lower && x_c == 0 {
            return 0.0;
        }
        if !lower && x_b == 0 {
            return f64::INFINITY;
        }
        let level = level.clamp(MIN_LEVEL, 0.5);
        match boundary {
            Boundary::Fixed => {
                let Some(r) = stats::rate_ratio_exact(x_c, n_c, x_b, n_b, 1.0 - 2.0 * level) else {
                    return if lower { 0.0 } else { f64::INFINITY };
                };
                if lower { r.low } else { r.high }
            }
            Boundary::Mixture { rho2 } => {
                let (nc, nb) = (n_c as f64, n_b as f64);
                let target = -level.ln();
                // Evidence against R = R₀ on the side away from the data.
                let evidence = |log_r: f64| {
                    let r = log_r.exp();
                    let pi0 = nc * r / (nc * r + nb);
                    log_beta_mixture(x_c, k, pi0, rho2, lower)
                };
                // Lower bound: evidence(up) falls as R₀ rises; upper: evidence(down) rises.
                let rejected = |log_r: f64| evidence(log_r) >= target;
                let (mut lo, mut hi) = (-30.0_f64, 30.0_f64);
                if lower {
                    if !rejected(lo) {
                        return 0.0;
                    }
                    if rejected(hi) {
                        return f64::INFINITY;
                    }
                } else {
                    if !rejected(hi) {
                        return f64::INFINITY;
                    }
                    if rejected(lo) {
                        return 0.0;
                    }
                }
                for _ in 0..80 {
                    let mid = 0.5 * (lo + hi);
                    // Lower: the bound is the first R₀ not rejected; upper: the last.
                    if rejected(mid) == lower {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                if lower { lo.exp() } else { hi.exp() }
            }
        }
    }

    /// One-sided p-value of "the canary is higher than the baseline" (ratio > 1): always valid
    /// when the boundary is a mixture. For quantiles, the smallest level at which the lower
    /// bound exceeds 1 (found by bisection on the log level; the bounds are monotone in it).
    pub fn p_value(&self) -> f64 {
        match self {
            Evidence::ExactRate {
                x_c,
                n_c,
                x_b,
                n_b,
                boundary,
            } => {
                let k = x_c + x_b;
                let pi0 = *n_c as f64 / (*n_c + *n_b) as f64;
                let p = match boundary {
                    Boundary::Fixed => stats::binomial_sf_ge(*x_c, k, pi0),
                    Boundary::Mixture { rho2 } => {
                        (-log_beta_mixture(*x_c, k, pi0, *rho2, true)).exp()
                    }
                };
                p.clamp(MIN_LEVEL, 1.0)
            }
            Evidence::LogNormal { ratio, boundary } => {
                if ratio.se == 0.0 {
                    return if ratio.log_estimate > 0.0 {
                        MIN_LEVEL
                    } else {
                        1.0
                    };
                }
                boundary.p_value(ratio.log_estimate / ratio.se, 1.0 / (ratio.se * ratio.se))
            }
            Evidence::Quantiles { .. } => {
                let worse = |level: f64| self.lower(level) > 1.0;
                if !worse(1.0) {
                    return 1.0;
                }
                if worse(MIN_LEVEL) {
                    return MIN_LEVEL;
                }
                let (mut lo, mut hi) = (MIN_LEVEL.ln(), 0.0_f64);
                for _ in 0..60 {
                    let mid = 0.5 * (lo + hi);
                    if worse(mid.exp()) {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                hi.exp()
            }
        }
    }

    /// Factor `k >= 1` by which both arms' events must grow for the evidence to settle (the
    /// upper bound at `level` within `margin`, or, when the estimate is past the margin, the
    /// lower bound at `abort_level` above 1), assuming today's estimate holds and the standard
    /// error shrinks as `1/sqrt(k)`. `None` when neither is in sight (within 1,000×) or the
    /// estimate sits exactly at the margin.
    pub fn growth_to_settle(&self, level: f64, abort_level: f64, margin: f64) -> Option<f64> {
        let est = self.estimate();
        if !est.is_finite() || est <= 0.0 {
            return None;
        }
        let theta = est.ln();
        let log_margin = margin.ln();
        // Standard errors on each side as the current bounds imply (for quantiles, read off
        // the asymmetric bounds), and the boundary's growth with information.
        let (se_up, se_down, boundary, info) = match self {
            Evidence::ExactRate {
                x_c,
                n_c,
                x_b,
                n_b,
                boundary,
            } => {
                // Project with the normal approximation of the same counts.
                let ratio = stats::log_rate_ratio(*x_c, *n_c, *x_b, *n_b)?;
                let approx = Evidence::LogNormal {
                    ratio,
                    boundary: *boundary,
                };
                return approx.growth_to_settle(level, abort_level, margin);
            }
            Evidence::LogNormal { ratio, boundary } => {
                let info = 1.0 / (ratio.se * ratio.se);
                (ratio.se, ratio.se, *boundary, info)
            }
            Evidence::Quantiles { canary, .. } => {
                let z = canary.boundary.z(level / 2.0, canary.n as f64);
                let up = self.upper(level);
                let down = self.lower(level);
                let se_up = if up.is_finite() {
                    (up.ln() - theta).max(0.0) / z
                } else {
                    f64::INFINITY
                };
                let se_down = if down > 0.0 {
                    (theta - down.ln()).max(0.0) / z
                } else {
                    f64::INFINITY
                };
                (se_up, se_down, canary.boundary, canary.n as f64)
            }
        };
        let settles = |k: f64| {
            if !se_up.is_finite() || !se_down.is_finite() {
                // Unbounded today: assume a bound appears once the arms are 4x larger.
                return k >= 4.0;
            }
            let z_pass = boundary.z(level, info * k);
            let z_abort = boundary.z(abort_level, info * k);
            if theta < log_margin {
                theta + z_pass * se_up / k.sqrt() <= log_margin
            } else if theta > log_margin {
                theta - z_abort * se_down / k.sqrt() > 0.0
            } else {
                false
            }
        };
        if settles(1.0) {
            return Some(1.0);
        }
        let mut hi = 2.0;
        while !settles(hi) {
            hi *= 2.0;
            if hi > 1024.0 {
                return None;
            }
        }
        let mut lo = hi / 2.0;
        for _ in 0..30 {
            let mid = 0.5 * (lo + hi);
            if settles(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::policy::ValueColumn;
    use crate::judge::samples::EventObs;

    fn arm(values: &[f64], units: Option<&[u64]>) -> ArmSample {
        let mut a = ArmSample::default();
        for (i, v) in values.iter().enumerate() {
            a.push(
                EventObs::default(),
                &[(ValueColumn::TokensIn, *v)],
                units.map(|u| u[i]),
            );
        }
        a
    }

    const TOKENS: usize = ValueColumn::TokensIn as usize;

    #[test]
    fn fixed_order_statistic_bounds_match_stats_md_ranks() {
        // STATS.md: p95 ranks for n = 1000 at 95% two-sided -> 936 and 964. Values 1..=1000 make
        // each order statistic equal to its rank.
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let mut a = arm(&values, None);
        let q = QuantileArm::new(&mut a, TOKENS, 0.95, Boundary::Fixed);
        assert_eq!(q.lower(0.025), 936.0);
        assert_eq!(q.upper(0.025), 964.0);
        // percentile_cont: (n-1)·0.95 = 949.05 -> 950 + 0.05·(951 - 950)
        assert!((q.estimate.unwrap() - 950.05).abs() < 1e-9);
        // Too few events for an upper bound (rank ceil(2.85 + 0.74) = 4 > 3): unbounded above;
        // the lower rank floor(2.85 - 0.74) = 2 exists.
        let mut small = arm(&[5.0, 6.0, 7.0], None);
        let q = QuantileArm::new(&mut small, TOKENS, 0.95, Boundary::Fixed);
        assert_eq!(q.upper(0.025), f64::INFINITY);
        assert_eq!(q.lower(0.025), 6.0);
        let mut one = arm(&[5.0], None);
        let q = QuantileArm::new(&mut one, TOKENS, 0.95, Boundary::Fixed);
        assert_eq!(q.lower(0.025), 0.0);
    }

    #[test]
    fn a_jump_between_tied_values_is_not_significant() {
        // tokens_in is 800 or 1200. Baseline: 45 of 1000 at 1200, so its p95 is 800; canary:
        // 56 of 1000 at 1200, so its p95 is 1200: a "1.5x" ratio. An exact test of the same
        // counts above 800 (56 vs 45) is far from significant:
        //   scipy.stats.binomtest(56, 101, 0.5, alternative='greater').pvalue -> 0.16
        let tied = |high: usize| -> Vec<f64> {
            (0..1000)
                .map(|i| if i < high { 1200.0 } else { 800.0 })
                .collect()
        };
        let b = Boundary::tuned(true, 0.05, 2000.0);
        let mut base = arm(&tied(45), None);
        let mut can = arm(&tied(56), None);
        let e = Evidence::Quantiles {
            canary: QuantileArm::new(&mut can, TOKENS, 0.95, b),
            baseline: QuantileArm::new(&mut base, TOKENS, 0.95, b),
        };
        assert_eq!(e.estimate(), 1.5);
        assert!(e.p_value() > 0.05, "p {}", e.p_value());
        assert!(e.lower(0.05) <= 1.0);
        // And the same with a fixed-horizon boundary.
        let mut base = arm(&tied(45), None);
        let mut can = arm(&tied(56), None);
        let e = Evidence::Quantiles {
            canary: QuantileArm::new(&mut can, TOKENS, 0.95, Boundary::Fixed),
            baseline: QuantileArm::new(&mut base, TOKENS, 0.95, Boundary::Fixed),
        };
        assert!(e.p_value() > 0.05, "p {}", e.p_value());
    }

    #[test]
    fn a_real_shift_in_a_percentile_is_significant_and_bounded() {
        let b = Boundary::tuned(true, 0.05, 2000.0);
        let base: Vec<f64> = (0..2000).map(|i| 100.0 + (i % 1000) as f64).collect();
        let can: Vec<f64> = base.iter().map(|v| v * 2.0).collect();
        let mut ba = arm(&base, None);
        let mut ca = arm(&can, None);
        let e = Evidence::Quantiles {
            canary: QuantileArm::new(&mut ca, TOKENS, 0.95, b),
            baseline: QuantileArm::new(&mut ba, TOKENS, 0.95, b),
        };
        assert!((e.estimate() - 2.0).abs() < 1e-9);
        assert!(e.p_value() < 1e-6);
        assert!(e.lower(0.05) > 1.5 && e.upper(0.05) < 2.5);
        // A small shift: the p-value is the level at which the lower bound crosses 1.
        let can: Vec<f64> = base.iter().map(|v| v * 1.05).collect();
        let mut ba = arm(&base, None);
        let mut ca = arm(&can, None);
        let e = Evidence::Quantiles {
            canary: QuantileArm::new(&mut ca, TOKENS, 0.95, b),
            baseline: QuantileArm::new(&mut ba, TOKENS, 0.95, b),
        };
        let p = e.p_value();
        assert!(p > 1e-12 && p < 1.0, "p {p}");
        assert!(e.lower(p * 1.01) > 1.0 && e.lower(p * 0.99) <= 1.0);
    }

    #[test]
    fn correlated_units_widen_percentile_bounds() {
        // 20 units of 100 events; each unit's values are all alike (unit k has value k), so the
        // 2000 events carry about 20 events' worth of information about the quantile.
        let values: Vec<f64> = (0..2000).map(|i| (i % 20) as f64 + 1.0).collect();
        let units: Vec<u64> = (0..2000).map(|i| (i % 20) as u64).collect();
        let mut plain = arm(&values, None);
        let mut clustered = arm(&values, Some(&units));
        let q = QuantileArm::new(&mut plain, TOKENS, 0.5, Boundary::Fixed);
        let qc = QuantileArm::new(&mut clustered, TOKENS, 0.5, Boundary::Fixed);
        assert_eq!(q.design_effect, 1.0);
        assert!(
            qc.design_effect > 20.0,
            "design effect {}",
            qc.design_effect
        );
        assert!(qc.upper(0.025) - qc.lower(0.025) > q.upper(0.025) - q.lower(0.025));
    }

    #[test]
    fn growth_to_settle_is_at_least_one_and_none_at_the_margin() {
        let e = Evidence::LogNormal {
            ratio: LogRatio {
                log_estimate: 0.0,
                se: 0.3,
            },
            boundary: Boundary::tuned(true, 0.05, 40.0),
        };
        let k = e.growth_to_settle(0.05, 0.05, 1.5).unwrap();
        assert!(k > 1.0);
        // After that growth the bound is within the margin.
        let grown = Evidence::LogNormal {
            ratio: LogRatio {
                log_estimate: 0.0,
                se: 0.3 / k.sqrt(),
            },
            boundary: Boundary::tuned(true, 0.05, 40.0),
        };
        assert!(grown.upper(0.05) <= 1.5 + 1e-6);
        let at = Evidence::LogNormal {
            ratio: LogRatio {
                log_estimate: 1.5f64.ln(),
                se: 0.3,
            },
            boundary: Boundary::Fixed,
        };
        assert_eq!(at.growth_to_settle(0.05, 0.05, 1.5), None);
    }
}
