//! The canary judge: is the new prompt version safe to promote?
//!
//! A pipeline of small steps, each recording why it decided what it did (after Kayenta's
//! separation of measurement, scoring and the final call):
//! [`policy`] says what to check; [`samples`] is the plain data checked (per segment and arm);
//! [`stats`] holds the intervals and tests; [`verdict`] measures each rule in each segment,
//! adjusts for multiplicity, classifies, and makes the call. The judge never reads files.

pub mod policy;
pub mod samples;
pub mod stats;
pub mod verdict;

pub use policy::{DEFAULT_POLICY_TOML, Policy};
pub use samples::{Arm, ArmSample, Samples, SegmentSample};
pub use verdict::{Decision, RuleOutcome, RuleResult, SegmentVerdict, Verdict, judge};
