//! Consent (K7): what each person agreed to, kept as a ledger. Every grant and every
//! withdrawal is a record of its own (purpose, channel, time, source, proof), never changed
//! or deleted afterwards; what holds at a moment is the latest entry for the purpose and
//! the channel (or for every channel) at that moment ([`decide`]). Without any entry the
//! answer is no: consent is given, never assumed.

use crate::error::{Error, Result};
use crate::journal::AuditAction;
use crate::registry::SchemaChange;
use crate::resource::{FieldSpec, HookFuture, Kind, Record, Resource};
use crate::service::Tx;
use crate::validate::{self, Violations};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crate::named_enum! {
    /// How a person may be reached for a purpose.
    pub enum ConsentChannel {
        /// Every channel.
        Any = "ANY",
        Email = "EMAIL",
        Phone = "PHONE",
        Sms = "SMS",
        Post = "POST",
        Chat = "CHAT",
        Web = "WEB",
        Fax = "FAX",
        Visit = "VISIT",
        WebMeeting = "WEB_MEETING",
    }
}

crate::named_enum! {
    /// A grant or a withdrawal.
    pub enum ConsentStatus {
        Granted = "GRANTED",
        Withdrawn = "WITHDRAWN",
    }
}

/// One entry of a person's consent ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Consent {
    /// The person (`contacts/{id}`).
    pub contact: Option<Uuid>,
    /// What the data is used for: a lower-case key such as `marketing`, `newsletter`,
    /// `profiling`, `third_party_sharing` (letters, digits, `_`, `-`, `.`).
    pub purpose: String,
    pub channel: ConsentChannel,
    pub status: ConsentStatus,
    /// When the person granted or withdrew it (default: when it is recorded); not later
    /// than now.
    pub effective_time: Option<DateTime<Utc>>,
    /// Where it came from: `web_form`, `phone_call`, `paper_form`, `import`...
    pub source: String,
    /// The evidence: a form submission id, a recording, a signed document's reference.
    pub proof: String,
}

/// The longest purpose key.
const MAX_PURPOSE: usize = 64;
/// The longest proof.
const MAX_PROOF: usize = 2000;
/// How far ahead of the server's clock an entry's time may be (clock differences).
const FUTURE_LEEWAY_SECONDS: i64 = 300;

impl Resource for Consent {
    const COLLECTION: &'static str = "consents";
    const TABLE: &'static str = "consents";
    /// A consent is seen by whoever may read its person, and recorded by whoever may read
    /// the person and has `create` on `consents`.
    const SCOPE_PARENT: Option<(&'static str, &'static str)> = Some(("contact_id", "contacts"));
    const DEFAULT_ORDER: &'static str = "effective_time";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("contact", "contact_id", Kind::Ref("contacts"))
            .filter()
            .immutable(),
        FieldSpec::new("purpose", "purpose", Kind::Text)
            .filter()
            .immutable(),
        FieldSpec::new("channel", "channel", Kind::Enum(ConsentChannel::NAMES))
            .filter()
            .immutable(),
        FieldSpec::new("status", "status", Kind::Enum(ConsentStatus::NAMES))
            .filter()
            .immutable(),
        FieldSpec::new("effective_time", "effective_time", Kind::Time)
            .sort()
            .immutable(),
        FieldSpec::new("source", "source", Kind::Text)
            .filter()
            .immutable(),
        FieldSpec::new("proof", "proof", Kind::Text).immutable(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if self.contact.is_none() {
            v.add("contact", "is required");
        }
        if let Some(p) = v.check(purpose_key("purpose", &self.purpose)) {
            self.purpose = p;
        }
        if let Some(s) = v.check(validate::text(
            "source",
            &self.source,
            validate::MAX_SHORT_CHARS,
            false,
        )) {
            self.source = s;
        }
        if let Some(p) = v.check(validate::text("proof", &self.proof, MAX_PROOF, false)) {
            self.proof = p;
        }
        v.into_result()
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        _id: Uuid,
        old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if old.is_some() {
                return Err(append_only());
            }
            let now = tx.ctx().clock.now();
            match data.effective_time {
                None => data.effective_time = Some(now),
                Some(t) if t > now + chrono::Duration::seconds(FUTURE_LEEWAY_SECONDS) => {
                    return Err(Error::invalid(
                        "effective_time",
                        "must not be in the future",
                    ));
                }
                Some(_) => {}
            }
            Ok(())
        })
    }

    fn after_write<'a>(
        _tx: &'a Tx<'a>,
        action: AuditAction,
        _rec: &'a Record<Self>,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            match action {
                AuditAction::Create => Ok(()),
                _ => Err(append_only()),
            }
        })
    }
}

/// A purpose as entries hold it: trimmed, lower-case, of letters, digits, `_`, `-` and
/// `.`, at most 64 characters; INVALID_ARGUMENT on `field` otherwise.
pub fn purpose_key(field: &str, purpose: &str) -> Result<String> {
    let p = validate::text(field, purpose, MAX_PURPOSE, true)?.to_lowercase();
    if !p
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
    {
        return Err(Error::invalid(
            field,
            "must be a key of letters, digits, '_', '-' and '.' (e.g. marketing)",
        ));
    }
    Ok(p)
}

