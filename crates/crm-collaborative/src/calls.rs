//! Call records: numbers normalised to E.164, outcomes typed.
//!
//! [`normalise_call`] turns a [`RawCallRecord`] (as a telephony system delivers it) into a
//! [`CallRecord`]: both numbers parsed with the `phonenumber` crate, national numbers read in the
//! tenant's default region (`"CN"`, `"DE"`...), and written in E.164 (`+861012345678`). A number
//! that cannot be parsed or is not a valid number is an error naming the field (`from_number`).
//! A withheld caller (empty, `anonymous`, `private`, `unknown`, `withheld`, `restricted`) is kept
//! as `None`, since telephony systems report it that way and the call still happened.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallOutcome {
    /// Someone answered.
    Answered,
    /// Nobody answered.
    Missed,
    /// Went to voicemail.
    Voicemail,
    /// The line was busy.
    Busy,
    /// The call failed (network, invalid number...).
    Failed,
}

/// Which way the call went, seen from the company.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallDirection {
    /// The customer called.
    Inbound,
    /// The company called.
    Outbound,
}

/// A call record as delivered, numbers as typed or dialled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawCallRecord {
    /// Calling number.
    pub from_number: String,
    /// Called number.
    pub to_number: String,
    /// Direction.
    pub direction: CallDirection,
    /// Outcome.
    pub outcome: CallOutcome,
    /// When the call started.
    pub started_at: DateTime<Utc>,
    /// Talk time in seconds (0 when not answered).
    #[serde(default)]
    pub duration_seconds: u32,
}

/// A call record with E.164 numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Calling number in E.164, `None` when withheld.
    pub from_e164: Option<String>,
    /// Called number in E.164, `None` when withheld.
    pub to_e164: Option<String>,
    /// Direction.
    pub direction: CallDirection,
    /// Outcome.
    pub outcome: CallOutcome,
    /// When the call started.
    pub started_at: DateTime<Utc>,
    /// Talk time in seconds.
    pub duration_seconds: u32,
}

/// A call record that cannot be normalised; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CallError {
    /// Field path, e.g. `from_number` or `default_region`.
    pub field: String,
    /// What is wrong, lower-case.
    pub message: String,
}

fn call_error(field: &str, message: impl Into<String>) -> CallError {
    CallError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn region(default_region: &str) -> Result<phonenumber::country::Id, CallError> {
    let r = default_region.trim().to_ascii_uppercase();
    if r.len() != 2 {
        return Err(call_error(
            "default_region",
            format!("'{default_region}' is not a two-letter region code"),
        ));
    }
    r.parse::<phonenumber::country::Id>().map_err(|_| {
        call_error(
            "default_region",
            format!("'{default_region}' is not a known region"),
        )
    })
}

const WITHHELD: &[&str] = &[
    "anonymous",
    "private",
    "unknown",
    "withheld",
    "restricted",
    "unavailable",
];

/// Parses a number into E.164; national numbers are read in `default_region`. `None` when the
/// number is withheld. Errors name `field`.
pub fn to_e164(
    field: &str,
    number: &str,
    default_region: &str,
) -> Result<Option<String>, CallError> {
    let region = region(default_region)?;
    let n = number.trim();
    if n.is_empty() || WITHHELD.iter().any(|w| n.eq_ignore_ascii_case(w)) {
        return Ok(None);
    }
    // "00" international prefix as dialled in most of the world.
    let n = match n.strip_prefix("00") {
        Some(rest) if !rest.starts_with('0') => format!("+{rest}"),
        _ => n.to_string(),
    };
    let pluses = n.matches('+').count();
    if pluses > 1 || (pluses == 1 && !n.starts_with('+')) {
        return Err(call_error(
            field,
            format!("'{number}' is not a phone number: '+' may only appear once, in front"),
        ));
    }
    let parsed = phonenumber::parse(Some(region), &n)
        .map_err(|_| call_error(field, format!("'{number}' is not a phone number")))?;
    if !phonenumber::is_valid(&parsed) {
        return Err(call_error(
            field,
            format!("'{number}' is not a valid phone number"),
        ));
    }
    Ok(Some(
        parsed.format().mode(phonenumber::Mode::E164).to_string(),
    ))
}

/// Normalises a call record with the tenant's default region.
pub fn normalise_call(raw: &RawCallRecord, default_region: &str) -> Result<CallRecord, CallError> {
    Ok(CallRecord {
        from_e164: to_e164("from_number", &raw.from_number, default_region)?,
        to_e164: to_e164("to_number", &raw.to_number, default_region)?,
        direction: raw.direction,
        outcome: raw.outcome,
        started_at: raw.started_at,
        duration_seconds: raw.duration_seconds,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn raw(from: &str, to: &str) -> RawCallRecord {
        RawCallRecord {
            from_number: from.into(),
            to_number: to.into(),
            direction: CallDirection::Inbound,
            outcome: CallOutcome::Answered,
            started_at: DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
            duration_seconds: 95,
        }
    }

    #[test]
    fn national_and_international_numbers() {
        assert_eq!(
            to_e164("n", "010 1234 5678", "CN").unwrap().as_deref(),
            Some("+861012345678")
        );
        assert_eq!(
            to_e164("n", "138 0013 8000", "cn").unwrap().as_deref(),
            Some("+8613800138000")
        );
        assert_eq!(
            to_e164("n", "030 12345678", "DE").unwrap().as_deref(),
            Some("+493012345678")
        );
        assert_eq!(
            to_e164("n", "+49 (30) 1234-5678", "CN").unwrap().as_deref(),
            Some("+493012345678")
        );
        assert_eq!(
            to_e164("n", "0049 30 12345678", "CN").unwrap().as_deref(),
            Some("+493012345678")
        );
        assert_eq!(to_e164("n", "anonymous", "DE").unwrap(), None);
        assert_eq!(to_e164("n", "  ", "DE").unwrap(), None);
    }

    #[test]
    fn errors_name_the_field() {
        let e = normalise_call(&raw("hello", "030 12345678"), "DE").unwrap_err();
        assert_eq!(e.field, "from_number");
        let e = normalise_call(&raw("030 12345678", "123"), "DE").unwrap_err();
        assert_eq!(e.field, "to_number");
        let e = normalise_call(&raw("030 12345678", "49+3012345678"), "DE").unwrap_err();
        assert_eq!(e.field, "to_number");
        let e = normalise_call(&raw("030 12345678", "030 12345678"), "XX").unwrap_err();
        assert_eq!(e.field, "default_region");
        let e = normalise_call(&raw("030 12345678", "030 12345678"), "Germany").unwrap_err();
        assert_eq!(e.field, "default_region");
    }

    #[test]
    fn record_round_trip() {
        let r = normalise_call(&raw("+86 138 0013 8000", "030 12345678"), "DE").unwrap();
        assert_eq!(r.from_e164.as_deref(), Some("+8613800138000"));
        assert_eq!(r.to_e164.as_deref(), Some("+493012345678"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["outcome"], "ANSWERED");
        assert_eq!(json["direction"], "INBOUND");
        let back: CallRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        for o in [
            CallOutcome::Answered,
            CallOutcome::Missed,
            CallOutcome::Voicemail,
            CallOutcome::Busy,
            CallOutcome::Failed,
        ] {
            let s = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<CallOutcome>(&s).unwrap(), o);
        }
    }
}
