//! Interactions (C1): every contact with a customer on any channel, inbound or outbound, as a
//! resource on crm-core's engine. Owned (owner/territory give the record scope), so a rep sees
//! the interactions they own and a manager those of their team; timelines are Lists of this
//! collection with a filter, so record scope and field rules apply to them as to any List.
//!
//! `external_id` (the Message-ID of an e-mail, the call id of a call) is unique per tenant and
//! channel among live interactions: intake of the same message twice finds the first one.

use crm_core::error::Result;
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, Kind, Resource};
use crm_core::validate::{self, MAX_SHORT_CHARS, Violations};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crm_core::named_enum! {
    /// The channel an interaction took place on.
    pub enum Channel {
        /// A phone call.
        Phone = "PHONE",
        /// An e-mail.
        Email = "EMAIL",
        /// A chat conversation.
        Chat = "CHAT",
        /// A web form submission.
        WebForm = "WEB_FORM",
        /// A fax.
        Fax = "FAX",
        /// A letter.
        Letter = "LETTER",
        /// An online meeting.
        WebMeeting = "WEB_MEETING",
        /// A visit (in person).
        Visit = "VISIT",
        /// A text message.
        Sms = "SMS"
    }
}

crm_core::named_enum! {
    /// Which way an interaction went, seen from the company.
    pub enum Direction {
        /// The customer reached out.
        Inbound = "INBOUND",
        /// The company reached out.
        Outbound = "OUTBOUND"
    }
}

/// The longest body kept, in bytes (a longer one is cut at a character boundary and
/// `body_truncated` is set); the raw message stays with the mail system.
pub const MAX_BODY_BYTES: usize = 60_000;

/// Most participants kept on one interaction.
pub const MAX_PARTICIPANTS: usize = 100;

/// One participant of an interaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Participant {
    /// E-mail address or E.164 number (or a chat handle).
    pub address: String,
    /// Display name, if known.
    pub display_name: String,
    /// `FROM`, `TO`, `CC`, `BCC` (e-mail), `CALLER`, `CALLEE` (calls), `CUSTOMER`, `AGENT` (chat).
    pub role: String,
    /// The contact the address was matched to, if any.
    pub contact: Option<Uuid>,
}

/// Metadata of an attachment (the bytes stay with the mail system).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attachment {
    /// File name, if given.
    pub name: String,
    /// `type/subtype`.
    pub content_type: String,
    /// Size in bytes.
    pub size: i64,
    /// Shown inline.
    pub inline: bool,
}

/// An interaction with a customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Interaction {
    /// The channel.
    pub channel: Channel,
    /// Inbound or outbound.
    pub direction: Direction,
    /// When it took place (defaults to the time it was recorded).
    pub occurred_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Talk time of calls, length of meetings, in seconds.
    pub duration_seconds: i64,
    /// Subject or title.
    pub subject: String,
    /// The text: an e-mail's plain-text body, a chat transcript, a call summary.
    pub body: String,
    /// Whether the body was cut to [`MAX_BODY_BYTES`].
    pub body_truncated: bool,
    /// Who took part (addresses, names, roles, matched contacts).
    pub participants: Vec<Participant>,
    /// Attachment metadata.
    pub attachments: Vec<Attachment>,
    /// Call outcome (`ANSWERED`, `MISSED`...), empty for other channels.
    pub outcome: String,
    /// The user who handled it.
    pub handled_by: Option<Uuid>,
    /// The contact it concerns.
    pub contact: Option<Uuid>,
    /// The account it concerns.
    pub account: Option<Uuid>,
    /// The lead it concerns.
    pub lead: Option<Uuid>,
    /// The opportunity it concerns.
    pub opportunity: Option<Uuid>,
    /// The service case it belongs to.
    pub case: Option<Uuid>,
    /// The conversation (thread) id: interactions of one e-mail thread share it.
    pub conversation: String,
    /// The channel's own id (Message-ID, call id); unique per tenant and channel.
    pub external_id: String,
    /// Whether a participant was matched to a contact.
    pub matched: bool,
    /// Who owns it (defaults to the creator).
    pub owner: Option<Uuid>,
    /// Territory.
    pub territory: Option<Uuid>,
}

