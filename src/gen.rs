//! Deterministic synthetic LLM-call events, one NDJSON object per line.
//!
//! `promptgate gen` uses this module to produce realistic, long-tailed event streams for the demo,
//! the tests and the benchmarks. The output depends only on the [`GenConfig`] (including its
//! seed): the same config always yields byte-identical output, on any machine.
//!
//! Every event draws the same fixed sequence of random numbers whatever the config's rates,
//! shares and multipliers are, so two configs that differ only in, say, a regression
//! multiplier produce the same events (ids, timestamps, routes, ...) except for the fields the
//! regression changes. That makes "with and without regression" comparisons exact.

use std::io::{self, Write};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::LogNormal;

const MS_PER_DAY: i64 = 86_400_000;
/// Flush the internal line buffer to the caller's writer once it holds this many bytes.
const FLUSH_AT: usize = 1 << 20;

const ENVS: [&str; 2] = ["prod", "staging"];
const ENV_CUM: [f64; 2] = [0.85, 1.0];
const MODELS: [&str; 3] = ["gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-70b"];
const MODEL_CUM: [f64; 3] = [0.5, 0.8, 1.0];
const MODEL_MEDIAN_MS: [f64; 3] = [400.0, 600.0, 900.0];
const TIERS: [&str; 3] = ["free", "pro", "enterprise"];
const TIER_CUM: [f64; 3] = [0.6, 0.9, 1.0];
const TIER_FACTOR: [f64; 3] = [1.0, 1.2, 1.6];

const DURATION_SIGMA: f64 = 0.5;
const TOKENS_IN_MEDIAN: f64 = 800.0;
const TOKENS_IN_SIGMA: f64 = 0.6;
const TOKENS_OUT_MEDIAN: f64 = 200.0;
const TOKENS_OUT_SIGMA: f64 = 0.7;
/// Probability that an inline label is "bad" before any regression.
const BAD_LABEL_RATE: f64 = 0.10;
/// Largest value written for `tokens_in` / `tokens_out`, so they always fit an `Int64` column.
const MAX_TOKENS: f64 = i64::MAX as f64;
/// Largest `duration_ms` written (about 31 years), so absurd multipliers stay printable.
const MAX_DURATION_MS: f64 = 1e12;

/// Multipliers applied to canary events only (1.0 = no change).
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    /// Multiplies `duration_ms`.
    pub latency: f64,
    /// Multiplies the probability that an event is `"flagged"` (the result is capped at 1).
    pub flagged: f64,
    /// Multiplies `tokens_in`.
    pub tokens_in: f64,
    /// Multiplies the probability that an inline label is `"bad"` (the result is capped at 1).
    pub bad_label: f64,
    /// When `Some`, the regression applies only to canary events of this tier
    /// (`"free"`, `"pro"` or `"enterprise"`).
    pub tier: Option<String>,
}

impl Default for Regression {
    /// No regression: every multiplier 1.0, all tiers.
    fn default() -> Self {
        Regression {
            latency: 1.0,
            flagged: 1.0,
            tokens_in: 1.0,
            bad_label: 1.0,
            tier: None,
        }
    }
}

/// A canary prompt version rolled out to a share of traffic, optionally regressed.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySpec {
    /// The canary's `prompt_version`.
    pub version: String,
    /// Probability in `[0, 1]` that an event uses the canary version.
    pub share: f64,
    /// How canary events differ from baseline events.
    pub regression: Regression,
}

/// Everything that determines the generated stream.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Number of events (lines) to write.
    pub events: u64,
    /// Seed of the `ChaCha8` generator; the same config and seed give byte-identical output.
    pub seed: u64,
    /// Number of days the events are spread over, starting at `start`; at least 1.
    pub days: u32,
    /// Time of the first possible event (truncated to whole milliseconds).
    /// Default 2026-11-01T00:00:00Z.
    pub start: DateTime<Utc>,
    /// Routes, drawn uniformly. Default `["chat", "search", "summarize", "support"]`.
    pub routes: Vec<String>,
    /// `prompt_version` of non-canary events. Default `"v1"`.
    pub baseline_version: String,
    /// The canary, if any. Default `v2` at a 0.05 share with no regression.
    pub canary: Option<CanarySpec>,
    /// Fraction of events that carry an inline `label`. Default 0.02.
    pub label_rate: f64,
    /// Probability that a non-error event is `"flagged"`. Default 0.02.
    pub flagged_rate: f64,
    /// Probability that an event is an `"error"`. Default 0.005.
    pub error_rate: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            events: 10_000,
            seed: 0,
            days: 1,
            start: NaiveDate::from_ymd_opt(2026, 11, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("valid default start")
                .and_utc(),
            routes: ["chat", "search", "summarize", "support"]
                .iter()
                .map(ToString::to_string)
                .collect(),
            baseline_version: "v1".to_string(),
            canary: Some(CanarySpec {
                version: "v2".to_string(),
                share: 0.05,
                regression: Regression::default(),
            }),
            label_rate: 0.02,
            flagged_rate: 0.02,
            error_rate: 0.005,
        }
    }
}

fn check_rate(name: &str, value: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("{name} must be in [0, 1], got {value}"))
    }
}

fn check_multiplier(name: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "regression multiplier {name} must be finite and > 0, got {value}"
        ))
    }
}

impl GenConfig {
    /// Checks the config, returning a message naming the offending field.
    ///
    /// # Errors
    ///
    /// The first problem found, as a human-readable message: `days == 0`; an empty route list,
    /// empty or duplicate routes; an empty baseline or canary version, or a canary version equal
    /// to the baseline; a share or rate outside `[0, 1]` (or NaN); a regression multiplier that is
    /// not finite and > 0; a regression tier other than `free`, `pro` or `enterprise`; or a time
    /// range that leaves years 0000-9999 (RFC 3339 needs four-digit years).
    pub fn validate(&self) -> Result<(), String> {
        if self.days == 0 {
            return Err("days must be >= 1".to_string());
        }
        if self.routes.is_empty() {
            return Err("routes must not be empty".to_string());
        }
        for (i, route) in self.routes.iter().enumerate() {
            if route.is_empty() {
                return Err(format!("routes[{i}] must not be empty"));
            }
            if self.routes[..i].contains(route) {
                return Err(format!("route {route:?} is listed twice"));
            }
        }
        if self.baseline_version.is_empty() {
            return Err("baseline_version must not be empty".to_string());
        }
        check_rate("label_rate", self.label_rate)?;
        check_rate("flagged_rate", self.flagged_rate)?;
        check_rate("error_rate", self.error_rate)?;
        if let Some(canary) = &self.canary {
            if canary.version.is_empty() {
                return Err("canary version must not be empty".to_string());
            }
            if canary.version == self.baseline_version {
                return Err(format!(
                    "canary version {:?} must differ from baseline_version",
                    canary.version
                ));
            }
            check_rate("canary share", canary.share)?;
            let r = &canary.regression;
            check_multiplier("latency", r.latency)?;
            check_multiplier("flagged", r.flagged)?;
            check_multiplier("tokens_in", r.tokens_in)?;
            check_multiplier("bad_label", r.bad_label)?;
            if let Some(tier) = &r.tier
                && !TIERS.contains(&tier.as_str())
            {
                return Err(format!(
                    "regression tier must be one of {}, got {tier:?}",
                    TIERS.join(", ")
                ));
            }
        }
        let start_ms = self.start.timestamp_millis();
        let last_ms = start_ms + i64::from(self.days) * MS_PER_DAY - 1;
        let year_ok = |ms: i64| {
            DateTime::from_timestamp_millis(ms).is_some_and(|t| (0..=9999).contains(&t.year()))
        };
        if !year_ok(start_ms) || !year_ok(last_ms) {
            return Err(format!(
                "start {} plus {} days must stay within years 0000-9999",
                self.start.to_rfc3339(),
                self.days
            ));
        }
        Ok(())
    }
}

