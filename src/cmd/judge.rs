//! `promptgate judge`: promote, abort or keep waiting on a canary, as an exit code.

use std::path::PathBuf;

use crate::error::{Error, Result};
use datafusion::prelude::SessionContext;

use crate::judge::CanaryQuery;
use crate::judge::{self, Policy, Verdict};
use crate::lake::Lake;
use crate::query;
use crate::report::{self, Subject, VerdictFormat};

/// Options of one judgement.
#[derive(Debug, Clone)]
pub struct JudgeArgs {
    pub route: String,
    pub baseline: String,
    pub canary: String,
    pub env: Option<String>,
    pub policy: Option<PathBuf>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub expected_share: Option<f64>,
    /// Units the sample-ratio check leaves out: a rollout's cohort, on the canary whatever
    /// their bucket, so only the units assigned by bucket are held to `expected_share`.
    pub srm_exclude: Vec<String>,
    /// Attributes (keys of `attributes`) that must take the same values in both arms.
    pub pins: Vec<String>,
    /// `--as-of`: judge the lake as it was at a version or time.
    pub as_of: Option<String>,
    pub format: VerdictFormat,
}

/// Runs the judge. Exit codes: 0 promote, 1 abort, 3 continue, 4 invalid; every error is 2
/// (usage or input), never 1, so a broken invocation can't be mistaken for an abort.
pub async fn run(lake: &Lake, a: &JudgeArgs) -> i32 {
    match judge(lake, a).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

/// Collects both arms from the lake and judges them.
pub(crate) async fn evaluate(
    ctx: &SessionContext,
    a: &JudgeArgs,
    policy: &Policy,
) -> Result<Verdict> {
    let q = CanaryQuery {
        route: a.route.clone(),
        env: a.env.clone(),
        baseline: a.baseline.clone(),
        canary: a.canary.clone(),
        since_us: a.since_us,
        until_us: a.until_us,
        segment_by: policy.segment_by.clone(),
        value_columns: policy.value_columns(),
        labels: policy.needs_labels(),
        pins: a.pins.clone(),
        srm_exclude: a.srm_exclude.clone(),
    };
    let samples = judge::collect_samples(ctx, &q).await?;
    Ok(judge::judge(samples, policy, a.expected_share))
}

async fn judge(lake: &Lake, a: &JudgeArgs) -> Result<i32> {
    if a.baseline == a.canary {
        return Err(
            Error::usage(format!("--baseline and --canary are both {:?}", a.canary))
                .with_hint("compare two different prompt versions"),
        );
    }
    if let Some(s) = a.expected_share
        && !(s > 0.0 && s < 1.0)
    {
        return Err(Error::usage(format!(
            "--expected-share must be between 0 and 1 (exclusive), got {s}"
        ))
        .with_hint("5% of traffic is --expected-share 0.05"));
    }
    let policy = match &a.policy {
        Some(p) => Policy::from_file(p)?,
        None => Policy::default(),
    };
    let as_of = match &a.as_of {
        Some(s) => crate::lake::AsOf::parse(s)?,
        None => crate::lake::AsOf::Latest,
    };
    let ctx = query::judge_session_at(lake, &as_of).await?;
    let verdict = evaluate(&ctx, a, &policy)
        .await
        .map_err(|e| query::missing_file_hint(e, &as_of))?;
    let mut out = super::stdout();
    let subject = Subject {
        route: &a.route,
        baseline: &a.baseline,
        canary: &a.canary,
        env: a.env.as_deref(),
    };
    report::write_verdict(&verdict, &subject, a.format, &mut out)?;
    super::flush(&mut out)?;
    Ok(verdict.exit_code)
}
