//! The judge's input: per segment and arm, counts and the raw values its rules need, and, when
//! events carry a `unit_id`, the same counts per unit. Plain data, filled from the lake by
//! [`super::collect::collect_samples`] or built directly in tests and simulations.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::policy::ValueColumn;

/// Which side of the comparison an event is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Baseline,
    Canary,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Baseline => "baseline",
            Arm::Canary => "canary",
        }
    }
}

/// One unit's (user's, session's, account's) counts within one arm of one segment: 20 bytes,
/// as there may be one per event. Sums of its values are taken when a rule needs them
/// ([`ArmSample::ratio_moments`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UnitTotals {
    pub n: u32,
    pub flagged: u32,
    pub errors: u32,
    pub labeled: u32,
    pub bad: u32,
}

/// The events without a unit id of one arm, each a unit of its own: counts and sums.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SingleTotals {
    pub n: u64,
    pub flagged: u64,
    pub errors: u64,
    pub labeled: u64,
    pub bad: u64,
    /// Sums of duration_ms, tokens_in, tokens_out, and of their squares.
    pub sums: [f64; 3],
    pub sumsq: [f64; 3],
}

/// What one event contributes, as [`ArmSample::push`] takes it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EventObs {
    pub flagged: bool,
    pub error: bool,
    /// `Some(true)` for a bad label, `Some(false)` for a good one, `None` when unlabeled.
    pub label_bad: Option<bool>,
}

/// Sums over units of `S²`, `S·N` and `N²` for a ratio metric `ΣS / ΣN`, and the number of
/// units: what the delta method for ratio metrics needs (see [`super::stats::ratio_metric_var`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RatioMoments {
    pub units: u64,
    pub s: f64,
    pub n: f64,
    pub ss: f64,
    pub sn: f64,
    pub nn: f64,
}

impl RatioMoments {
    pub fn add(&mut self, s: f64, n: f64) {
        if n == 0.0 && s == 0.0 {
            return;
        }
        self.units += 1;
        self.s += s;
        self.n += n;
        self.ss += s * s;
        self.sn += s * n;
        self.nn += n * n;
    }
    pub fn merge(&mut self, o: &RatioMoments) {
        self.units += o.units;
        self.s += o.s;
        self.n += o.n;
        self.ss += o.ss;
        self.sn += o.sn;
        self.nn += o.nn;
    }
}

/// Which per-event quantity a ratio metric sums (the denominator is events, or labeled events
/// for the bad-label rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitMetric {
    Flagged,
    Errors,
    Bad,
    Sum(ValueColumn),
}

/// One arm of one segment.
///
/// Events with a unit id are first recorded as they come (a key and a few bits each: appending
/// is all the scan does per event) and grouped into per-unit totals by [`ArmSample::finish_units`],
/// one sort of the keys, before anything reads [`ArmSample::units`]. Per-event hashing into a
/// map cost the judge more than reading the lake did when most units have few events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArmSample {
    pub n: u64,
    pub flagged: u64,
    pub errors: u64,
    /// Events with a label, and how many of those are `bad`.
    pub labeled: u64,
    pub bad: u64,
    /// Raw values of duration_ms, tokens_in, tokens_out (only those the policy needs).
    pub values: [Vec<f64>; 3],
    /// Per unit totals of the events that carry a unit id (after `finish_units`).
    units: Vec<UnitTotals>,
    /// The key of each unit of `units`, ascending.
    unit_keys: Vec<u64>,
    /// Events without a unit id: each is a unit of its own, kept as running moments.
    pub singles: SingleTotals,
    /// For each entry of `values[c]`: [`NO_UNIT`] for an event without a unit id, else the
    /// index of its unit in `units` (after `finish_units`) or of its record (before).
    value_units: [Vec<u32>; 3],
    /// Records not yet grouped: the unit key and what the record adds ([`REC_EVENT`]...).
    rec_keys: Vec<u64>,
    rec_bits: Vec<u8>,
    /// Events per response model (the snapshot that answered), of those that name one.
    pub response_models: BTreeMap<String, u64>,
}

