//! Blocking keys: the values a database index looks up to find candidate duplicates.
//!
//! Each record gets a handful of keys (typically 8-20); two records are compared only when
//! they share at least one. They are meant for one indexed table,
//! `dedup_keys(tenant_id, kind, value, collection, record_id)` with an index on
//! `(tenant_id, kind, value)`, rewritten whenever a record's matching fields change. A key's
//! [`BlockingKey::encoded`] form (`kind:value`) fits a single text column too.
//!
//! | kind | value | finds |
//! |---|---|---|
//! | `email` | the lower-cased address | the same e-mail |
//! | `phone` | E.164 | the same phone |
//! | `name_postcode` | name stem + postcode | same name nearby |
//! | `name_city` | name stem + city | same name, postcode missing or mistyped |
//! | `name_birth` | name stem + birth date | same name and birthday anywhere |
//! | `sound_postcode` | phonetic stem + postcode | names spelt differently (`Meyer`/`Maier`) |
//! | `sound_birth` | phonetic stem + birth date | the same, anywhere |
//! | `birth_postcode` | birth date + postcode | the name mistyped beyond the stems |
//! | `company_postcode` | company stem + postcode | accounts (no person name) |
//! | `company_city` | company stem + city | accounts, postcode missing |
//!
//! **Name stems** (Latin): for each ordered pair of name tokens `(a, b)` (the first four
//! tokens, nicknames replaced by their formal name, `ae/oe/ue` folded), the first three
//! letters of `a`, a dot and the initial of `b`: `John Smith` gives `joh.s` and `smi.j`.
//! Swapped given and family names give the same set; `J. Smith` and a misspelt given name
//! still share `smi.j`; a dropped middle name keeps the pairs of the other two. A single
//! token gives its first three letters. **Phonetic stems** are the same with the Soundex
//! code of `a` (`M600.t`). **CJK names** give one stem: the name's characters sorted (so
//! written order does not matter), traditional characters already simplified.
//! **Company stems**: the first three letters of each of the first two tokens of the name
//! without legal form (`deu.ban`), or the first four characters of a CJK name.
//!
//! At millions of records the largest blocks are common names in big cities (`name_city`);
//! a store should cap the candidates read per key (and log keys that exceed the cap) rather
//! than compare thousands of pairs.

use super::PreparedRecord;
use crate::normalize::{fold_digraphs, has_cjk, nicknames, soundex};
use serde::{Deserialize, Serialize};

/// What a blocking key is made of (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The e-mail address.
    Email,
    /// The E.164 phone number.
    Phone,
    /// Name stem and postcode.
    NamePostcode,
    /// Name stem and city.
    NameCity,
    /// Name stem and birth date.
    NameBirth,
    /// Phonetic name stem and postcode.
    SoundPostcode,
    /// Phonetic name stem and birth date.
    SoundBirth,
    /// Birth date and postcode.
    BirthPostcode,
    /// Company stem and postcode.
    CompanyPostcode,
    /// Company stem and city.
    CompanyCity,
}

impl KeyKind {
    /// The kind's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::NamePostcode => "name_postcode",
            Self::NameCity => "name_city",
            Self::NameBirth => "name_birth",
            Self::SoundPostcode => "sound_postcode",
            Self::SoundBirth => "sound_birth",
            Self::BirthPostcode => "birth_postcode",
            Self::CompanyPostcode => "company_postcode",
            Self::CompanyCity => "company_city",
        }
    }
}

/// One blocking key of a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockingKey {
    /// What the key is made of.
    pub kind: KeyKind,
    /// The key's value.
    pub value: String,
}

impl BlockingKey {
    /// `kind:value`, for a single indexed text column.
    pub fn encoded(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.value)
    }
}