impl Resource for Interaction {
    const COLLECTION: &'static str = "interactions";
    const TABLE: &'static str = "interactions";
    const OWNED: bool = true;
    const DEFAULT_ORDER: &'static str = "occurred_time desc";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("channel", "channel", Kind::Enum(Channel::NAMES)).filter(),
        FieldSpec::new("direction", "direction", Kind::Enum(Direction::NAMES)).filter(),
        FieldSpec::new("occurred_time", "occurred_time", Kind::Time).sort(),
        FieldSpec::new("duration_seconds", "duration_seconds", Kind::Int).filter(),
        FieldSpec::new("subject", "subject", Kind::Text).filter(),
        // Bodies (up to 60,000 bytes, often personal data) stay in the record: the audit trail
        // and events carry their size and SHA-256.
        FieldSpec::new("body", "body", Kind::Text).bulk(),
        FieldSpec::new("body_truncated", "body_truncated", Kind::Bool),
        FieldSpec::new("participants", "participants", Kind::Json),
        FieldSpec::new("attachments", "attachments", Kind::Json),
        FieldSpec::new("outcome", "outcome", Kind::Text).filter(),
        FieldSpec::new("handled_by", "handled_by_id", Kind::Ref("users")).filter(),
        FieldSpec::new("contact", "contact_id", Kind::Ref("contacts")).filter(),
        FieldSpec::new("account", "account_id", Kind::Ref("accounts")).filter(),
        FieldSpec::new("lead", "lead_id", Kind::Ref("leads")).filter(),
        FieldSpec::new("opportunity", "opportunity_id", Kind::Ref("opportunities")).filter(),
        FieldSpec::new("case", "case_id", Kind::Ref("cases")).filter(),
        FieldSpec::new("conversation", "conversation", Kind::Text).filter(),
        FieldSpec::new("external_id", "external_id", Kind::Text)
            .filter()
            .immutable(),
        FieldSpec::new("matched", "matched", Kind::Bool).filter(),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "subject",
            &self.subject,
            MAX_SHORT_CHARS * 3,
            false,
        )) {
            self.subject = s;
        }
        if self.body.len() > MAX_BODY_BYTES {
            v.add("body", format!("must be at most {MAX_BODY_BYTES} bytes"));
        } else if let Some(s) = v.check(validate::text("body", &self.body, MAX_BODY_BYTES, false)) {
            self.body = s;
        }
        if let Some(s) = v.check(validate::text("outcome", &self.outcome, 40, false)) {
            self.outcome = s;
        }
        if let Some(s) = v.check(validate::text(
            "external_id",
            &self.external_id,
            MAX_SHORT_CHARS * 3,
            false,
        )) {
            self.external_id = s;
        }
        if let Some(s) = v.check(validate::text(
            "conversation",
            &self.conversation,
            100,
            false,
        )) {
            self.conversation = s;
        }
        if !(0..=30 * 24 * 3600).contains(&self.duration_seconds) {
            v.add(
                "duration_seconds",
                "must be within 0 and 30 days of seconds",
            );
        }
        if self.participants.len() > MAX_PARTICIPANTS {
            v.add(
                "participants",
                format!("at most {MAX_PARTICIPANTS} participants"),
            );
        }
        for (i, p) in self.participants.iter_mut().enumerate() {
            if let Some(s) = v.check(validate::text(
                &format!("participants[{i}].address"),
                &p.address,
                MAX_SHORT_CHARS,
                false,
            )) {
                p.address = s;
            }
            if let Some(s) = v.check(validate::text(
                &format!("participants[{i}].display_name"),
                &p.display_name,
                MAX_SHORT_CHARS,
                false,
            )) {
                p.display_name = s;
            }
            p.role = p.role.trim().to_ascii_uppercase();
            if p.role.len() > 20 {
                v.add(
                    format!("participants[{i}].role"),
                    "must be at most 20 characters",
                );
            }
        }
        if self.attachments.len() > 1_000 {
            v.add("attachments", "at most 1000 attachments");
        }
        for (i, a) in self.attachments.iter_mut().enumerate() {
            if let Some(s) = v.check(validate::text(
                &format!("attachments[{i}].name"),
                &a.name,
                MAX_SHORT_CHARS,
                false,
            )) {
                a.name = s;
            }
            if let Some(s) = v.check(validate::text(
                &format!("attachments[{i}].content_type"),
                &a.content_type,
                MAX_SHORT_CHARS,
                false,
            )) {
                a.content_type = s;
            }
            if a.size < 0 {
                v.add(format!("attachments[{i}].size"), "must not be negative");
            }
        }
        self.matched =
            self.contact.is_some() || self.participants.iter().any(|p| p.contact.is_some());
        v.into_result()
    }

    fn nested_refs(&self) -> Vec<(String, &'static str, Uuid)> {
        self.participants
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.contact
                    .map(|c| (format!("participants[{i}].contact"), "contacts", c))
            })
            .collect()
    }

    fn before_write<'a>(
        tx: &'a crm_core::service::Tx<'a>,
        _id: Uuid,
        old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> crm_core::resource::HookFuture<'a> {
        Box::pin(async move {
            // Stored NOT NULL: an interaction without a time took place when it was recorded.
            if data.occurred_time.is_none() {
                data.occurred_time = old
                    .and_then(|o| o.occurred_time)
                    .or_else(|| Some(tx.ctx().clock.now()));
            }
            Ok(())
        })
    }
}

