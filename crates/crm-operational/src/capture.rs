//! Leads from unknown senders: an inbound e-mail or call that matched no contact (intake,
//! crm-collaborative's `interactions`) becomes a lead, by the tenant's policy.
//!
//! The tenant's active [`LeadCapturePolicy`] says which channels capture (e-mail senders,
//! callers) and which addresses never do (`noreply@*`, a partner's domain...). Without an
//! active policy, unknown senders stay unmatched. The write observer [`capture`] runs in the
//! interaction's own write transaction, so the interaction, its lead and the link between
//! them commit together or not at all:
//!
//! 1. only a new, inbound, unmatched `EMAIL` or `PHONE` interaction without a lead is looked
//!    at; its sender is the `FROM` (e-mail) or `CALLER` (call) participant;
//! 2. an address ignored by the policy (or by the built-in list: mailer daemons, postmasters,
//!    no-reply addresses) is left alone;
//! 3. a lead that already has the address (crm-core's record keys, space `match`) takes the
//!    interaction: a second message from the same stranger makes no second lead;
//! 4. else a lead is created **as the system** ([`Tx::create_as_system`]: the tenant's rule
//!    acts, whatever the rights of the agent or mailbox owner whose intake it is), graded,
//!    checked for duplicates and routed like any new lead, with the policy's source and
//!    the message's subject in its notes;
//! 5. the interaction is linked to the lead ([`Tx::link`]), audited as an update.
//!
//! A lead the tenant's own rules refuse (a duplicate policy that blocks it, say) is not
//! made, and the interaction stays unmatched: intake never fails because of capture.

use crate::lead::Lead;
use crm_core::error::{ErrorKind, Result};
use crm_core::journal::AuditAction;
use crm_core::model::{Email, Phone};
use crm_core::registry::WriteEvent;
use crm_core::resource::{FieldSpec, HookFuture, Kind, Resource};
use crm_core::service::Tx;
use crm_core::validate::{self, Violations};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

/// The collection of interactions (crm-collaborative's), observed by name.
pub const INTERACTIONS: &str = "interactions";
/// Addresses never captured, whatever the policy says.
pub const ALWAYS_IGNORED: &[&str] = &[
    "mailer-daemon@*",
    "postmaster@*",
    "noreply@*",
    "no-reply@*",
    "donotreply@*",
    "do-not-reply@*",
];
/// Most patterns a policy may list.
pub const MAX_PATTERNS: usize = 500;

/// A tenant's policy for unknown senders (see the module docs). At most one is active.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeadCapturePolicy {
    /// A name for people.
    pub display_name: String,
    /// Whether intake follows this policy.
    pub active: bool,
    /// Unknown e-mail senders become leads.
    pub email_senders: bool,
    /// Unknown callers become leads.
    pub callers: bool,
    /// Addresses (e-mail addresses or E.164 numbers) never captured: `*` matches any run of
    /// characters, case-insensitively (`*@partner.example`, `+8610*`).
    pub ignore: Vec<String>,
    /// The source of captured leads; empty: `email` or `phone` by channel.
    pub source: String,
}

impl Resource for LeadCapturePolicy {
    const COLLECTION: &'static str = "leadCapturePolicies";
    const TABLE: &'static str = "lead_capture_policies";
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("active", "active", Kind::Bool).filter(),
        FieldSpec::new("email_senders", "email_senders", Kind::Bool),
        FieldSpec::new("callers", "callers", Kind::Bool),
        FieldSpec::new("ignore", "ignore_patterns", Kind::Json),
        FieldSpec::new("source", "source", Kind::Text),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            validate::MAX_SHORT_CHARS,
            true,
        )) {
            self.display_name = s;
        }
        if self.ignore.len() > MAX_PATTERNS {
            v.add("ignore", format!("at most {MAX_PATTERNS} patterns"));
        } else {
            for (i, p) in self.ignore.iter_mut().enumerate() {
                let t = p.trim().to_lowercase();
                if t.is_empty() || t.len() > 320 || t.chars().any(char::is_control) {
                    v.add(
                        format!("ignore[{i}]"),
                        "must be 1-320 characters without control characters",
                    );
                } else if t.chars().all(|c| c == '*') {
                    v.add(
                        format!("ignore[{i}]"),
                        "would ignore every address: switch the channel off instead",
                    );
                } else {
                    *p = t;
                }
            }
        }
        let source = self.source.trim().to_lowercase();
        if source.len() > 100 || source.chars().any(char::is_control) {
            v.add(
                "source",
                "at most 100 characters without control characters",
            );
        } else {
            self.source = source;
        }
        v.into_result()
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        id: Uuid,
        _old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if data.active {
                let off = LeadCapturePolicy {
                    active: false,
                    ..Default::default()
                };
                crate::active::deactivate_others(tx, id, off).await?;
            }
            Ok(())
        })
    }
}

