//! Picking the requests a person reviews: a seeded sample of a route's real inputs, spread over
//! model × tier in proportion to traffic, never the same input twice, redacted.
//!
//! Reading is one DataFusion scan (route, env and window bound as literals); choosing is a pure
//! function of the candidates and the seed ([`choose`]), so it is tested without a lake.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{Array, AsArray};
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::{Error, Result};
use crate::event::EVENTS_TABLE;
use crate::lake::Lake;
use crate::query;

use super::redact::{RedactionCounts, redact};
use super::store::{Item, Stratum};

/// One eligible event.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub event_id: String,
    pub ts_us: i64,
    pub model: String,
    pub tier: String,
    pub input: String,
}

/// The sample: items (redacted), strata and what was left out.
#[derive(Debug, Clone)]
pub struct Sample {
    pub items: Vec<Item>,
    pub strata: Vec<Stratum>,
    pub eligible_events: u64,
    pub distinct_inputs: u64,
    pub redactions: RedactionCounts,
}

/// Reads the events of `route` and `env` (since `since_us`) that carry a non-empty input.
pub async fn read_candidates(
    lake: &Lake,
    route: &str,
    env: &str,
    since_us: Option<i64>,
) -> Result<Vec<Candidate>> {
    let ctx = query::lake_session(lake).await?;
    let mut df = ctx
        .table(EVENTS_TABLE)
        .await?
        .filter(col("route").eq(lit(route)))?
        .filter(col("env").eq(lit(env)))?
        .filter(col("input").is_not_null())?;
    if let Some(since) = since_us {
        let since = ScalarValue::TimestampMicrosecond(Some(since), Some("UTC".into()));
        df = df.filter(col("ts").gt_eq(lit(since)))?;
    }
    let batches = df
        .select_columns(&["event_id", "ts", "model", "tier", "input"])?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let ids = b.column(0).as_string::<i32>();
        let ts = b
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let models = b.column(2).as_string::<i32>();
        let tiers = b.column(3).as_string::<i32>();
        let inputs = b.column(4).as_string::<i32>();
        for i in 0..b.num_rows() {
            if inputs.is_null(i) || inputs.value(i).trim().is_empty() {
                continue;
            }
            out.push(Candidate {
                event_id: ids.value(i).to_string(),
                ts_us: ts.value(i),
                model: models.value(i).to_string(),
                tier: tiers.value(i).to_string(),
                input: inputs.value(i).to_string(),
            });
        }
    }
    Ok(out)
}

/// Chooses up to `n` items from `candidates`, reproducibly for a `seed`.
///
/// 1. Each stratum (model × tier) weighs as its share of the eligible events (its traffic).
/// 2. An input seen more than once (after trimming) counts once, in the stratum of its earliest
///    event; so no input is reviewed twice.
/// 3. `n` is split over strata by the largest-remainder method (Hamilton), capped at what each
///    stratum has; seats a small stratum cannot fill go to the others, again by traffic.
/// 4. Within a stratum, the candidates with the smallest `XXH3(event_id, seed)` are taken, which
///    does not depend on the order the lake returns rows in.
/// 5. Items are numbered 1.. in the order of that same hash, so strata are interleaved.
pub fn choose(mut candidates: Vec<Candidate>, n: u64, seed: u64) -> Sample {
    let eligible_events = candidates.len() as u64;
    let mut traffic: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in &candidates {
        *traffic
            .entry((c.model.clone(), c.tier.clone()))
            .or_default() += 1;
    }
    candidates.sort_by(|a, b| (a.ts_us, &a.event_id).cmp(&(b.ts_us, &b.event_id)));
    // Distinct after redaction: two inputs that differ only in what redaction removes (an
    // e-mail address) are one item to a labeler.
    let mut seen = HashSet::new();
    let mut seen_raw = HashSet::new();
    let mut by_stratum: BTreeMap<(String, String), Vec<Drawn>> = BTreeMap::new();
    for mut c in candidates {
        // An input seen before as it is needs no redaction to know it is a repeat.
        if !seen_raw.insert(c.input.trim().to_string()) {
            continue;
        }
        let (redacted, counts) = redact(&c.input);
        if !seen.insert(redacted.trim().to_string()) {
            continue;
        }
        c.input = redacted;
        let key = xxh3_64_with_seed(c.event_id.as_bytes(), seed);
        by_stratum
            .entry((c.model.clone(), c.tier.clone()))
            .or_default()
            .push((key, c, counts));
    }
    let distinct_inputs = seen.len() as u64;
    for v in by_stratum.values_mut() {
        v.sort_by(|a, b| (a.0, &a.1.event_id).cmp(&(b.0, &b.1.event_id)));
    }
    let cells: Vec<(String, String)> = by_stratum.keys().cloned().collect();
    let weights: Vec<u64> = cells.iter().map(|k| traffic[k]).collect();
    let caps: Vec<u64> = cells.iter().map(|k| by_stratum[k].len() as u64).collect();
    let quotas = allocate(n, &weights, &caps);

    let mut chosen: Vec<Drawn> = Vec::new();
    let mut strata = Vec::new();
    for ((cell, quota), cap) in cells.iter().zip(&quotas).zip(&caps) {
        let list = by_stratum.remove(cell).unwrap_or_default();
        chosen.extend(list.into_iter().take(*quota as usize));
        strata.push(Stratum {
            model: cell.0.clone(),
            tier: cell.1.clone(),
            traffic: traffic[cell],
            available: *cap,
            sampled: *quota,
        });
    }
    chosen.sort_by(|a, b| (a.0, &a.1.event_id).cmp(&(b.0, &b.1.event_id)));
    let mut redactions = RedactionCounts::default();
    let items = chosen
        .into_iter()
        .enumerate()
        .map(|(i, (_, c, counts))| {
            redactions.add(&counts);
            Item {
                item: i as u32 + 1,
                event_id: c.event_id,
                model: c.model,
                tier: c.tier,
                input: c.input,
            }
        })
        .collect();
    Sample {
        items,
        strata,
        eligible_events,
        distinct_inputs,
        redactions,
    }
}

