//! Evidence about one canary/baseline ratio: bounds at any level, an always-valid one-sided
//! p-value for "the ratio is above r₀" (r₀ the threshold, or 1), and a projection of the events
//! that would settle it, or why no number of events would.
//!
//! Three kinds, because three kinds of metric need different care:
//! - [`Evidence::ExactRate`]: a rate in one segment with independent events; the exact
//!   conditional test, valid at any count.
//! - [`Evidence::LogNormal`]: rates and means whose log ratio is asymptotically normal, with a
//!   standard error from per-unit totals (clustered, delta method for ratio metrics) or pooled
//!   across segments (Mantel-Haenszel, inverse-variance weighting).
//! - [`Evidence::Quantiles`]: percentiles, per segment or stratified over segments. Each arm's
//!   quantile gets a standard error from its order statistics (Woodruff 1952; Deng, Knoblich &
//!   Lu, KDD 2018): the ranks `n·q ± z·sqrt(n·q·(1-q)·deff)` bracket the quantile, and their
//!   values' spread over `2z` is its standard deviation. The log ratio's standard error follows
//!   by the delta method, `sqrt((σ_c/Q_c)² + (σ_b/Q_b)²)`, and segments combine by
//!   inverse-variance weighting. A ratio interval built this way has its nominal size, where
//!   the ratio of two per-arm intervals at α/2 each (a union bound, judge v2) was far wider.
//!
//!   Ties: templated prompts give `tokens_in` a handful of values, and a quantile that sits on
//!   a tied value has order statistics that do not move, so the spread read off them is 0 and a
//!   jump to the next value would look like certainty. Each arm therefore also measures the
//!   *jump* at its quantile: the chance that resampling moves the quantile to the next distinct
//!   value above or below (the count of events at or below the value is normal with the rank's
//!   standard deviation) times the size of that jump. The larger of the two spreads is used, so
//!   a quantile on a jump is as uncertain as the jump, and a quantile sitting exactly on the
//!   boundary between two values stays that uncertain at any volume: the judge says it cannot
//!   be shown, instead of promising a number of events.

use super::samples::{ArmSample, NO_UNIT, RatioMoments};
use super::sequential::{Boundary, MIN_LEVEL, log_beta_mixture};
use super::stats::{self, LogRatio, ratio_metric_var};

/// The reference level of the order-statistic spread: ranks at ±1.96 standard deviations
/// (`scipy.stats.norm.ppf(0.975)`), as in Woodruff's interval.
const Z_REF: f64 = 1.959963984540054;

/// Where an arm's quantile sits on a value shared by several events, and the values beside it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tie {
    value: f64,
    /// The nearest distinct values below and above, if any.
    below: Option<f64>,
    above: Option<f64>,
    /// Events strictly below the value, and at or below it.
    under: f64,
    at_or_under: f64,
}

/// One arm's quantile: the point estimate and how far resampling would move it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantileArm {
    pub n: usize,
    pub q: f64,
    /// As SQL `percentile_cont` (linear interpolation), `None` without events.
    pub estimate: Option<f64>,
    /// `sqrt(n·q·(1-q)·design_effect)`: the standard deviation of the count of events below the
    /// quantile, inflated when events of one unit are correlated.
    rank_sd: f64,
    /// Design effect of the count below the quantile (1 without unit ids).
    pub design_effect: f64,
    /// Sorted values at 1-based ranks `first ..= first + window.len() - 1`: the ranks at ±1.96
    /// rank standard deviations around `n·q`, which bracket the quantile. Empty when a rank falls
    /// outside `1..=n` (too few events to bracket the quantile).
    first: usize,
    window: Vec<f64>,
    /// 1-based position of the estimate among the sorted values (`(n-1)·q + 1`).
    position: f64,
    /// The tied value the estimate sits on (`None` when it lies between two distinct values).
    tie: Option<Tie>,
}

impl QuantileArm {
    /// Summarizes an arm's values of one column. Reorders the arm's values of that column
    /// unless the arm is clustered (its values must stay aligned with their units, so a copy
    /// is reordered instead).
    pub fn new(arm: &mut ArmSample, column: usize, q: f64) -> Self {
        if arm.values[column].is_empty() || !(q > 0.0 && q < 1.0) {
            return Self::from_values(&mut [], q, 1.0);
        }
        if arm.clustered() {
            arm.finish_units();
            let mut copy = arm.values[column].clone();
            let estimate = percentile_cont(&mut copy, q);
            // Design effect of the share at or below the estimate, from per-unit counts (Deng,
            // Knoblich & Lu 2018, quantile metrics under user-level randomization).
            let de = design_effect(arm, column, estimate);
            Self::from_values(&mut copy, q, de)
        } else {
            Self::from_values(&mut arm.values[column], q, 1.0)
        }
    }

