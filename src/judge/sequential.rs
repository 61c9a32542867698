//! Critical values that stay valid however often a canary is judged.
//!
//! A canary is judged again and again while it runs (every `rollout step`, every cron tick). A
//! fixed-horizon test at level α, repeated, rejects a true null far more often than α, and a
//! non-inferiority bound, repeated, promotes a canary that sits at its margin far more often.
//! The judge therefore uses *always-valid* bounds by default: a confidence sequence, whose
//! coverage holds simultaneously at every look, so `judge` stays stateless (it needs no record of
//! earlier looks) and any number of looks keeps the error rates at the nominal level.
//!
//! The boundary is the one-sided normal-mixture boundary of Robbins (1970) as used for
//! confidence sequences by Howard, Ramdas, McAuliffe and Sekhon ("Time-uniform, nonparametric,
//! nonasymptotic confidence sequences", Ann. Statist. 2021, §3.3 and Proposition 6) and, for
//! asymptotically normal estimators, by Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas
//! ("Time-uniform central limit theory and asymptotic confidence sequences", 2023). For an
//! estimate θ̂ with standard error `se`, the information is `I = 1/se²` and the score
//! `S = (θ̂ - θ₀)·I` behaves as a Brownian motion in `I` (the canonical joint distribution of
//! group-sequential designs, Jennison and Turnbull 2000, ch. 3). Mixing the likelihood ratio
//! `exp(λS - λ²I/2)` over a half-normal `λ ~ N⁺(0, ρ²)` gives the nonnegative supermartingale
//!
//! ```text
//! M(Z; r) = 2/sqrt(1+r) · exp(r·Z² / (2(1+r))) · Φ(Z·sqrt(r/(1+r))),   Z = (θ̂-θ₀)/se,  r = ρ²·I
//! ```
//!
//! and by Ville's inequality `P(∃ look: M ≥ 1/α) ≤ α`. So `p = min(1, 1/M)` is an always-valid
//! one-sided p-value, and the critical value at level α is the `Z` solving `M(Z; r) = 1/α`,
//! which this module finds by bisection (`M` increases in `Z`). The same critical value used with
//! the two-sided closed form `M₂ = exp(r·Z²/(2(1+r)))/sqrt(1+r)` reproduces the normal-mixture
//! margin quoted in `STATS.md`; the tests check both.
//!
//! `ρ²` tunes where the boundary is tightest. Following Howard et al. (eq. 14), a boundary is
//! tightest near the information `I*` when `ρ² = (-2 ln α + ln(-2 ln α + 1)) / I*`; the judge sets
//! `I*` per rule (see [`Boundary::for_margin`]). Any fixed `ρ`
//! keeps validity; only power depends on it.
//!
//! `sequential = false` in the policy switches every bound to the fixed-horizon normal critical
//! value, for a single planned look.

use super::stats::normal_sf;
use statrs::distribution::{ContinuousCDF, Normal};

/// Smallest level the judge evaluates; p-values below it are reported as this value.
pub const MIN_LEVEL: f64 = 1e-15;

/// How critical values are computed for one test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Boundary {
    /// One planned look: the normal quantile.
    Fixed,
    /// Always valid: the one-sided normal-mixture boundary with mixing variance `rho2` per unit
    /// of information.
    Mixture { rho2: f64 },
}

/// `-2 ln α + ln(-2 ln α + 1)`: the numerator of the tuned mixing variance (Howard et al. 2021).
fn tuning_constant(alpha: f64) -> f64 {
    let l = -2.0 * alpha.ln();
    l + (l + 1.0).ln()
}

impl Boundary {
    /// A mixture boundary tightest near information `info_star` for tests at level `alpha`.
    pub fn tuned(sequential: bool, alpha: f64, info_star: f64) -> Self {
        if !(sequential && info_star > 0.0 && info_star.is_finite()) {
            return Boundary::Fixed;
        }
        Boundary::Mixture {
            rho2: tuning_constant(alpha) / info_star,
        }
    }

