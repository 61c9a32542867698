//! The `promptgate` command line: argument definitions and dispatch, nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use promptgate::Lake;
use promptgate::cmd;
use promptgate::error::{Error, Result};
use promptgate::event::parse_time_arg;
use promptgate::r#gen::{CanarySpec, GenConfig, Regression};
use promptgate::ingest::{IngestOptions, InputFormat, RecordKind};
use promptgate::query::RollupSpec;
use promptgate::registry::Registry;
use promptgate::report::{OutputFormat, VerdictFormat};

// Allocation-heavy parsing on several threads: mimalloc is faster than glibc's malloc here and
// fragments less (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Make LLM prompt changes boring to ship: an event lake, rollups and a canary judge.
#[derive(Parser)]
#[command(name = "promptgate", version, propagate_version = true)]
struct Cli {
    /// Lake directory.
    #[arg(long, global = true, env = "PROMPTGATE_LAKE", default_value = "./lake")]
    lake: PathBuf,
    /// Prompt registry directory (default: <lake>/registry).
    #[arg(long, global = true, env = "PROMPTGATE_REGISTRY")]
    registry: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest events (or labels) from NDJSON or CSV files, or `-` for stdin.
    ///
    /// Exit codes: 0 input read (rejects are reported and quarantined), 1 input unreadable or
    /// (with --strict) records rejected, 2 usage error.
    Ingest(IngestArgs),
    /// Run read-only SQL over llm_events, llm_labels and llm_events_labeled.
    Sql(SqlArgs),
    /// Per-segment, per-prompt-version metrics for one route.
    Rollup(RollupArgs),
    /// The 2am timeline of one route: per time bucket and prompt version, events, share,
    /// flagged and error rates and p95 duration, with the registry's changes in between.
    Timeline(TimelineArgs),
    /// Generate deterministic synthetic events as NDJSON on stdout.
    Gen(GenArgs),
    /// Generate a week of events into a fresh lake, ingest it and show the rollups.
    Demo {
        /// Directory for the demo lake (must be new or empty); default: a fresh temp directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Judge a canary against its baseline: promote, abort, continue or invalid.
    ///
    /// Exit codes: 0 promote, 1 abort, 2 usage or input error, 3 continue (needs more
    /// volume), 4 invalid (the comparison cannot be trusted).
    Judge(JudgeCli),
    /// The lake's versions, vacuum, conversion of a lake of the old layout.
    #[command(subcommand)]
    Lake(LakeCmd),
    /// Merge each day's files into one, in one commit (readers keep reading the version they
    /// started on; the old files stay until a vacuum past the retention period).
    Compact {
        /// Only this day (YYYY-MM-DD).
        #[arg(long)]
        date: Option<String>,
        /// Compact llm_labels instead of llm_events.
        #[arg(long)]
        labels: bool,
        /// Only partitions with at least this many files.
        #[arg(long, default_value_t = 2)]
        min_files: usize,
    },
    /// The prompt registry: versions, defaults, overrides, the kill switch, the audit log.
    ///
    /// Exit codes: 0 done (or nothing to do), 1 refused (unknown route or version, a version
    /// added again with other content, no last-known-good to kill to; nothing changed),
    /// 2 usage error.
    #[command(subcommand)]
    Registry(RegistryCmd),
    /// Which prompt version a request gets, as one JSON object.
    ///
    /// Precedence: kill switch > tier override > env override > active rollout > default.
    /// Exit codes: 0 resolved, 1 unknown route or no default, 2 usage error.
    Resolve {
        #[arg(long)]
        route: String,
        #[arg(long)]
        env: String,
        /// Default: `default`.
        #[arg(long)]
        tier: Option<String>,
        /// The user, session or customer; it keeps its arm across calls.
        #[arg(long)]
        unit: String,
    },
    /// Staged rollouts of a new prompt version, each step gated by the judge.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// Serve resolutions over HTTP (JSON): /v1/resolve, /v1/prompts/{route}/{version},
    /// /v1/registry, /healthz.
    ///
    /// Binds loopback unless PROMPTGATE_TOKEN is set; with a token, every request must send
    /// `Authorization: Bearer <token>`. Exit codes: 0 stopped cleanly, 1 cannot serve, 2 usage.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8719")]
        addr: String,
        /// Seconds a connection has to send a whole request head, from when it opens or gets
        /// its previous answer: slow senders and idle keep-alive connections are closed after it.
        #[arg(long, default_value_t = 10.0)]
        header_timeout: f64,
        /// Connections served at once; one more is answered 503 and closed (clamped below the
        /// process's file-descriptor limit).
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for requests in flight before closing
        /// what is left.
        #[arg(long, default_value_t = 10.0)]
        drain_timeout: f64,
        /// Take events into the lake: POST /v1/events (NDJSON or a JSON array, gzip allowed)
        /// and POST /v1/traces (OTLP/HTTP GenAI spans), fsynced in a local spool before the
        /// answer and committed in batches.
        #[arg(long)]
        intake: bool,
        /// Seconds between commits of the intake spool to the lake (how soon posted events
        /// are visible to queries).
        #[arg(long, default_value_t = 5.0, requires = "intake")]
        commit_interval: f64,
        /// Largest request body, as sent and as inflated from gzip (413 above it).
        #[arg(long, default_value_t = 20.0, requires = "intake")]
        max_body_mib: f64,
        /// Spooled data not yet committed past which posts are answered 503 with Retry-After.
        #[arg(long, default_value_t = 1024.0, requires = "intake")]
        max_spool_mib: f64,
        /// Which span and resource attributes give the route, env, tier, prompt version and
        /// sha, unit and status of an OTLP GenAI span (TOML; `promptgate ingest
        /// --print-otlp-mapping` prints the defaults).
        #[arg(long, value_name = "FILE", requires = "intake")]
        otlp_mapping: Option<PathBuf>,
    },
    /// Blind human review of real requests: sample, run both versions, import answers.
    #[command(subcommand)]
    Review(ReviewCmd),
    /// The release checklist of a prompt change, every field filled from data (registry,
    /// rollout, judge, review), each check ticked or not with its evidence.
    ///
    /// Exit codes: 0 every required check passes (judge promote or in progress without abort,
    /// prompt_sha matches the registry, pinned knobs unchanged, review ship), 1 otherwise,
    /// 2 usage or input error.
    Checklist {
        #[arg(long)]
        route: String,
        #[arg(long)]
        baseline: String,
        #[arg(long)]
        canary: String,
        /// Default: the env of this change's rollout.
        #[arg(long)]
        env: Option<String>,
        /// The blind review of this change (its id).
        #[arg(long)]
        review: Option<String>,
        /// Why the change is made (default: the note given when the canary was registered).
        #[arg(long)]
        why: Option<String>,
        /// Without a promptgate rollout (traffic split by another tool): judge the events from
        /// this time on (RFC 3339 or YYYY-MM-DD; default: the canary's first event).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: promptgate::report::checklist::ChecklistFormat,
    },
}

