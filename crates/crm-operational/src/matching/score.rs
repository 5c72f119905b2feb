//! Pairwise scoring: similarities, weight curves, the total.

use super::{FieldEvidence, MatchField, MatchScore, PreparedRecord, Thresholds};
use crate::normalize::{CompanyName, PersonName, Street, fold_digraphs, has_cjk, nicknames};
use chrono::{Datelike, NaiveDate};

/// Log-odds before any evidence: two records picked by a blocking key are rarely the same.
const PRIOR: f64 = -5.0;

/// Weight curves: `(similarity, weight)` points, similarity ascending; linear in between.
const NAME_CURVE: &[(f64, f64)] = &[
    (0.0, -8.0),
    (0.80, -6.0),
    (0.88, 0.0),
    (0.93, 3.0),
    (1.0, 5.5),
];
const COMPANY_SECONDARY_CURVE: &[(f64, f64)] = &[(0.0, -0.3), (0.85, 0.0), (1.0, 1.0)];
const EMAIL_CURVE: &[(f64, f64)] = &[(0.0, -1.5), (0.6, 0.5), (1.0, 7.0)];
const PHONE_CURVE: &[(f64, f64)] = &[(0.0, -1.5), (1.0, 5.5)];
const BIRTH_CURVE: &[(f64, f64)] = &[(0.0, -7.0), (0.5, 0.0), (0.7, 1.0), (1.0, 5.0)];
const STREET_CURVE: &[(f64, f64)] = &[(0.0, -0.5), (0.8, -0.5), (0.95, 1.2), (1.0, 1.5)];
const POSTCODE_CURVE: &[(f64, f64)] = &[(0.0, -0.7), (0.75, -0.2), (1.0, 1.2)];
const CITY_CURVE: &[(f64, f64)] = &[(0.0, -0.5), (0.85, -0.3), (1.0, 0.5)];

fn curve(points: &[(f64, f64)], s: f64) -> f64 {
    let s = if s.is_finite() {
        s.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut prev: Option<(f64, f64)> = None;
    for &(x, y) in points {
        if s <= x {
            return match prev {
                Some((px, py)) if x > px => py + (y - py) * (s - px) / (x - px),
                _ => y,
            };
        }
        prev = Some((x, y));
    }
    prev.map_or(0.0, |(_, y)| y)
}

/// Orders two strings so every similarity is computed on the same (first, second).
fn ordered<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Similarity of two free texts: Jaro-Winkler for Latin, normalised Damerau-Levenshtein when
/// either is CJK (Jaro-Winkler's prefix bonus means little for two- or three-character names).
pub(crate) fn text_sim(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (x, y) = ordered(a, b);
    if has_cjk(x) || has_cjk(y) {
        strsim::normalized_damerau_levenshtein(x, y)
    } else {
        strsim::jaro_winkler(x, y)
    }
}

/// Similarity of two name tokens.
fn token_sim(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let (x, y) = ordered(a, b);
    let (cx, cy) = (has_cjk(x), has_cjk(y));
    if cx || cy {
        if !(cx && cy) {
            return 0.0;
        }
        let base = strsim::normalized_damerau_levenshtein(x, y);
        let mut sx: Vec<char> = x.chars().collect();
        let mut sy: Vec<char> = y.chars().collect();
        sx.sort_unstable();
        sy.sort_unstable();
        return if sx == sy { base.max(0.95) } else { base };
    }
    if nicknames::related(x, y) {
        return 0.95;
    }
    let (lx, ly) = (x.chars().count(), y.chars().count());
    if lx == 1 || ly == 1 {
        return if x.chars().next() == y.chars().next() {
            0.9
        } else {
            0.0
        };
    }
    let jw = strsim::jaro_winkler(x, y);
    let (fx, fy) = (fold_digraphs(x), fold_digraphs(y));
    if fx == fy {
        return jw.max(0.98);
    }
    if fx.as_ref() != x || fy.as_ref() != y {
        let (fx, fy) = ordered(&fx, &fy);
        return jw.max(strsim::jaro_winkler(fx, fy));
    }
    jw
}

/// Best one-to-one assignment of the tokens of `short` to those of `long` (at most 6 each),
/// maximising the weakest pair, then the sum. Returns (weakest, sum) or `None` when `short`
/// has more tokens than `long`.
fn best_assignment(short: &[&str], long: &[&str]) -> Option<(f64, f64)> {
    fn go(
        i: usize,
        short: &[&str],
        long: &[&str],
        used: u32,
        min: f64,
        sum: f64,
        best: &mut Option<(f64, f64)>,
    ) {
        let Some(tok) = short.get(i) else {
            let better = match best {
                None => true,
                Some((bm, bs)) => min > *bm || (min == *bm && sum > *bs),
            };
            if better {
                *best = Some((min, sum));
            }
            return;
        };
        for (j, other) in long.iter().enumerate() {
            if used & (1 << j) != 0 {
                continue;
            }
            let s = token_sim(tok, other);
            go(
                i + 1,
                short,
                long,
                used | (1 << j),
                min.min(s),
                sum + s,
                best,
            );
        }
    }
    if short.len() > long.len() {
        return None;
    }
    let mut best = None;
    go(0, short, long, 0, 1.0, 0.0, &mut best);
    best
}

/// Name similarity: weakest matched token, times a small cost per unmatched token; for token
/// lists of different lengths or CJK names also the names concatenated in either order.
fn token_list_sim(a: &[String], b: &[String], unmatched_factor: f64) -> f64 {
    let a: Vec<&str> = a.iter().take(6).map(String::as_str).collect();
    let b: Vec<&str> = b.iter().take(6).map(String::as_str).collect();
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let unmatched = i32::try_from(long.len() - short.len()).unwrap_or(i32::MAX);
    // With equal lengths the assignment is the same in both directions (it is over pairs).
    let aligned = best_assignment(short, long)
        .map(|(min, _)| min * unmatched_factor.powi(unmatched))
        .unwrap_or(0.0);
    let cjk = a.iter().chain(b.iter()).any(|t| has_cjk(t));
    if a.len() == b.len() && !cjk {
        return aligned;
    }
    let ca: String = a.concat();
    let cb: String = b.concat();
    let ra: String = a.iter().rev().copied().collect();
    let rb: String = b.iter().rev().copied().collect();
    let concat = text_sim(&ca, &cb)
        .max(text_sim(&ca, &rb))
        .max(text_sim(&ra, &cb));
    aligned.max(concat)
}

fn name_sim(a: &PersonName, b: &PersonName) -> f64 {
    token_list_sim(&a.tokens, &b.tokens, 0.95)
}

fn company_sim(a: &CompanyName, b: &CompanyName) -> f64 {
    token_list_sim(&a.tokens, &b.tokens, 0.85)
}

fn email_sim(a: &[String], b: &[String]) -> (f64, usize, usize) {
    let mut best = (0.0, 0, 0);
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            let s = if x == y {
                1.0
            } else {
                let lx = x.split('@').next().unwrap_or("");
                let ly = y.split('@').next().unwrap_or("");
                if lx == ly && lx.len() >= 4 { 0.6 } else { 0.0 }
            };
            if s > best.0 {
                best = (s, i, j);
            }
        }
    }
    best
}