    /// For a test of a log ratio against the margin `max_ratio`: tightest at the information a
    /// fixed-horizon test at level `alpha` needs for 80% power when the true ratio is 1, i.e.
    /// `I* = ((z_{1-α} + z_{0.8}) / ln max_ratio)²`.
    pub fn for_margin(sequential: bool, alpha: f64, max_ratio: f64) -> Self {
        let normal = Normal::standard();
        let z_a = -normal.inverse_cdf(alpha.clamp(MIN_LEVEL, 0.5));
        let z_b = -normal.inverse_cdf(0.2);
        // A margin of exactly 1 has no finite planned information; tune as for 1%.
        let log_margin = max_ratio.max(1.01).ln();
        Self::tuned(sequential, alpha, ((z_a + z_b) / log_margin).powi(2))
    }

    /// Critical value in standard-error units for a one-sided test at `level` after `info` units
    /// of information. `f64::INFINITY` when `info` is 0 (nothing can be concluded yet).
    pub fn z(self, level: f64, info: f64) -> f64 {
        let level = level.clamp(MIN_LEVEL, 0.5);
        match self {
            Boundary::Fixed => -Normal::standard().inverse_cdf(level),
            Boundary::Mixture { rho2 } => {
                let r = rho2 * info;
                if r.is_nan() || r <= 0.0 {
                    return f64::INFINITY;
                }
                mixture_z(level, r)
            }
        }
    }

    /// One-sided p-value of an observed `z` after `info` units of information: always valid for
    /// a mixture boundary (`1/M`), the normal tail for a fixed one. Never below [`MIN_LEVEL`].
    pub fn p_value(self, z: f64, info: f64) -> f64 {
        if z.is_nan() {
            return 1.0;
        }
        let p = match self {
            Boundary::Fixed => normal_sf(z),
            Boundary::Mixture { rho2 } => {
                let r = rho2 * info;
                if r.is_nan() || r <= 0.0 {
                    return 1.0;
                }
                (-log_mixture_one_sided(z, r)).exp()
            }
        };
        p.clamp(MIN_LEVEL, 1.0)
    }
}

/// `ln M(Z; r)` of the one-sided (half-normal) mixture.
fn log_mixture_one_sided(z: f64, r: f64) -> f64 {
    let s = (r / (1.0 + r)).sqrt();
    // ln Φ(x) = ln(1 - sf(x)); for very negative x use sf(-x) directly.
    let ln_phi = {
        let x = z * s;
        if x < -5.0 {
            normal_sf(-x).ln()
        } else {
            (1.0 - normal_sf(x)).ln()
        }
    };
    std::f64::consts::LN_2 - 0.5 * (1.0 + r).ln() + r * z * z / (2.0 * (1.0 + r)) + ln_phi
}

/// The `Z` at which the one-sided mixture reaches `1/level`.
fn mixture_z(level: f64, r: f64) -> f64 {
    let target = -level.ln();
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while log_mixture_one_sided(hi, r) < target {
        hi *= 2.0;
        if hi > 1e6 {
            return f64::INFINITY;
        }
    }
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if log_mixture_one_sided(mid, r) < target {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 * hi {
            break;
        }
    }
    hi
}

