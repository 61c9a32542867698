//! Redaction of what a review copies out of the lake: personal data and secrets in request
//! inputs are replaced by typed placeholders (`[EMAIL]`, `[CARD]`, ...) before anything reaches
//! a review directory, a runner or a sheet, and each kind is counted so the sample can say what
//! it removed.
//!
//! Kinds are applied in a fixed order, most specific first, so a bearer token is not half-eaten
//! by the API-key pattern and a card number is not taken for a phone number. Candidates that a
//! checksum can confirm are confirmed: card numbers by the Luhn check, IBANs by ISO 13616's
//! mod-97 check; a digit run that fails its check is left for the next kind (or kept).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// A kind of sensitive text and its placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RedactionKind {
    BearerToken,
    ApiKey,
    Email,
    Iban,
    Card,
    Phone,
}

impl RedactionKind {
    /// In the order they are applied.
    pub const ALL: [RedactionKind; 6] = [
        RedactionKind::BearerToken,
        RedactionKind::ApiKey,
        RedactionKind::Email,
        RedactionKind::Iban,
        RedactionKind::Card,
        RedactionKind::Phone,
    ];

    /// The name used in counts and JSON (`email`, `card`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::BearerToken => "bearer_token",
            Self::ApiKey => "api_key",
            Self::Email => "email",
            Self::Iban => "iban",
            Self::Card => "card",
            Self::Phone => "phone",
        }
    }

    /// What replaces the text.
    pub fn placeholder(self) -> &'static str {
        match self {
            Self::BearerToken => "[BEARER_TOKEN]",
            Self::ApiKey => "[API_KEY]",
            Self::Email => "[EMAIL]",
            Self::Iban => "[IBAN]",
            Self::Card => "[CARD]",
            Self::Phone => "[PHONE]",
        }
    }

    fn pattern(self) -> &'static Regex {
        static PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
            [
                // `Authorization: Bearer <token>` and bare `bearer <token>` (RFC 6750 token68).
                r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*",
                // Provider key shapes: OpenAI/Anthropic/Stripe-style `sk-`/`pk-`/`rk-` keys,
                // AWS access key ids, GitHub and Slack tokens, Google API keys.
                r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}|\bxox[abprs]-[A-Za-z0-9\-]{10,}|\bAIza[0-9A-Za-z_\-]{35}",
                r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
                // Country code, check digits, then 11-30 alphanumerics, optionally in groups.
                r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b",
                // 13-19 digits, optionally grouped by spaces or dashes.
                r"\b[0-9](?:[ \-]?[0-9]){12,18}\b",
                // Optional +country, optional (area), then 2-5 groups of digits.
                r"(?:\+[0-9]{1,3}[ .\-]?)?(?:\([0-9]{1,4}\)[ .\-]?)?[0-9]{2,5}(?:[ .\-][0-9]{2,5}){0,4}",
            ]
            .iter()
            .map(|p| Regex::new(p).expect("redaction patterns are valid"))
            .collect()
        });
        &PATTERNS[self as usize]
    }

    /// Whether a match of the pattern really is this kind.
    fn confirms(self, text: &str) -> bool {
        match self {
            Self::BearerToken | Self::ApiKey | Self::Email => true,
            Self::Iban => iban_valid(text),
            Self::Card => {
                let digits: Vec<u8> = digits(text);
                (13..=19).contains(&digits.len()) && luhn_valid(&digits)
            }
            Self::Phone => phone_like(text),
        }
    }
}

/// How many of each kind were redacted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactionCounts(pub BTreeMap<RedactionKind, u64>);

impl RedactionCounts {
    pub fn add(&mut self, other: &RedactionCounts) {
        for (k, n) in &other.0 {
            *self.0.entry(*k).or_default() += n;
        }
    }
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
    /// Every kind with its count (zeros included), keyed by [`RedactionKind::name`].
    pub fn to_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = RedactionKind::ALL
            .iter()
            .map(|k| {
                (
                    k.name().to_string(),
                    self.0.get(k).copied().unwrap_or(0).into(),
                )
            })
            .collect();
        serde_json::Value::Object(map)
    }
}