fn phone_sim(a: &[String], b: &[String]) -> (f64, usize, usize) {
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            if x == y {
                return (1.0, i, j);
            }
        }
    }
    (0.0, 0, 0)
}

/// Birth dates: equal 1; day and month swapped 0.7; one part off by one digit 0.5; else 0.
fn birth_sim(a: NaiveDate, b: NaiveDate) -> f64 {
    if a == b {
        return 1.0;
    }
    if a.year() == b.year() && a.month() == b.day() && a.day() == b.month() {
        return 0.7;
    }
    let one_digit = |x: u32, y: u32| {
        let (sx, sy) = (format!("{x:04}"), format!("{y:04}"));
        sx.chars().zip(sy.chars()).filter(|(p, q)| p != q).count() == 1
    };
    let parts = [
        (
            u32::try_from(a.year()).unwrap_or(0),
            u32::try_from(b.year()).unwrap_or(0),
        ),
        (a.month(), b.month()),
        (a.day(), b.day()),
    ];
    let differing: Vec<_> = parts.iter().filter(|(x, y)| x != y).collect();
    match differing.as_slice() {
        [(x, y)] if one_digit(*x, *y) => 0.5,
        _ => 0.0,
    }
}

fn street_sim(a: &Street, b: &Street) -> f64 {
    let name = if a.name.is_empty() && b.name.is_empty() {
        1.0
    } else {
        text_sim(&a.name, &b.name)
    };
    let numbers = match (a.numbers.is_empty(), b.numbers.is_empty()) {
        (false, false) if a.numbers == b.numbers => 1.0,
        (false, false) if a.numbers.first() == b.numbers.first() => 0.9,
        (false, false) => 0.5,
        (true, true) => 1.0,
        _ => 0.85,
    };
    name * numbers
}