/// The lead capture policies table.
pub const SCHEMA: crm_core::registry::SchemaChange = crm_core::registry::SchemaChange::new(
    "m20261205_100002_lead_capture_policies",
    &[
        crm_core::resource_table!(
            "lead_capture_policies",
            "display_name TEXT NOT NULL, active BOOLEAN NOT NULL, email_senders BOOLEAN NOT NULL, \
             callers BOOLEAN NOT NULL, ignore_patterns TEXT NOT NULL, source TEXT NOT NULL"
        ),
        "CREATE INDEX lead_capture_policies_active ON lead_capture_policies (tenant_id, active)",
    ],
);

/// Whether `address` (lower-cased) matches the glob `pattern` (`*` any run, lower-cased).
pub fn matches_pattern(pattern: &str, address: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == address;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !address.starts_with(first) || address.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &address[first.len()..];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether the policy (or the built-in list) ignores `address`.
pub fn ignored(policy: &LeadCapturePolicy, address: &str) -> bool {
    let a = address.trim().to_lowercase();
    ALWAYS_IGNORED
        .iter()
        .copied()
        .chain(policy.ignore.iter().map(String::as_str))
        .any(|p| matches_pattern(p, &a))
}

/// The sender of an interaction worth capturing: channel, address, display name, subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stranger {
    /// `EMAIL` or `PHONE`.
    pub channel: &'static str,
    /// The e-mail address (lower-cased) or E.164 number.
    pub address: String,
    /// The display name the message gave, if any.
    pub display_name: String,
    /// The subject (e-mail) or outcome (call).
    pub subject: String,
}

/// The stranger of a newly created interaction (its stored JSON object), if it is one
/// capture looks at: inbound, unmatched, no lead yet, e-mail or call with a sender.
pub fn stranger_of(o: &Map<String, Json>) -> Option<Stranger> {
    let s = |f: &str| o.get(f).and_then(Json::as_str).unwrap_or_default();
    let (channel, role) = match s("channel") {
        "EMAIL" => ("EMAIL", "FROM"),
        "PHONE" => ("PHONE", "CALLER"),
        _ => return None,
    };
    if s("direction") != "INBOUND"
        || o.get("matched").and_then(Json::as_bool) != Some(false)
        || o.get("lead").is_some_and(|l| !l.is_null())
    {
        return None;
    }
    let sender = o
        .get("participants")?
        .as_array()?
        .iter()
        .find(|p| p.get("role").and_then(Json::as_str) == Some(role))?;
    let address = sender.get("address")?.as_str()?.trim().to_lowercase();
    if address.is_empty() {
        return None;
    }
    Some(Stranger {
        channel,
        address,
        display_name: sender
            .get("display_name")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned(),
        subject: if channel == "EMAIL" {
            s("subject")
        } else {
            s("outcome")
        }
        .to_owned(),
    })
}

/// The lead made for a stranger.
pub fn lead_for(policy: &LeadCapturePolicy, st: &Stranger) -> Lead {
    let mut lead = Lead {
        source: if policy.source.is_empty() {
            if st.channel == "EMAIL" {
                "email"
            } else {
                "phone"
            }
            .to_owned()
        } else {
            policy.source.clone()
        },
        notes: if st.subject.is_empty() {
            format!("First contact by {}", st.channel.to_lowercase())
        } else {
            format!(
                "First contact by {}: {}",
                st.channel.to_lowercase(),
                st.subject
            )
        },
        ..Default::default()
    };
    let name: String = st
        .display_name
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    lead.display_name = if name.is_empty() {
        st.address.clone()
    } else {
        name
    };
    if st.channel == "EMAIL" {
        lead.emails = vec![Email {
            address: st.address.clone(),
            label: String::new(),
        }];
    } else {
        lead.phones = vec![Phone {
            number: st.address.clone(),
            ..Default::default()
        }];
    }
    // Notes are bounded like any lead's.
    lead.notes = lead.notes.chars().take(1_000).collect();
    lead
}