    fn from_values(values: &mut [f64], q: f64, design_effect: f64) -> Self {
        let n = values.len();
        let mut me = QuantileArm {
            n,
            q,
            estimate: None,
            rank_sd: 0.0,
            design_effect,
            first: 1,
            window: Vec::new(),
            position: 0.0,
            tie: None,
        };
        if n == 0 || !(q > 0.0 && q < 1.0) {
            return me;
        }
        let estimate = percentile_cont(values, q);
        me.estimate = Some(estimate);
        me.rank_sd = (n as f64 * q * (1.0 - q) * design_effect).sqrt();
        me.position = (n - 1) as f64 * q + 1.0;
        let center = n as f64 * q;
        let low = (center - Z_REF * me.rank_sd).floor();
        let high = (center + Z_REF * me.rank_sd).ceil();
        if low >= 1.0 && high <= n as f64 {
            // Partition so ranks low..=high sit at positions low-1..high, then sort that part
            // (about 4·sqrt(n·q·(1-q)) values).
            let (first, last) = (low as usize, high as usize);
            values.select_nth_unstable_by(first - 1, f64::total_cmp);
            let tail = &mut values[first - 1..];
            if last - first + 1 < tail.len() {
                tail.select_nth_unstable_by(last - first, f64::total_cmp);
            }
            let mut window = values[first - 1..last].to_vec();
            window.sort_unstable_by(f64::total_cmp);
            me.first = first;
            me.window = window;
        }
        // The tie at the estimate: one pass counting the events below and at the value and
        // finding its neighbours.
        let (mut under, mut at) = (0usize, 0usize);
        let (mut below, mut above) = (f64::NEG_INFINITY, f64::INFINITY);
        for &v in values.iter() {
            if v < estimate {
                under += 1;
                below = below.max(v);
            } else if v == estimate {
                at += 1;
            } else {
                above = above.min(v);
            }
        }
        if at > 0 {
            me.tie = Some(Tie {
                value: estimate,
                below: below.is_finite().then_some(below),
                above: above.is_finite().then_some(above),
                under: under as f64,
                at_or_under: (under + at) as f64,
            });
        }
        me
    }

    /// Standard deviation of the quantile estimate after the arm grows `k >= 1`-fold with the
    /// same distribution. The bracketing ranks close in as `1/sqrt(k)` (in shares of the arm),
    /// and today's order statistics stand in for tomorrow's quantile function, so on continuous
    /// values the spread shrinks as `1/sqrt(k)`. A quantile that sits on the jump between tied
    /// values ([`QuantileArm::on_jump`]) keeps today's spread: which side of the jump the true
    /// quantile lies on is what the data cannot tell, and more of the same does not tell it.
    /// `None` when the arm has too few events to bracket its quantile.
    pub fn sd_at(&self, k: f64) -> Option<f64> {
        let k = if self.on_jump().is_some() { 1.0 } else { k };
        let (lo, hi) = self.bracket(k)?;
        Some(((hi - lo) / (2.0 * Z_REF)).max(self.jump_sd(k)))
    }

    /// The values at the bracketing ranks after `k`-fold growth (see [`QuantileArm::sd_at`]).
    fn bracket(&self, k: f64) -> Option<(f64, f64)> {
        if self.window.is_empty() {
            return None;
        }
        let center = self.n as f64 * self.q;
        let half = Z_REF * self.rank_sd / k.max(1.0).sqrt();
        let at = |rank: f64| -> Option<f64> {
            let i = (rank as usize).checked_sub(self.first)?;
            self.window.get(i).copied()
        };
        Some((at((center - half).floor())?, at((center + half).ceil())?))
    }

