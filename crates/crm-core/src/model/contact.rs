use super::custom_field::CustomValues;
use crate::error::Result;
use crate::resource::{FieldSpec, Kind, Resource};
use crate::validate::{self, MAX_LIST_LEN, MAX_SHORT_CHARS, Violations};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A postal address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostalAddress {
    pub label: String,
    pub lines: Vec<String>,
    pub locality: String,
    pub administrative_area: String,
    pub postal_code: String,
    pub region_code: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Phone {
    /// E.164 once validated.
    pub number: String,
    pub label: String,
    /// Digits dialled after the connection; empty when none.
    pub extension: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Email {
    /// Lower-cased once validated.
    pub address: String,
    pub label: String,
}

/// A person.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Contact {
    pub given_name: String,
    pub family_name: String,
    pub display_name: String,
    pub phones: Vec<Phone>,
    pub emails: Vec<Email>,
    pub addresses: Vec<PostalAddress>,
    pub birth_date: Option<NaiveDate>,
    pub region: String,
    pub tags: Vec<String>,
    pub owner: Option<Uuid>,
    pub territory: Option<Uuid>,
    pub custom_fields: CustomValues,
}

impl Resource for Contact {
    const COLLECTION: &'static str = "contacts";
    const TABLE: &'static str = "contacts";
    const OWNED: bool = true;
    const CUSTOM_FIELDS: bool = true;
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("given_name", "given_name", Kind::Text).sort(),
        FieldSpec::new("family_name", "family_name", Kind::Text).sort(),
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("phones", "phones", Kind::Json),
        FieldSpec::new("emails", "emails", Kind::Json),
        FieldSpec::new("addresses", "addresses", Kind::Json),
        FieldSpec::new("birth_date", "birth_date", Kind::Date).filter(),
        FieldSpec::new("region", "region", Kind::Text).sort(),
        FieldSpec::new("tags", "tags", Kind::Tags).filter(),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
        FieldSpec::new("custom_fields", "custom_fields", Kind::Json),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "given_name",
            &self.given_name,
            MAX_SHORT_CHARS,
            false,
        )) {
            self.given_name = s;
        }
        if let Some(s) = v.check(validate::text(
            "family_name",
            &self.family_name,
            MAX_SHORT_CHARS,
            false,
        )) {
            self.family_name = s;
        }
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            MAX_SHORT_CHARS,
            false,
        )) {
            self.display_name = s;
        }
        if self.given_name.is_empty() && self.family_name.is_empty() && self.display_name.is_empty()
        {
            v.add(
                "display_name",
                "a contact needs a given, family or display name",
            );
        }
        if let Some(s) = v.check(validate::text("region", &self.region, 100, false)) {
            self.region = s;
        }
        if let Some(t) = v.check(validate::tags("tags", &self.tags)) {
            self.tags = t;
        }
        validate_addresses(&mut v, &mut self.addresses);
        let hint = self
            .addresses
            .iter()
            .map(|a| a.region_code.as_str())
            .find(|r| r.len() == 2)
            .map(str::to_owned);
        validate_phones(&mut v, &mut self.phones, hint.as_deref());
        validate_emails(&mut v, &mut self.emails);
        if let Some(b) = self.birth_date
            && b > chrono::Utc::now().date_naive()
        {
            v.add("birth_date", "must not be in the future");
        }
        v.into_result()
    }

    fn derive(&mut self) {
        self.display_name = display_name(&self.given_name, &self.family_name, &self.display_name);
    }
}

/// Validates and normalises phone numbers in place (E.164, extensions split off, labels),
/// under the field `phones`; `hint` is the region (ISO 3166-1 alpha-2) national numbers are
/// read in. An over-long list is one violation.
pub fn validate_phones(v: &mut Violations, phones: &mut [Phone], hint: Option<&str>) {
    let phones = if phones.len() > MAX_LIST_LEN {
        v.add("phones", format!("at most {MAX_LIST_LEN} entries"));
        &mut [][..]
    } else {
        phones
    };
    for (i, p) in phones.iter_mut().enumerate() {
        let ext_field = format!("phones[{i}].extension");
        let ext = v.check(validate::phone_extension(&ext_field, &p.extension));
        if let Some(n) = v.check(validate::phone(
            &format!("phones[{i}].number"),
            &p.number,
            hint,
        )) {
            p.number = n.e164;
            match ext {
                Some(e) if !e.is_empty() && !n.extension.is_empty() && e != n.extension => v.add(
                    ext_field,
                    "differs from the extension written in the number",
                ),
                Some(e) if e.is_empty() => p.extension = n.extension,
                Some(e) => p.extension = e,
                None => {}
            }
        }
        if let Some(l) = v.check(validate::text(
            &format!("phones[{i}].label"),
            &p.label,
            50,
            false,
        )) {
            p.label = l;
        }
    }
}

/// Validates and lower-cases e-mail addresses in place, under the field `emails`. An
/// over-long list is one violation.
pub fn validate_emails(v: &mut Violations, emails: &mut [Email]) {
    let emails = if emails.len() > MAX_LIST_LEN {
        v.add("emails", format!("at most {MAX_LIST_LEN} entries"));
        &mut [][..]
    } else {
        emails
    };
    for (i, e) in emails.iter_mut().enumerate() {
        if let Some(a) = v.check(validate::email(&format!("emails[{i}].address"), &e.address)) {
            e.address = a;
        }
        if let Some(l) = v.check(validate::text(
            &format!("emails[{i}].label"),
            &e.label,
            50,
            false,
        )) {
            e.label = l;
        }
    }
}