/// The write observer of interactions (see the module docs).
pub fn capture<'a>(tx: &'a Tx<'a>, e: WriteEvent<'a>) -> HookFuture<'a> {
    Box::pin(async move {
        if e.action != AuditAction::Create {
            return Ok(());
        }
        let Some(st) = stranger_of(e.record) else {
            return Ok(());
        };
        let Some(policy) = crate::active::active::<LeadCapturePolicy>(tx).await? else {
            return Ok(());
        };
        let policy = policy.data;
        let wanted = match st.channel {
            "EMAIL" => policy.email_senders,
            _ => policy.callers,
        };
        if !wanted || ignored(&policy, &st.address) {
            return Ok(());
        }
        let key = if st.channel == "EMAIL" {
            format!("email:{}", st.address)
        } else {
            format!("phone:{}", st.address)
        };
        let known = tx
            .records_with_keys(
                crate::dedupe::KEY_SPACE,
                std::slice::from_ref(&key),
                &[Lead::COLLECTION],
                50,
                1,
            )
            .await?;
        let lead = match known.records.first() {
            Some(m) => m.id,
            None => match tx.create_as_system(lead_for(&policy, &st)).await {
                Ok(rec) => rec.meta.id,
                // The tenant's rules refused it (validation, a blocking duplicate policy):
                // the interaction stays unmatched.
                Err(err)
                    if matches!(
                        err.kind,
                        ErrorKind::InvalidArgument
                            | ErrorKind::FailedPrecondition
                            | ErrorKind::AlreadyExists
                    ) =>
                {
                    tracing::info!(
                        interaction = %e.id,
                        reason = err.reason,
                        "no lead captured for an unknown sender: {}",
                        err.message
                    );
                    return Ok(());
                }
                Err(err) => return Err(err),
            },
        };
        tx.link(INTERACTIONS, e.id, "lead", lead).await?;
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns_match_like_globs() {
        for (p, a, m) in [
            ("noreply@*", "noreply@shop.example", true),
            ("noreply@*", "reply@shop.example", false),
            ("*@partner.example", "li@partner.example", true),
            ("*@partner.example", "li@partner.example.com", false),
            ("+8610*", "+861012345678", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxc", false),
            ("a*a", "a", false),
            ("exact@x.example", "exact@x.example", true),
        ] {
            assert_eq!(matches_pattern(p, a), m, "{p} {a}");
        }
        let p = LeadCapturePolicy::default();
        assert!(ignored(&p, "MAILER-DAEMON@mx.example"));
        assert!(!ignored(&p, "li.lei@example.com"));
    }

    fn interaction(channel: &str, direction: &str, matched: bool, role: &str) -> Map<String, Json> {
        json!({
            "channel": channel, "direction": direction, "matched": matched, "lead": null,
            "subject": "Quote please", "outcome": "",
            "participants": [
                {"address": "Li.Lei@Example.com", "display_name": "Li Lei", "role": role},
                {"address": "sales@acme.example", "display_name": "", "role": "TO"}
            ]
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn only_new_inbound_unmatched_senders_are_strangers() {
        let st = stranger_of(&interaction("EMAIL", "INBOUND", false, "FROM")).unwrap();
        assert_eq!(st.address, "li.lei@example.com");
        assert_eq!(st.display_name, "Li Lei");
        assert!(stranger_of(&interaction("EMAIL", "OUTBOUND", false, "FROM")).is_none());
        assert!(stranger_of(&interaction("EMAIL", "INBOUND", true, "FROM")).is_none());
        assert!(stranger_of(&interaction("CHAT", "INBOUND", false, "CUSTOMER")).is_none());
        assert!(stranger_of(&interaction("PHONE", "INBOUND", false, "FROM")).is_none());
        assert!(stranger_of(&interaction("PHONE", "INBOUND", false, "CALLER")).is_some());
        let mut linked = interaction("EMAIL", "INBOUND", false, "FROM");
        linked.insert("lead".into(), json!(Uuid::nil().to_string()));
        assert!(stranger_of(&linked).is_none());
    }

    #[test]
    fn a_lead_for_a_stranger_is_valid() {
        let st = stranger_of(&interaction("EMAIL", "INBOUND", false, "FROM")).unwrap();
        let mut lead = lead_for(&LeadCapturePolicy::default(), &st);
        assert_eq!(lead.source, "email");
        assert_eq!(lead.display_name, "Li Lei");
        assert_eq!(lead.emails[0].address, "li.lei@example.com");
        assert!(lead.notes.contains("Quote please"));
        lead.validate().unwrap();
        let policy = LeadCapturePolicy {
            source: "support-inbox".into(),
            ..Default::default()
        };
        let anonymous = Stranger {
            display_name: String::new(),
            ..st
        };
        let lead = lead_for(&policy, &anonymous);
        assert_eq!(lead.source, "support-inbox");
        assert_eq!(lead.display_name, "li.lei@example.com");
    }

    #[test]
    fn policies_validate_patterns() {
        let mut p = LeadCapturePolicy {
            display_name: "Inbox".into(),
            ignore: vec![" *@Partner.example ".into()],
            ..Default::default()
        };
        p.validate().unwrap();
        assert_eq!(p.ignore, vec!["*@partner.example".to_owned()]);
        p.ignore = vec!["**".into()];
        let e = p.validate().unwrap_err();
        assert_eq!(e.violations[0].field, "ignore[0]");
    }
}
