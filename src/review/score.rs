//! Scoring filled sheets: read and check the labels files, unblind them with the key, and decide.
//!
//! - Good rate per version: labeled answers marked `good`, with a 95% Clopper-Pearson interval
//!   ([`crate::judge::stats::clopper_pearson`]).
//! - Preference per item: the canary wins, loses or ties; with several labelers on an item, the
//!   majority of their preferences decides (an even split is a tie), so an item counts once and
//!   the pairs stay independent.
//! - Exact two-sided sign test over wins and losses, ties dropped
//!   ([`crate::judge::stats::sign_test`]).
//! - Agreement: Cohen's kappa on `preferred` (Cohen 1960) for two labelers over the items both
//!   labeled; with more labelers the mean over pairs (Light's kappa, Light 1971).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::judge::stats::{clopper_pearson, sign_test};

use super::sheet::SheetKey;

/// Fewer labeled pairs (items) than this cannot support a verdict.
pub const MIN_PAIRS: usize = 20;

/// A preference, unblinded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Preference {
    Canary,
    Baseline,
    Tie,
}

/// One labeler's labels of one item, unblinded.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRow {
    pub item: u32,
    pub labeler: String,
    /// As written: `good` or `bad` for the answer shown as A / B.
    pub label_a: String,
    pub label_b: String,
    /// As written: `A`, `B` or `tie`.
    pub preferred_side: String,
    pub note: String,
    pub baseline_good: bool,
    pub canary_good: bool,
    pub preferred: Preference,
    /// `file:line`, for messages.
    pub at: String,
}

/// What the labels files hold: the labeled rows, and the rows skipped.
#[derive(Debug, Default)]
pub struct Labels {
    pub rows: Vec<LabelRow>,
    /// Rows with no label at all.
    pub unlabeled: usize,
    /// Rows labeled in part (one answer's label, or no preference): where they are
    /// (`file:line (item N)`). Skipped and reported, never refused: a labeler's partial work
    /// costs the scoring nothing else.
    pub half_labeled: Vec<String>,
}

/// The line (1-based) of byte `offset` of `text`, counting `\n` only, so CRLF files (what the
/// sheet page exports) are numbered as an editor numbers them.
fn line_at(text: &[u8], offset: u64) -> usize {
    let mut end = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    // The CSV reader puts a record after a CRLF at the LF: the record starts past it.
    while end < text.len() && matches!(text[end], b'\r' | b'\n') {
        end += 1;
    }
    1 + text[..end].iter().filter(|&&b| b == b'\n').count()
}