    /// `(below, above)` when the quantile sits on a jump between tied values: the ranks that
    /// bracket it hold at most three distinct values and span a gap (templated prompts give
    /// `tokens_in` a handful of values). Continuous values give a bracket of many distinct ones.
    pub fn on_jump(&self) -> Option<(f64, f64)> {
        let (first, last) = (*self.window.first()?, *self.window.last()?);
        if first == last {
            return None;
        }
        let distinct = 1 + self.window.windows(2).filter(|w| w[0] != w[1]).count();
        (distinct <= 3).then_some((first, last))
    }

    /// The jump part of [`QuantileArm::sd_at`]: 0 without a tie.
    fn jump_sd(&self, k: f64) -> f64 {
        let Some(t) = self.tie else {
            return 0.0;
        };
        if self.rank_sd <= 0.0 {
            return 0.0;
        }
        let s = self.rank_sd / k.sqrt();
        // The estimate leaves the value upward when fewer than `position` events are at or
        // below it, downward when at least `position` are below it.
        let up = stats::normal_cdf((self.position - t.at_or_under) / s);
        let down = stats::normal_cdf((t.under - self.position) / s);
        let part = |p: f64, gap: Option<f64>| gap.map_or(0.0, |g| p * (1.0 - p) * g * g);
        (part(up, t.above.map(|a| a - t.value)) + part(down, t.below.map(|b| t.value - b))).sqrt()
    }

    /// Events this arm needs before its quantile can be bracketed (ranks at ±1.96 standard
    /// deviations inside `1..=n`), from `n·min(q, 1-q) >= 1.96·sqrt(n·q·(1-q)·deff)`.
    pub fn events_to_bracket(&self) -> u64 {
        let tail = self.q.min(1.0 - self.q);
        let need = Z_REF * Z_REF * self.q * (1.0 - self.q) * self.design_effect / (tail * tail);
        need.ceil() as u64 + 1
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

/// Both arms' quantiles in one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantilePair {
    pub canary: QuantileArm,
    pub baseline: QuantileArm,
}

impl QuantilePair {
    /// The log ratio and its delta-method standard error after `k`-fold growth; `None` when an
    /// arm cannot bracket its quantile or a quantile is not positive.
    pub fn log_ratio_at(&self, k: f64) -> Option<LogRatio> {
        let (c, b) = (self.canary.estimate?, self.baseline.estimate?);
        if !(c > 0.0 && b > 0.0) {
            return None;
        }
        let (sc, sb) = (self.canary.sd_at(k)?, self.baseline.sd_at(k)?);
        Some(LogRatio {
            log_estimate: (c / b).ln(),
            se: ((sc / c).powi(2) + (sb / b).powi(2)).sqrt(),
        })
    }

    /// Effective events of the comparison, `1/(1/n_c + 1/n_b)`, for pooling.
    fn effective_events(&self) -> f64 {
        effective_events(self.canary.n as f64, self.baseline.n as f64)
    }
}

/// `1/(1/n_c + 1/n_b)`: how many events per arm a comparison of two arms is worth.
pub fn effective_events(n_c: f64, n_b: f64) -> f64 {
    if n_c > 0.0 && n_b > 0.0 {
        1.0 / (1.0 / n_c + 1.0 / n_b)
    } else {
        0.0
    }
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
    /// Percentiles: one pair of arms per segment (one pair for a segment's own evidence, every
    /// judgeable segment's for the stratified estimate), combined by inverse-variance weights.
    Quantiles {
        strata: Vec<QuantilePair>,
        boundary: Boundary,
    },
}

/// Whether more events would settle a rule, at the current estimate.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// Both arms growing by this factor (> 1) would settle it.
    After(f64),
    /// No number of events would, for this reason.
    Never(String),
}

impl Evidence {
    /// The log ratio and its standard error after both arms grow `k`-fold at today's values
    /// (`k = 1`: today). For exact rates, the normal approximation of the same counts.
    pub fn log_ratio_at(&self, k: f64) -> Option<LogRatio> {
        let shrink = |r: LogRatio| LogRatio {
            log_estimate: r.log_estimate,
            se: r.se / k.sqrt(),
        };
        match self {
            Evidence::ExactRate {
                x_c, n_c, x_b, n_b, ..
            } => stats::log_rate_ratio(*x_c, *n_c, *x_b, *n_b).map(shrink),
            Evidence::LogNormal { ratio, .. } => Some(shrink(*ratio)),
            Evidence::Quantiles { strata, .. } => {
                let parts: Vec<(LogRatio, f64)> = strata
                    .iter()
                    .filter_map(|p| Some((p.log_ratio_at(k)?, p.effective_events())))
                    .collect();
                stats::stratified_log_ratio(&parts)
            }
        }
    }

