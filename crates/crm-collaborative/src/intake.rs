//! Channel intake (C2) and the timeline (C1) on crm-core's engine.
//!
//! - [`ingest_email`]: raw MIME bytes are parsed ([`crate::email::parse_email`]), the sender
//!   and recipients matched to contacts by their normalised e-mail addresses, the message
//!   threaded into a conversation ([`crate::email::thread_key`]) and stored as one
//!   interaction, in one transaction. A Message-ID already ingested returns the interaction
//!   made the first time (idempotent; `created` is false).
//! - [`ingest_call`]: a call record with E.164 numbers, matched by phone.
//! - [`ingest_chat`]: a chat transcript as one interaction with its lines as the body.
//! - [`timeline`]: a contact's or an account's interactions (an account's include those of
//!   its contacts), newest first, as a List of the `interactions` collection with a filter, so
//!   record scope, field rules and keyset paging are the engine's.
//!
//! **Matching** reads crm-core's record keys in the key space `match` (kept for contacts by
//! crm-operational's write observer: `email:<lower-cased address>`, `phone:<E.164>`), as the
//! system; a contact is linked only when the caller may read it, so a link never refers to a
//! record the caller cannot see. Unknown addresses stay unmatched (`matched` false).
//! **Threading** looks up the external ids (Message-IDs) of the interactions named by
//! `In-Reply-To`/`References` through the unique `(channel, external_id)` index, and the
//! normalised subject of replies without those headers in the record keys space `thread`
//! (`subject:<sender>:<normalised subject>`).

use crate::calls::{self, CallDirection, RawCallRecord};
use crate::email::{self, EmailError, EmailLimits, ParsedEmail, ThreadDecision, ThreadId};
use crate::interaction::{Attachment, Channel, Direction, Interaction, Participant, bound_body};
use chrono::{DateTime, Utc};
use crm_core::error::{Error, ErrorKind, Result};
use crm_core::model::{Account, Contact, Position};
use crm_core::resource::{Page, Record, Resource};
use crm_core::service::{Ctx, ListParams, Tx};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// The record-key space crm-operational keeps contacts' match keys in.
pub const MATCH_SPACE: &str = "match";
/// The record-key space of e-mail subjects for threading replies without headers.
pub const THREAD_SPACE: &str = "thread";
/// Most contacts read per key (a shared address such as `info@` matching more is skipped).
const PER_KEY: u64 = 20;
/// Most ids of `In-Reply-To` and `References` looked up.
const MAX_THREAD_IDS: usize = 50;

/// What an intake made or found.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The interaction (as the caller may see it).
    pub interaction: Record<Interaction>,
    /// False when the message was ingested before (idempotent intake).
    pub created: bool,
    /// How it was threaded: `NEW`, `IN_REPLY_TO`, `REFERENCES`, `SUBJECT` or `DUPLICATE`.
    pub threading: String,
}

/// Links an intake may set on the interaction besides what matching finds.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// Direction; e-mail and chat default to INBOUND.
    pub direction: Option<Direction>,
    /// The case it belongs to.
    pub case: Option<Uuid>,
    /// The user who handled it.
    pub handled_by: Option<Uuid>,
    /// The owner (defaults to the caller).
    pub owner: Option<Uuid>,
}

fn email_error(e: EmailError) -> Error {
    Error::invalid("raw", e.to_string().trim_start_matches("raw: ").to_owned())
}

/// Contacts matched to keys: key -> readable contact ids, and each contact's account.
struct Matches {
    by_key: HashMap<String, Uuid>,
    accounts: HashMap<Uuid, Uuid>,
}