/// Truncates `body` to at most [`MAX_BODY_BYTES`] at a character boundary; whether it did.
pub fn bound_body(body: &mut String) -> bool {
    if body.len() <= MAX_BODY_BYTES {
        return false;
    }
    let mut end = MAX_BODY_BYTES;
    while end > 0 && !body.is_char_boundary(end) {
        end -= 1;
    }
    body.truncate(end);
    true
}

/// The interactions table.
pub const SCHEMA: SchemaChange = SchemaChange::new(
    "m20261126_200001_interactions",
    &[
        crm_core::resource_table!(
            "interactions",
            "channel TEXT NOT NULL, direction TEXT NOT NULL, occurred_time TIMESTAMPTZ NOT NULL, \
             duration_seconds BIGINT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, \
             body_truncated BOOLEAN NOT NULL, participants TEXT NOT NULL, \
             attachments TEXT NOT NULL, outcome TEXT NOT NULL, handled_by_id UUID NULL, \
             contact_id UUID NULL, account_id UUID NULL, lead_id UUID NULL, \
             opportunity_id UUID NULL, case_id UUID NULL, conversation TEXT NOT NULL, \
             external_id TEXT NOT NULL, matched BOOLEAN NOT NULL, owner_id UUID NULL, \
             territory_id UUID NULL"
        ),
        // Intake is idempotent: one live interaction per tenant, channel and external id.
        "CREATE UNIQUE INDEX interactions_external ON interactions \
         (tenant_id, channel, external_id) WHERE delete_time IS NULL AND external_id <> ''",
        "CREATE INDEX interactions_contact ON interactions (tenant_id, contact_id, occurred_time)",
        "CREATE INDEX interactions_account ON interactions (tenant_id, account_id, occurred_time)",
        "CREATE INDEX interactions_case ON interactions (tenant_id, case_id, occurred_time)",
        "CREATE INDEX interactions_conversation ON interactions (tenant_id, conversation)",
        "CREATE INDEX interactions_owner ON interactions (tenant_id, owner_id, occurred_time)",
        "CREATE INDEX interactions_created ON interactions (tenant_id, create_time, id)",
    ],
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_cut_at_a_character_boundary() {
        let mut b = "界".repeat(MAX_BODY_BYTES);
        assert!(bound_body(&mut b));
        assert!(b.len() <= MAX_BODY_BYTES);
        assert!(b.chars().all(|c| c == '界'));
        let mut short = "hello".to_string();
        assert!(!bound_body(&mut short));
    }

    #[test]
    fn validation_names_fields_and_derives_matched() {
        let mut i = Interaction {
            duration_seconds: -1,
            ..Default::default()
        };
        let e = i.validate().unwrap_err();
        assert_eq!(e.violations[0].field, "duration_seconds");
        let mut i = Interaction {
            participants: vec![Participant {
                contact: Some(Uuid::now_v7()),
                role: "from".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        i.validate().unwrap();
        assert!(i.matched);
        assert_eq!(i.participants[0].role, "FROM");
    }
}