/// Compares two prepared records. Symmetric: `score(a, b, t).score == score(b, a, t).score`.
pub fn score(a: &PreparedRecord, b: &PreparedRecord, thresholds: &Thresholds) -> MatchScore {
    let mut evidence = Vec::new();
    let mut push =
        |field: MatchField, left: String, right: String, similarity: f64, points: &[(f64, f64)]| {
            let similarity = if similarity.is_finite() {
                similarity.clamp(0.0, 1.0)
            } else {
                0.0
            };
            evidence.push(FieldEvidence {
                field,
                left,
                right,
                similarity,
                weight: curve(points, similarity),
            });
        };

    let names = !a.name.is_empty() && !b.name.is_empty();
    if names {
        push(
            MatchField::Name,
            a.raw.display_name(),
            b.raw.display_name(),
            name_sim(&a.name, &b.name),
            NAME_CURVE,
        );
    }
    if !a.company.is_empty() && !b.company.is_empty() {
        // Without person names on both sides (accounts) the company is the name.
        let organisations = a.name.is_empty() && b.name.is_empty();
        push(
            MatchField::Company,
            a.raw.company.trim().to_owned(),
            b.raw.company.trim().to_owned(),
            company_sim(&a.company, &b.company),
            if organisations {
                NAME_CURVE
            } else {
                COMPANY_SECONDARY_CURVE
            },
        );
    }
    if !a.emails.is_empty() && !b.emails.is_empty() {
        let (s, i, j) = email_sim(&a.emails, &b.emails);
        push(
            MatchField::Email,
            a.emails.get(i).cloned().unwrap_or_default(),
            b.emails.get(j).cloned().unwrap_or_default(),
            s,
            EMAIL_CURVE,
        );
    }
    if !a.phones.is_empty() && !b.phones.is_empty() {
        let (s, i, j) = phone_sim(&a.phones, &b.phones);
        push(
            MatchField::Phone,
            a.phones.get(i).cloned().unwrap_or_default(),
            b.phones.get(j).cloned().unwrap_or_default(),
            s,
            PHONE_CURVE,
        );
    }
    if let (Some(x), Some(y)) = (a.birth_date, b.birth_date) {
        push(
            MatchField::BirthDate,
            x.to_string(),
            y.to_string(),
            birth_sim(x, y),
            BIRTH_CURVE,
        );
    }
    if !a.street.is_empty() && !b.street.is_empty() {
        push(
            MatchField::Street,
            a.raw.street.trim().to_owned(),
            b.raw.street.trim().to_owned(),
            street_sim(&a.street, &b.street),
            STREET_CURVE,
        );
    }
    if !a.postcode.is_empty() && !b.postcode.is_empty() {
        push(
            MatchField::Postcode,
            a.raw.postcode.trim().to_owned(),
            b.raw.postcode.trim().to_owned(),
            text_sim_postcode(&a.postcode, &b.postcode),
            POSTCODE_CURVE,
        );
    }
    if !a.city.is_empty() && !b.city.is_empty() {
        push(
            MatchField::City,
            a.raw.city.trim().to_owned(),
            b.raw.city.trim().to_owned(),
            text_sim(&a.city, &b.city),
            CITY_CURVE,
        );
    }

    let total: f64 = PRIOR + evidence.iter().map(|e| e.weight).sum::<f64>();
    let score = 1.0 / (1.0 + (-total).exp());
    let score = if score.is_finite() {
        score.clamp(0.0, 1.0)
    } else {
        0.0
    };
    MatchScore {
        score,
        decision: thresholds.decide(score),
        evidence,
    }
}

/// Postcodes: equal 1, else normalised Damerau-Levenshtein (a typo keeps most of it).
fn text_sim_postcode(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let (x, y) = ordered(a, b);
    strsim::normalized_damerau_levenshtein(x, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::person_name;

    fn n(full: &str) -> PersonName {
        person_name("", "", full)
    }

    #[test]
    fn curves_interpolate() {
        assert_eq!(curve(PHONE_CURVE, 1.0), 5.5);
        assert_eq!(curve(PHONE_CURVE, 0.0), -1.5);
        assert!((curve(PHONE_CURVE, 0.5) - 2.0).abs() < 1e-9);
        assert_eq!(curve(NAME_CURVE, 2.0), 5.5);
        assert_eq!(curve(NAME_CURVE, f64::NAN), -8.0);
    }

    #[test]
    fn name_similarity_cases() {
        assert_eq!(name_sim(&n("John Smith"), &n("Smith, John")), 1.0);
        assert!(name_sim(&n("Bob Smith"), &n("Robert Smith")) >= 0.95);
        assert!(name_sim(&n("Thomas Müller"), &n("Thoams Mueller")) > 0.93);
        assert!(name_sim(&n("John Michael Smith"), &n("John Smith")) >= 0.95);
        assert!(name_sim(&n("J. Smith"), &n("John Smith")) >= 0.9);
        assert!(name_sim(&n("Thomas Müller"), &n("Tobias Müller")) < 0.85);
        assert!(name_sim(&n("Anna Müller"), &n("Thomas Müller")) < 0.8);
        assert_eq!(name_sim(&n("陳小明"), &n("陈小明")), 1.0);
        assert_eq!(name_sim(&person_name("小明", "王", ""), &n("王小明")), 1.0);
        assert!(name_sim(&n("小明王"), &n("王小明")) >= 0.95);
        assert!(name_sim(&n("王小明"), &n("王小红")) < 0.8);
        assert_eq!(name_sim(&n("ＪＯＨＮ ＳＭＩＴＨ"), &n("john smith")), 1.0);
    }

    #[test]
    fn birth_date_similarity() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
        assert_eq!(birth_sim(d(1980, 3, 4), d(1980, 3, 4)), 1.0);
        assert_eq!(birth_sim(d(1980, 3, 4), d(1980, 4, 3)), 0.7);
        assert_eq!(birth_sim(d(1980, 3, 4), d(1981, 3, 4)), 0.5);
        assert_eq!(birth_sim(d(1980, 3, 4), d(1955, 9, 21)), 0.0);
    }
}