/// Reads labels files; every problem names its file and line and nothing is returned unless
/// every file is sound. Rows with no label at all, and rows labeled in part, are skipped and
/// counted.
pub fn read_labels(files: &[&Path], key: &SheetKey) -> Result<Labels> {
    let mut rows: Vec<LabelRow> = Vec::new();
    let mut by_labeler_item: HashMap<(String, u32), usize> = HashMap::new();
    let mut unlabeled = 0usize;
    let mut half_labeled = Vec::new();
    for file in files {
        let shown = file.display().to_string();
        let text =
            std::fs::read(file).map_err(|e| Error::input(format!("cannot read {shown}: {e}")))?;
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(text.as_slice());
        let headers = rdr
            .headers()
            .map_err(|e| Error::input(format!("{shown}:1: {e}")))?
            .clone();
        let col = |name: &str| -> Result<usize> {
            headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
                Error::input(format!("{shown}:1: missing column {name:?}")).with_hint(
                    "a labels file is the sheet.csv of `review sheet` (or the page's export), filled in",
                )
            })
        };
        let [c_item, c_la, c_lb, c_pref, c_note, c_labeler] =
            ["item", "label_a", "label_b", "preferred", "note", "labeler"].map(col);
        let (c_item, c_la, c_lb, c_pref, c_note, c_labeler) =
            (c_item?, c_la?, c_lb?, c_pref?, c_note?, c_labeler?);
        let default_labeler = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| {
                let line = e.position().map_or(0, |p| line_at(&text, p.byte()));
                Error::input(format!("{shown}:{line}: {e}"))
            })?;
            let line = rec.position().map_or(0, |p| line_at(&text, p.byte()));
            let at = format!("{shown}:{line}");
            let get = |i: usize| rec.get(i).unwrap_or("").trim().to_string();
            let (la, lb, pref) = (
                get(c_la).to_ascii_lowercase(),
                get(c_lb).to_ascii_lowercase(),
                get(c_pref),
            );
            if la.is_empty() && lb.is_empty() && pref.is_empty() {
                unlabeled += 1;
                continue;
            }
            if la.is_empty() || lb.is_empty() || pref.is_empty() {
                half_labeled.push(format!("{at} (item {})", get(c_item)));
                continue;
            }
            let item: u32 = get(c_item).parse().map_err(|_| {
                Error::input(format!(
                    "{at}: item {:?} is not an item number",
                    get(c_item)
                ))
            })?;
            let Some((a_ver, _)) = key.sides.get(&item) else {
                return Err(Error::input(format!(
                    "{at}: item {item} is not in review {}'s sheet",
                    key.review
                ))
                .with_hint("labels files must come from this review's sheet"));
            };
            for (name, v) in [("label_a", &la), ("label_b", &lb)] {
                if v != "good" && v != "bad" {
                    return Err(
                        Error::input(format!("{at}: {name} is {v:?}, not good or bad"))
                            .with_hint("each answer is labeled good or bad"),
                    );
                }
            }
            let pref_norm = match pref.to_ascii_lowercase().as_str() {
                "a" => "A",
                "b" => "B",
                "tie" => "tie",
                _ => {
                    return Err(Error::input(format!(
                        "{at}: preferred is {pref:?}, not A, B or tie"
                    )));
                }
            };
            let canary_is_a = *a_ver == key.canary;
            let (canary_label, baseline_label) = if canary_is_a { (&la, &lb) } else { (&lb, &la) };
            let preferred = match (pref_norm, canary_is_a) {
                ("tie", _) => Preference::Tie,
                ("A", true) | ("B", false) => Preference::Canary,
                _ => Preference::Baseline,
            };
            let mut labeler = get(c_labeler);
            if labeler.is_empty() {
                labeler = default_labeler.clone();
            }
            let row = LabelRow {
                item,
                labeler: labeler.clone(),
                label_a: la.clone(),
                label_b: lb.clone(),
                preferred_side: pref_norm.to_string(),
                note: get(c_note),
                baseline_good: baseline_label == "good",
                canary_good: canary_label == "good",
                preferred,
                at: at.clone(),
            };
            if let Some(&prev) = by_labeler_item.get(&(labeler.clone(), item)) {
                let p = &rows[prev];
                if (
                    p.label_a.as_str(),
                    p.label_b.as_str(),
                    p.preferred_side.as_str(),
                ) != (la.as_str(), lb.as_str(), pref_norm)
                {
                    return Err(Error::input(format!(
                        "{at}: labeler {labeler:?} labeled item {item} differently at {}",
                        p.at
                    ))
                    .with_hint("keep one answer per labeler and item"));
                }
                continue;
            }
            by_labeler_item.insert((labeler, item), rows.len());
            rows.push(row);
        }
    }
    Ok(Labels {
        rows,
        unlabeled,
        half_labeled,
    })
}

/// Good rate of one version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoodRate {
    pub version: String,
    pub good: u64,
    pub labeled: u64,
    pub good_rate: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

/// The outcome of a review (also kept as the review's `score.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewScore {
    pub review: String,
    pub verdict: String,
    pub exit_code: i32,
    pub reason: String,
    pub pairs: usize,
    pub wins: u64,
    pub losses: u64,
    pub ties: u64,
    pub sign_test_p: f64,
    pub kappa: Option<f64>,
    pub labelers: Vec<String>,
    pub labeled_rows: usize,
    pub unlabeled_rows: usize,
    /// Rows labeled in part, skipped: where they are (`file:line (item N)`).
    #[serde(default)]
    pub half_labeled: Vec<String>,
    pub baseline: GoodRate,
    pub canary: GoodRate,
    pub accepted_tradeoff: Option<String>,
}

