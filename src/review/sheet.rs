//! The blind sheet: each item's input and the two answers as A and B, the side of the canary
//! drawn per item (seeded, balanced), the key kept in its own file.
//!
//! Balance: of `k` items, exactly `k / 2` show the canary as A (one more or less, by the seed,
//! when `k` is odd), in an order shuffled by the review's seed; so a labeler who prefers A by
//! habit favours neither version.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::store::{Answers, Item};

/// The CSV columns of a sheet (and of a filled one).
pub const SHEET_COLUMNS: [&str; 9] = [
    "item",
    "input",
    "answer_a",
    "answer_b",
    "label_a",
    "label_b",
    "preferred",
    "note",
    "labeler",
];

/// Which version is behind A and B of each item (`key.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SheetKey {
    pub review: String,
    pub baseline: String,
    pub canary: String,
    /// Item → (version shown as A, version shown as B).
    pub sides: BTreeMap<u32, (String, String)>,
}

/// One row of the sheet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SheetRow {
    pub item: u32,
    pub input: String,
    pub answer_a: String,
    pub answer_b: String,
}

/// The sheet's rows, its key, and the items left out for lack of an answer.
pub struct Sheet {
    pub rows: Vec<SheetRow>,
    pub key: SheetKey,
    pub left_out: Vec<u32>,
}

/// Builds the sheet of `items` from both versions' answers.
pub fn build(
    review: &str,
    items: &[Item],
    answers: &Answers,
    baseline: &str,
    canary: &str,
    seed: u64,
    previous: Option<&SheetKey>,
) -> Sheet {
    let answer = |v: &str, item: u32| {
        answers
            .get(v)
            .and_then(|m| m.get(&item))
            .and_then(|a| a.output.clone())
    };
    let mut complete = Vec::new();
    let mut left_out = Vec::new();
    for it in items {
        match (answer(baseline, it.item), answer(canary, it.item)) {
            (Some(b), Some(c)) => complete.push((it, b, c)),
            _ => left_out.push(it.item),
        }
    }
    // A stream of its own (seed ^ a constant), so the sides do not repeat the sample's draw.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5349_4445_5f41_4231);
    // A sheet written before keeps its sides: labels already filled against it stay valid.
    // Only items new since then are drawn (balanced among themselves).
    let kept = |item: u32| {
        previous
            .filter(|p| p.baseline == baseline && p.canary == canary)
            .and_then(|p| p.sides.get(&item))
            .map(|(a, _)| a == canary)
    };
    let k = complete
        .iter()
        .filter(|(it, _, _)| kept(it.item).is_none())
        .count();
    let mut drawn: Vec<bool> = (0..k).map(|i| i < k / 2).collect();
    if k % 2 == 1 {
        drawn[k - 1] = rand::Rng::random_bool(&mut rng, 0.5);
    }
    drawn.shuffle(&mut rng);
    let mut drawn = drawn.into_iter();
    let canary_first: Vec<bool> = complete
        .iter()
        .map(|(it, _, _)| kept(it.item).unwrap_or_else(|| drawn.next().unwrap_or(false)))
        .collect();
    let mut rows = Vec::new();
    let mut sides = BTreeMap::new();
    for ((it, b, c), first) in complete.into_iter().zip(canary_first) {
        let (a_text, b_text, a_ver, b_ver) = if first {
            (c, b, canary, baseline)
        } else {
            (b, c, baseline, canary)
        };
        sides.insert(it.item, (a_ver.to_string(), b_ver.to_string()));
        rows.push(SheetRow {
            item: it.item,
            input: it.input.clone(),
            answer_a: a_text,
            answer_b: b_text,
        });
    }
    Sheet {
        rows,
        key: SheetKey {
            review: review.to_string(),
            baseline: baseline.to_string(),
            canary: canary.to_string(),
            sides,
        },
        left_out,
    }
}