/// Replaces every sensitive span of `text` by its placeholder; returns the text and the counts.
///
/// ```
/// use promptgate::review::redact::redact;
/// let (text, counts) = redact("mail ann@example.com or call +44 20 7946 0958");
/// assert_eq!(text, "mail [EMAIL] or call [PHONE]");
/// assert_eq!(counts.total(), 2);
/// ```
pub fn redact(text: &str) -> (String, RedactionCounts) {
    let mut counts = RedactionCounts::default();
    let mut out = text.to_string();
    for kind in RedactionKind::ALL {
        let mut n = 0u64;
        let replaced = kind.pattern().replace_all(&out, |c: &Captures<'_>| {
            let m = &c[0];
            if kind.confirms(m) {
                n += 1;
                kind.placeholder().to_string()
            } else {
                m.to_string()
            }
        });
        if n > 0 {
            out = replaced.into_owned();
            counts.0.insert(kind, n);
        }
    }
    (out, counts)
}

fn digits(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The Luhn (mod 10) check of payment card numbers (ISO/IEC 7812-1).
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// ISO 13616 check: move the first four characters to the end, letters to 10..35, mod 97 == 1.
pub fn iban_valid(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for &b in tail.iter().chain(head) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// A phone number: 7 to 15 digits (E.164's maximum) that either start with `+` or `(`, or come
/// in at least three groups; ISO dates (`2026-11-26`) and times are not phone numbers.
fn phone_like(text: &str) -> bool {
    let n = digits(text).len();
    if !(7..=15).contains(&n) {
        return false;
    }
    let t = text.trim();
    if t.starts_with('+') || t.starts_with('(') {
        return true;
    }
    let groups: Vec<&str> = t.split([' ', '.', '-']).filter(|g| !g.is_empty()).collect();
    let iso_date = groups.len() == 3
        && groups[0].len() == 4
        && groups[1].len() == 2
        && groups[2].len() == 2
        && t.contains('-');
    groups.len() >= 3 && !iso_date
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str, kind: RedactionKind) -> String {
        let (out, counts) = redact(text);
        assert_eq!(
            counts.0.get(&kind),
            Some(&1),
            "{text:?} -> {out:?} {counts:?}"
        );
        out
    }

    #[test]
    fn each_kind_gets_its_placeholder() {
        assert_eq!(
            one(
                "write to jo.doe+x@mail.example.org now",
                RedactionKind::Email
            ),
            "write to [EMAIL] now"
        );
        assert_eq!(
            one("card 4111 1111 1111 1111 exp", RedactionKind::Card),
            "card [CARD] exp"
        );
        assert_eq!(
            one("iban DE89 3704 0044 0532 0130 00 ok", RedactionKind::Iban),
            "iban [IBAN] ok"
        );
        assert_eq!(
            one("call 555-123-4567 today", RedactionKind::Phone),
            "call [PHONE] today"
        );
        assert_eq!(
            one("key sk-abcdefghijklmnop1234 leaked", RedactionKind::ApiKey),
            "key [API_KEY] leaked"
        );
        assert_eq!(
            one(
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
                RedactionKind::BearerToken
            ),
            "Authorization: [BEARER_TOKEN]"
        );
    }

    #[test]
    fn checksums_keep_look_alikes() {
        // Fails Luhn: not a card (and one group of 16 digits is not a phone either).
        let (out, counts) = redact("order 4111111111111112 shipped");
        assert_eq!(out, "order 4111111111111112 shipped");
        assert_eq!(counts.total(), 0);
        // Wrong IBAN check digits.
        let (out, _) = redact("ref DE00 3704 0044 0532 0130 00");
        assert!(!out.contains("[IBAN]"), "{out}");
        // Dates, versions and small numbers stay.
        let (out, counts) = redact("on 2026-11-26 at 12:30, v2 costs 40 for 3 users");
        assert_eq!(counts.total(), 0, "{out}");
    }

    #[test]
    fn luhn_and_iban_reference_values() {
        assert!(luhn_valid(&digits("79927398713")));
        assert!(!luhn_valid(&digits("79927398710")));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(!iban_valid("GB82WEST12345698765433"));
    }
}