/// Writes `cfg.events` NDJSON lines to `out` and returns the number written.
///
/// Output is buffered internally in chunks of about 1 MiB, so `out` need not be buffered; it is
/// flushed at the end.
///
/// # Errors
///
/// An invalid config fails with [`io::ErrorKind::InvalidInput`] and the message of
/// [`GenConfig::validate`], before anything is written; errors of `out` are passed on.
pub fn write_events<W: Write>(cfg: &GenConfig, mut out: W) -> io::Result<u64> {
    cfg.validate()
        .map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?;
    let mut generator = Generator::new(cfg);
    let mut buf: Vec<u8> = Vec::with_capacity(FLUSH_AT + 4096);
    for i in 0..cfg.events {
        generator.push_event(i, &mut buf);
        if buf.len() >= FLUSH_AT {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        out.write_all(&buf)?;
    }
    out.flush()?;
    Ok(cfg.events)
}

/// Precomputed per-config state plus the rng; emits one event at a time.
struct Generator {
    rng: ChaCha8Rng,
    seed: u64,
    /// Size of the pool of units (users) events are drawn from.
    units: u64,
    events: u64,
    start_ms: i64,
    span_ms: u64,
    /// Per route: `"route":"<escaped>"`.
    route_frag: Vec<Vec<u8>>,
    /// Per route: `"attributes":{...}`.
    attr_frag: Vec<&'static [u8]>,
    /// Per route, per version (0 = baseline, 1 = canary): `"prompt_version":"..","prompt_sha":".."`.
    version_frag: Vec<[Vec<u8>; 2]>,
    canary_share: f64,
    /// Regression multipliers, all 1.0 when there is no canary.
    regression: Regression,
    /// Tier index the regression is confined to, if any.
    regression_tier: Option<usize>,
    label_rate: f64,
    flagged_rate: f64,
    error_rate: f64,
    duration: LogNormal<f64>,
    tokens_in: LogNormal<f64>,
    tokens_out: LogNormal<f64>,
    /// Day (since the Unix epoch) whose `YYYY-MM-DDT` prefix is cached in `day_prefix`.
    cur_day: i64,
    day_prefix: [u8; 11],
}

impl Generator {
    fn new(cfg: &GenConfig) -> Self {
        let versions = [
            cfg.baseline_version.as_str(),
            cfg.canary.as_ref().map_or("", |c| c.version.as_str()),
        ];
        let mut route_frag = Vec::with_capacity(cfg.routes.len());
        let mut attr_frag = Vec::with_capacity(cfg.routes.len());
        let mut version_frag = Vec::with_capacity(cfg.routes.len());
        for route in &cfg.routes {
            let mut frag = b"\"route\":".to_vec();
            push_json_str(&mut frag, route);
            route_frag.push(frag);
            attr_frag.push(if route == "search" {
                &br#""attributes":{"top_k":5,"context_budget":4000,"reranker":"bge-small"}"#[..]
            } else {
                &br#""attributes":{"temperature":0.2}"#[..]
            });
            version_frag.push(versions.map(|v| {
                let mut frag = b"\"prompt_version\":".to_vec();
                push_json_str(&mut frag, v);
                frag.extend_from_slice(b",\"prompt_sha\":\"");
                frag.extend_from_slice(prompt_sha(route, v).as_bytes());
                frag.push(b'"');
                frag
            }));
        }
        let (canary_share, regression) = match &cfg.canary {
            Some(c) => (c.share, c.regression.clone()),
            None => (0.0, Regression::default()),
        };
        let regression_tier = regression
            .tier
            .as_deref()
            .and_then(|t| TIERS.iter().position(|&x| x == t));
        Generator {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            seed: cfg.seed,
            units: (cfg.events / 4).max(1),
            events: cfg.events,
            start_ms: cfg.start.timestamp_millis(),
            span_ms: u64::from(cfg.days) * MS_PER_DAY as u64,
            route_frag,
            attr_frag,
            version_frag,
            canary_share,
            regression,
            regression_tier,
            label_rate: cfg.label_rate,
            flagged_rate: cfg.flagged_rate,
            error_rate: cfg.error_rate,
            duration: LogNormal::new(0.0, DURATION_SIGMA).expect("valid sigma"),
            tokens_in: LogNormal::new(TOKENS_IN_MEDIAN.ln(), TOKENS_IN_SIGMA).expect("valid sigma"),
            tokens_out: LogNormal::new(TOKENS_OUT_MEDIAN.ln(), TOKENS_OUT_SIGMA)
                .expect("valid sigma"),
            cur_day: i64::MIN,
            day_prefix: [0; 11],
        }
    }

    /// A uniform draw in `[0, 1)` with 53 bits of precision.
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Appends event number `i` (0-based) as one JSON line.
    ///
    /// Draws a fixed sequence of random numbers that does not depend on the config's rates,
    /// shares or multipliers (only the log-normal draws vary in length, independently of them).
    fn push_event(&mut self, i: u64, buf: &mut Vec<u8>) {
        // Time: event i lies in its own slot [base_i, base_{i+1}) of the span, so the sequence
        // is non-decreasing and evenly spread over [start, start + days).
        let base = (u128::from(i) * u128::from(self.span_ms) / u128::from(self.events)) as u64;
        let next = (u128::from(i + 1) * u128::from(self.span_ms) / u128::from(self.events)) as u64;
        let jitter = scale(self.rng.next_u64(), next - base);
        let ts_ms = self.start_ms + (base + jitter) as i64;

        let id_hi = self.rng.next_u64();
        let id_lo = self.rng.next_u64();
        let route = scale(self.rng.next_u64(), self.route_frag.len() as u64) as usize;
        let env = pick(&ENV_CUM, self.unit());
        let model = pick(&MODEL_CUM, self.unit());
        let tier = pick(&TIER_CUM, self.unit());
        // Users: a skewed pool (unit k draws about 1/sqrt(k) of the traffic of unit 0), each
        // sticky to one arm as a real assignment by unit would be.
        let unit_idx = (self.unit().powi(2) * self.units as f64) as u64;
        let canary = unit_share(self.seed, unit_idx) < self.canary_share;
        let regressed = canary && self.regression_tier.is_none_or(|t| t == tier);
        let (m_latency, m_flagged, m_tokens_in, m_bad) = if regressed {
            let r = &self.regression;
            (r.latency, r.flagged, r.tokens_in, r.bad_label)
        } else {
            (1.0, 1.0, 1.0, 1.0)
        };

        let d: f64 = self.rng.sample(self.duration);
        let duration_ms =
            (d * MODEL_MEDIAN_MS[model] * TIER_FACTOR[tier] * m_latency).min(MAX_DURATION_MS);
        let t_in: f64 = self.rng.sample(self.tokens_in);
        let tokens_in = (t_in * TIER_FACTOR[tier] * m_tokens_in)
            .round()
            .clamp(1.0, MAX_TOKENS) as u64;
        let t_out: f64 = self.rng.sample(self.tokens_out);
        let tokens_out = t_out.round().clamp(1.0, MAX_TOKENS) as u64;

        let u_error = self.unit();
        let u_flagged = self.unit();
        let status = if u_error < self.error_rate {
            Status::Error
        } else if u_flagged < (self.flagged_rate * m_flagged).min(1.0) {
            Status::Flagged
        } else {
            Status::Ok
        };
        let u_has_label = self.unit();
        let u_bad = self.unit();
        let label = (u_has_label < self.label_rate).then(|| {
            if u_bad < (BAD_LABEL_RATE * m_bad).min(1.0) {
                "bad"
            } else {
                "good"
            }
        });
        let input_bits = self.rng.next_u64();
        let output_bits = self.rng.next_u64();

        buf.extend_from_slice(b"{\"event_id\":\"");
        push_uuid(buf, id_hi, id_lo);
        buf.extend_from_slice(b"\",\"ts\":\"");
        self.push_ts(buf, ts_ms);
        buf.extend_from_slice(b"\",");
        buf.extend_from_slice(&self.route_frag[route]);
        buf.extend_from_slice(b",\"env\":\"");
        buf.extend_from_slice(ENVS[env].as_bytes());
        buf.extend_from_slice(b"\",\"model\":\"");
        buf.extend_from_slice(MODELS[model].as_bytes());
        buf.extend_from_slice(b"\",\"tier\":\"");
        buf.extend_from_slice(TIERS[tier].as_bytes());
        buf.extend_from_slice(b"\",");
        buf.extend_from_slice(&self.version_frag[route][usize::from(canary)]);
        buf.extend_from_slice(b",\"duration_ms\":");
        push_tenths(buf, duration_ms);
        buf.extend_from_slice(b",\"tokens_in\":");
        push_u64(buf, tokens_in);
        buf.extend_from_slice(b",\"tokens_out\":");
        push_u64(buf, tokens_out);
        buf.extend_from_slice(b",\"status\":\"");
        buf.extend_from_slice(status.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"input\":\"");
        let topic = push_text(buf, INPUT_TEMPLATES, input_bits, None);
        buf.extend_from_slice(b"\",\"output\":\"");
        let outputs = match status {
            Status::Ok => OK_TEMPLATES,
            Status::Flagged => FLAGGED_TEMPLATES,
            Status::Error => ERROR_TEMPLATES,
        };
        push_text(buf, outputs, output_bits, Some(topic));
        buf.extend_from_slice(b"\",\"unit_id\":\"u");
        push_u64(buf, unit_idx);
        buf.extend_from_slice(b"\",");
        buf.extend_from_slice(self.attr_frag[route]);
        if let Some(label) = label {
            buf.extend_from_slice(b",\"label\":\"");
            buf.extend_from_slice(label.as_bytes());
            buf.push(b'"');
        }
        buf.extend_from_slice(b"}\n");
    }

    /// Appends `ms` (since the Unix epoch) as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    fn push_ts(&mut self, buf: &mut Vec<u8>, ms: i64) {
        let day = ms.div_euclid(MS_PER_DAY);
        if day != self.cur_day {
            let date = DateTime::from_timestamp_millis(day * MS_PER_DAY)
                .expect("validated time range")
                .date_naive();
            let mut p = [0u8; 11];
            put_digits(&mut p[0..4], date.year() as u32);
            p[4] = b'-';
            put_digits(&mut p[5..7], date.month());
            p[7] = b'-';
            put_digits(&mut p[8..10], date.day());
            p[10] = b'T';
            self.day_prefix = p;
            self.cur_day = day;
        }
        buf.extend_from_slice(&self.day_prefix);
        let t = ms.rem_euclid(MS_PER_DAY) as u32;
        let mut p = [0u8; 13];
        put_digits(&mut p[0..2], t / 3_600_000);
        p[2] = b':';
        put_digits(&mut p[3..5], t / 60_000 % 60);
        p[5] = b':';
        put_digits(&mut p[6..8], t / 1000 % 60);
        p[8] = b'.';
        put_digits(&mut p[9..12], t % 1000);
        p[12] = b'Z';
        buf.extend_from_slice(&p);
    }
}

