//! The judge's input: per segment and arm, counts and the raw values its rules need. Plain
//! data, filled from the lake by [`crate::query::collect_samples`] or built directly in tests.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::policy::ValueColumn;

/// Which side of the comparison an event is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Baseline,
    Canary,
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
}

impl ArmSample {
    pub fn values(&self, c: ValueColumn) -> &[f64] {
        &self.values[c as usize]
    }
    pub fn values_mut(&mut self, c: ValueColumn) -> &mut Vec<f64> {
        &mut self.values[c as usize]
    }
    /// Adds one event. `values` holds (column, value) for the columns being kept.
    pub fn push(
        &mut self,
        flagged: bool,
        error: bool,
        label_bad: Option<bool>,
        values: &[(ValueColumn, f64)],
    ) {
        self.n += 1;
        self.flagged += flagged as u64;
        self.errors += error as u64;
        if let Some(bad) = label_bad {
            self.labeled += 1;
            self.bad += bad as u64;
        }
        for (c, v) in values {
            self.values[*c as usize].push(*v);
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
}

impl Samples {
    pub fn total(&self, arm: Arm) -> u64 {
        self.segments
            .values()
            .map(|s| match arm {
                Arm::Baseline => s.baseline.n,
                Arm::Canary => s.canary.n,
            })
            .sum()
    }
}