fn prefix(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Name stems and phonetic stems of a record's person name.
fn name_stems(r: &PreparedRecord) -> (Vec<String>, Vec<String>) {
    let mut stems = Vec::new();
    let mut sounds = Vec::new();
    let (cjk, latin): (Vec<&String>, Vec<&String>) = r.name.tokens.iter().partition(|t| has_cjk(t));
    if !cjk.is_empty() {
        let mut chars: Vec<char> = cjk.iter().flat_map(|t| t.chars()).collect();
        chars.sort_unstable();
        stems.push(chars.into_iter().collect());
    }
    let latin: Vec<String> = latin
        .iter()
        .take(4)
        .map(|t| fold_digraphs(nicknames::canonical(t)).into_owned())
        .collect();
    if latin.len() == 1 {
        if let Some(t) = latin.first() {
            stems.push(prefix(t, 3));
            if let Some(s) = soundex(t) {
                sounds.push(s);
            }
        }
    } else {
        for (i, a) in latin.iter().enumerate() {
            for (j, b) in latin.iter().enumerate() {
                if i == j {
                    continue;
                }
                let initial = prefix(b, 1);
                stems.push(format!("{}.{initial}", prefix(a, 3)));
                if let Some(s) = soundex(a) {
                    sounds.push(format!("{s}.{initial}"));
                }
            }
        }
    }
    stems.sort_unstable();
    stems.dedup();
    sounds.sort_unstable();
    sounds.dedup();
    (stems, sounds)
}

fn company_stem(r: &PreparedRecord) -> Option<String> {
    let toks = &r.company.tokens;
    let first = toks.first()?;
    if has_cjk(first) {
        return Some(prefix(&toks.concat(), 4));
    }
    Some(
        toks.iter()
            .take(2)
            .map(|t| prefix(t, 3))
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// The blocking keys of a record, sorted and unique.
pub fn blocking_keys(r: &PreparedRecord) -> Vec<BlockingKey> {
    let mut keys = Vec::new();
    let mut add = |kind: KeyKind, value: String| keys.push(BlockingKey { kind, value });
    for e in &r.emails {
        add(KeyKind::Email, e.clone());
    }
    for p in &r.phones {
        add(KeyKind::Phone, p.clone());
    }
    let birth = r.birth_date.map(|d| d.format("%Y-%m-%d").to_string());
    let city = r.city.replace(' ', "");
    let (stems, sounds) = name_stems(r);
    for s in &stems {
        if !r.postcode.is_empty() {
            add(KeyKind::NamePostcode, format!("{s}|{}", r.postcode));
        }
        if !city.is_empty() {
            add(KeyKind::NameCity, format!("{s}|{city}"));
        }
        if let Some(b) = &birth {
            add(KeyKind::NameBirth, format!("{s}|{b}"));
        }
    }
    for s in &sounds {
        if !r.postcode.is_empty() {
            add(KeyKind::SoundPostcode, format!("{s}|{}", r.postcode));
        }
        if let Some(b) = &birth {
            add(KeyKind::SoundBirth, format!("{s}|{b}"));
        }
    }
    if let Some(b) = &birth
        && !r.postcode.is_empty()
    {
        add(KeyKind::BirthPostcode, format!("{b}|{}", r.postcode));
    }
    if r.name.is_empty()
        && let Some(c) = company_stem(r)
    {
        if !r.postcode.is_empty() {
            add(KeyKind::CompanyPostcode, format!("{c}|{}", r.postcode));
        }
        if !city.is_empty() {
            add(KeyKind::CompanyCity, format!("{c}|{city}"));
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::MatchRecord;

    fn keys(r: MatchRecord) -> Vec<String> {
        blocking_keys(&PreparedRecord::new(&r))
            .iter()
            .map(BlockingKey::encoded)
            .collect()
    }

    #[test]
    fn person_keys() {
        let k = keys(MatchRecord {
            given_name: "Bob".into(),
            family_name: "Müller".into(),
            postcode: "10115".into(),
            city: "Berlin".into(),
            emails: vec!["Bob@Example.com".into()],
            phones: vec!["030 901820".into()],
            country: "DE".into(),
            ..Default::default()
        });
        for want in [
            "email:bob@example.com",
            "phone:+4930901820",
            "name_postcode:mul.r|10115",
            "name_postcode:rob.m|10115",
            "name_city:rob.m|berlin",
            "sound_postcode:M460.r|10115",
        ] {
            assert!(k.contains(&want.to_owned()), "{want} not in {k:?}");
        }
        // Swapped names, the formal given name and a transliterated umlaut share the stems.
        let k2 = keys(MatchRecord {
            full_name: "MUELLER, Robert".into(),
            postcode: "10115".into(),
            ..Default::default()
        });
        assert!(k2.contains(&"name_postcode:mul.r|10115".to_owned()));
    }

    #[test]
    fn cjk_and_company_keys() {
        let a = keys(MatchRecord {
            full_name: "陳小明".into(),
            city: "北京市".into(),
            ..Default::default()
        });
        let b = keys(MatchRecord {
            given_name: "小明".into(),
            family_name: "陈".into(),
            city: "北京".into(),
            ..Default::default()
        });
        assert!(a.iter().any(|k| b.contains(k)), "{a:?} / {b:?}");
        let c = keys(MatchRecord {
            company: "Deutsche Bank AG".into(),
            postcode: "60311".into(),
            ..Default::default()
        });
        assert_eq!(c, vec!["company_postcode:deu.ban|60311".to_owned()]);
    }
}