/// `sheet.csv`: the rows with the five label columns empty.
pub fn to_csv(rows: &[SheetRow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| Error::runtime(format!("cannot write the sheet: {e}"));
    w.write_record(SHEET_COLUMNS).map_err(err)?;
    for r in rows {
        let item = r.item.to_string();
        w.write_record([
            item.as_str(),
            &r.input,
            &r.answer_a,
            &r.answer_b,
            "",
            "",
            "",
            "",
            "",
        ])
        .map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| Error::runtime(format!("cannot write the sheet: {e}")))
}

const HTML_TEMPLATE: &str = include_str!("sheet.html");

/// `sheet.html`: one self-contained page (no network), the rows embedded as JSON.
///
/// `storage_key` names the page's progress in the browser's localStorage; it is derived from
/// the sheet's content so two reviews never share progress.
pub fn to_html(rows: &[SheetRow], storage_key: &str) -> Result<String> {
    /// A row as the page reads it: the answers as written, and rendered (see [`super::markdown`]).
    #[derive(Serialize)]
    struct PageRow<'a> {
        item: u32,
        input: &'a str,
        answer_a: &'a str,
        answer_b: &'a str,
        html_a: String,
        html_b: String,
    }
    let rows: Vec<PageRow> = rows
        .iter()
        .map(|r| PageRow {
            item: r.item,
            input: &r.input,
            answer_a: &r.answer_a,
            answer_b: &r.answer_b,
            html_a: super::markdown::to_safe_html(&r.answer_a),
            html_b: super::markdown::to_safe_html(&r.answer_b),
        })
        .collect();
    let data = serde_json::to_string(&rows)
        .map_err(|e| Error::runtime(format!("cannot encode the sheet: {e}")))?;
    // Inside <script>, only `</` can end the element early; `<\/` is the same JSON string.
    let data = data.replace("</", "<\\/").replace("<!--", "<\\!--");
    let key = serde_json::to_string(storage_key)
        .map_err(|e| Error::runtime(format!("cannot encode the sheet: {e}")))?;
    Ok(HTML_TEMPLATE
        .replace("/*SHEET_KEY*/\"\"", &key)
        .replace("/*SHEET_ROWS*/[]", &data)
        .replace("{{COUNT}}", &rows.len().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::store::Answer;

    fn fixture(k: u32) -> (Vec<Item>, Answers) {
        let items: Vec<Item> = (1..=k)
            .map(|i| Item {
                item: i,
                event_id: format!("e{i}"),
                model: "m".into(),
                tier: "t".into(),
                input: format!("q{i}"),
            })
            .collect();
        let mut answers = Answers::new();
        for v in ["v1", "v2"] {
            for i in 1..=k {
                answers.entry(v.into()).or_default().insert(
                    i,
                    Answer {
                        output: Some(format!("{v} says {i}")),
                        error: None,
                        source: "import".into(),
                        at: String::new(),
                    },
                );
            }
        }
        (items, answers)
    }

    #[test]
    fn sides_are_balanced_and_seeded() {
        let (items, answers) = fixture(41);
        let s = build("r", &items, &answers, "v1", "v2", 3, None);
        let canary_a = s.key.sides.values().filter(|(a, _)| a == "v2").count();
        assert!(canary_a == 20 || canary_a == 21, "{canary_a}");
        let again = build("r", &items, &answers, "v1", "v2", 3, None);
        assert_eq!(s.key, again.key);
        let other = build("r", &items, &answers, "v1", "v2", 4, None);
        assert_ne!(s.key.sides, other.key.sides);
        for r in &s.rows {
            let (a, _) = &s.key.sides[&r.item];
            assert!(r.answer_a.starts_with(a.as_str()));
        }
    }

    #[test]
    fn a_rewritten_sheet_keeps_earlier_sides() {
        let (items, mut answers) = fixture(10);
        answers.get_mut("v2").unwrap().remove(&10);
        let first = build("r", &items, &answers, "v1", "v2", 9, None);
        assert_eq!(first.left_out, vec![10]);
        let (_, full) = fixture(10);
        let second = build("r", &items, &full, "v1", "v2", 9, Some(&first.key));
        for (item, sides) in &first.key.sides {
            assert_eq!(&second.key.sides[item], sides);
        }
        assert_eq!(second.key.sides.len(), 10);
    }

    #[test]
    fn html_cannot_be_broken_out_of() {
        let rows = vec![SheetRow {
            item: 1,
            input: "</script><script>alert(1)</script>".into(),
            answer_a: "a".into(),
            answer_b: "b".into(),
        }];
        let html = to_html(&rows, "k").unwrap();
        // Only the page's own two script elements end; the input's `</script>` is escaped.
        assert_eq!(html.matches("</script>").count(), 2);
        assert!(html.contains(r#""html_a":"<p>a<\/p>\n""#), "{html}");
        assert!(html.contains(r"<\/script><script>alert(1)<\/script>"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