fn good_rate(version: &str, good: u64, labeled: u64) -> GoodRate {
    let ci = clopper_pearson(good, labeled, 0.95);
    GoodRate {
        version: version.to_string(),
        good,
        labeled,
        good_rate: (labeled > 0).then(|| good as f64 / labeled as f64),
        ci_low: ci.map(|c| c.low),
        ci_high: ci.map(|c| c.high),
    }
}

/// Cohen's kappa of two raters from their confusion table (`table[i][j]`: rater 1 said `i`,
/// rater 2 said `j`); `None` when it is undefined (no items, or chance agreement of 1).
pub fn cohens_kappa(table: &[Vec<u64>]) -> Option<f64> {
    let k = table.len();
    let n: u64 = table.iter().flatten().sum();
    if n == 0 {
        return None;
    }
    let n = n as f64;
    let po = (0..k).map(|i| table[i][i] as f64).sum::<f64>() / n;
    let pe = (0..k)
        .map(|i| {
            let row: u64 = table[i].iter().sum();
            let col: u64 = table.iter().map(|r| r[i]).sum();
            (row as f64 / n) * (col as f64 / n)
        })
        .sum::<f64>();
    if (1.0 - pe).abs() < 1e-12 {
        return None;
    }
    Some((po - pe) / (1.0 - pe))
}

/// Kappa on `preferred` over every pair of labelers with items in common (mean over pairs).
fn agreement(rows: &[LabelRow]) -> Option<f64> {
    let mut by_labeler: BTreeMap<&str, HashMap<u32, Preference>> = BTreeMap::new();
    for r in rows {
        by_labeler
            .entry(r.labeler.as_str())
            .or_default()
            .insert(r.item, r.preferred);
    }
    let names: Vec<&str> = by_labeler.keys().copied().collect();
    let idx = |p: Preference| match p {
        Preference::Canary => 0,
        Preference::Baseline => 1,
        Preference::Tie => 2,
    };
    let mut kappas = Vec::new();
    for i in 0..names.len() {
        for j in i + 1..names.len() {
            let (x, y) = (&by_labeler[names[i]], &by_labeler[names[j]]);
            let mut t = vec![vec![0u64; 3]; 3];
            for (item, p) in x {
                if let Some(q) = y.get(item) {
                    t[idx(*p)][idx(*q)] += 1;
                }
            }
            if let Some(k) = cohens_kappa(&t) {
                kappas.push(k);
            }
        }
    }
    (!kappas.is_empty()).then(|| kappas.iter().sum::<f64>() / kappas.len() as f64)
}