/// `value_units` entry of an event without a unit id.
pub const NO_UNIT: u32 = u32::MAX;

const REC_EVENT: u8 = 1;
const REC_FLAGGED: u8 = 2;
const REC_ERROR: u8 = 4;
const REC_LABELED: u8 = 8;
const REC_BAD: u8 = 16;

impl ArmSample {
    pub fn values(&self, c: ValueColumn) -> &[f64] {
        &self.values[c as usize]
    }
    pub fn values_mut(&mut self, c: ValueColumn) -> &mut Vec<f64> {
        &mut self.values[c as usize]
    }
    /// Per unit totals; `finish_units` must have run since the last event was added.
    pub fn units(&self) -> &[UnitTotals] {
        debug_assert!(
            self.rec_keys.is_empty(),
            "finish_units before reading units"
        );
        &self.units
    }
    /// The units' keys, ascending (parallel to [`ArmSample::units`]).
    pub fn unit_keys(&self) -> &[u64] {
        debug_assert!(
            self.rec_keys.is_empty(),
            "finish_units before reading units"
        );
        &self.unit_keys
    }
    /// For each of `values[c]`, its unit's index in [`ArmSample::units`], or [`NO_UNIT`].
    pub fn value_units(&self, c: usize) -> &[u32] {
        debug_assert!(
            self.rec_keys.is_empty(),
            "finish_units before reading units"
        );
        &self.value_units[c]
    }

    /// Whether any event of this arm carries a unit id.
    pub fn clustered(&self) -> bool {
        !self.units.is_empty() || !self.rec_keys.is_empty()
    }

    /// Adds one event. `values` holds (column, value) for the columns being kept; `unit` is the
    /// 64-bit key of the event's unit id, `None` when it has none.
    pub fn push(&mut self, e: EventObs, values: &[(ValueColumn, f64)], unit: Option<u64>) {
        self.n += 1;
        self.flagged += e.flagged as u64;
        self.errors += e.error as u64;
        if let Some(bad) = e.label_bad {
            self.labeled += 1;
            self.bad += bad as u64;
        }
        let slot = match unit {
            Some(key) => {
                self.reopen();
                let bits = REC_EVENT
                    | if e.flagged { REC_FLAGGED } else { 0 }
                    | if e.error { REC_ERROR } else { 0 }
                    | match e.label_bad {
                        Some(true) => REC_LABELED | REC_BAD,
                        Some(false) => REC_LABELED,
                        None => 0,
                    };
                self.rec_keys.push(key);
                self.rec_bits.push(bits);
                (self.rec_keys.len() - 1) as u32
            }
            None => {
                self.singles.add(e, values);
                NO_UNIT
            }
        };
        for (c, v) in values {
            self.values[*c as usize].push(*v);
            self.value_units[*c as usize].push(slot);
        }
    }

    /// Adds labels counted apart from the events (the labeled-events index): `labeled` labels,
    /// `bad` of them bad, of events of unit `unit`.
    pub fn add_labels(&mut self, labeled: u64, bad: u64, unit: Option<u64>) {
        self.labeled += labeled;
        self.bad += bad;
        match unit {
            Some(key) => {
                self.reopen();
                for i in 0..labeled {
                    self.rec_keys.push(key);
                    self.rec_bits
                        .push(REC_LABELED | if i < bad { REC_BAD } else { 0 });
                }
            }
            None => {
                self.singles.labeled += labeled;
                self.singles.bad += bad;
            }
        }
    }

    /// Adds `other`'s events (from another partition of the same scan, or labels counted
    /// apart): counts, values and units, a unit seen in both merged into one.
    pub fn merge(&mut self, mut other: ArmSample) {
        self.reopen();
        other.reopen();
        self.n += other.n;
        self.flagged += other.flagged;
        self.errors += other.errors;
        self.labeled += other.labeled;
        self.bad += other.bad;
        for (model, n) in std::mem::take(&mut other.response_models) {
            *self.response_models.entry(model).or_default() += n;
        }
        self.singles.merge(&other.singles);
        let offset = self.rec_keys.len() as u32;
        self.rec_keys.extend_from_slice(&other.rec_keys);
        self.rec_bits.extend_from_slice(&other.rec_bits);
        for c in 0..3 {
            self.values[c].extend_from_slice(&other.values[c]);
            self.value_units[c].extend(
                other.value_units[c].iter().map(
                    |&u| {
                        if u == NO_UNIT { NO_UNIT } else { u + offset }
                    },
                ),
            );
        }
    }