#[derive(Subcommand)]
enum ReviewCmd {
    /// Sample a route's real requests (stratified by model x tier, redacted) into a new review;
    /// prints the review id first.
    ///
    /// Exit codes: 0 created, 1 no eligible requests or the lake is unreadable, 2 usage error.
    Sample {
        #[arg(long)]
        route: String,
        #[arg(long)]
        env: String,
        /// Requests to sample (fewer when fewer distinct inputs exist).
        #[arg(long, default_value_t = 40)]
        n: u64,
        /// Only events at or after this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Seed (default: random, printed and recorded).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run a command per item and version (JSON on stdin, the answer on stdout); re-running
    /// fills in only what is missing.
    ///
    /// Exit codes: 0 every run answered, 1 some failed (recorded per item) or cannot run, 2 usage.
    #[command(disable_version_flag = true)]
    Run {
        #[arg(long)]
        id: String,
        #[arg(long)]
        baseline: String,
        #[arg(long)]
        canary: String,
        /// Shell command, e.g. "promptgate review example-runner".
        #[arg(long)]
        runner: String,
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Per run: 60s, 2m, 500ms.
        #[arg(long, default_value = "60s")]
        timeout: String,
    },
    /// Import answers produced elsewhere (NDJSON: item, version, output); all or nothing.
    ///
    /// Exit codes: 0 imported, 1 bad file (nothing imported), 2 usage error.
    #[command(disable_version_flag = true)]
    Import {
        #[arg(long)]
        id: String,
        #[arg(long)]
        outputs: PathBuf,
        /// Needed when the review has no versions yet.
        #[arg(long)]
        baseline: Option<String>,
        #[arg(long)]
        canary: Option<String>,
    },
    /// Write the blind sheet (share/sheet.csv, share/sheet.html: all a labeler gets) and, apart
    /// from it, the key.
    ///
    /// Exit codes: 0 written, 1 no answers yet, 2 usage error.
    Sheet {
        #[arg(long)]
        id: String,
    },
    /// Unblind filled sheets and decide: ship, do not ship, or not enough labels.
    ///
    /// Exit codes: 0 ship, 1 do not ship (or a bad labels file: nothing recorded),
    /// 3 fewer than 20 labeled pairs, 2 usage error.
    Score {
        #[arg(long)]
        id: String,
        /// Filled sheets (CSV), one or more.
        #[arg(long, num_args = 1.., required = true)]
        labels: Vec<PathBuf>,
        /// Ship a version that does not clearly win, recording why.
        #[arg(long)]
        accept_tradeoff: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: cmd::review::ScoreFormat,
    },
    /// The offline example runner: a run request on stdin, an answer built from the prompt
    /// (a `{{input}}` template) and the input on stdout. No network, no key.
    ExampleRunner,
}

/// Who writes and why: every registry write takes these.
#[derive(Args)]
struct WriteCli {
    /// Who makes the change (default: $USER).
    #[arg(long)]
    actor: Option<String>,
    /// Why, for the audit log.
    #[arg(long)]
    why: Option<String>,
}

#[derive(Subcommand)]
enum RegistryCmd {
    /// Register a prompt version (its text is stored by SHA-256; versions are immutable).
    #[command(disable_version_flag = true)]
    Add {
        #[arg(long)]
        route: String,
        #[arg(long)]
        version: String,
        /// The prompt text.
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        write: WriteCli,
    },
    /// Make a version the route's default (of one env with --env). Lifts a kill switch.
    #[command(disable_version_flag = true)]
    SetDefault {
        #[arg(long)]
        route: String,
        #[arg(long)]
        version: String,
        #[arg(long)]
        env: Option<String>,
        #[command(flatten)]
        write: WriteCli,
    },
    /// Pin a version for an env (or one tier of it), above rollouts and defaults; --clear removes it.
    #[command(disable_version_flag = true)]
    Override {
        #[arg(long)]
        route: String,
        #[arg(long)]
        env: String,
        #[arg(long)]
        tier: Option<String>,
        #[arg(long, required_unless_present = "clear", conflicts_with = "clear")]
        version: Option<String>,
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        write: WriteCli,
    },
    /// Kill switch: end any rollout and send all traffic to the last-known-good version.
    Kill {
        #[arg(long)]
        route: String,
        /// Only this env (default: every env of the route).
        #[arg(long)]
        env: Option<String>,
        /// Who pulls the switch (default: $USER).
        #[arg(long)]
        actor: Option<String>,
        /// Why (required: it is what the next person reads).
        #[arg(long)]
        why: String,
    },
    /// Routes, versions, defaults, overrides, kill switches and active rollouts.
    Show {
        #[arg(long)]
        route: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: cmd::registry::ListFormat,
    },
    /// The audit log of a route: time, actor, action, before -> after, why, verdicts.
    History {
        #[arg(long)]
        route: String,
        #[arg(long, value_enum, default_value_t)]
        format: cmd::registry::ListFormat,
    },
}

#[derive(Subcommand)]
enum RolloutCmd {
    /// Start a rollout: the baseline is what the route serves now in that env.
    ///
    /// Exit codes: 0 started, 1 refused (nothing changed), 2 usage error.
    Start {
        #[arg(long)]
        route: String,
        #[arg(long)]
        env: String,
        #[arg(long)]
        canary: String,
        /// Percent of units per step; starts at 1-5 and rises to 100.
        #[arg(long)]
        plan: Option<String>,
        /// Judge policy (TOML) for every step; default: `judge --print-default-policy`.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Attributes that must not differ between the arms (e.g. top_k,context_budget,reranker).
        #[arg(long, value_delimiter = ',')]
        pin: Vec<String>,
        /// A first step on a cohort: a file of unit ids, one per line.
        #[arg(long)]
        cohort_units: Option<PathBuf>,
        /// The rollout's id (default: `r<N>-<8 random hex>`). Units are bucketed by route,
        /// id and unit, so a fixed id reproduces who gets the canary (tests, a re-run).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        write: WriteCli,
    },
    /// Judge the current step on the events since it began, and act on the verdict.
    ///
    /// Exit codes (the judge's): 0 promote (next step, or the canary is now the default),
    /// 1 abort (rolled back), 3 continue (holds), 4 invalid (holds), 2 usage or input error.
    Step {
        #[arg(long)]
        route: String,
        #[arg(long)]
        env: String,
        #[arg(long, value_enum, default_value_t)]
        format: VerdictFormat,
        #[command(flatten)]
        write: WriteCli,
    },
    /// Active rollouts: step, share, since when, last verdict, events per arm, what to run next.
    Status {
        #[arg(long)]
        route: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: cmd::registry::ListFormat,
    },
}

fn write_meta(actor: Option<String>, why: Option<String>) -> cmd::registry::WriteMeta {
    cmd::registry::WriteMeta {
        actor: actor.unwrap_or_else(promptgate::registry::default_actor),
        why,
    }
}

#[derive(Args)]
struct IngestArgs {
    /// Input files; `-` (or none) reads stdin.
    files: Vec<String>,
    /// Input format; by default `.csv` files are CSV and everything else NDJSON.
    #[arg(long, value_enum)]
    format: Option<InputFormat>,
    /// The input holds labels (event_id, label, labeler, ts, note), not events.
    #[arg(long)]
    labels: bool,
    /// Exit 1 and add nothing to the lake if any record is rejected.
    #[arg(long)]
    strict: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Reject lines (CSV: records) longer than this many bytes (at most 1 GiB).
    #[arg(long, default_value_t = 1 << 20)]
    max_line_bytes: usize,
    /// Memory for buffered rows, in MiB, before they are written or spilled to staging.
    #[arg(long, default_value_t = 128)]
    buffer_mib: usize,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// With --format otlp: which span and resource attributes give the route, env, tier,
    /// prompt version and sha, unit and status (TOML; fields left out keep the defaults).
    #[arg(long, value_name = "FILE")]
    otlp_mapping: Option<PathBuf>,
    /// Print the default OTLP attribute mapping (TOML) and exit.
    #[arg(long)]
    print_otlp_mapping: bool,
}

#[derive(Args)]
struct JudgeCli {
    /// Print the default policy (TOML) and exit.
    // Not `exclusive`: clap would count a global --lake taken from PROMPTGATE_LAKE as a
    // conflicting argument.
    #[arg(long, conflicts_with_all = ["route", "baseline", "canary", "policy"])]
    print_default_policy: bool,
    #[arg(long, required_unless_present = "print_default_policy")]
    route: Option<String>,
    /// Baseline prompt version.
    #[arg(long, required_unless_present = "print_default_policy")]
    baseline: Option<String>,
    /// Canary prompt version.
    #[arg(long, required_unless_present = "print_default_policy")]
    canary: Option<String>,
    #[arg(long)]
    env: Option<String>,
    /// Policy file (TOML); default: see --print-default-policy.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Window start for both arms (default: the canary's first event).
    #[arg(long)]
    since: Option<String>,
    /// Window end for both arms (default: the canary's last event).
    #[arg(long)]
    until: Option<String>,
    /// Planned canary share of traffic, for the sample-ratio-mismatch check (e.g. 0.05).
    #[arg(long)]
    expected_share: Option<f64>,
    /// Attributes that must not differ between the arms (e.g. top_k,context_budget,reranker):
    /// a value one arm has and the other never has makes the verdict invalid.
    #[arg(long, value_delimiter = ',')]
    pin: Vec<String>,
    /// Judge the lake as it was at a version (`promptgate lake history`) or a time (RFC 3339
    /// or YYYY-MM-DD): what the judge saw then.
    #[arg(long, value_name = "VERSION|TIME")]
    as_of: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: VerdictFormat,
}

#[derive(Args)]
struct SqlArgs {
    /// The query (or use -f).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    query: Option<String>,
    /// Read the query from a file.
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Named parameter for $name placeholders, as name=value (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Read the lake as of a version (`promptgate lake history`) or a time (RFC 3339 or
    /// YYYY-MM-DD): time travel.
    #[arg(long, value_name = "VERSION|TIME")]
    as_of: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: OutputFormat,
    /// Stop the query after this many seconds (exit 1; what was printed stays printed).
    /// Default: no limit.
    #[arg(long, value_name = "SECS", env = "PROMPTGATE_SQL_TIMEOUT")]
    timeout: Option<f64>,
}

#[derive(Subcommand)]
enum LakeCmd {
    /// List the lake's versions, newest first: when, what wrote it, each table's Delta version.
    History {
        /// One JSON object per version.
        #[arg(long)]
        json: bool,
        /// Only the newest N versions.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Delete files that no version of the lake within the retention period needs (files a
    /// compaction replaced, files of writes that never committed).
    Vacuum {
        /// Keep files any version of the last N hours reads (default 168, or
        /// PROMPTGATE_RETENTION_HOURS). `--as-of` can read back this far.
        #[arg(long)]
        retention_hours: Option<u64>,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Convert a lake of the old layout (Parquet directories, no log) to Delta Lake tables in
    /// place; the next write does it too.
    Convert,
    /// List what lies in a local lake beside its versions (stray or damaged log files,
    /// checkpoints set aside, interrupted writers' staging, files no version reads) and what to
    /// do about each. Reads only. Exit 1 when a damaged file needs restoring from a backup.
    Doctor {
        /// One JSON object: findings and the unneeded files' count and bytes.
        #[arg(long)]
        json: bool,
    },
    /// List the data files a version of the lake reads: table, date, rows, bytes, path.
    Files {
        /// Only this table (llm_events, llm_labels, llm_labeled_events).
        #[arg(long)]
        table: Option<String>,
        /// As of a version or time (see `sql --as-of`).
        #[arg(long, value_name = "VERSION|TIME")]
        as_of: Option<String>,
        /// One JSON object per file.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct RollupArgs {
    #[arg(long)]
    route: String,
    #[arg(long)]
    env: Option<String>,
    /// Inclusive start (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    since: Option<String>,
    /// Exclusive end (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    until: Option<String>,
    /// Segment columns, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "model,tier")]
    by: Vec<String>,
    #[arg(long, value_enum, default_value_t)]
    format: OutputFormat,
}

#[derive(Args)]
struct TimelineArgs {
    #[arg(long)]
    route: String,
    #[arg(long)]
    env: Option<String>,
    /// Start of the window: a time (RFC 3339 or YYYY-MM-DD) or how long before --until
    /// (`6h`, `90m`, `2d`).
    #[arg(long, default_value = "6h")]
    since: String,
    /// End of the window (exclusive; default now).
    #[arg(long)]
    until: Option<String>,
    /// Bucket width (`10m`, `1h`, `30s`, `1d`).
    #[arg(long, default_value = "10m")]
    bucket: String,
    /// One instant instead: what each env and tier was served then, the registry's last change
    /// before it, and the commands that go back to it.
    #[arg(long)]
    at: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: TimelineFormat,
    /// Write the output to this file instead of stdout (for --format html).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
enum TimelineFormat {
    #[default]
    Table,
    Json,
    /// One self-contained page with a chart per metric.
    Html,
}

#[derive(Args)]
struct GenArgs {
    /// Number of events.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Days the events span.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// First day (RFC 3339 or YYYY-MM-DD).
    #[arg(long, default_value = "2026-11-01")]
    start: String,
    /// Routes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "chat,search,summarize,support"
    )]
    routes: Vec<String>,
    #[arg(long, default_value = "v1")]
    baseline_version: String,
    #[arg(long, default_value = "v2")]
    canary_version: String,
    /// Share of traffic on the canary version (0 for none).
    #[arg(long, default_value_t = 0.05)]
    canary_share: f64,
    /// Multiply the canary's duration_ms by this.
    #[arg(long, default_value_t = 1.0)]
    regress_latency: f64,
    /// Multiply the canary's flagged probability by this.
    #[arg(long, default_value_t = 1.0)]
    regress_flagged: f64,
    /// Multiply the canary's tokens_in by this.
    #[arg(long, default_value_t = 1.0)]
    regress_tokens_in: f64,
    /// Multiply the canary's probability of a bad label by this.
    #[arg(long, default_value_t = 1.0)]
    regress_bad_label: f64,
    /// Confine the regression to this tier.
    #[arg(long)]
    regress_tier: Option<String>,
    /// Fraction of events carrying an inline label.
    #[arg(long, default_value_t = 0.02)]
    label_rate: f64,
    #[arg(long, default_value_t = 0.02)]
    flagged_rate: f64,
    #[arg(long, default_value_t = 0.005)]
    error_rate: f64,
}

fn as_of_arg(v: Option<&str>) -> Result<promptgate::lake::AsOf> {
    v.map_or(
        Ok(promptgate::lake::AsOf::Latest),
        promptgate::lake::AsOf::parse,
    )
}

/// A span of time given as `30s`, `10m`, `6h` or `2d`, in microseconds.
fn span_us(flag: &str, v: &str) -> Result<i64> {
    let bad = || {
        Error::usage(format!("--{flag}: {v:?} is not a span of time"))
            .with_hint("write a whole number and s, m, h or d (for example 10m or 6h), or a time (RFC 3339 or YYYY-MM-DD) for --since")
    };
    let v = v.trim();
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit_us: i64 = match unit {
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_us).filter(|us| *us > 0).ok_or_else(bad)
}

fn time_arg(flag: &str, v: Option<&String>) -> Result<Option<i64>> {
    v.map(|s| parse_time_arg(s).map_err(|e| Error::usage(format!("--{flag}: {e}"))))
        .transpose()
}

fn gen_config(a: &GenArgs) -> Result<GenConfig> {
    let start = parse_time_arg(&a.start).map_err(|e| Error::usage(format!("--start: {e}")))?;
    let canary = (a.canary_share > 0.0).then(|| CanarySpec {
        version: a.canary_version.clone(),
        share: a.canary_share,
        regression: Regression {
            latency: a.regress_latency,
            flagged: a.regress_flagged,
            tokens_in: a.regress_tokens_in,
            bad_label: a.regress_bad_label,
            tier: a.regress_tier.clone(),
        },
    });
    Ok(GenConfig {
        events: a.events,
        seed: a.seed,
        days: a.days,
        start: chrono::DateTime::from_timestamp_micros(start).expect("parsed time is in range"),
        routes: a.routes.clone(),
        baseline_version: a.baseline_version.clone(),
        canary,
        label_rate: a.label_rate,
        flagged_rate: a.flagged_rate,
        error_rate: a.error_rate,
    })
}

/// The name of a command not built for a lake on object storage (it keeps files in the
/// lake's directory, or converts a lake of the old layout), None for the others.
fn needs_local_lake(c: &Command) -> Option<&'static str> {
    match c {
        Command::Lake(LakeCmd::Convert) => Some("lake convert"),
        Command::Lake(LakeCmd::Doctor { .. }) => Some("lake doctor"),
        Command::Review(_) => Some("review"),
        Command::Checklist { .. } => Some("checklist"),
        _ => None,
    }
}

async fn dispatch(cli: Cli) -> Result<i32> {
    let lake = Lake::open(&cli.lake)?;
    if let Some(command) = needs_local_lake(&cli.command) {
        lake.require_local(command)?;
    }
    let registry = Registry::locate(cli.registry, &lake)?;
    match cli.command {
        Command::Ingest(a) => {
            if a.print_otlp_mapping {
                print!("{}", promptgate::ingest::otlp::DEFAULT_MAPPING_TOML);
                return Ok(0);
            }
            let otlp = match &a.otlp_mapping {
                Some(p) => promptgate::ingest::otlp::OtlpMapping::load(p)?,
                None => Default::default(),
            };
            let opts = IngestOptions {
                format: a.format,
                kind: if a.labels {
                    RecordKind::Labels
                } else {
                    RecordKind::Events
                },
                max_line_bytes: a.max_line_bytes,
                strict: a.strict,
                progress: !a.no_progress,
                buffer_bytes: a.buffer_mib.saturating_mul(1 << 20),
                otlp: std::sync::Arc::new(otlp),
                ..IngestOptions::default()
            };
            cmd::ingest::run(&lake, &a.files, opts, a.json).await
        }
        Command::Sql(a) => {
            let text = match (a.query, a.file) {
                (Some(q), _) => cmd::sql::SqlText::Inline(q),
                (None, Some(f)) => cmd::sql::SqlText::File(f),
                (None, None) => unreachable!("clap requires one"),
            };
            let as_of = as_of_arg(a.as_of.as_deref())?;
            cmd::sql::run(&lake, text, &a.params, &as_of, a.format, a.timeout).await
        }
        Command::Rollup(a) => {
            let spec = RollupSpec {
                since_us: time_arg("since", a.since.as_ref())?,
                until_us: time_arg("until", a.until.as_ref())?,
                route: a.route,
                env: a.env,
                by: a.by,
            };
            cmd::rollup::run(&lake, &spec, a.format).await
        }
        Command::Timeline(a) => {
            let bucket_us = span_us("bucket", &a.bucket)?;
            // Without --until the window ends at the end of the bucket holding now, and a
            // --since given as a span starts on the bucket grid: buckets start at round times.
            let until_us = match time_arg("until", a.until.as_ref())? {
                Some(t) => t,
                None => (promptgate::registry::now_us() / bucket_us + 1).saturating_mul(bucket_us),
            };
            let since_us = match parse_time_arg(&a.since) {
                Ok(t) => t,
                Err(_) => {
                    let start = until_us.saturating_sub(span_us("since", &a.since)?);
                    start.div_euclid(bucket_us) * bucket_us
                }
            };
            let at_us = time_arg("at", a.at.as_ref())?;
            let args = cmd::timeline::TimelineArgs {
                spec: promptgate::report::timeline::TimelineSpec {
                    route: a.route,
                    env: a.env,
                    since_us,
                    until_us,
                    bucket_us,
                },
                at_us,
                format: match a.format {
                    TimelineFormat::Table => cmd::timeline::Format::Table,
                    TimelineFormat::Json => cmd::timeline::Format::Json,
                    TimelineFormat::Html => cmd::timeline::Format::Html,
                },
                out: a.out,
            };
            cmd::timeline::run(&lake, &registry, &args).await
        }
        Command::Judge(a) => {
            if a.print_default_policy {
                print!("{}", promptgate::judge::DEFAULT_POLICY_TOML);
                return Ok(0);
            }
            let args = cmd::judge::JudgeArgs {
                route: a.route.unwrap_or_default(),
                baseline: a.baseline.unwrap_or_default(),
                canary: a.canary.unwrap_or_default(),
                env: a.env,
                policy: a.policy,
                since_us: time_arg("since", a.since.as_ref())?,
                until_us: time_arg("until", a.until.as_ref())?,
                expected_share: a.expected_share,
                srm_exclude: Vec::new(),
                pins: a.pin,
                as_of: a.as_of,
                format: a.format,
            };
            Ok(cmd::judge::run(&lake, &args).await)
        }
        Command::Gen(a) => cmd::generate::run(&gen_config(&a)?),
        Command::Demo { dir } => cmd::demo::run(dir).await,
        Command::Lake(c) => match c {
            LakeCmd::History { json, limit } => cmd::lake::history(&lake, json, limit).await,
            LakeCmd::Vacuum {
                retention_hours,
                dry_run,
            } => cmd::lake::vacuum(&lake, retention_hours, dry_run).await,
            LakeCmd::Convert => cmd::lake::convert(&lake).await,
            LakeCmd::Doctor { json } => cmd::lake::doctor(&lake, json).await,
            LakeCmd::Files { table, as_of, json } => {
                let as_of = as_of_arg(as_of.as_deref())?;
                cmd::lake::files(&lake, table.as_deref(), &as_of, json).await
            }
        },
        Command::Compact {
            date,
            labels,
            min_files,
        } => cmd::compact::run(&lake, date.as_deref(), labels, min_files).await,
        Command::Registry(c) => {
            use cmd::registry::RegistryAction as A;
            let (action, meta) = match c {
                RegistryCmd::Add {
                    route,
                    version,
                    file,
                    write,
                } => (
                    A::Add {
                        route,
                        version,
                        file,
                    },
                    write_meta(write.actor, write.why),
                ),
                RegistryCmd::SetDefault {
                    route,
                    version,
                    env,
                    write,
                } => (
                    A::SetDefault {
                        route,
                        version,
                        env,
                    },
                    write_meta(write.actor, write.why),
                ),
                RegistryCmd::Override {
                    route,
                    env,
                    tier,
                    version,
                    clear,
                    write,
                } => (
                    A::Override {
                        route,
                        env,
                        tier,
                        version,
                        clear,
                    },
                    write_meta(write.actor, write.why),
                ),
                RegistryCmd::Kill {
                    route,
                    env,
                    actor,
                    why,
                } => (A::Kill { route, env }, write_meta(actor, Some(why))),
                RegistryCmd::Show { route, format } => {
                    (A::Show { route, format }, write_meta(None, None))
                }
                RegistryCmd::History { route, format } => {
                    (A::History { route, format }, write_meta(None, None))
                }
            };
            cmd::registry::run(&registry, action, &meta)
        }
        Command::Resolve {
            route,
            env,
            tier,
            unit,
        } => {
            let req = promptgate::registry::ResolveRequest {
                route: &route,
                env: &env,
                tier: tier.as_deref(),
                unit: &unit,
            };
            cmd::resolve::run(&registry, &req)
        }
        Command::Rollout(RolloutCmd::Start {
            route,
            env,
            canary,
            plan,
            policy,
            pin,
            cohort_units,
            id,
            write,
        }) => {
            let args = cmd::rollout::StartArgs {
                route,
                env,
                canary,
                plan,
                policy,
                pins: pin,
                cohort_units,
                id,
            };
            cmd::rollout::start(&registry, args, &write_meta(write.actor, write.why))
        }
        Command::Rollout(RolloutCmd::Step {
            route,
            env,
            format,
            write,
        }) => {
            let meta = write_meta(write.actor, write.why);
            Ok(cmd::rollout::step(&lake, &registry, &route, &env, format, &meta).await)
        }
        Command::Rollout(RolloutCmd::Status { route, format }) => {
            cmd::rollout::status(&lake, &registry, route.as_deref(), format).await
        }
        Command::Serve {
            addr,
            header_timeout,
            max_connections,
            drain_timeout,
            intake,
            commit_interval,
            max_body_mib,
            max_spool_mib,
            otlp_mapping,
        } => {
            let limits = cmd::serve::LimitArgs {
                header_timeout,
                max_connections,
                drain_timeout,
            };
            let intake = intake.then_some(cmd::serve::IntakeArgs {
                commit_interval,
                max_body_mib,
                max_spool_mib,
                otlp_mapping,
            });
            cmd::serve::run(registry, &addr, limits, &lake, intake).await
        }
        Command::Checklist {
            route,
            baseline,
            canary,
            env,
            review,
            why,
            since,
            format,
        } => {
            let args = cmd::checklist::ChecklistArgs {
                route,
                baseline,
                canary,
                env,
                review,
                why,
                since_us: time_arg("since", since.as_ref())?,
                format,
            };
            Ok(cmd::checklist::run(&lake, &registry, args).await)
        }
        Command::Review(c) => match c {
            ReviewCmd::Sample {
                route,
                env,
                n,
                since,
                seed,
            } => {
                let args = cmd::review::SampleArgs {
                    since_us: time_arg("since", since.as_ref())?,
                    since_text: since,
                    route,
                    env,
                    n,
                    seed,
                };
                cmd::review::sample(&lake, args).await
            }
            ReviewCmd::Run {
                id,
                baseline,
                canary,
                runner,
                jobs,
                timeout,
            } => {
                let timeout = promptgate::review::runner::parse_duration(&timeout)
                    .map_err(|e| Error::usage(format!("--timeout: {e}")))?;
                let args = cmd::review::RunArgs {
                    id,
                    baseline,
                    canary,
                    runner,
                    jobs,
                    timeout,
                };
                cmd::review::run(&lake, &registry, args).await
            }
            ReviewCmd::Import {
                id,
                outputs,
                baseline,
                canary,
            } => cmd::review::import(&lake, &id, &outputs, baseline.as_deref(), canary.as_deref()),
            ReviewCmd::Sheet { id } => cmd::review::sheet(&lake, &id),
            ReviewCmd::Score {
                id,
                labels,
                accept_tradeoff,
                format,
            } => cmd::review::score(&lake, &id, &labels, accept_tradeoff.as_deref(), format).await,
            ReviewCmd::ExampleRunner => cmd::review::example_runner(),
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
