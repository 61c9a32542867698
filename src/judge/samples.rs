//! The judge's input: per segment and arm, counts and the raw values its rules need, and, when
//! events carry a `unit_id`, the same counts per unit. Plain data, filled from the lake by
//! [`super::collect::collect_samples`] or built directly in tests and simulations.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// One unit's (user's, session's, account's) totals within one arm of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UnitTotals {
    pub n: u64,
    pub flagged: u64,
    pub errors: u64,
    pub labeled: u64,
    pub bad: u64,
    /// Sums of duration_ms, tokens_in, tokens_out over the unit's events (those kept).
    pub sums: [f64; 3],
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
    /// Per unit totals of the events that carry a unit id.
    pub units: Vec<UnitTotals>,
    /// Events without a unit id: each is a unit of its own, kept as running moments.
    pub singles: UnitTotals,
    /// Sums of squared values of the events without a unit id, per value column.
    pub singles_sumsq: [f64; 3],
    /// For each entry of `values[c]`, the index in `units` of its event's unit, or
    /// [`NO_UNIT`] for an event without a unit id.
    pub value_units: [Vec<u32>; 3],
    /// Unit key (a 64-bit hash of the unit id) -> index in `units`.
    pub unit_index: HashMap<u64, u32, foldhash::fast::RandomState>,
}

/// `value_units` entry of an event without a unit id.
pub const NO_UNIT: u32 = u32::MAX;

impl ArmSample {
    pub fn values(&self, c: ValueColumn) -> &[f64] {
        &self.values[c as usize]
    }
    pub fn values_mut(&mut self, c: ValueColumn) -> &mut Vec<f64> {
        &mut self.values[c as usize]
    }

    /// Whether any event of this arm carries a unit id.
    pub fn clustered(&self) -> bool {
        !self.units.is_empty()
    }

    fn unit_slot(&mut self, key: u64) -> u32 {
        let next = self.units.len() as u32;
        let slot = *self.unit_index.entry(key).or_insert(next);
        if slot == next {
            self.units.push(UnitTotals::default());
        }
        slot
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
            Some(k) => self.unit_slot(k),
            None => NO_UNIT,
        };
        let totals = match unit {
            Some(_) => &mut self.units[slot as usize],
            None => &mut self.singles,
        };
        totals.add(e, values);
        for (c, v) in values {
            self.values[*c as usize].push(*v);
            self.value_units[*c as usize].push(slot);
            if unit.is_none() {
                self.singles_sumsq[*c as usize] += v * v;
            }
        }
    }

    /// Adds labels counted apart from the events (the labeled-events index): `labeled` labels,
    /// `bad` of them bad, of events of unit `unit`.
    pub fn add_labels(&mut self, labeled: u64, bad: u64, unit: Option<u64>) {
        self.labeled += labeled;
        self.bad += bad;
        let totals = match unit {
            Some(k) => {
                let slot = self.unit_slot(k);
                &mut self.units[slot as usize]
            }
            None => &mut self.singles,
        };
        totals.labeled += labeled;
        totals.bad += bad;
    }

    /// Adds `other`'s events (from another partition of the same scan): counts, values and
    /// units, a unit seen in both merged into one.
    pub fn merge(&mut self, other: ArmSample) {
        self.n += other.n;
        self.flagged += other.flagged;
        self.errors += other.errors;
        self.labeled += other.labeled;
        self.bad += other.bad;
        let mut remap = vec![0u32; other.units.len()];
        for (key, slot) in &other.unit_index {
            let into = self.unit_slot(*key);
            remap[*slot as usize] = into;
            self.units[into as usize].merge(&other.units[*slot as usize]);
        }
        self.singles.merge(&other.singles);
        for c in 0..3 {
            self.singles_sumsq[c] += other.singles_sumsq[c];
            self.values[c].extend_from_slice(&other.values[c]);
            self.value_units[c].extend(other.value_units[c].iter().map(|&u| {
                if u == NO_UNIT {
                    NO_UNIT
                } else {
                    remap[u as usize]
                }
            }));
        }
    }

    /// Forgets per-unit detail (when no event of the whole comparison carries a unit id).
    pub fn drop_units(&mut self) {
        self.units = Vec::new();
        self.unit_index = HashMap::default();
        self.value_units = Default::default();
    }

    /// Moments of a ratio metric over units: keyed units as they are, and each event without a
    /// unit id as a unit of one event (a label of its own for the bad-label rate).
    pub fn ratio_moments(&self, metric: UnitMetric) -> RatioMoments {
        let mut m = RatioMoments::default();
        for u in &self.units {
            let (s, n) = u.pair(metric);
            m.add(s, n);
        }
        // Singles: N = 1 each, so ΣN = ΣN² = count and ΣSN = ΣS.
        let (s, n) = self.singles.pair(metric);
        let ss = match metric {
            // 0/1 indicators: S² = S.
            UnitMetric::Flagged | UnitMetric::Errors | UnitMetric::Bad => s,
            UnitMetric::Sum(c) => self.singles_sumsq[c as usize],
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
    fn merge(&mut self, o: &UnitTotals) {
        self.n += o.n;
        self.flagged += o.flagged;
        self.errors += o.errors;
        self.labeled += o.labeled;
        self.bad += o.bad;
        for c in 0..3 {
            self.sums[c] += o.sums[c];
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
        }
    }

    /// (numerator, denominator) of `metric` for this unit.
    fn pair(&self, metric: UnitMetric) -> (f64, f64) {
        match metric {
            UnitMetric::Flagged => (self.flagged as f64, self.n as f64),
            UnitMetric::Errors => (self.errors as f64, self.n as f64),
            UnitMetric::Bad => (self.bad as f64, self.labeled as f64),
            UnitMetric::Sum(c) => (self.sums[c as usize], self.n as f64),
        }
    }
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
        if !self.clustered() {
            for seg in self.segments.values_mut() {
                seg.baseline.drop_units();
                seg.canary.drop_units();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> (EventObs, [(ValueColumn, f64); 1], Option<u64>) {
        (
            EventObs {
                flagged: i % 3 == 0,
                error: i % 7 == 0,
                label_bad: (i % 4 == 0).then_some(i % 8 == 0),
            },
            [(ValueColumn::DurationMs, i as f64)],
            // Units 0..5, and every fifth event without a unit id.
            (i % 5 != 0).then_some(i % 6),
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
                .unit_index
                .iter()
                .map(|(k, slot)| {
                    let total: f64 = a.values[c]
                        .iter()
                        .zip(&a.value_units[c])
                        .filter(|(_, u)| **u == *slot)
                        .map(|(v, _)| v)
                        .sum();
                    (*k, total)
                })
                .collect();
            by_unit.sort_by(|x, y| x.0.cmp(&y.0));
            by_unit
        };
        assert_eq!(sums(&left), sums(&whole));
    }
}