    /// Groups the recorded events and labels by unit into [`ArmSample::units`] (one sort of the
    /// keys), and points each value at its unit. Cheap when nothing was added since.
    pub fn finish_units(&mut self) {
        if self.rec_keys.is_empty() {
            return;
        }
        // Adding records reopened any grouped units, so `units` is empty here.
        let order = sorted_by_key(&self.rec_keys);
        let mut unit_of = vec![0u32; order.len()];
        for (key, rec) in order {
            if self.unit_keys.last() != Some(&key) {
                self.unit_keys.push(key);
                self.units.push(UnitTotals::default());
            }
            let slot = self.units.len() - 1;
            unit_of[rec as usize] = slot as u32;
            let b = self.rec_bits[rec as usize];
            let t = &mut self.units[slot];
            t.n += u32::from(b & REC_EVENT != 0);
            t.flagged += u32::from(b & REC_FLAGGED != 0);
            t.errors += u32::from(b & REC_ERROR != 0);
            t.labeled += u32::from(b & REC_LABELED != 0);
            t.bad += u32::from(b & REC_BAD != 0);
        }
        for c in 0..3 {
            for u in self.value_units[c].iter_mut() {
                if *u != NO_UNIT {
                    *u = unit_of[*u as usize];
                }
            }
        }
        self.rec_keys = Vec::new();
        self.rec_bits = Vec::new();
    }

    /// Turns grouped units back into records (one per event or label, as they were added), so
    /// that more can be added and grouped again; nothing to do when there are none.
    fn reopen(&mut self) {
        if self.units.is_empty() {
            return;
        }
        let units = std::mem::take(&mut self.units);
        let keys = std::mem::take(&mut self.unit_keys);
        let mut first = Vec::with_capacity(units.len());
        for (t, key) in units.iter().zip(keys) {
            first.push(self.rec_keys.len() as u32);
            for i in 0..t.n.max(t.labeled).max(1) {
                let bit = |count: u32, b: u8| if i < count { b } else { 0 };
                self.rec_keys.push(key);
                self.rec_bits.push(
                    bit(t.n, REC_EVENT)
                        | bit(t.flagged, REC_FLAGGED)
                        | bit(t.errors, REC_ERROR)
                        | bit(t.labeled, REC_LABELED)
                        | bit(t.bad, REC_BAD),
                );
            }
        }
        for c in 0..3 {
            for u in self.value_units[c].iter_mut() {
                if *u != NO_UNIT {
                    *u = first[*u as usize];
                }
            }
        }
    }

    /// Forgets per-unit detail (when no event of the whole comparison carries a unit id).
    pub fn drop_units(&mut self) {
        self.units = Vec::new();
        self.unit_keys = Vec::new();
        self.value_units = Default::default();
        self.rec_keys = Vec::new();
        self.rec_bits = Vec::new();
    }

    /// Moments of a ratio metric over units: keyed units as they are, and each event without a
    /// unit id as a unit of one event (a label of its own for the bad-label rate).
    pub fn ratio_moments(&self, metric: UnitMetric) -> RatioMoments {
        let mut m = RatioMoments::default();
        let units = self.units();
        // A mean's numerator is the unit's sum of values, taken here from the values.
        let mut sums = Vec::new();
        if let UnitMetric::Sum(c) = metric {
            sums = vec![0.0; units.len()];
            for (v, &u) in self.values[c as usize]
                .iter()
                .zip(self.value_units(c as usize))
            {
                if u != NO_UNIT {
                    sums[u as usize] += v;
                }
            }
        }
        for (i, u) in units.iter().enumerate() {
            let (s, n) = u.pair(metric, sums.get(i).copied().unwrap_or(0.0));
            m.add(s, n);
        }
        // Singles: N = 1 each, so ΣN = ΣN² = count and ΣSN = ΣS.
        let (s, n) = self.singles.pair(metric);
        let ss = match metric {
            // 0/1 indicators: S² = S.
            UnitMetric::Flagged | UnitMetric::Errors | UnitMetric::Bad => s,
            UnitMetric::Sum(c) => self.singles.sumsq[c as usize],
        };
        if n > 0.0 {
            m.merge(&RatioMoments {
                units: n as u64,
                s,
                n,
                ss,
                sn: s,
                nn: n,
            });
        }
        m
    }
}