fn append_only() -> Error {
    Error::failed_precondition(
        "CONSENT_LEDGER_APPEND_ONLY",
        "a consent entry is never changed or removed: record a new grant or withdrawal",
    )
}

/// What holds for a purpose and a channel at a moment, and why.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    /// Whether the person may be approached (or their data used) so.
    pub allowed: bool,
    /// The entry that decides, if any.
    pub entry: Option<&'a Record<Consent>>,
}

/// Decides from a person's ledger (`entries`, any order) whether `purpose` over `channel`
/// is allowed at `at`: the latest entry (by effective time, then by id) for that purpose
/// whose channel is `channel` or ANY, effective at or before `at`, decides; GRANTED allows,
/// WITHDRAWN and no entry do not. Asked for ANY, only entries for every channel count.
pub fn decide<'a>(
    entries: &'a [Record<Consent>],
    purpose: &str,
    channel: ConsentChannel,
    at: DateTime<Utc>,
) -> Decision<'a> {
    let entry = entries
        .iter()
        .filter(|e| e.data.purpose == purpose)
        .filter(|e| e.data.channel == channel || e.data.channel == ConsentChannel::Any)
        .filter(|e| e.data.effective_time.is_some_and(|t| t <= at))
        .max_by_key(|e| (e.data.effective_time, e.meta.id));
    Decision {
        allowed: entry.is_some_and(|e| e.data.status == ConsentStatus::Granted),
        entry,
    }
}

/// The table of consents.
pub const SCHEMA: SchemaChange = SchemaChange::new(
    "m20261208_000001_consents",
    &[
        crate::resource_table!(
            "consents",
            "contact_id UUID NOT NULL, purpose TEXT NOT NULL, channel TEXT NOT NULL, \
             status TEXT NOT NULL, effective_time TIMESTAMPTZ NULL, source TEXT NOT NULL, \
             proof TEXT NOT NULL, \
             FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id)"
        ),
        "CREATE INDEX consents_contact ON consents (tenant_id, contact_id, purpose, effective_time)",
    ],
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::resource::Meta;
    use chrono::TimeZone;

    fn entry(
        n: u128,
        purpose: &str,
        channel: ConsentChannel,
        status: ConsentStatus,
        day: u32,
    ) -> Record<Consent> {
        Record {
            meta: Meta {
                id: Uuid::from_u128(n),
                revision: 1,
                create_time: DateTime::<Utc>::UNIX_EPOCH,
                update_time: DateTime::<Utc>::UNIX_EPOCH,
            },
            data: Consent {
                contact: Some(Uuid::from_u128(1)),
                purpose: purpose.into(),
                channel,
                status,
                effective_time: Some(Utc.with_ymd_and_hms(2026, 1, day, 12, 0, 0).unwrap()),
                ..Default::default()
            },
            hidden: Vec::new(),
        }
    }

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, d, 18, 0, 0).unwrap()
    }

    #[test]
    fn the_latest_entry_for_the_channel_or_every_channel_decides() {
        use ConsentChannel::*;
        use ConsentStatus::*;
        let ledger = vec![
            entry(10, "marketing", Any, Granted, 1),
            entry(11, "marketing", Email, Withdrawn, 3),
            entry(12, "marketing", Any, Withdrawn, 5),
            entry(13, "marketing", Email, Granted, 7),
            entry(14, "newsletter", Email, Granted, 2),
        ];
        // Nothing yet: no.
        assert!(
            !decide(
                &ledger,
                "marketing",
                Email,
                Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
            )
            .allowed
        );
        // Granted for every channel.
        assert!(decide(&ledger, "marketing", Email, day(2)).allowed);
        assert!(decide(&ledger, "marketing", Phone, day(2)).allowed);
        // E-mail withdrawn, the phone still granted.
        let d = decide(&ledger, "marketing", Email, day(4));
        assert!(!d.allowed);
        assert_eq!(d.entry.map(|e| e.meta.id), Some(Uuid::from_u128(11)));
        assert!(decide(&ledger, "marketing", Phone, day(4)).allowed);
        // Everything withdrawn; then e-mail granted again, the phone not.
        assert!(!decide(&ledger, "marketing", Email, day(6)).allowed);
        assert!(decide(&ledger, "marketing", Email, day(8)).allowed);
        assert!(!decide(&ledger, "marketing", Phone, day(8)).allowed);
        // Asked for every channel: only entries for every channel count.
        assert!(decide(&ledger, "marketing", Any, day(2)).allowed);
        assert!(!decide(&ledger, "marketing", Any, day(8)).allowed);
        // Purposes are apart.
        assert!(decide(&ledger, "newsletter", Email, day(8)).allowed);
        assert!(!decide(&ledger, "newsletter", Phone, day(8)).allowed);
        assert!(!decide(&ledger, "profiling", Email, day(8)).allowed);
    }

    #[test]
    fn purposes_are_keys() {
        let mut c = Consent {
            contact: Some(Uuid::from_u128(1)),
            purpose: " Marketing ".into(),
            ..Default::default()
        };
        c.validate().unwrap();
        assert_eq!(c.purpose, "marketing");
        c.purpose = "send me mail!".into();
        assert!(c.validate().is_err());
        c.purpose = String::new();
        assert!(c.validate().is_err());
    }
}
