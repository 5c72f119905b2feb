//! Validation and normalisation of user input. Pure functions; each error names the field.

use crate::error::{Error, FieldViolation, Result};
use chrono::NaiveDate;

/// No single string may be longer than this many bytes.
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// Short texts: names, titles, codes.
pub const MAX_SHORT_CHARS: usize = 300;
/// At most this many entries in any repeated field.
pub const MAX_LIST_LEN: usize = 100;

/// Collects violations so one response names every bad field.
#[derive(Debug, Default)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }
    /// Records the violation of a check, if any, and returns the checked value.
    pub fn check<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                if e.violations.is_empty() {
                    self.add("", e.message);
                } else {
                    self.0.extend(e.violations);
                }
                None
            }
        }
    }
    pub fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid_fields(self.0))
        }
    }
}

/// Trims and checks a text: at most `max_chars` characters, no NUL or other control
/// characters (tabs and newlines are allowed when `multiline`).
pub fn text(field: &str, value: &str, max_chars: usize, required: bool) -> Result<String> {
    if value.len() > MAX_STRING_BYTES {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_STRING_BYTES} bytes"),
        ));
    }
    let v = value.trim();
    if required && v.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if v.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    if v.chars().count() > max_chars {
        return Err(Error::invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(v.to_owned())
}

/// A tenant id: 1-63 of `a-z`, `0-9`, `-`, starting with a letter or digit.
pub fn tenant_id(value: &str) -> Result<()> {
    slug("tenant", value)
}

/// A client-chosen id such as a role id: 1-63 of `a-z`, `0-9`, `-`, `_`.
pub fn slug(field: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit",
        ))
    }
}

/// Validates an e-mail address and lower-cases it for matching.
pub fn email(field: &str, value: &str) -> Result<String> {
    let v = text(field, value, 254, true)?;
    if !email_address::EmailAddress::is_valid(&v) || !v.contains('@') {
        return Err(Error::invalid(field, "is not a valid e-mail address"));
    }
    Ok(v.to_lowercase())
}

/// A parsed phone number: E.164, and the extension if one was written (`ext. 5`, `x5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    pub e164: String,
    pub extension: String,
}

/// Parses a phone number (international, or national with `region_hint` such as "DE")
/// and returns it in E.164 with its extension, which is kept, never dropped.
pub fn phone(field: &str, value: &str, region_hint: Option<&str>) -> Result<PhoneNumber> {
    let v = text(field, value, 64, true)?;
    // One `+`, and only in front: `++4930123` or `49+30` is a typing error, not a number.
    let pluses = v.matches('+').count();
    if pluses > 1 || (pluses == 1 && !v.starts_with('+')) {
        return Err(Error::invalid(
            field,
            "is not a phone number: '+' may only appear once, in front",
        ));
    }
    let country = region_hint.filter(|r| r.len() == 2).and_then(|r| {
        r.to_ascii_uppercase()
            .parse::<phonenumber::country::Id>()
            .ok()
    });
    let parsed = phonenumber::parse(country, &v)
        .map_err(|_| Error::invalid(field, "is not a phone number"))?;
    if !phonenumber::is_valid(&parsed) {
        return Err(Error::invalid(field, "is not a valid phone number"));
    }
    Ok(PhoneNumber {
        e164: parsed.format().mode(phonenumber::Mode::E164).to_string(),
        extension: parsed
            .extension()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    })
}

/// A phone extension: up to 10 digits.
pub fn phone_extension(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(field, "must be at most 10 digits"));
    }
    Ok(v.to_owned())
}

/// A CLDR region code (ISO 3166-1 alpha-2, and `XK`), upper-cased; empty stays empty.
pub fn region_code(field: &str, value: &str) -> Result<String> {
    let rc = value.trim().to_ascii_uppercase();
    if rc.is_empty() {
        return Ok(rc);
    }
    let known = rc.len() == 2
        && rc.bytes().all(|b| b.is_ascii_uppercase())
        && (rc == "XK" || rc.parse::<iso_country::Country>().is_ok());
    if known {
        Ok(rc)
    } else {
        Err(Error::invalid(
            field,
            "must be a CLDR region code such as DE, JP or US",
        ))
    }
}