impl UnitTotals {
    /// (numerator, denominator) of `metric` for this unit; `sum` is its sum of the values a
    /// mean metric averages (not kept per unit).
    fn pair(&self, metric: UnitMetric, sum: f64) -> (f64, f64) {
        match metric {
            UnitMetric::Flagged => (f64::from(self.flagged), f64::from(self.n)),
            UnitMetric::Errors => (f64::from(self.errors), f64::from(self.n)),
            UnitMetric::Bad => (f64::from(self.bad), f64::from(self.labeled)),
            UnitMetric::Sum(_) => (sum, f64::from(self.n)),
        }
    }
}

impl SingleTotals {
    fn merge(&mut self, o: &SingleTotals) {
        self.n += o.n;
        self.flagged += o.flagged;
        self.errors += o.errors;
        self.labeled += o.labeled;
        self.bad += o.bad;
        for c in 0..3 {
            self.sums[c] += o.sums[c];
            self.sumsq[c] += o.sumsq[c];
        }
    }

    fn add(&mut self, e: EventObs, values: &[(ValueColumn, f64)]) {
        self.n += 1;
        self.flagged += e.flagged as u64;
        self.errors += e.error as u64;
        if let Some(bad) = e.label_bad {
            self.labeled += 1;
            self.bad += bad as u64;
        }
        for (c, v) in values {
            self.sums[*c as usize] += *v;
            self.sumsq[*c as usize] += v * v;
        }
    }

    /// (numerator, denominator) of `metric` over these events.
    fn pair(&self, metric: UnitMetric) -> (f64, f64) {
        match metric {
            UnitMetric::Flagged => (self.flagged as f64, self.n as f64),
            UnitMetric::Errors => (self.errors as f64, self.n as f64),
            UnitMetric::Bad => (self.bad as f64, self.labeled as f64),
            UnitMetric::Sum(c) => (self.sums[c as usize], self.n as f64),
        }
    }
}

/// `(key, index)` of every key, ordered by key: one pass that scatters by the key's top bits
/// into about one bucket per 1,024 keys (each bucket's write position stays in cache), then a
/// sort of each small bucket. The keys are 64-bit hashes, so buckets come out even; any keys
/// still come out ordered, only slower.
fn sorted_by_key(keys: &[u64]) -> Vec<(u64, u32)> {
    let bits = (keys.len() >> 10).max(1).ilog2().min(14);
    if bits == 0 {
        let mut out: Vec<(u64, u32)> = keys
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, i as u32))
            .collect();
        out.sort_unstable_by_key(|p| p.0);
        return out;
    }
    let shift = 64 - bits;
    let mut start = vec![0usize; (1 << bits) + 1];
    for &k in keys {
        start[(k >> shift) as usize + 1] += 1;
    }
    for b in 1..start.len() {
        start[b] += start[b - 1];
    }
    let mut next = start.clone();
    let mut out = vec![(0u64, 0u32); keys.len()];
    for (i, &k) in keys.iter().enumerate() {
        let b = (k >> shift) as usize;
        out[next[b]] = (k, i as u32);
        next[b] += 1;
    }
    for b in 0..(1 << bits) {
        out[start[b]..start[b + 1]].sort_unstable_by_key(|p| p.0);
    }
    out
}

/// Both arms of one segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentSample {
    pub baseline: ArmSample,
    pub canary: ArmSample,
}

