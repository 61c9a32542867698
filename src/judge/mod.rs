//! The canary judge: is the new prompt version safe to promote?
//!
//! A pipeline of small steps, each recording why it decided what it did (after Kayenta's
//! separation of measurement, scoring and the final call):
//! [`collect`] reads both arms from the lake into [`samples`], the plain data checked (per
//! segment, arm and unit); [`policy`] says what to check; [`stats`] holds the formulas,
//! [`sequential`] the always-valid critical values and [`evidence`] the bounds, tests and
//! projections built from them; [`measure`] measures each rule in each segment and stratifies
//! it over segments; [`verdict`] adjusts for multiplicity, classifies, says which segments hold
//! the canary, and makes the call. Everything after [`collect`] is a pure function of plain data.

pub mod collect;
pub mod evidence;
pub mod measure;
pub mod policy;
pub mod samples;
pub mod sequential;
pub mod simulate;
pub mod stats;
pub mod verdict;

pub use collect::{CanaryQuery, collect_samples};
pub use policy::{DEFAULT_POLICY_TOML, Policy};
pub use samples::{Arm, ArmSample, EventObs, Samples, SegmentSample};
pub use verdict::{Decision, RuleOutcome, RuleResult, SegmentVerdict, Verdict, judge};