/// One-sided beta-binomial mixture for the exact conditional test of two rates.
///
/// Given `k` events of a kind in both arms, each is the canary's with probability `π`; the rate
/// ratio `R` maps to `π = n_c·R / (n_c·R + n_b)` (the conditional method for two Poisson rates,
/// see [`super::stats::rate_ratio_exact`]). As the events arrive one by one, the likelihood ratio
/// of `π₁` against `π₀` is a nonnegative martingale under `π₀`, and for `π₁ > π₀` a
/// supermartingale under every `π ≤ π₀`; mixed over a prior on `π₁` restricted to one side, it
/// stays one (Robbins 1970; Howard et al. 2021, §3). So by Ville's inequality
/// `P(∃ look: M ≥ 1/α) ≤ α` *exactly*, at any count including zero: the test stays valid for
/// the handful of events a young canary has, where a normal approximation does not.
///
/// The prior is a Beta with mean `π₀` and the spread that the normal mixture's `ρ²` gives the log
/// ratio (`Var(π) ≈ ρ²·π₀²(1-π₀)²` by the delta method), truncated to the alternative's side:
///
/// ```text
/// M = B(a+x, b+k-x)·P(side | a+x, b+k-x) / (B(a,b)·P(side | a,b) · π₀^x (1-π₀)^(k-x))
/// ```
///
/// Returns `ln M`; `up` is the alternative `π > π₀` (the canary worse), else `π < π₀`.
pub fn log_beta_mixture(x: u64, k: u64, pi0: f64, rho2: f64, up: bool) -> f64 {
    use statrs::function::beta::{beta_reg, ln_beta};
    if !(pi0 > 0.0 && pi0 < 1.0) || x > k {
        return 0.0;
    }
    let kappa = (1.0 / (rho2 * pi0 * (1.0 - pi0)) - 1.0).max(2.0);
    let (a, b) = (kappa * pi0, kappa * (1.0 - pi0));
    let (xf, rest) = (x as f64, (k - x) as f64);
    // P(side) under Beta(p, q): above π₀ is I_{1-π₀}(q, p), below is I_{π₀}(p, q).
    let side = |p: f64, q: f64| {
        if up {
            beta_reg(q, p, 1.0 - pi0)
        } else {
            beta_reg(p, q, pi0)
        }
    };
    ln_beta(a + xf, b + rest) - ln_beta(a, b) + side(a + xf, b + rest).ln()
        - side(a, b).ln()
        - xf * pi0.ln()
        - rest * (1.0 - pi0).ln()
}