impl SegmentSample {
    pub fn arm(&self, arm: Arm) -> &ArmSample {
        match arm {
            Arm::Baseline => &self.baseline,
            Arm::Canary => &self.canary,
        }
    }
    pub fn arm_mut(&mut self, arm: Arm) -> &mut ArmSample {
        match arm {
            Arm::Baseline => &mut self.baseline,
            Arm::Canary => &mut self.canary,
        }
    }
}

/// Everything the judge looks at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// Segment columns, in order.
    pub segment_by: Vec<String>,
    /// Segment key (one value per segment column) -> both arms.
    pub segments: BTreeMap<Vec<String>, SegmentSample>,
    /// Distinct prompt_sha values seen per arm (None = events without a sha).
    pub shas: BTreeMap<Arm, BTreeSet<Option<String>>>,
    /// Time window the comparison covers, microseconds (inclusive start, inclusive end).
    pub window: Option<(i64, i64)>,
    /// Distinct units per arm over all segments, when events carry unit ids.
    pub distinct_units: Option<(u64, u64)>,
    /// Pinned attributes: name -> per arm, the distinct values seen (JSON text; `null` when the
    /// event has no such attribute).
    pub pins: BTreeMap<String, BTreeMap<Arm, BTreeSet<String>>>,
}

impl Samples {
    pub fn total(&self, arm: Arm) -> u64 {
        self.segments.values().map(|s| s.arm(arm).n).sum()
    }

    /// Whether the events carry unit ids (per-unit totals were kept).
    pub fn clustered(&self) -> bool {
        self.segments
            .values()
            .any(|s| s.baseline.clustered() || s.canary.clustered())
    }

    /// Drops per-unit detail everywhere when no event carries a unit id, so that
    /// [`Samples::clustered`] says whether the comparison is clustered.
    pub fn settle_units(&mut self) {
        finish_units_all(
            self.segments
                .values_mut()
                .flat_map(|s| [&mut s.baseline, &mut s.canary])
                .collect(),
        );
        if !self.clustered() {
            for seg in self.segments.values_mut() {
                seg.baseline.drop_units();
                seg.canary.drop_units();
            }
        }
    }
}