#[derive(Clone, Copy)]
enum Status {
    Ok,
    Flagged,
    Error,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Flagged => "flagged",
            Status::Error => "error",
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Where a unit falls in `[0, 1)`, fixed per seed and unit (splitmix64): a unit is in the canary
/// when this is below the canary share, so it stays in one arm for all its events.
fn unit_share(seed: u64, unit: u64) -> f64 {
    let mut z = seed ^ unit.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Maps a uniform `u64` onto `[0, n)` (multiply-shift; `n == 0` gives 0).
#[inline]
fn scale(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

/// Index of the first cumulative probability above `u` (the last index if none is).
#[inline]
fn pick(cum: &[f64], u: f64) -> usize {
    cum.iter().position(|&c| u < c).unwrap_or(cum.len() - 1)
}

/// 16 lowercase hex digits of the FNV-1a 64 hash of `route + "\0" + version`.
fn prompt_sha(route: &str, version: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in route
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(version.as_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends a version-4, RFC 4122 variant UUID built from 128 random bits.
fn push_uuid(buf: &mut Vec<u8>, hi: u64, lo: u64) {
    let hi = (hi & !0xf000) | 0x4000; // version nibble
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // variant bits
    let mut s = [0u8; 36];
    let mut pos = 0;
    for (k, nibble_idx) in (0..32).enumerate() {
        if matches!(k, 8 | 12 | 16 | 20) {
            s[pos] = b'-';
            pos += 1;
        }
        let word = if nibble_idx < 16 { hi } else { lo };
        let shift = 60 - 4 * (nibble_idx % 16);
        s[pos] = HEX[((word >> shift) & 0xf) as usize];
        pos += 1;
    }
    buf.extend_from_slice(&s);
}

/// Writes `v` as zero-padded decimal filling `out` exactly (higher digits are dropped).
#[inline]
fn put_digits(out: &mut [u8], mut v: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Appends `v` in decimal.
#[inline]
fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Appends a non-negative `v` rounded to one decimal, always with the decimal point.
#[inline]
fn push_tenths(buf: &mut Vec<u8>, v: f64) {
    let tenths = (v * 10.0).round() as u64;
    push_u64(buf, tenths / 10);
    buf.push(b'.');
    buf.push(b'0' + (tenths % 10) as u8);
}

/// Appends `s` as a JSON string literal, quotes included.
fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    for c in s.chars() {
        match c {
            '"' => buf.extend_from_slice(b"\\\""),
            '\\' => buf.extend_from_slice(b"\\\\"),
            '\n' => buf.extend_from_slice(b"\\n"),
            '\r' => buf.extend_from_slice(b"\\r"),
            '\t' => buf.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(c as u32 >> 4) as usize]);
                buf.push(HEX[(c as u32 & 0xf) as usize]);
            }
            c => {
                let mut tmp = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
    }
    buf.push(b'"');
}

/// Topics substituted for `{w}` in the text templates.
const TOPICS: &[&str] = &[
    "billing",
    "refunds",
    "api keys",
    "rate limits",
    "invoices",
    "sso setup",
    "webhooks",
    "data export",
    "onboarding",
    "pricing",
    "latency",
    "the dashboard",
    "two-factor auth",
    "team seats",
    "audit logs",
    "embeddings",
];

/// Text templates: `{n}` becomes a number in 1..=9999, `{w}` a topic. They contain nothing that
/// needs JSON escaping, and every expansion is 40-160 characters (checked by a test).
type Templates = &'static [&'static str];

const INPUT_TEMPLATES: Templates = &[
    "How do I configure {w} for workspace {n}? The docs mention it but I can't find the setting.",
    "Summarize ticket #{n} about {w} in three bullet points for the on-call handoff.",
    "Customer {n} says {w} stopped working after yesterday's deploy. What should I check first?",
    "Find the latest policy on {w} and quote the section that applies to plan tier {n}.",
    "Write a short reply explaining {w}; the user has sent {n} requests today and is frustrated.",
    "Compare {w} with last quarter: order {n} was refunded twice, is that expected?",
    "Draft a changelog entry for {w} improvements shipped in release {n}.",
    "What is the difference between {w} and {w} for an account with {n} seats?",
];

const OK_TEMPLATES: Templates = &[
    "Sure. To set up {w}, open Settings > Workspace {n}, enable the toggle and save. Changes apply within a minute.",
    "Summary: {w} has failed since build {n}; a rollback is in progress and the owner is paged.",
    "Check the {w} logs first; {n} errors in the last hour point to an expired credential.",
    "Per policy section {n}, {w} is included on all paid plans and billed monthly.",
    "Here's a draft: we improved {w} in release {n}, cutting the median wait time noticeably.",
    "Found {n} matching documents about {w}; the top result is the admin guide, updated last week.",
];

const FLAGGED_TEMPLATES: Templates = &[
    "I can't help with that request about {w}. Case {n} has been logged for review.",
    "This response was withheld by the safety filter (policy {n}, topic: {w}).",
    "Sorry, I can't share details about {w} for account {n} without identity verification.",
];

const ERROR_TEMPLATES: Templates = &[
    "error: upstream timeout after {n} ms while generating a response about {w}",
    "error: rate limit exceeded (retry after {n} ms); request about {w} was not completed",
    "error: context length exceeded by {n} tokens; the input about {w} was rejected",
];

/// Appends one expansion of a template chosen by `bits` (low 8 bits pick the template, each
/// placeholder consumes the next 14 bits) and returns the index of the first topic used.
///
/// `topic`, when given, forces the first topic (so an output talks about its input's topic);
/// later topics in the same text always differ from the first.
fn push_text(buf: &mut Vec<u8>, templates: Templates, bits: u64, topic: Option<usize>) -> usize {
    let template = templates[(bits & 0xff) as usize % templates.len()];
    let mut slot_bits = bits >> 8;
    let mut first_topic = None;
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        buf.extend_from_slice(&rest.as_bytes()[..open]);
        let slot = (slot_bits & 0x3fff) as usize;
        slot_bits >>= 14;
        if rest.as_bytes()[open + 1] == b'n' {
            push_u64(buf, (slot % 9999 + 1) as u64);
        } else {
            let idx = match first_topic {
                None => topic.unwrap_or(slot % TOPICS.len()),
                Some(first) if slot % TOPICS.len() == first => (first + 1) % TOPICS.len(),
                Some(_) => slot % TOPICS.len(),
            };
            first_topic.get_or_insert(idx);
            buf.extend_from_slice(TOPICS[idx].as_bytes());
        }
        rest = &rest[open + 3..];
    }
    buf.extend_from_slice(rest.as_bytes());
    first_topic.unwrap_or(0)
}

/// Traffic of one route and env whose arms follow the prompt registry: each unit's version
/// and `prompt_sha` come from `assign` (typically [`crate::registry::resolve`]), as an
/// application calling `promptgate resolve` would log them. For rollout tests and the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTraffic {
    pub route: String,
    pub env: String,
    /// Units `u0` .. `u{units-1}`, each sending `events / units` events (round-robin), with a
    /// tier fixed per unit.
    pub units: u64,
    pub events: u64,
    pub seed: u64,
    /// Event times are spread evenly over `[start_us, start_us + span_us)`.
    pub start_us: i64,
    pub span_us: i64,
    /// Applied to the events of `regressed_version` only.
    pub regression: Regression,
    pub regressed_version: Option<String>,
    /// `attributes` (a JSON object) of each version's events; others get `{"top_k":5}`.
    pub attributes: Vec<(String, String)>,
    /// How many hex characters of the SHA-256 the events log as `prompt_sha` (at least 8).
    pub sha_chars: usize,
    pub flagged_rate: f64,
}

/// A unit's assignment: `(version, prompt_sha)`.
pub type Assignment = (String, String);

/// Writes [`ResolvedTraffic`] as NDJSON; `assign(unit, tier)` gives each unit's version and
/// SHA-256 (it is called once per unit). Returns the number of events written.
pub fn write_resolved_events(
    t: &ResolvedTraffic,
    assign: &mut dyn FnMut(&str, &str) -> Result<Assignment, String>,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    if t.units == 0 || t.events == 0 || t.span_us <= 0 || t.sha_chars < 8 {
        return Err(invalid(
            "resolved traffic needs units, events, a positive span and sha_chars >= 8".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(t.seed);
    let mut arms: Vec<(usize, Assignment)> = Vec::with_capacity(t.units as usize);
    for u in 0..t.units {
        let tier = pick(&TIER_CUM, rng.random::<f64>());
        let (version, sha) = assign(&format!("u{u}"), TIERS[tier]).map_err(invalid)?;
        arms.push((tier, (version, sha)));
    }
    let duration = LogNormal::new(0.0, DURATION_SIGMA).expect("valid sigma");
    let tokens_in = LogNormal::new(TOKENS_IN_MEDIAN.ln(), TOKENS_IN_SIGMA).expect("valid sigma");
    let tokens_out = LogNormal::new(TOKENS_OUT_MEDIAN.ln(), TOKENS_OUT_SIGMA).expect("valid sigma");
    let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
    // Units interleave in time as real users do: event i goes to unit (i·stride) mod units, with
    // a stride coprime to the number of units, so every unit gets its share of events and no
    // block of units (a cohort) has the first minutes to itself.
    let mut stride: u64 = 7_919;
    while gcd(stride, t.units) != 1 {
        stride += 2;
    }
    for i in 0..t.events {
        let unit = i.wrapping_mul(stride) % t.units;
        let (tier, (version, sha)) = &arms[unit as usize];
        let model = pick(&MODEL_CUM, rng.random::<f64>());
        let regressed = t.regressed_version.as_deref() == Some(version.as_str());
        let r = if regressed {
            t.regression.clone()
        } else {
            Regression::default()
        };
        let applies = r.tier.as_deref().is_none_or(|x| x == TIERS[*tier]);
        let m = |x: f64| if applies { x } else { 1.0 };
        let d: f64 = rng.sample(duration);
        let t_in: f64 = rng.sample(tokens_in);
        let t_out: f64 = rng.sample(tokens_out);
        let flagged = rng.random::<f64>() < (t.flagged_rate * m(r.flagged)).min(1.0);
        let ts_us =
            t.start_us + (i128::from(i) * i128::from(t.span_us) / i128::from(t.events)) as i64;
        let attributes = t
            .attributes
            .iter()
            .find(|(v, _)| v == version)
            .map_or(r#"{"top_k":5}"#, |(_, a)| a.as_str());
        let attributes: serde_json::Value = serde_json::from_str(attributes)
            .map_err(|e| invalid(format!("attributes of {version}: {e}")))?;
        let event = serde_json::json!({
            "event_id": format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64()),
            "ts": chrono::DateTime::from_timestamp_micros(ts_us)
                .ok_or_else(|| invalid(format!("time {ts_us} out of range")))?
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "route": t.route,
            "env": t.env,
            "model": MODELS[model],
            "tier": TIERS[*tier],
            "prompt_version": version,
            "prompt_sha": &sha[..t.sha_chars.min(sha.len())],
            "unit_id": format!("u{unit}"),
            "duration_ms": ((d * MODEL_MEDIAN_MS[model] * TIER_FACTOR[*tier] * m(r.latency) * 10.0).round() / 10.0).min(MAX_DURATION_MS),
            "tokens_in": (t_in * TIER_FACTOR[*tier] * m(r.tokens_in)).round().clamp(1.0, MAX_TOKENS) as u64,
            "tokens_out": t_out.round().clamp(1.0, MAX_TOKENS) as u64,
            "status": if flagged { "flagged" } else { "ok" },
            "attributes": attributes,
        });
        serde_json::to_writer(&mut buf, &event).map_err(io::Error::other)?;
        buf.push(b'\n');
        if buf.len() >= FLUSH_AT {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(t.events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    fn generate(cfg: &GenConfig) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_events(cfg, &mut out).expect("generation succeeds");
        assert_eq!(n, cfg.events);
        out
    }

    fn parse(bytes: &[u8]) -> Vec<Map<String, Value>> {
        let text = std::str::from_utf8(bytes).expect("utf-8");
        assert!(bytes.is_empty() || text.ends_with('\n'));
        text.lines()
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(map)) => map,
                other => panic!("not a JSON object: {line}: {other:?}"),
            })
            .collect()
    }

    fn cfg(events: u64, seed: u64) -> GenConfig {
        GenConfig {
            events,
            seed,
            ..GenConfig::default()
        }
    }

    fn with_canary(mut c: GenConfig, share: f64, regression: Regression) -> GenConfig {
        c.canary = Some(CanarySpec {
            version: "v2".to_string(),
            share,
            regression,
        });
        c
    }

    fn s<'a>(e: &'a Map<String, Value>, key: &str) -> &'a str {
        e[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is not a string"))
    }

    fn f(e: &Map<String, Value>, key: &str) -> f64 {
        e[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is not a number"))
    }

    fn median(mut v: Vec<f64>) -> f64 {
        assert!(!v.is_empty());
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn ts_ms(e: &Map<String, Value>) -> i64 {
        DateTime::parse_from_rfc3339(s(e, "ts"))
            .expect("ts is RFC 3339")
            .timestamp_millis()
    }

    fn is_uuid_v4(id: &str) -> bool {
        let b = id.as_bytes();
        b.len() == 36
            && b.iter().enumerate().all(|(i, &c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            })
            && b[14] == b'4'
            && matches!(b[19], b'8' | b'9' | b'a' | b'b')
    }

    #[test]
    fn same_seed_same_bytes_different_seed_different_bytes() {
        let a = generate(&cfg(5_000, 42));
        let b = generate(&cfg(5_000, 42));
        let c = generate(&cfg(5_000, 43));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn golden_prefix_is_stable() {
        // Guards against accidental changes of the stream (e.g. draw order): update deliberately.
        let out = generate(&cfg(1, 7));
        let first = std::str::from_utf8(&out).unwrap();
        assert!(
            first.starts_with(r#"{"event_id":"2b0159d3-2e9b-493a-b44b-70b945249531","#),
            "{first}"
        );
    }

    #[test]
    fn golden_hash_of_a_full_stream_is_stable() {
        // Byte-identical output on every machine: a change here means the stream changed (draw
        // order, formatting, dependency versions or float maths). Update only deliberately.
        let c = with_canary(
            GenConfig {
                label_rate: 0.5,
                days: 3,
                ..cfg(2_000, 2026)
            },
            0.2,
            Regression {
                latency: 1.5,
                flagged: 2.0,
                tokens_in: 1.3,
                bad_label: 2.0,
                tier: None,
            },
        );
        let out = generate(&c);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in &out {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(format!("{h:016x}"), "b0aea11365a97cc0");
    }

    #[test]
    fn writes_exactly_the_requested_number_of_lines() {
        for n in [0, 1, 2, 999, 3_000] {
            let out = generate(&cfg(n, 1));
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count() as u64, n);
            assert_eq!(parse(&out).len() as u64, n);
        }
    }

    #[test]
    fn output_larger_than_the_internal_buffer_is_complete() {
        let c = cfg(5_000, 3); // ~2.6 MB, several internal flushes
        let out = generate(&c);
        assert!(out.len() > 2 * FLUSH_AT);
        assert_eq!(parse(&out).len(), 5_000);
    }

    #[test]
    fn every_line_has_the_schema_and_valid_values() {
        let c = with_canary(
            GenConfig {
                label_rate: 0.3,
                days: 2,
                ..cfg(4_000, 9)
            },
            0.2,
            Regression::default(),
        );
        let events = parse(&generate(&c));
        let required = [
            "event_id",
            "ts",
            "route",
            "env",
            "model",
            "tier",
            "prompt_version",
            "prompt_sha",
            "duration_ms",
            "tokens_in",
            "tokens_out",
            "status",
            "input",
            "output",
            "attributes",
            "unit_id",
        ];
        let mut ids = std::collections::HashSet::new();
        for e in &events {
            for key in required {
                assert!(e.contains_key(key), "missing {key}: {e:?}");
            }
            let extra: Vec<_> = e
                .keys()
                .filter(|k| !required.contains(&k.as_str()) && k.as_str() != "label")
                .collect();
            assert!(extra.is_empty(), "unexpected keys {extra:?}");

            let id = s(e, "event_id");
            assert!(is_uuid_v4(id), "bad event_id {id}");
            assert!(ids.insert(id.to_string()), "duplicate event_id {id}");

            let ts = s(e, "ts");
            assert_eq!(ts.len(), 24, "{ts}");
            assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
            ts_ms(e);

            let route = s(e, "route");
            assert!(c.routes.iter().any(|r| r == route), "{route}");
            assert!(ENVS.contains(&s(e, "env")));
            assert!(MODELS.contains(&s(e, "model")));
            assert!(TIERS.contains(&s(e, "tier")));
            let version = s(e, "prompt_version");
            assert!(version == "v1" || version == "v2", "{version}");
            let sha = s(e, "prompt_sha");
            assert_eq!(sha, prompt_sha(route, version));
            assert_eq!(sha.len(), 16);
            assert!(sha.bytes().all(|b| HEX.contains(&b)));

            assert!(e["duration_ms"].is_f64() && f(e, "duration_ms") > 0.0);
            assert!(e["tokens_in"].as_u64().is_some_and(|t| t >= 1));
            assert!(e["tokens_out"].as_u64().is_some_and(|t| t >= 1));
            assert!(["ok", "flagged", "error"].contains(&s(e, "status")));
            for key in ["input", "output"] {
                let len = s(e, key).chars().count();
                assert!((40..=160).contains(&len), "{key} has {len} chars");
            }
            let attrs = e["attributes"].as_object().expect("attributes object");
            if route == "search" {
                assert_eq!(attrs["top_k"], 5);
                assert_eq!(attrs["context_budget"], 4000);
                assert_eq!(attrs["reranker"], "bge-small");
            } else {
                assert_eq!(attrs["temperature"], 0.2);
            }
            if let Some(label) = e.get("label") {
                assert!(label == "good" || label == "bad", "{label}");
            }
        }
    }

    #[test]
    fn one_sha_per_route_and_version() {
        let events = parse(&generate(&with_canary(
            cfg(5_000, 5),
            0.5,
            Regression::default(),
        )));
        let mut shas = std::collections::HashMap::new();
        for e in &events {
            let key = (
                s(e, "route").to_string(),
                s(e, "prompt_version").to_string(),
            );
            let sha = s(e, "prompt_sha").to_string();
            assert_eq!(shas.entry(key).or_insert_with(|| sha.clone()), &sha);
        }
        assert_eq!(shas.len(), 8);
        let distinct: std::collections::HashSet<_> = shas.values().collect();
        assert_eq!(distinct.len(), 8);
        // FNV-1a 64 reference values.
        assert_eq!(prompt_sha("", ""), "af63bd4c8601b7df"); // FNV-1a of "\0"
        assert_eq!(prompt_sha("chat", "v1"), "3610a145a9ba6b7c");
    }

    #[test]
    fn timestamps_are_ordered_spread_and_in_range() {
        let c = GenConfig {
            days: 3,
            ..cfg(6_000, 11)
        };
        let events = parse(&generate(&c));
        let start = c.start.timestamp_millis();
        let end = start + 3 * MS_PER_DAY;
        let ts: Vec<i64> = events.iter().map(ts_ms).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "not sorted");
        assert!(ts.iter().all(|&t| (start..end).contains(&t)));
        for day in 0..3 {
            let lo = start + day * MS_PER_DAY;
            let n = ts
                .iter()
                .filter(|&&t| (lo..lo + MS_PER_DAY).contains(&t))
                .count();
            assert_eq!(n, 2_000, "day {day}");
        }
        // Jitter: not all on the exact slot boundaries.
        let slot = 3 * MS_PER_DAY / 6_000;
        assert!(ts.iter().any(|&t| (t - start) % slot != 0));
    }

    #[test]
    fn timestamps_stay_in_range_with_more_events_than_milliseconds() {
        let mut g = Generator::new(&GenConfig::default());
        g.events = 3 * MS_PER_DAY as u64; // more events than ms in one day: zero-width slots
        let mut buf = Vec::new();
        let mut prev = i64::MIN;
        for i in (0..g.events).step_by(997).chain([g.events - 1]) {
            buf.clear();
            g.push_event(i, &mut buf);
            let line: Map<String, Value> = serde_json::from_slice(&buf).unwrap();
            let t = ts_ms(&line);
            assert!(t >= prev && t >= g.start_ms && t < g.start_ms + MS_PER_DAY);
            prev = t;
        }
    }

    #[test]
    fn timestamp_formatting_handles_dates_and_times() {
        let c = GenConfig {
            start: DateTime::parse_from_rfc3339("1999-12-31T23:59:59.998Z")
                .unwrap()
                .with_timezone(&Utc),
            ..cfg(1, 0)
        };
        let mut g = Generator::new(&c);
        let mut buf = Vec::new();
        for (ms, want) in [
            (0, "1999-12-31T23:59:59.998Z"),
            (2, "2000-01-01T00:00:00.000Z"),
            (86_400_000 * 60 + 3_723_004 + 2, "2000-03-01T01:02:03.004Z"),
        ] {
            buf.clear();
            g.push_ts(&mut buf, g.start_ms + ms);
            assert_eq!(std::str::from_utf8(&buf).unwrap(), want);
        }
        buf.clear();
        g.push_ts(&mut buf, -1);
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn categorical_shares_match_the_spec() {
        let events = parse(&generate(&cfg(20_000, 21)));
        let share = |key: &str, value: &str| {
            events.iter().filter(|e| s(e, key) == value).count() as f64 / events.len() as f64
        };
        let close = |got: f64, want: f64| assert!((got - want).abs() < 0.015, "{got} vs {want}");
        close(share("env", "prod"), 0.85);
        close(share("model", "gpt-4o-mini"), 0.5);
        close(share("model", "claude-3-5-haiku"), 0.3);
        close(share("model", "llama-3.1-70b"), 0.2);
        close(share("tier", "free"), 0.6);
        close(share("tier", "pro"), 0.3);
        close(share("tier", "enterprise"), 0.1);
        for route in ["chat", "search", "summarize", "support"] {
            close(share("route", route), 0.25);
        }
        close(share("status", "error"), 0.005);
        close(share("status", "flagged"), 0.02);
    }

    #[test]
    fn numeric_medians_match_the_spec() {
        let events = parse(&generate(&cfg(30_000, 8)));
        let med = |model: &str, tier: &str, key: &str| {
            median(
                events
                    .iter()
                    .filter(|e| s(e, "model") == model && s(e, "tier") == tier)
                    .map(|e| f(e, key))
                    .collect(),
            )
        };
        let near =
            |got: f64, want: f64| assert!((got / want - 1.0).abs() < 0.1, "median {got} vs {want}");
        near(med("gpt-4o-mini", "free", "duration_ms"), 400.0);
        near(med("claude-3-5-haiku", "free", "duration_ms"), 600.0);
        near(med("llama-3.1-70b", "free", "duration_ms"), 900.0);
        near(med("gpt-4o-mini", "pro", "duration_ms"), 480.0);
        near(med("gpt-4o-mini", "enterprise", "duration_ms"), 640.0);
        near(med("gpt-4o-mini", "free", "tokens_in"), 800.0);
        near(med("gpt-4o-mini", "pro", "tokens_in"), 960.0);
        near(
            median(events.iter().map(|e| f(e, "tokens_out")).collect()),
            200.0,
        );
        // Long tail: the p99 of duration is several times its median.
        let mut d: Vec<f64> = events.iter().map(|e| f(e, "duration_ms")).collect();
        d.sort_by(f64::total_cmp);
        assert!(d[d.len() * 99 / 100] > 3.0 * d[d.len() / 2]);
    }

    #[test]
    fn canary_share_is_honoured() {
        for share in [0.0, 0.05, 0.3, 1.0] {
            let events = parse(&generate(&with_canary(
                cfg(20_000, 4),
                share,
                Regression::default(),
            )));
            // Arms are assigned per unit: the share of units is the planned one, the share of
            // events close to it, and no unit is in both arms.
            let mut arm_of_unit: std::collections::HashMap<&str, bool> = Default::default();
            for e in &events {
                let canary = s(e, "prompt_version") == "v2";
                let previous = arm_of_unit.insert(s(e, "unit_id"), canary);
                assert!(previous.is_none_or(|p| p == canary), "unit in both arms");
            }
            let units =
                arm_of_unit.values().filter(|c| **c).count() as f64 / arm_of_unit.len() as f64;
            assert!(
                (units - share).abs() < 0.02,
                "unit share {units} vs {share}"
            );
            let got = events
                .iter()
                .filter(|e| s(e, "prompt_version") == "v2")
                .count() as f64
                / 20_000.0;
            assert!((got - share).abs() < 0.03, "event share {got} vs {share}");
        }
        let no_canary = GenConfig {
            canary: None,
            ..cfg(2_000, 4)
        };
        assert!(
            parse(&generate(&no_canary))
                .iter()
                .all(|e| s(e, "prompt_version") == "v1")
        );
    }

    #[test]
    fn latency_regression_scales_the_canary_median() {
        let regressed = Regression {
            latency: 2.0,
            ..Regression::default()
        };
        let events = parse(&generate(&with_canary(cfg(20_000, 12), 0.5, regressed)));
        let med = |version: &str| {
            median(
                events
                    .iter()
                    .filter(|e| s(e, "prompt_version") == version)
                    .map(|e| f(e, "duration_ms"))
                    .collect(),
            )
        };
        let ratio = med("v2") / med("v1");
        assert!((1.85..=2.15).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn regression_changes_only_regressed_fields_of_canary_events() {
        let base = with_canary(cfg(10_000, 13), 0.3, Regression::default());
        let regression = Regression {
            latency: 3.0,
            tokens_in: 2.0,
            flagged: 1.0,
            bad_label: 1.0,
            tier: Some("pro".to_string()),
        };
        let reg = with_canary(base.clone(), 0.3, regression);
        let a = parse(&generate(&base));
        let b = parse(&generate(&reg));
        let mut changed = 0;
        for (x, y) in a.iter().zip(&b) {
            let targeted = s(x, "prompt_version") == "v2" && s(x, "tier") == "pro";
            for key in x
                .keys()
                .filter(|k| *k != "duration_ms" && *k != "tokens_in")
            {
                assert_eq!(x[key], y[key], "{key} changed");
            }
            let (dx, dy) = (f(x, "duration_ms"), f(y, "duration_ms"));
            let (tx, ty) = (f(x, "tokens_in"), f(y, "tokens_in"));
            if targeted {
                changed += 1;
                assert!((dy - 3.0 * dx).abs() <= 0.2, "{dx} -> {dy}");
                assert!((ty - 2.0 * tx).abs() <= 1.0, "{tx} -> {ty}");
            } else {
                assert_eq!((dx, tx), (dy, ty));
            }
        }
        assert!(changed > 500, "{changed} targeted events");
    }

    #[test]
    fn tier_confined_regression_shows_only_in_that_tier() {
        let regression = Regression {
            latency: 3.0,
            tier: Some("enterprise".to_string()),
            ..Regression::default()
        };
        let events = parse(&generate(&with_canary(cfg(40_000, 14), 0.5, regression)));
        let ratio = |tier: &str| {
            let med = |version: &str| {
                median(
                    events
                        .iter()
                        .filter(|e| s(e, "tier") == tier && s(e, "prompt_version") == version)
                        .map(|e| f(e, "duration_ms"))
                        .collect(),
                )
            };
            med("v2") / med("v1")
        };
        let enterprise = ratio("enterprise");
        assert!((2.6..=3.4).contains(&enterprise), "enterprise {enterprise}");
        for tier in ["free", "pro"] {
            let r = ratio(tier);
            assert!((0.93..=1.07).contains(&r), "{tier} {r}");
        }
    }

    #[test]
    fn flagged_and_bad_label_regressions_raise_canary_rates() {
        let regression = Regression {
            flagged: 5.0,
            bad_label: 4.0,
            ..Regression::default()
        };
        let c = GenConfig {
            label_rate: 1.0,
            ..with_canary(cfg(20_000, 15), 0.5, regression)
        };
        let events = parse(&generate(&c));
        let rate = |version: &str, key: &str, value: &str| {
            let group: Vec<_> = events
                .iter()
                .filter(|e| s(e, "prompt_version") == version)
                .collect();
            group.iter().filter(|e| s(e, key) == value).count() as f64 / group.len() as f64
        };
        let (f1, f2) = (
            rate("v1", "status", "flagged"),
            rate("v2", "status", "flagged"),
        );
        assert!(
            (f1 - 0.02).abs() < 0.006 && (f2 - 0.1).abs() < 0.015,
            "{f1} {f2}"
        );
        let (b1, b2) = (rate("v1", "label", "bad"), rate("v2", "label", "bad"));
        assert!(
            (b1 - 0.1).abs() < 0.015 && (b2 - 0.4).abs() < 0.02,
            "{b1} {b2}"
        );
        // Probabilities are capped at 1.
        let capped = Regression {
            flagged: 1e6,
            ..Regression::default()
        };
        let all = parse(&generate(&GenConfig {
            error_rate: 0.0,
            ..with_canary(cfg(500, 15), 1.0, capped)
        }));
        assert!(all.iter().all(|e| s(e, "status") == "flagged"));
    }

    #[test]
    fn label_rate_is_honoured() {
        for rate in [0.0, 0.02, 0.25, 1.0] {
            let events = parse(&generate(&GenConfig {
                label_rate: rate,
                ..cfg(20_000, 16)
            }));
            let got = events.iter().filter(|e| e.contains_key("label")).count() as f64 / 20_000.0;
            assert!((got - rate).abs() < 0.01, "label share {got} vs {rate}");
        }
        let labelled = parse(&generate(&GenConfig {
            label_rate: 1.0,
            ..cfg(20_000, 17)
        }));
        let bad = labelled.iter().filter(|e| e["label"] == "bad").count() as f64 / 20_000.0;
        assert!((bad - 0.1).abs() < 0.01, "bad share {bad}");
    }

    #[test]
    fn routes_are_escaped_and_attributes_follow_the_route() {
        let c = GenConfig {
            routes: vec![
                "a\"b\\c\n".to_string(),
                "search".to_string(),
                "é✓".to_string(),
            ],
            baseline_version: "v\t1".to_string(),
            ..cfg(300, 18)
        };
        let events = parse(&generate(&c));
        for route in &c.routes {
            assert!(events.iter().any(|e| s(e, "route") == route), "{route:?}");
        }
        assert!(events.iter().any(|e| s(e, "prompt_version") == "v\t1"));
    }

    #[test]
    fn text_templates_expand_within_bounds_and_need_no_escaping() {
        let shortest = TOPICS.iter().map(|t| t.len()).min().unwrap();
        let longest = TOPICS.iter().map(|t| t.len()).max().unwrap();
        for set in [
            INPUT_TEMPLATES,
            OK_TEMPLATES,
            FLAGGED_TEMPLATES,
            ERROR_TEMPLATES,
        ] {
            for t in set {
                assert!(t.is_ascii() && !t.contains(['"', '\\']) && !t.bytes().any(|b| b < 0x20));
                let literal = t.len() - 3 * t.matches('{').count();
                let (n, w) = (t.matches("{n}").count(), t.matches("{w}").count());
                assert_eq!(n + w, t.matches('{').count(), "{t}");
                assert!(n + w <= 4, "{t}: at most 4 slots fit in 56 bits");
                let min = literal + n + w * shortest;
                let max = literal + 4 * n + w * longest;
                assert!(min >= 40 && max <= 160, "{t}: {min}..{max}");
            }
        }
        assert!(
            TOPICS
                .iter()
                .all(|t| t.is_ascii() && !t.contains(['"', '\\', '{']))
        );
    }

    #[test]
    fn output_mentions_the_input_topic() {
        let events = parse(&generate(&cfg(500, 19)));
        for e in &events {
            let (input, output) = (s(e, "input"), s(e, "output"));
            let first_in_input = TOPICS
                .iter()
                .filter_map(|t| input.find(t).map(|pos| (pos, t)))
                .min()
                .unwrap()
                .1;
            assert!(output.contains(first_in_input), "{input} / {output}");
        }
    }

    #[test]
    fn validate_accepts_the_default_and_rejects_bad_configs() {
        assert_eq!(GenConfig::default().validate(), Ok(()));
        let bad_regression = |r: Regression| with_canary(GenConfig::default(), 0.1, r);
        let cases: Vec<(GenConfig, &str)> = vec![
            (
                GenConfig {
                    days: 0,
                    ..GenConfig::default()
                },
                "days",
            ),
            (
                GenConfig {
                    routes: vec![],
                    ..GenConfig::default()
                },
                "routes",
            ),
            (
                GenConfig {
                    routes: vec!["chat".into(), String::new()],
                    ..GenConfig::default()
                },
                "routes[1]",
            ),
            (
                GenConfig {
                    routes: vec!["chat".into(), "chat".into()],
                    ..GenConfig::default()
                },
                "twice",
            ),
            (
                GenConfig {
                    baseline_version: String::new(),
                    ..GenConfig::default()
                },
                "baseline_version",
            ),
            (
                GenConfig {
                    label_rate: 1.5,
                    ..GenConfig::default()
                },
                "label_rate",
            ),
            (
                GenConfig {
                    flagged_rate: -0.1,
                    ..GenConfig::default()
                },
                "flagged_rate",
            ),
            (
                GenConfig {
                    error_rate: f64::NAN,
                    ..GenConfig::default()
                },
                "error_rate",
            ),
            (
                with_canary(GenConfig::default(), 1.01, Regression::default()),
                "share",
            ),
            (
                GenConfig {
                    baseline_version: "v2".into(),
                    ..GenConfig::default()
                },
                "differ",
            ),
            (
                bad_regression(Regression {
                    latency: 0.0,
                    ..Regression::default()
                }),
                "latency",
            ),
            (
                bad_regression(Regression {
                    flagged: f64::INFINITY,
                    ..Regression::default()
                }),
                "flagged",
            ),
            (
                bad_regression(Regression {
                    tokens_in: -2.0,
                    ..Regression::default()
                }),
                "tokens_in",
            ),
            (
                bad_regression(Regression {
                    bad_label: f64::NAN,
                    ..Regression::default()
                }),
                "bad_label",
            ),
            (
                bad_regression(Regression {
                    tier: Some("gold".into()),
                    ..Regression::default()
                }),
                "tier",
            ),
            (
                GenConfig {
                    start: NaiveDate::from_ymd_opt(9999, 12, 31)
                        .unwrap()
                        .and_hms_opt(0, 0, 0)
                        .unwrap()
                        .and_utc(),
                    days: 2,
                    ..GenConfig::default()
                },
                "9999",
            ),
        ];
        for (c, needle) in cases {
            let err = c.validate().expect_err(needle);
            assert!(err.contains(needle), "{err:?} should mention {needle}");
            let io_err = write_events(&c, Vec::new()).expect_err(needle);
            assert_eq!(io_err.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(io_err.to_string(), err);
        }
    }

    #[test]
    fn invalid_config_writes_nothing() {
        let mut out = Vec::new();
        let c = GenConfig {
            days: 0,
            ..GenConfig::default()
        };
        assert!(write_events(&c, &mut out).is_err());
        assert!(out.is_empty());
    }
}