/// Scores labeled rows: good rates, wins/losses/ties, sign test, kappa, the verdict.
pub fn score(key: &SheetKey, labels: &Labels, accept_tradeoff: Option<&str>) -> ReviewScore {
    let rows = labels.rows.as_slice();
    let n = rows.len() as u64;
    let bgood = rows.iter().filter(|r| r.baseline_good).count() as u64;
    let cgood = rows.iter().filter(|r| r.canary_good).count() as u64;
    let mut votes: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for r in rows {
        let v = votes.entry(r.item).or_default();
        match r.preferred {
            Preference::Canary => v.0 += 1,
            Preference::Baseline => v.1 += 1,
            Preference::Tie => {}
        }
    }
    let (mut wins, mut losses, mut ties) = (0u64, 0u64, 0u64);
    for (c, b) in votes.values() {
        match c.cmp(b) {
            std::cmp::Ordering::Greater => wins += 1,
            std::cmp::Ordering::Less => losses += 1,
            std::cmp::Ordering::Equal => ties += 1,
        }
    }
    let pairs = votes.len();
    let p = sign_test(wins, losses);
    let labelers: Vec<String> = rows
        .iter()
        .map(|r| r.labeler.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let kappa = if labelers.len() >= 2 {
        agreement(rows)
    } else {
        None
    };
    let baseline = good_rate(&key.baseline, bgood, n);
    let canary = good_rate(&key.canary, cgood, n);
    let rates_ok = canary.good_rate.unwrap_or(0.0) >= baseline.good_rate.unwrap_or(0.0);
    let (verdict, exit_code, reason) = if pairs < MIN_PAIRS {
        (
            "not enough labels",
            3,
            format!("{pairs} labeled pairs; a verdict needs at least {MIN_PAIRS}"),
        )
    } else if wins > losses && p < 0.05 && rates_ok {
        (
            "ship",
            0,
            format!(
                "the canary wins {wins} to {losses} (sign test p = {p:.4}) with a good rate no lower than the baseline's"
            ),
        )
    } else {
        let why = if wins <= losses {
            format!("the canary does not win ({wins} wins, {losses} losses)")
        } else if p >= 0.05 {
            let more = match more_pairs_to_show(wins, losses) {
                Some(m) => format!(
                    "; at this win rate, about {m} more pairs with a preference would show it"
                ),
                None => String::new(),
            };
            format!(
                "the canary is not shown better: {wins} wins to {losses} losses could be chance (sign test p = {p:.4}){more}"
            )
        } else {
            "the canary's good rate is lower than the baseline's".to_string()
        };
        match accept_tradeoff {
            Some(t) => ("ship", 0, format!("{why}; trade-off accepted: {t}")),
            None => ("do not ship", 1, why),
        }
    };
    ReviewScore {
        review: key.review.clone(),
        verdict: verdict.to_string(),
        exit_code,
        reason,
        pairs,
        wins,
        losses,
        ties,
        sign_test_p: p,
        kappa,
        labelers,
        labeled_rows: rows.len(),
        unlabeled_rows: labels.unlabeled,
        half_labeled: labels.half_labeled.clone(),
        baseline,
        canary,
        accepted_tradeoff: accept_tradeoff.map(str::to_string),
    }
}

/// How many more pairs with a preference (wins plus losses) would make the canary's win rate
/// so far significant (sign test p < 0.05), if it held: None above 100,000 pairs.
fn more_pairs_to_show(wins: u64, losses: u64) -> Option<u64> {
    let decided = wins + losses;
    if wins <= losses || decided == 0 {
        return None;
    }
    let rate = wins as f64 / decided as f64;
    (decided + 1..=100_000).find_map(|n| {
        let w = (rate * n as f64).round() as u64;
        (sign_test(w, n - w) < 0.05).then_some(n - decided)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_lines_are_numbered_as_an_editor_numbers_them() {
        let text = b"item,label_a\r\n1,good\r\n2,meh\r\n";
        assert_eq!(line_at(text, 0), 1);
        assert_eq!(line_at(text, 14), 2);
        // Where the CSV reader puts the records after a CRLF: at the LF.
        assert_eq!(line_at(text, 13), 2);
        assert_eq!(line_at(text, 21), 3);
        assert_eq!(line_at(text, 22), 3);
    }

    #[test]
    fn pairs_needed_at_a_win_rate() {
        // 12 wins to 8 losses is not significant; the answer is the first total of decided
        // pairs at a 60% win rate whose sign test is, and one pair fewer is not.
        let more = more_pairs_to_show(12, 8).unwrap();
        let n = 20 + more;
        let w = (0.6 * n as f64).round() as u64;
        assert!(sign_test(w, n - w) < 0.05);
        let w1 = (0.6 * (n - 1) as f64).round() as u64;
        assert!(sign_test(w1, n - 1 - w1) >= 0.05);
        assert_eq!(more_pairs_to_show(5, 5), None);
    }

    #[test]
    fn kappa_matches_statsmodels() {
        // statsmodels.stats.inter_rater.cohens_kappa([[20,2,1],[3,10,1],[1,1,6]]).kappa
        // = 0.669927 (/work/shared/STATS.md).
        let t = vec![vec![20, 2, 1], vec![3, 10, 1], vec![1, 1, 6]];
        let k = cohens_kappa(&t).unwrap();
        assert!((k - 0.669927).abs() < 1e-6, "{k}");
        assert_eq!(cohens_kappa(&[vec![5, 0], vec![0, 0]]), None);
    }
}