/// [`ArmSample::finish_units`] over many arms, on every core when there is much to group:
/// largest arms first, each to the least loaded worker.
pub fn finish_units_all(mut arms: Vec<&mut ArmSample>) {
    let total: usize = arms.iter().map(|a| a.rec_keys.len()).sum();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(arms.len());
    if total < 100_000 || workers < 2 {
        arms.into_iter().for_each(ArmSample::finish_units);
        return;
    }
    arms.sort_by_key(|a| std::cmp::Reverse(a.rec_keys.len()));
    let mut groups: Vec<(usize, Vec<&mut ArmSample>)> =
        (0..workers).map(|_| (0, Vec::new())).collect();
    for arm in arms {
        if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
            g.0 += arm.rec_keys.len();
            g.1.push(arm);
        }
    }
    std::thread::scope(|scope| {
        for (_, group) in groups {
            scope.spawn(move || group.into_iter().for_each(ArmSample::finish_units));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> (EventObs, [(ValueColumn, f64); 1], Option<u64>) {
        (
            EventObs {
                flagged: i.is_multiple_of(3),
                error: i.is_multiple_of(7),
                label_bad: i.is_multiple_of(4).then_some(i.is_multiple_of(8)),
            },
            [(ValueColumn::DurationMs, i as f64)],
            // Units 0..5, and every fifth event without a unit id.
            (!i.is_multiple_of(5)).then_some(i % 6),
        )
    }

    #[test]
    fn merging_partitions_equals_one_pass() {
        let mut whole = ArmSample::default();
        let (mut left, mut right) = (ArmSample::default(), ArmSample::default());
        for i in 0..100 {
            let (e, v, u) = event(i);
            whole.push(e, &v, u);
            if i % 2 == 0 { &mut left } else { &mut right }.push(e, &v, u);
        }
        left.merge(right);
        left.finish_units();
        whole.finish_units();
        assert_eq!(
            (left.n, left.flagged, left.errors, left.labeled, left.bad),
            (
                whole.n,
                whole.flagged,
                whole.errors,
                whole.labeled,
                whole.bad
            )
        );
        for metric in [
            UnitMetric::Flagged,
            UnitMetric::Bad,
            UnitMetric::Sum(ValueColumn::DurationMs),
        ] {
            assert_eq!(
                left.ratio_moments(metric),
                whole.ratio_moments(metric),
                "{metric:?}"
            );
        }
        // Each value still points at its own unit's totals.
        let c = ValueColumn::DurationMs as usize;
        let sums = |a: &ArmSample| -> Vec<(u64, f64)> {
            let mut by_unit: Vec<(u64, f64)> = a
                .unit_keys()
                .iter()
                .enumerate()
                .map(|(slot, k)| {
                    let total: f64 = a.values[c]
                        .iter()
                        .zip(a.value_units(c))
                        .filter(|(_, u)| **u as usize == slot)
                        .map(|(v, _)| v)
                        .sum();
                    (*k, total)
                })
                .collect();
            by_unit.sort_by_key(|x| x.0);
            by_unit
        };
        assert_eq!(sums(&left), sums(&whole));
    }

    #[test]
    fn adding_after_grouping_regroups_the_same_units() {
        let mut whole = ArmSample::default();
        let mut staged = ArmSample::default();
        for i in 0..60 {
            let (e, v, u) = event(i);
            whole.push(e, &v, u);
            staged.push(e, &v, u);
        }
        staged.finish_units();
        let mut more = ArmSample::default();
        for i in 60..100 {
            let (e, v, u) = event(i);
            whole.push(e, &v, u);
            if i < 80 {
                staged.push(e, &v, u);
            } else {
                more.push(e, &v, u);
            }
        }
        whole.add_labels(3, 1, Some(2));
        more.finish_units();
        staged.merge(more);
        staged.add_labels(3, 1, Some(2));
        whole.finish_units();
        staged.finish_units();
        assert_eq!(staged.unit_keys(), whole.unit_keys());
        assert_eq!(staged.units(), whole.units());
        let c = ValueColumn::DurationMs as usize;
        let per_value = |a: &ArmSample| -> Vec<(u64, u32)> {
            let mut v: Vec<(u64, u32)> = a.values[c]
                .iter()
                .zip(a.value_units(c))
                .map(|(x, u)| (*x as u64, *u))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(per_value(&staged), per_value(&whole));
        assert!(whole.units().iter().map(|u| u.labeled).sum::<u32>() > 0);
    }

    #[test]
    fn keys_come_out_ordered_with_their_indices() {
        for n in [0usize, 1, 5, 3_000, 70_000] {
            // Hash-like keys, repeats, and a narrow range that fills few buckets.
            let keys: Vec<u64> = (0..n as u64)
                .map(|i| match i % 3 {
                    0 => i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    1 => i / 7,
                    _ => (i % 11).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                })
                .collect();
            let out = sorted_by_key(&keys);
            assert_eq!(out.len(), n);
            assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "n {n}");
            let mut seen = vec![false; n];
            for (k, i) in &out {
                assert_eq!(keys[*i as usize], *k);
                seen[*i as usize] = true;
            }
            assert!(seen.iter().all(|s| *s));
        }
    }

    #[test]
    fn ratio_moments_of_a_mean_sum_each_units_values() {
        // Unit 1: 1 and 2; unit 2: 3; one event without a unit: 4.
        let mut a = ArmSample::default();
        for (v, u) in [(1.0, Some(1)), (3.0, Some(2)), (4.0, None), (2.0, Some(1))] {
            a.push(EventObs::default(), &[(ValueColumn::DurationMs, v)], u);
        }
        a.finish_units();
        let m = a.ratio_moments(UnitMetric::Sum(ValueColumn::DurationMs));
        // S = (3, 3, 4), N = (2, 1, 1): ΣS² = 34, ΣSN = 13, ΣN² = 6.
        assert_eq!(
            m,
            RatioMoments {
                units: 3,
                s: 10.0,
                n: 4.0,
                ss: 34.0,
                sn: 13.0,
                nn: 6.0
            }
        );
    }
}