    fn boundary(&self) -> Boundary {
        match self {
            Evidence::ExactRate { boundary, .. }
            | Evidence::LogNormal { boundary, .. }
            | Evidence::Quantiles { boundary, .. } => *boundary,
        }
    }

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
            _ => self
                .log_ratio_at(1.0)
                .map_or(f64::NAN, |r| r.log_estimate.exp()),
        }
    }

    /// Upper bound of the ratio at one-sided `level` (always valid when sequential).
    pub fn upper(&self, level: f64) -> f64 {
        match self {
            Evidence::ExactRate { .. } => self.exact_rate_bound(level, false),
            _ => self.log_normal_bound(level, 1.0),
        }
    }

    /// Lower bound of the ratio at one-sided `level`.
    pub fn lower(&self, level: f64) -> f64 {
        match self {
            Evidence::ExactRate { .. } => self.exact_rate_bound(level, true),
            _ => self.log_normal_bound(level, -1.0),
        }
    }

    /// `exp(θ̂ ± z·se)` at one-sided `level` (`side` +1 upper, -1 lower); the estimate itself
    /// when no variance is left; unbounded (or 0) when nothing can be said.
    fn log_normal_bound(&self, level: f64, side: f64) -> f64 {
        let Some(ratio) = self.log_ratio_at(1.0) else {
            return if side > 0.0 { f64::INFINITY } else { 0.0 };
        };
        if ratio.se == 0.0 {
            return ratio.log_estimate.exp();
        }
        let z = self.boundary().z(level, 1.0 / (ratio.se * ratio.se));
        (ratio.log_estimate + side * z * ratio.se).exp()
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

    /// One-sided p-value of "the ratio is above `r0`" (`r0` is the threshold for the default
    /// abort test, 1 for "any harm"): always valid when the boundary is a mixture. It is at most
    /// a level exactly when [`Evidence::lower`] at that level is above `r0`.
    pub fn p_above(&self, r0: f64) -> f64 {
        let boundary = self.boundary();
        let p = match self {
            Evidence::ExactRate {
                x_c, n_c, x_b, n_b, ..
            } => {
                let k = x_c + x_b;
                let (nc, nb) = (*n_c as f64 * r0, *n_b as f64);
                let pi0 = nc / (nc + nb);
                match boundary {
                    Boundary::Fixed => stats::binomial_sf_ge(*x_c, k, pi0),
                    Boundary::Mixture { rho2 } => {
                        (-log_beta_mixture(*x_c, k, pi0, rho2, true)).exp()
                    }
                }
            }
            _ => {
                let Some(ratio) = self.log_ratio_at(1.0) else {
                    return 1.0;
                };
                let distance = ratio.log_estimate - r0.ln();
                if ratio.se == 0.0 {
                    return if distance > 0.0 { MIN_LEVEL } else { 1.0 };
                }
                boundary.p_value(distance / ratio.se, 1.0 / (ratio.se * ratio.se))
            }
        };
        p.clamp(MIN_LEVEL, 1.0)
    }

    /// Whether both arms growing at today's estimate would settle the rule: the upper bound at
    /// `pass_level` within `margin` (when the estimate is inside it), or the lower bound at
    /// `abort_level` above `abort_ratio` (when the estimate is past it). `After(k)`: a growth
    /// factor `k > 1` that would; `Never(why)`: none within 1,000 times today's events, with
    /// the reason in words.
    pub fn growth_to_settle(
        &self,
        pass_level: f64,
        abort_level: f64,
        margin: f64,
        abort_ratio: f64,
    ) -> Settle {
        let Some(now) = self.log_ratio_at(1.0) else {
            return Settle::Never("no ratio can be estimated yet".into());
        };
        let theta = now.log_estimate;
        let (log_margin, log_abort) = (margin.ln(), abort_ratio.ln());
        if !theta.is_finite() {
            return Settle::Never("the baseline has none of these events".into());
        }
        if theta >= log_margin && theta <= log_abort {
            return Settle::Never(format!(
                "the estimate ({}) sits at the threshold, where neither bound can cross it",
                super::verdict::ratio_text(theta.exp())
            ));
        }
        let boundary = self.boundary();
        let settles = |k: f64| {
            let Some(r) = self.log_ratio_at(k) else {
                return false;
            };
            if r.se == 0.0 {
                return true;
            }
            let info = 1.0 / (r.se * r.se);
            let pass =
                theta < log_margin && theta + boundary.z(pass_level, info) * r.se <= log_margin;
            let abort =
                theta > log_abort && theta - boundary.z(abort_level, info) * r.se > log_abort;
            pass || abort
        };
        smallest_growth(settles).map_or_else(
            || Settle::Never(self.stuck_reason(theta, margin, abort_ratio)),
            Settle::After,
        )
    }

    /// Whether both arms growing at today's values would measure the log ratio to a standard
    /// error of at most `target_se`: `After(k)` with the growth factor, or `Never(why)` (a
    /// percentile stuck on a jump between tied values does not narrow).
    pub fn growth_to_precision(&self, target_se: f64) -> Settle {
        let se_at = |k: f64| self.log_ratio_at(k).map(|r| r.se);
        smallest_growth(|k| se_at(k).is_some_and(|se| se <= target_se)).map_or_else(
            || {
                let theta = self.log_ratio_at(1.0).map_or(0.0, |r| r.log_estimate);
                Settle::Never(self.stuck_reason(theta, f64::INFINITY, f64::INFINITY))
            },
            Settle::After,
        )
    }

    /// Why 1,000 times today's events would not settle the rule.
    fn stuck_reason(&self, theta: f64, margin: f64, abort_ratio: f64) -> String {
        if let Evidence::Quantiles { strata, .. } = self {
            for p in strata {
                for arm in [&p.canary, &p.baseline] {
                    if let Some((a, b)) = arm.on_jump() {
                        return format!(
                            "the percentile sits on the jump between tied values {} and {}, so more events do not narrow its bound",
                            super::verdict::num(a),
                            super::verdict::num(b)
                        );
                    }
                }
            }
        }
        if !margin.is_finite() {
            return "more than 1,000 times today's events would be needed".into();
        }
        let near = if theta < margin.ln() {
            margin
        } else {
            abort_ratio
        };
        format!(
            "the estimate ({}) is so close to {} that more than 1,000 times today's events would be needed",
            super::verdict::ratio_text(theta.exp()),
            super::verdict::ratio_text(near)
        )
    }
}