/// Normalises tags: trimmed, lower-cased, de-duplicated, 1-64 characters, no `|`.
pub fn tags(field: &str, values: &[String]) -> Result<Vec<String>> {
    if values.len() > MAX_LIST_LEN {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_LIST_LEN} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for (i, t) in values.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let t = text(&f, t, 64, true)?.to_lowercase();
        if t.contains('|') {
            return Err(Error::invalid(f, "must not contain '|'"));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    // Tags are a set: kept in one order, so reordering them is no change.
    out.sort_unstable();
    Ok(out)
}

/// A calendar date from year/month/day parts (`google.type.Date`); all zero means none.
pub fn date(field: &str, year: i32, month: i32, day: i32) -> Result<Option<NaiveDate>> {
    if year == 0 && month == 0 && day == 0 {
        return Ok(None);
    }
    let m = u32::try_from(month).ok();
    let d = u32::try_from(day).ok();
    match (m, d) {
        (Some(m), Some(d)) if (1..=9999).contains(&year) => NaiveDate::from_ymd_opt(year, m, d)
            .map(Some)
            .ok_or_else(|| Error::invalid(field, "is not a valid calendar date")),
        _ => Err(Error::invalid(
            field,
            "must be a full date (year 1-9999, month and day)",
        )),
    }
}

/// Checks an ISO 4217 code and returns its number of minor-unit digits.
pub fn currency(field: &str, code: &str) -> Result<u32> {
    iso_currency::Currency::from_code(code)
        .and_then(|c| c.exponent())
        .map(u32::from)
        .ok_or_else(|| Error::invalid(field, "is not an ISO 4217 currency code"))
}

/// `google.type.Money` (units + nanos) to integer minor units of `code`.
pub fn money_to_minor(field: &str, code: &str, units: i64, nanos: i32) -> Result<i64> {
    let exp = currency(&format!("{field}.currency_code"), code)?;
    if !(-999_999_999..=999_999_999).contains(&nanos)
        || (units > 0 && nanos < 0)
        || (units < 0 && nanos > 0)
    {
        return Err(Error::invalid(
            format!("{field}.nanos"),
            "must be within ±999,999,999 with the sign of units",
        ));
    }
    let step = 10_i64.pow(9 - exp.min(9));
    if i64::from(nanos) % step != 0 {
        return Err(Error::invalid(
            format!("{field}.nanos"),
            format!("{code} has {exp} decimal digits"),
        ));
    }
    let scale = 10_i64.pow(exp.min(9));
    units
        .checked_mul(scale)
        .and_then(|u| u.checked_add(i64::from(nanos) / step))
        .ok_or_else(|| Error::invalid(format!("{field}.units"), "is too large"))
}

/// Integer minor units of `code` to (units, nanos).
pub fn minor_to_money(code: &str, minor: i64) -> (i64, i32) {
    let exp = iso_currency::Currency::from_code(code)
        .and_then(|c| c.exponent())
        .map(u32::from)
        .unwrap_or(2)
        .min(9);
    let scale = 10_i64.pow(exp);
    let units = minor / scale;
    let rest = minor % scale;
    let nanos = rest * 10_i64.pow(9 - exp);
    (units, i32::try_from(nanos).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn phones_become_e164() {
        let e164 = |v: &str, hint: Option<&str>| phone("p", v, hint).ok().map(|p| p.e164);
        assert_eq!(e164("+49 30 901820", None).as_deref(), Some("+4930901820"));
        assert_eq!(
            e164("030 901820", Some("DE")).as_deref(),
            Some("+4930901820")
        );
        assert_eq!(
            e164("03-1234-5678", Some("JP")).as_deref(),
            Some("+81312345678")
        );
        assert!(phone("p", "12", None).is_err());
        assert!(phone("p", "not a phone", None).is_err());
        assert!(phone("p", "", None).is_err());
        // One '+', in front only.
        assert!(phone("p", "++4930901820", None).is_err());
        assert!(phone("p", "49+30901820", None).is_err());
    }

    #[test]
    fn phone_extensions_are_kept() {
        let p = phone("p", "+49 30 901820 ext. 5", None).ok();
        assert_eq!(
            p.map(|p| (p.e164, p.extension)),
            Some(("+4930901820".to_owned(), "5".to_owned()))
        );
        assert!(phone_extension("e", "12a").is_err());
        assert_eq!(phone_extension("e", " 42 ").ok().as_deref(), Some("42"));
    }

    #[test]
    fn region_codes_are_cldr() {
        assert_eq!(region_code("r", "de").ok().as_deref(), Some("DE"));
        assert_eq!(region_code("r", "XK").ok().as_deref(), Some("XK"));
        assert_eq!(region_code("r", "").ok().as_deref(), Some(""));
        for bad in ["XX", "ZZ", "D", "DEU", "1A"] {
            assert!(region_code("r", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_are_a_sorted_set() {
        let t = tags("t", &["b".into(), "A".into(), "a".into()]).ok();
        assert_eq!(t, Some(vec!["a".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn emails_are_validated_and_lowercased() {
        assert_eq!(
            email("e", " Ann.Lee@Example.COM ").ok().as_deref(),
            Some("ann.lee@example.com")
        );
        for bad in ["", "ann", "ann@", "@x.com", "a b@x.com", "ann@@x.com"] {
            assert!(email("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_limits() {
        assert!(text("f", "", 10, true).is_err());
        assert!(text("f", "a\u{0}b", 10, false).is_err());
        assert!(text("f", &"x".repeat(70_000), usize::MAX, false).is_err());
        assert!(text("f", "山田太郎", 4, true).is_ok());
        assert!(text("f", "山田太郎x", 4, true).is_err());
    }

    #[test]
    fn money_in_minor_units() {
        assert_eq!(money_to_minor("m", "EUR", 12, 340_000_000).ok(), Some(1234));
        assert_eq!(money_to_minor("m", "JPY", 500, 0).ok(), Some(500));
        assert!(money_to_minor("m", "JPY", 500, 500_000_000).is_err());
        assert!(money_to_minor("m", "XXX1", 1, 0).is_err());
        assert!(money_to_minor("m", "EUR", i64::MAX, 0).is_err());
        assert!(money_to_minor("m", "EUR", 1, -10_000_000).is_err());
        assert_eq!(minor_to_money("EUR", 1234), (12, 340_000_000));
        assert_eq!(minor_to_money("EUR", -1234), (-12, -340_000_000));
    }

    #[test]
    fn dates() {
        assert_eq!(date("d", 0, 0, 0).ok(), Some(None));
        assert!(date("d", 2024, 2, 30).is_err());
        assert!(date("d", 2024, 13, 1).is_err());
        assert!(date("d", 2024, 0, 1).is_err());
        assert!(date("d", 1990, 5, 17).ok().flatten().is_some());
    }

    proptest! {
        #[test]
        fn validators_never_panic(s in ".*", r in "[A-Z]{0,3}") {
            let _ = text("f", &s, 50, true);
            let _ = email("f", &s);
            let _ = phone("f", &s, Some(&r));
            let _ = tags("f", std::slice::from_ref(&s));
            let _ = slug("f", &s);
        }

        #[test]
        fn money_round_trips(minor in -1_000_000_000_000i64..1_000_000_000_000i64) {
            for code in ["EUR", "JPY", "KWD"] {
                let (u, n) = minor_to_money(code, minor);
                prop_assert_eq!(money_to_minor("m", code, u, n).ok(), Some(minor));
            }
        }
    }
}