/// The shown and sorted name: as given, else family + given without a space for CJK names
/// ("山田太郎"), else "Given Family".
pub fn display_name(given: &str, family: &str, explicit: &str) -> String {
    if !explicit.is_empty() {
        return explicit.to_owned();
    }
    let cjk = |s: &str| s.chars().any(is_cjk);
    if cjk(given) || cjk(family) {
        format!("{family}{given}")
    } else {
        format!("{given} {family}").trim().to_owned()
    }
}

/// Han, Hiragana, Katakana and Hangul.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF
        | 0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x20000..=0x2FA1F)
}

/// Validates and normalises postal addresses in place, under the field `addresses`.
pub fn validate_addresses(v: &mut Violations, addresses: &mut [PostalAddress]) {
    if addresses.len() > 20 {
        v.add("addresses", "at most 20 entries");
        return;
    }
    for (i, a) in addresses.iter_mut().enumerate() {
        validate_address(v, &format!("addresses[{i}]"), a);
    }
}

/// Validates and normalises one postal address in place; violations are named
/// `<field>.<part>` (e.g. `address.region_code`).
pub fn validate_address(v: &mut Violations, field: &str, a: &mut PostalAddress) {
    let f = |n: &str| format!("{field}.{n}");
    for (name, value, max) in [
        ("label", &mut a.label, 50),
        ("locality", &mut a.locality, 200),
        ("administrative_area", &mut a.administrative_area, 200),
        ("postal_code", &mut a.postal_code, 30),
    ] {
        if let Some(s) = v.check(validate::text(&f(name), value, max, false)) {
            *value = s;
        }
    }
    if let Some(rc) = v.check(validate::region_code(&f("region_code"), &a.region_code)) {
        a.region_code = rc;
    }
    let lines = if a.lines.len() > 10 {
        v.add(f("lines"), "at most 10 lines");
        &mut [][..]
    } else {
        &mut a.lines[..]
    };
    for (j, l) in lines.iter_mut().enumerate() {
        if let Some(s) = v.check(validate::text(
            &format!("{field}.lines[{j}]"),
            l,
            300,
            false,
        )) {
            *l = s;
        }
    }
}

/// A person's position at an organisation over a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Position {
    pub contact: Option<Uuid>,
    pub account: Option<Uuid>,
    pub title: String,
    pub role: String,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
}

impl Resource for Position {
    const COLLECTION: &'static str = "positions";
    const PERMISSION: &'static str = "contacts";
    const TABLE: &'static str = "positions";
    const SCOPE_PARENT: Option<(&'static str, &'static str)> = Some(("contact_id", "contacts"));
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("contact", "contact_id", Kind::Ref("contacts"))
            .filter()
            .immutable(),
        FieldSpec::new("account", "account_id", Kind::Ref("accounts")).filter(),
        FieldSpec::new("title", "title", Kind::Text).sort(),
        FieldSpec::new("role", "role", Kind::Text).sort(),
        FieldSpec::new("start_date", "start_date", Kind::Date).filter(),
        FieldSpec::new("end_date", "end_date", Kind::Date).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if self.contact.is_none() {
            v.add("parent", "is required");
        }
        if self.account.is_none() {
            v.add("account", "is required");
        }
        if let Some(s) = v.check(validate::text("title", &self.title, MAX_SHORT_CHARS, false)) {
            self.title = s;
        }
        if let Some(s) = v.check(validate::text("role", &self.role, 100, false)) {
            self.role = s;
        }
        if let (Some(s), Some(e)) = (self.start_date, self.end_date)
            && e < s
        {
            v.add("end_date", "must not be before start_date");
        }
        v.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(display_name("太郎", "山田", ""), "山田太郎");
        assert_eq!(display_name("Ann", "Lee", ""), "Ann Lee");
        assert_eq!(display_name("", "Lee", ""), "Lee");
        assert_eq!(display_name("Ann", "Lee", "Dr. Lee"), "Dr. Lee");
    }

    #[test]
    fn contact_validation_names_every_bad_field() {
        let mut c = Contact {
            given_name: "Ann".into(),
            phones: vec![Phone {
                number: "12".into(),
                label: String::new(),
                extension: String::new(),
            }],
            emails: vec![Email {
                address: "nope".into(),
                label: String::new(),
            }],
            ..Default::default()
        };
        let e = c.validate().err();
        let fields: Vec<String> = e
            .map(|e| e.violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, vec!["phones[0].number", "emails[0].address"]);
    }

    #[test]
    fn contact_normalises() {
        let mut c = Contact {
            family_name: " 山田 ".into(),
            given_name: "太郎".into(),
            phones: vec![Phone {
                number: "03-1234-5678".into(),
                label: "work".into(),
                extension: String::new(),
            }],
            emails: vec![Email {
                address: "Taro@Example.JP".into(),
                label: String::new(),
            }],
            addresses: vec![PostalAddress {
                region_code: "jp".into(),
                ..Default::default()
            }],
            tags: vec!["VIP".into(), "vip".into()],
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        c.derive();
        assert_eq!(c.display_name, "山田太郎");
        assert_eq!(c.phones[0].number, "+81312345678");
        assert_eq!(c.emails[0].address, "taro@example.jp");
        assert_eq!(c.tags, vec!["vip"]);
    }
}