/// The smallest growth factor in `1..=1024` at which `done` holds (`done` must be monotone), by
/// bisection on the log scale; `None` when even 1,024 times today's events are not enough.
fn smallest_growth(done: impl Fn(f64) -> bool) -> Option<f64> {
    const MOST: f64 = 1024.0;
    if !done(MOST) {
        return None;
    }
    let (mut lo, mut hi) = (1.0, MOST);
    for _ in 0..40 {
        let mid = (lo * hi).sqrt();
        if done(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// A stratum's percentile comparison built from its two arms, for [`Evidence::Quantiles`].
pub fn quantile_pair(
    canary: &mut ArmSample,
    baseline: &mut ArmSample,
    column: usize,
    q: f64,
) -> QuantilePair {
    QuantilePair {
        canary: QuantileArm::new(canary, column, q),
        baseline: QuantileArm::new(baseline, column, q),
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

    fn pair(canary: &[f64], baseline: &[f64], q: f64, boundary: Boundary) -> Evidence {
        let (mut c, mut b) = (arm(canary, None), arm(baseline, None));
        Evidence::Quantiles {
            strata: vec![quantile_pair(&mut c, &mut b, TOKENS, q)],
            boundary,
        }
    }

    #[test]
    fn order_statistic_spread_uses_the_stats_md_ranks() {
        // STATS.md: p95 ranks for n = 1000 at 95% two-sided -> 936 and 964. Values 1..=1000 make
        // each order statistic equal to its rank, so the spread is (964 - 936) / (2·1.96).
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let mut a = arm(&values, None);
        let q = QuantileArm::new(&mut a, TOKENS, 0.95);
        let sd = 28.0 / (2.0 * Z_REF);
        assert!((q.sd_at(1.0).unwrap() - sd).abs() < 1e-12);
        // percentile_cont: (n-1)·0.95 = 949.05 -> 950 + 0.05·(951 - 950)
        assert!((q.estimate.unwrap() - 950.05).abs() < 1e-9);
        // Four times the events: ranks 950 ∓ 6.89 -> 943 and 957, half the spread (to rounding).
        assert!((q.sd_at(4.0).unwrap() - 14.0 / (2.0 * Z_REF)).abs() < 1e-12);
        // Too few events to bracket a p95 (rank 1.96 sd above n·q is past n).
        let mut small = arm(&[5.0, 6.0, 7.0], None);
        let q = QuantileArm::new(&mut small, TOKENS, 0.95);
        assert_eq!(q.sd_at(1.0), None);
        // n·0.05 >= 1.96·sqrt(n·0.0475) from n = 73 on.
        assert_eq!(q.events_to_bracket(), 74);
        let values: Vec<f64> = (1..=73).map(f64::from).collect();
        let q = QuantileArm::new(&mut arm(&values, None), TOKENS, 0.95);
        assert!(q.sd_at(1.0).is_some());
    }

    #[test]
    fn a_jump_between_tied_values_is_as_uncertain_as_the_jump() {
        // tokens_in is 800 or 1200. Baseline: 45 of 1000 at 1200, so its p95 is 800; canary:
        // 56 of 1000 at 1200, so its p95 is 1200: a "1.5x" ratio that an exact test of the same
        // counts above 800 (56 vs 45) puts far from significant:
        //   scipy.stats.binomtest(56, 101, 0.5, alternative='greater').pvalue -> 0.16
        let tied = |high: usize| -> Vec<f64> {
            (0..1000)
                .map(|i| if i < high { 1200.0 } else { 800.0 })
                .collect()
        };
        let b = Boundary::for_margin(true, 0.05, 1.25);
        let e = pair(&tied(56), &tied(45), 0.95, b);
        assert!((e.estimate() - 1.5).abs() < 1e-12);
        // Neither significantly above 1, nor above the threshold, nor shown within it.
        assert!(e.p_above(1.0) > 0.05, "p {}", e.p_above(1.0));
        assert!(e.p_above(1.25) > 0.05);
        assert!(e.upper(0.05) > 1.25);
        // The same with a fixed-horizon boundary.
        let e = pair(&tied(56), &tied(45), 0.95, Boundary::Fixed);
        assert!(e.p_above(1.0) > 0.05, "p {}", e.p_above(1.0));
        // Exactly on the jump in both arms (50 of 1000 at 1200): the bound does not narrow with
        // volume, and the judge says so instead of promising events.
        let e = pair(&tied(50), &tied(50), 0.95, b);
        match e.growth_to_settle(0.05, 0.05, 1.25, 1.25) {
            Settle::Never(why) => assert!(why.contains("800") && why.contains("1200"), "{why}"),
            other => panic!("expected never, got {other:?}"),
        }
        // Clearly on either side of the jump (30 vs 70 of 1000 at 1200): the estimate's spread
        // shrinks fast, and a real 1.5x is significant.
        let e = pair(&tied(70), &tied(30), 0.95, b);
        assert!(e.p_above(1.25) < 0.05, "p {}", e.p_above(1.25));
    }

    #[test]
    fn a_real_shift_in_a_percentile_is_significant_and_bounded() {
        let b = Boundary::for_margin(true, 0.05, 1.25);
        let base: Vec<f64> = (0..2000).map(|i| 100.0 + (i % 1000) as f64).collect();
        let can: Vec<f64> = base.iter().map(|v| v * 2.0).collect();
        let e = pair(&can, &base, 0.95, b);
        assert!((e.estimate() - 2.0).abs() < 1e-9);
        assert!(e.p_above(1.25) < 1e-6);
        assert!(e.lower(0.05) > 1.5 && e.upper(0.05) < 2.5);
        // The p-value against r0 is the level at which the lower bound crosses r0.
        let can: Vec<f64> = base.iter().map(|v| v * 1.05).collect();
        let e = pair(&can, &base, 0.95, b);
        let p = e.p_above(1.0);
        assert!(p > 1e-12 && p < 1.0, "p {p}");
        assert!(e.lower(p * 1.01) > 1.0 && e.lower(p * 0.99) <= 1.0);
        // Identical arms: shown within 1.25x at this volume.
        let e = pair(&base, &base, 0.95, b);
        assert!(e.upper(0.05) < 1.25, "{}", e.upper(0.05));
    }

    #[test]
    fn delta_method_matches_a_hand_computation() {
        // Canary 1..=1000 doubled, baseline 1..=1000: per arm the spread is (964 - 936)/(2·1.96)
        // in rank units (doubled for the canary); Q_c = 1900.1, Q_b = 950.05. The relative
        // spreads are equal (14.2860/950.05), so se = sqrt(2)·14.2860/950.05 = 0.0212660.
        let base: Vec<f64> = (1..=1000).map(f64::from).collect();
        let can: Vec<f64> = base.iter().map(|v| v * 2.0).collect();
        let e = pair(&can, &base, 0.95, Boundary::Fixed);
        let r = e.log_ratio_at(1.0).unwrap();
        let sd = 28.0 / (2.0 * Z_REF);
        assert!((r.se - 2f64.sqrt() * sd / 950.05).abs() < 1e-12, "{}", r.se);
        assert!((r.log_estimate - 2f64.ln()).abs() < 1e-12);
        // Fixed-horizon 95% upper bound: exp(ln 2 + 1.6449·se).
        let expected = (2f64.ln() + 1.6448536269514722 * r.se).exp();
        assert!((e.upper(0.05) - expected).abs() < 1e-12);
    }

    #[test]
    fn strata_combine_by_inverse_variance() {
        // Two segments with the same 1.1x shift: the stratified se is below each one's.
        let b = Boundary::Fixed;
        let base: Vec<f64> = (1..=2000).map(|i| f64::from(i % 997 + 1)).collect();
        let can: Vec<f64> = base.iter().map(|v| v * 1.1).collect();
        let one = pair(&can, &base, 0.9, b);
        let (mut c1, mut b1) = (arm(&can, None), arm(&base, None));
        let (mut c2, mut b2) = (arm(&can, None), arm(&base, None));
        let both = Evidence::Quantiles {
            strata: vec![
                quantile_pair(&mut c1, &mut b1, TOKENS, 0.9),
                quantile_pair(&mut c2, &mut b2, TOKENS, 0.9),
            ],
            boundary: b,
        };
        let (s1, s2) = (
            one.log_ratio_at(1.0).unwrap(),
            both.log_ratio_at(1.0).unwrap(),
        );
        assert!((s1.log_estimate - s2.log_estimate).abs() < 1e-12);
        assert!((s2.se - s1.se / 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn correlated_units_widen_percentile_bounds() {
        // 20 units of 100 events; each unit's values are all alike (unit k has value k), so the
        // 2000 events carry about 20 events' worth of information about the quantile.
        let values: Vec<f64> = (0..2000).map(|i| (i % 20) as f64 + 1.0).collect();
        let units: Vec<u64> = (0..2000).map(|i| (i % 20) as u64).collect();
        let mut plain = arm(&values, None);
        let mut clustered = arm(&values, Some(&units));
        let q = QuantileArm::new(&mut plain, TOKENS, 0.5);
        let qc = QuantileArm::new(&mut clustered, TOKENS, 0.5);
        assert_eq!(q.design_effect, 1.0);
        assert!(
            qc.design_effect > 20.0,
            "design effect {}",
            qc.design_effect
        );
        assert!(qc.sd_at(1.0).unwrap() > q.sd_at(1.0).unwrap());
    }

    #[test]
    fn growth_to_settle_is_a_real_factor_or_a_reason() {
        let log_normal = |ratio: f64, se: f64, boundary: Boundary| Evidence::LogNormal {
            ratio: LogRatio {
                log_estimate: ratio.ln(),
                se,
            },
            boundary,
        };
        let tuned = Boundary::for_margin(true, 0.05, 1.5);
        let Settle::After(k) = log_normal(1.0, 0.3, tuned).growth_to_settle(0.05, 0.05, 1.5, 1.5)
        else {
            panic!("a ratio of 1 settles within 1.5x with more events");
        };
        assert!(k > 1.0);
        // After that growth the bound is within the margin.
        assert!(log_normal(1.0, 0.3 / k.sqrt(), tuned).upper(0.05) <= 1.5 + 1e-6);
        // At the threshold: never; past it: settles by an abort.
        let at = log_normal(1.5, 0.3, Boundary::Fixed);
        assert!(matches!(
            at.growth_to_settle(0.05, 0.05, 1.5, 1.5),
            Settle::Never(_)
        ));
        let past = log_normal(2.0, 0.3, Boundary::Fixed);
        assert!(matches!(
            past.growth_to_settle(0.05, 0.05, 1.5, 1.5),
            Settle::After(_)
        ));
    }
}