/// Finds the contacts having `keys` (match space) that the caller may read, and each one's
/// current account (when the caller may read it too).
async fn match_contacts(tx: &Tx<'_>, keys: &[String]) -> Result<Matches> {
    let mut out = Matches {
        by_key: HashMap::new(),
        accounts: HashMap::new(),
    };
    if keys.is_empty() {
        return Ok(out);
    }
    let found = tx
        .records_with_keys(MATCH_SPACE, keys, &[Contact::COLLECTION], PER_KEY, 50)
        .await?;
    for m in found.records {
        if m.collection != Contact::COLLECTION {
            continue;
        }
        // Only contacts the caller may read are linked.
        match tx.get::<Contact>(m.id).await {
            Ok(_) => {}
            Err(e) if matches!(e.kind, ErrorKind::PermissionDenied | ErrorKind::NotFound) => {
                continue;
            }
            Err(e) => return Err(e),
        }
        // Which of the keys it has: read as the system (the caller may not see every field).
        let Some(c) = tx
            .find::<Contact>(Condition::all().add(Expr::col("id").eq(m.id)), 1)
            .await?
            .into_iter()
            .next()
        else {
            continue;
        };
        let mut own: Vec<String> = c
            .data
            .emails
            .iter()
            .map(|e| format!("email:{}", e.address.to_lowercase()))
            .collect();
        own.extend(c.data.phones.iter().map(|p| format!("phone:{}", p.number)));
        for k in keys {
            if own.contains(k) {
                out.by_key.entry(k.clone()).or_insert(m.id);
            }
        }
        if let Some(a) = current_account(tx, m.id).await? {
            out.accounts.insert(m.id, a);
        }
    }
    Ok(out)
}