/// Two-sided normal-mixture margin for a mean of `t` unit-variance observations
/// (Waudby-Smith et al. 2023, eq. for the Gaussian mixture):
/// `m(t) = sqrt(2(tρ²+1)/(t²ρ²) · ln(sqrt(tρ²+1)/α))`. Kept to pin the constants against the
/// reference values in `STATS.md`.
pub fn two_sided_margin(t: f64, rho2: f64, alpha: f64) -> f64 {
    let r = t * rho2;
    (2.0 * (r + 1.0) / (t * t * rho2) * (((r + 1.0).sqrt()) / alpha).ln()).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn close(a: f64, b: f64, rel: f64) {
        assert!((a - b).abs() <= rel * b.abs(), "{a} vs {b}");
    }

    #[test]
    fn tuned_rho2_matches_stats_md() {
        // STATS.md: normal-mixture rho² for t* = 1000, alpha = 0.05 -> 0.00793615
        let Boundary::Mixture { rho2 } = Boundary::tuned(true, 0.05, 1000.0) else {
            panic!("sequential boundary expected");
        };
        close(rho2, 0.00793615, 1e-6);
    }

    #[test]
    fn two_sided_margin_matches_stats_md() {
        // STATS.md: m(t) with that rho², t = 100 / 1000 / 10000 -> 0.385505 / 0.0959817 / 0.0324172
        let rho2 = tuning_constant(0.05) / 1000.0;
        close(two_sided_margin(100.0, rho2, 0.05), 0.385505, 1e-5);
        close(two_sided_margin(1000.0, rho2, 0.05), 0.0959817, 1e-5);
        close(two_sided_margin(10000.0, rho2, 0.05), 0.0324172, 1e-5);
    }

    #[test]
    fn one_sided_mixture_reference_values() {
        // Independent check by numerical integration with scipy 1.17:
        //   M = lambda z, r: quad(lambda l: 2*norm.pdf(l, 0, sqrt(r)) * exp(l*z - l*l/2),
        //                         0, inf, limit=500, epsabs=0, epsrel=1e-12)[0]
        //   brentq(lambda z: log(M(z, r)) - log(1/alpha), 0.1, 8, xtol=1e-14)
        // (the mixture written over lambda on the standardized scale, I = 1; it does not use
        // the closed form this module evaluates).
        // r = 7.93615 (I = I*), alpha = 0.05 -> 2.767992; alpha = 0.025 -> 3.035993
        // r = 0.793615, alpha = 0.05 -> 3.432103;   r = 79.3615, alpha = 0.05 -> 3.017905
        for (r, alpha, expected) in [
            (7.93615, 0.05, 2.767992),
            (7.93615, 0.025, 3.035993),
            (0.793615, 0.05, 3.432103),
            (79.3615, 0.05, 3.017905),
        ] {
            close(mixture_z(alpha, r), expected, 2e-6);
        }
    }

    #[test]
    fn beta_mixture_reference_values() {
        // Independent check by numerical integration with scipy 1.17 (no closed form):
        //   kappa = max(1/(rho2*pi0*(1-pi0)) - 1, 2); a, b = kappa*pi0, kappa*(1-pi0)
        //   f = lambda p: beta.pdf(p, a, b) * (p/pi0)**x * ((1-p)/(1-pi0))**(k-x)
        //   up:   quad(f, pi0, 1)[0] / beta.sf(pi0, a, b)
        //   down: quad(f, 0, pi0)[0] / beta.cdf(pi0, a, b);  then log(...)
        //   (quad with epsabs=0, epsrel=1e-12, limit=500)
        // x=12, k=20, pi0=0.4, rho2=0.2 -> up 1.0545919, down -1.1742807
        // x=40, k=45, pi0=0.4, rho2=0.2 -> up 15.5829453
        // x=3,  k=60, pi0=0.05, rho2=0.2 -> up -0.2088083
        let cases = [
            (12, 20, 0.4, 0.2, true, 1.0545919),
            (12, 20, 0.4, 0.2, false, -1.1742807),
            (40, 45, 0.4, 0.2, true, 15.5829453),
            (3, 60, 0.05, 0.2, true, -0.2088083),
        ];
        for (x, k, pi0, rho2, up, expected) in cases {
            let got = log_beta_mixture(x, k, pi0, rho2, up);
            assert!(
                (got - expected).abs() < 1e-6,
                "{x}/{k} at {pi0}: {got} vs {expected}"
            );
        }
        // No events: no evidence either way.
        assert!(log_beta_mixture(0, 0, 0.3, 0.2, true).abs() < 1e-12);
    }

    #[test]
    fn p_value_and_critical_value_agree() {
        let b = Boundary::tuned(true, 0.05, 500.0);
        for info in [10.0, 500.0, 20000.0] {
            let z = b.z(0.01, info);
            close(b.p_value(z, info), 0.01, 1e-9);
        }
        let f = Boundary::Fixed;
        close(f.z(0.05, 1.0), 1.6448536269514722, 1e-12); // stats.norm.ppf(0.95)
        close(f.p_value(1.6448536269514722, 1.0), 0.05, 1e-9);
    }

    #[test]
    fn mixture_is_wider_than_fixed_and_never_concludes_without_information() {
        let b = Boundary::tuned(true, 0.05, 1000.0);
        assert!(b.z(0.05, 1000.0) > Boundary::Fixed.z(0.05, 1000.0));
        assert_eq!(b.z(0.05, 0.0), f64::INFINITY);
        assert_eq!(b.p_value(3.0, 0.0), 1.0);
        assert_eq!(b.p_value(f64::NAN, 10.0), 1.0);
        // Deeper levels need larger critical values.
        assert!(b.z(0.001, 1000.0) > b.z(0.05, 1000.0));
    }
}