/// A candidate in the draw: its key (`XXH3(event_id, seed)`), itself with its input redacted,
/// and what redaction removed.
type Drawn = (u64, Candidate, RedactionCounts);

/// Splits `n` seats over cells in proportion to `weights`, at most `caps[i]` each (largest
/// remainder; ties to the earlier cell). Returns fewer than `n` in all only when the caps sum to
/// less.
pub fn allocate(n: u64, weights: &[u64], caps: &[u64]) -> Vec<u64> {
    let mut seats = vec![0u64; weights.len()];
    let mut left = n.min(caps.iter().sum());
    while left > 0 {
        let open: Vec<usize> = (0..weights.len()).filter(|&i| seats[i] < caps[i]).collect();
        let total: u64 = open.iter().map(|&i| weights[i]).sum();
        if open.is_empty() || total == 0 {
            break;
        }
        let mut given = 0;
        let mut rema: Vec<(u128, usize)> = Vec::new();
        for &i in &open {
            let exact = u128::from(left) * u128::from(weights[i]);
            let whole = (exact / u128::from(total)) as u64;
            let room = caps[i] - seats[i];
            let take = whole.min(room);
            seats[i] += take;
            given += take;
            if take < room {
                rema.push((exact % u128::from(total), i));
            }
        }
        // Remainders, largest first, one seat each while seats are left for this round.
        rema.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut extra = left - given;
        for (_, i) in rema {
            if extra == 0 {
                break;
            }
            if seats[i] < caps[i] {
                seats[i] += 1;
                extra -= 1;
            }
        }
        if extra == left {
            break;
        }
        left = extra;
    }
    seats
}

/// The requested sample size, checked.
pub fn check_n(n: u64) -> Result<u64> {
    if n == 0 || n > 10_000 {
        return Err(Error::usage(format!("--n {n} is out of range"))
            .with_hint("a review is 30-50 requests; --n takes 1 to 10000"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(i: u32, model: &str, tier: &str, input: &str) -> Candidate {
        Candidate {
            event_id: format!("e{i}"),
            ts_us: i64::from(i),
            model: model.into(),
            tier: tier.into(),
            input: input.into(),
        }
    }

    #[test]
    fn allocation_is_proportional_and_capped() {
        assert_eq!(allocate(10, &[60, 30, 10], &[100, 100, 100]), vec![6, 3, 1]);
        // A stratum with 1 input gives its seats to the others.
        assert_eq!(allocate(10, &[50, 50], &[1, 100]), vec![1, 9]);
        // Fewer than asked overall: everything.
        assert_eq!(allocate(10, &[1, 1], &[2, 3]), vec![2, 3]);
        assert_eq!(
            allocate(3, &[1, 1, 1, 1], &[5, 5, 5, 5])
                .iter()
                .sum::<u64>(),
            3
        );
    }

    #[test]
    fn duplicates_count_once_and_seed_reproduces() {
        let mut c = Vec::new();
        for i in 0..200 {
            let tier = if i % 4 == 0 { "pro" } else { "free" };
            c.push(cand(i, "m", tier, &format!("question {}", i % 150)));
        }
        let a = choose(c.clone(), 40, 7);
        let b = choose(c.clone(), 40, 7);
        let other = choose(c, 40, 8);
        assert_eq!(a.items, b.items);
        assert_ne!(a.items, other.items);
        assert_eq!(a.items.len(), 40);
        assert_eq!(a.distinct_inputs, 150);
        let inputs: HashSet<_> = a.items.iter().map(|i| &i.input).collect();
        assert_eq!(inputs.len(), 40);
        let pro = a.items.iter().filter(|i| i.tier == "pro").count();
        assert_eq!(pro, 10, "pro is 25% of traffic");
    }
}