/// The account of a contact's current position, if the caller may read it.
async fn current_account(tx: &Tx<'_>, contact: Uuid) -> Result<Option<Uuid>> {
    let positions = tx
        .find::<Position>(
            Condition::all()
                .add(Expr::col("contact_id").eq(contact))
                .add(Expr::col("end_date").is_null()),
            5,
        )
        .await?;
    for p in positions {
        let Some(a) = p.data.account else { continue };
        match tx.get::<Account>(a).await {
            Ok(_) => return Ok(Some(a)),
            Err(e) if matches!(e.kind, ErrorKind::PermissionDenied | ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The live interaction of `channel` with `external_id`, read as the system.
async fn by_external_id(
    tx: &Tx<'_>,
    channel: Channel,
    external_id: &str,
) -> Result<Option<Record<Interaction>>> {
    if external_id.is_empty() {
        return Ok(None);
    }
    Ok(tx
        .find::<Interaction>(
            Condition::all()
                .add(Expr::col("channel").eq(channel.as_str()))
                .add(Expr::col("external_id").eq(external_id)),
            1,
        )
        .await?
        .into_iter()
        .next())
}

/// The existing interaction, as the caller may see it.
async fn existing(ctx: &Ctx, id: Uuid, threading: &str) -> Result<Ingested> {
    Ok(Ingested {
        interaction: ctx.get::<Interaction>(id).await?,
        created: false,
        threading: threading.to_owned(),
    })
}

fn email_key(address: &str) -> String {
    format!("email:{}", address.trim().to_lowercase())
}

fn subject_key(sender: &str, normalised: &str) -> String {
    let s: String = normalised.chars().take(200).collect();
    format!("subject:{}:{s}", sender.trim().to_lowercase())
}

fn thread_of(i: &Interaction) -> Option<ThreadId> {
    Uuid::try_parse(&i.conversation).ok().map(ThreadId)
}

/// Stores an interaction unless its external id exists (then returns that one): the
/// transaction is committed on success.
async fn store(
    ctx: &Ctx,
    tx: Tx<'_>,
    data: Interaction,
    thread_keys: Vec<String>,
    threading: &str,
) -> Result<Ingested> {
    let channel = data.channel;
    let external_id = data.external_id.clone();
    let rec = match tx.create(data).await {
        Ok(r) => r,
        // Ingested concurrently: the first one wins, this one returns it.
        Err(e) if e.kind == ErrorKind::AlreadyExists && !external_id.is_empty() => {
            drop(tx);
            let tx = ctx.begin().await?;
            let found = by_external_id(&tx, channel, &external_id).await?;
            drop(tx);
            return match found {
                Some(r) => existing(ctx, r.meta.id, "DUPLICATE").await,
                None => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    if !thread_keys.is_empty() {
        tx.set_record_keys(
            THREAD_SPACE,
            Interaction::COLLECTION,
            rec.meta.id,
            &thread_keys,
        )
        .await?;
    }
    // Observers of interactions may have linked an unmatched one in this transaction (the
    // lead made for an unknown sender by crm-operational's capture): return it as stored.
    let rec = if rec.data.matched {
        rec
    } else {
        tx.get::<Interaction>(rec.meta.id).await?
    };
    tx.commit().await?;
    Ok(Ingested {
        interaction: rec,
        created: true,
        threading: threading.to_owned(),
    })
}

/// Ingests a raw e-mail (see the module docs). INVALID_ARGUMENT on `raw` when it is not an
/// e-mail or over the limits.
pub async fn ingest_email(ctx: &Ctx, raw: &[u8], links: Links) -> Result<Ingested> {
    let parsed = email::parse_email(raw, &EmailLimits::default()).map_err(email_error)?;
    let direction = links.direction.unwrap_or(Direction::Inbound);
    let tx = ctx.begin().await?;
    if let Some(found) = by_external_id(&tx, Channel::Email, &parsed.message_id).await? {
        drop(tx);
        return existing(ctx, found.meta.id, "DUPLICATE").await;
    }

    // Threading: the conversations of the messages it answers, and of its subject.
    let mut known: HashMap<String, ThreadId> = HashMap::new();
    for id in parsed
        .in_reply_to
        .iter()
        .chain(parsed.references.iter().rev())
        .take(MAX_THREAD_IDS)
    {
        if known.contains_key(id) {
            continue;
        }
        if let Some(r) = by_external_id(&tx, Channel::Email, id).await?
            && let Some(t) = thread_of(&r.data)
        {
            known.insert(id.clone(), t);
        }
    }
    let (subject_norm, _) = email::normalise_subject(parsed.subject.as_deref().unwrap_or(""));
    let mut by_subject: Option<ThreadId> = None;
    let customer = customer_address(&parsed, direction);
    if !subject_norm.is_empty() {
        let key = subject_key(&customer, &subject_norm);
        let found = tx
            .records_with_keys(
                THREAD_SPACE,
                std::slice::from_ref(&key),
                &[Interaction::COLLECTION],
                1_000,
                1,
            )
            .await?;
        if let Some(m) = found.records.first()
            && let Some(r) = tx
                .find::<Interaction>(Condition::all().add(Expr::col("id").eq(m.id)), 1)
                .await?
                .into_iter()
                .next()
        {
            by_subject = thread_of(&r.data);
        }
    }
    let decision = email::thread_key(&parsed, |id| known.get(id).copied(), |_| by_subject);
    let (conversation, threading) = match decision {
        ThreadDecision::Duplicate { .. } => {
            // The own id was looked up above; a twin committed since is the first one.
            drop(tx);
            let tx = ctx.begin().await?;
            let found = by_external_id(&tx, Channel::Email, &parsed.message_id).await?;
            drop(tx);
            return match found {
                Some(r) => existing(ctx, r.meta.id, "DUPLICATE").await,
                None => Err(Error::internal("a duplicate e-mail vanished")),
            };
        }
        ThreadDecision::Join { thread, by } => (
            thread.0,
            match by {
                email::ThreadMatch::InReplyTo => "IN_REPLY_TO",
                email::ThreadMatch::References => "REFERENCES",
                email::ThreadMatch::Subject => "SUBJECT",
            },
        ),
        ThreadDecision::New => (Uuid::now_v7(), "NEW"),
    };

    // Matching: every address of the message.
    let roles: [(&str, &Vec<email::EmailAddress>); 4] = [
        ("FROM", &parsed.from),
        ("TO", &parsed.to),
        ("CC", &parsed.cc),
        ("BCC", &parsed.bcc),
    ];
    let mut keys: Vec<String> = roles
        .iter()
        .flat_map(|(_, list)| list.iter().map(|a| email_key(&a.address)))
        .collect();
    keys.sort();
    keys.dedup();
    keys.truncate(100);
    let matches = match_contacts(&tx, &keys).await?;
    let mut participants = Vec::new();
    for (role, list) in roles {
        for a in list {
            participants.push(Participant {
                address: a.address.chars().take(300).collect(),
                display_name: a
                    .name
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect(),
                role: role.to_owned(),
                contact: matches.by_key.get(&email_key(&a.address)).copied(),
            });
        }
    }
    participants.truncate(crate::interaction::MAX_PARTICIPANTS);
    // The customer: the sender of an inbound message, the first matched recipient of an
    // outbound one.
    let contact = match direction {
        Direction::Inbound => parsed
            .from
            .iter()
            .find_map(|a| matches.by_key.get(&email_key(&a.address)).copied()),
        Direction::Outbound => parsed
            .to
            .iter()
            .chain(parsed.cc.iter())
            .find_map(|a| matches.by_key.get(&email_key(&a.address)).copied()),
    };
    let mut body = parsed.text_body.clone().unwrap_or_default();
    let truncated = bound_body(&mut body);
    let data = Interaction {
        channel: Channel::Email,
        direction,
        occurred_time: Some(parsed.date.unwrap_or_else(|| ctx.clock.now())),
        subject: parsed
            .subject
            .clone()
            .unwrap_or_default()
            .chars()
            .take(900)
            .collect(),
        body,
        body_truncated: truncated,
        participants,
        attachments: parsed
            .attachments
            .iter()
            .take(1_000)
            .map(|a| Attachment {
                name: a
                    .name
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect(),
                content_type: a.content_type.chars().take(300).collect(),
                size: i64::try_from(a.size).unwrap_or(i64::MAX),
                inline: a.inline,
            })
            .collect(),
        contact,
        account: contact.and_then(|c| matches.accounts.get(&c).copied()),
        case: links.case,
        handled_by: links.handled_by,
        owner: links.owner,
        conversation: conversation.to_string(),
        external_id: parsed.message_id.clone(),
        ..Default::default()
    };
    let thread_keys = if subject_norm.is_empty() {
        Vec::new()
    } else {
        vec![subject_key(&customer, &subject_norm)]
    };
    store(ctx, tx, data, thread_keys, threading).await
}

/// The customer's address of a message: the sender of an inbound one, the first recipient of
/// an outbound one (subjects are threaded per customer).
fn customer_address(parsed: &ParsedEmail, direction: Direction) -> String {
    let list = match direction {
        Direction::Inbound => &parsed.from,
        Direction::Outbound => &parsed.to,
    };
    list.first()
        .map(|a| a.address.to_lowercase())
        .unwrap_or_default()
}

/// A call record to ingest.
#[derive(Debug, Clone)]
pub struct CallIntake {
    /// The record as the telephony system delivered it.
    pub record: RawCallRecord,
    /// The telephony system's call id (idempotency); empty derives one from the numbers and
    /// the start time.
    pub call_id: String,
    /// Region national numbers are read in (`DE`, `CN`).
    pub default_region: String,
    /// A summary of the call.
    pub summary: String,
    /// A subject (defaults to "Call from/to <number>").
    pub subject: String,
}

/// Ingests a call record: numbers in E.164, the customer's number matched to a contact.
pub async fn ingest_call(ctx: &Ctx, call: CallIntake, links: Links) -> Result<Ingested> {
    let region = if call.default_region.trim().is_empty() {
        "US"
    } else {
        call.default_region.as_str()
    };
    let rec = calls::normalise_call(&call.record, region)
        .map_err(|e| Error::invalid(e.field, e.message))?;
    let direction = match rec.direction {
        CallDirection::Inbound => Direction::Inbound,
        CallDirection::Outbound => Direction::Outbound,
    };
    let customer = match rec.direction {
        CallDirection::Inbound => rec.from_e164.clone(),
        CallDirection::Outbound => rec.to_e164.clone(),
    };
    let external_id = if call.call_id.trim().is_empty() {
        format!(
            "{}>{}@{}",
            rec.from_e164.as_deref().unwrap_or("withheld"),
            rec.to_e164.as_deref().unwrap_or("withheld"),
            rec.started_at.to_rfc3339()
        )
    } else {
        call.call_id.trim().to_owned()
    };
    let tx = ctx.begin().await?;
    if let Some(found) = by_external_id(&tx, Channel::Phone, &external_id).await? {
        drop(tx);
        return existing(ctx, found.meta.id, "DUPLICATE").await;
    }
    let keys: Vec<String> = customer.iter().map(|n| format!("phone:{n}")).collect();
    let matches = match_contacts(&tx, &keys).await?;
    let contact = keys.first().and_then(|k| matches.by_key.get(k).copied());
    let number_contact = |n: &Option<String>| {
        n.as_ref()
            .and_then(|n| matches.by_key.get(&format!("phone:{n}")).copied())
    };
    let participants = vec![
        Participant {
            address: rec.from_e164.clone().unwrap_or_default(),
            display_name: String::new(),
            role: "CALLER".into(),
            contact: number_contact(&rec.from_e164),
        },
        Participant {
            address: rec.to_e164.clone().unwrap_or_default(),
            display_name: String::new(),
            role: "CALLEE".into(),
            contact: number_contact(&rec.to_e164),
        },
    ];
    let subject = if call.subject.trim().is_empty() {
        match direction {
            Direction::Inbound => format!(
                "Call from {}",
                rec.from_e164.as_deref().unwrap_or("a withheld number")
            ),
            Direction::Outbound => format!(
                "Call to {}",
                rec.to_e164.as_deref().unwrap_or("a withheld number")
            ),
        }
    } else {
        call.subject
    };
    let mut body = call.summary;
    let truncated = bound_body(&mut body);
    let outcome = serde_json::to_value(rec.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let data = Interaction {
        channel: Channel::Phone,
        direction,
        occurred_time: Some(rec.started_at),
        duration_seconds: i64::from(rec.duration_seconds),
        subject,
        body,
        body_truncated: truncated,
        participants,
        outcome,
        contact,
        account: contact.and_then(|c| matches.accounts.get(&c).copied()),
        case: links.case,
        handled_by: links.handled_by,
        owner: links.owner,
        conversation: Uuid::now_v7().to_string(),
        external_id,
        ..Default::default()
    };
    store(ctx, tx, data, Vec::new(), "NEW").await
}

/// One line of a chat.
#[derive(Debug, Clone)]
pub struct ChatLine {
    /// When it was written.
    pub at: DateTime<Utc>,
    /// Who wrote it (a name).
    pub author: String,
    /// Whether the customer wrote it (else an agent or a bot).
    pub from_customer: bool,
    /// The text.
    pub text: String,
}

/// A chat transcript to ingest.
#[derive(Debug, Clone, Default)]
pub struct ChatIntake {
    /// The chat system's id (idempotency); may be empty.
    pub chat_id: String,
    /// The customer's e-mail address, if known (matched to a contact).
    pub customer_email: String,
    /// The customer's name as given in the chat.
    pub customer_name: String,
    /// A subject (defaults to "Chat with <name>").
    pub subject: String,
    /// The lines, in order.
    pub lines: Vec<ChatLine>,
}

/// Most chat lines in one transcript.
pub const MAX_CHAT_LINES: usize = 5_000;

/// Ingests a chat transcript as one interaction.
pub async fn ingest_chat(ctx: &Ctx, chat: ChatIntake, links: Links) -> Result<Ingested> {
    if chat.lines.is_empty() {
        return Err(Error::invalid(
            "lines",
            "a transcript needs at least one line",
        ));
    }
    if chat.lines.len() > MAX_CHAT_LINES {
        return Err(Error::invalid(
            "lines",
            format!("at most {MAX_CHAT_LINES} lines"),
        ));
    }
    let email = if chat.customer_email.trim().is_empty() {
        None
    } else {
        Some(crm_core::validate::email(
            "customer_email",
            &chat.customer_email,
        )?)
    };
    let mut body = String::new();
    let mut first = None::<DateTime<Utc>>;
    let mut last = None::<DateTime<Utc>>;
    for (i, l) in chat.lines.iter().enumerate() {
        let text = crm_core::validate::text(&format!("lines[{i}].text"), &l.text, 10_000, false)?;
        let author =
            crm_core::validate::text(&format!("lines[{i}].author"), &l.author, 200, false)?;
        first = Some(first.map_or(l.at, |f| Ord::min(f, l.at)));
        last = Some(last.map_or(l.at, |f| Ord::max(f, l.at)));
        let who = if author.is_empty() {
            if l.from_customer { "customer" } else { "agent" }.to_owned()
        } else {
            author
        };
        body.push_str(&format!(
            "[{}] {who}: {text}\n",
            l.at.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    let truncated = bound_body(&mut body);
    let external_id = chat.chat_id.trim().to_owned();
    let tx = ctx.begin().await?;
    if let Some(found) = by_external_id(&tx, Channel::Chat, &external_id).await? {
        drop(tx);
        return existing(ctx, found.meta.id, "DUPLICATE").await;
    }
    let keys: Vec<String> = email.iter().map(|e| email_key(e)).collect();
    let matches = match_contacts(&tx, &keys).await?;
    let contact = keys.first().and_then(|k| matches.by_key.get(k).copied());
    let name = crm_core::validate::text("customer_name", &chat.customer_name, 200, false)?;
    let subject = if chat.subject.trim().is_empty() {
        format!(
            "Chat with {}",
            if name.is_empty() {
                email.clone().unwrap_or_else(|| "a visitor".to_owned())
            } else {
                name.clone()
            }
        )
    } else {
        chat.subject
    };
    let duration = match (first, last) {
        (Some(f), Some(l)) => (l - f).num_seconds().clamp(0, 30 * 24 * 3600),
        _ => 0,
    };
    let data = Interaction {
        channel: Channel::Chat,
        direction: links.direction.unwrap_or(Direction::Inbound),
        occurred_time: first,
        duration_seconds: duration,
        subject,
        body,
        body_truncated: truncated,
        participants: vec![Participant {
            address: email.unwrap_or_default(),
            display_name: name,
            role: "CUSTOMER".into(),
            contact,
        }],
        contact,
        account: contact.and_then(|c| matches.accounts.get(&c).copied()),
        case: links.case,
        handled_by: links.handled_by,
        owner: links.owner,
        conversation: Uuid::now_v7().to_string(),
        external_id,
        ..Default::default()
    };
    store(ctx, tx, data, Vec::new(), "NEW").await
}

/// Whose timeline, and which part of it.
#[derive(Debug, Clone, Default)]
pub struct TimelineQuery {
    /// A contact's timeline.
    pub contact: Option<Uuid>,
    /// An account's timeline (its own interactions and its contacts').
    pub account: Option<Uuid>,
    /// Only these channels (empty: all).
    pub channels: Vec<Channel>,
    /// Only this direction.
    pub direction: Option<Direction>,
    /// Interactions at or after this time.
    pub start_time: Option<DateTime<Utc>>,
    /// Interactions before this time.
    pub end_time: Option<DateTime<Utc>>,
    /// A further AIP-160 filter on interactions.
    pub filter: String,
}

/// Most contacts of an account whose interactions a timeline includes.
const MAX_ACCOUNT_CONTACTS: usize = 150;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The filter selecting a timeline's interactions. The subject (contact or account) must
/// exist in the tenant (NOT_FOUND otherwise) and be readable by the caller.
pub async fn timeline_filter(ctx: &Ctx, q: &TimelineQuery) -> Result<String> {
    let mut terms: Vec<String> = Vec::new();
    match (q.contact, q.account) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "account",
                "set either contact or account, not both",
            ));
        }
        (None, None) => return Err(Error::invalid("contact", "set contact or account")),
        (Some(c), None) => {
            ctx.get::<Contact>(c)
                .await
                .map_err(|e| e.in_field("contact"))?;
            terms.push(format!("contact = \"contacts/{c}\""));
        }
        (None, Some(a)) => {
            ctx.get::<Account>(a)
                .await
                .map_err(|e| e.in_field("account"))?;
            let mut who = vec![format!("account = \"accounts/{a}\"")];
            // The account's contacts, as far as the caller may read them.
            let positions = match ctx
                .list::<Position>(&ListParams {
                    page_size: MAX_ACCOUNT_CONTACTS as i32,
                    filter: format!("account = \"accounts/{a}\""),
                    ..Default::default()
                })
                .await
            {
                Ok(p) => p.items,
                Err(e) if e.kind == ErrorKind::PermissionDenied => Vec::new(),
                Err(e) => return Err(e),
            };
            let mut seen = std::collections::BTreeSet::new();
            for p in positions {
                if let Some(c) = p.data.contact
                    && seen.insert(c)
                {
                    who.push(format!("contact = \"contacts/{c}\""));
                }
            }
            terms.push(format!("({})", who.join(" OR ")));
        }
    }
    if !q.channels.is_empty() {
        let mut cs: Vec<&str> = q.channels.iter().map(|c| c.as_str()).collect();
        cs.sort_unstable();
        cs.dedup();
        terms.push(format!(
            "({})",
            cs.iter()
                .map(|c| format!("channel = {c}"))
                .collect::<Vec<_>>()
                .join(" OR ")
        ));
    }
    if let Some(d) = q.direction {
        terms.push(format!("direction = {}", d.as_str()));
    }
    if let (Some(s), Some(e)) = (q.start_time, q.end_time)
        && e <= s
    {
        return Err(Error::invalid("end_time", "must be after start_time"));
    }
    if let Some(s) = q.start_time {
        terms.push(format!("occurred_time >= \"{}\"", rfc3339(s)));
    }
    if let Some(e) = q.end_time {
        terms.push(format!("occurred_time < \"{}\"", rfc3339(e)));
    }
    if !q.filter.trim().is_empty() {
        terms.push(format!("({})", q.filter.trim()));
    }
    Ok(terms.join(" AND "))
}

/// A page of a timeline, newest first (the engine's keyset paging, record scope and field
/// rules apply).
pub async fn timeline(
    ctx: &Ctx,
    q: &TimelineQuery,
    page_size: i32,
    page_token: String,
) -> Result<Page<Interaction>> {
    let filter = timeline_filter(ctx, q).await?;
    ctx.list::<Interaction>(&ListParams {
        page_size,
        page_token,
        filter,
        order_by: "occurred_time desc".to_owned(),
        parent: None,
    })
    .await
}

/// Interactions of a timeline recorded at or after `since` (by `create_time`), oldest first,
/// at most `limit`: what a watch polls for. `filter` comes from [`timeline_filter`].
pub async fn recorded_since(
    ctx: &Ctx,
    filter: &str,
    since: DateTime<Utc>,
    limit: i32,
) -> Result<Vec<Record<Interaction>>> {
    let since = format!("create_time >= \"{}\"", rfc3339(since));
    let filter = if filter.is_empty() {
        since
    } else {
        format!("{filter} AND {since}")
    };
    Ok(ctx
        .list::<Interaction>(&ListParams {
            page_size: limit,
            filter,
            order_by: "create_time".to_owned(),
            ..Default::default()
        })
        .await?
        .items)
}

/// Remembers what a watch has sent, for the overlap window of its polls.
#[derive(Debug, Default)]
pub struct Seen {
    ids: BTreeMap<Uuid, DateTime<Utc>>,
}

impl Seen {
    /// Whether `id` is new (and remembers it).
    pub fn first_time(&mut self, id: Uuid, created: DateTime<Utc>) -> bool {
        self.ids.insert(id, created).is_none()
    }

    /// Forgets ids created before `before`.
    pub fn forget_before(&mut self, before: DateTime<Utc>) {
        self.ids.retain(|_, t| *t >= before);
    }
}
