//! E-mail intake: a raw RFC 5322 / MIME message becomes plain data, threaded into a conversation.
//!
//! [`parse_email`] parses with `mail-parser` 0.11 (charsets such as GBK, Big5 and ISO-2022-JP are
//! decoded by it, with its `full_encoding` feature) and returns a [`ParsedEmail`]: ids for
//! threading, subject, normalised addresses, date, text and HTML bodies, and attachment metadata
//! (never the bytes). [`thread_key`] decides which conversation a message joins.
//!
//! # Rules and limits
//!
//! - **Message-ID**: taken from the header (without angle brackets); when missing or empty, one is
//!   generated from the SHA-256 of the raw bytes (`<hex>@generated.crm.invalid`), so ingesting the
//!   same message twice yields the same id and the store can refuse the twin.
//! - **Addresses**: the domain is lower-cased, the local part kept as written (it may be
//!   case-sensitive), display names kept. Entries without an address (empty groups) are dropped.
//! - **Header injection**: every value taken from a header (ids, subject, names, addresses,
//!   attachment names, content ids) has its CR, LF and other control characters replaced by a
//!   space, so a decoded `=?UTF-8?Q?x=0D=0ABcc:...?=` can never become a header elsewhere.
//! - **Text body**: the plain-text parts; when a message has only HTML, text derived from the HTML
//!   by mail-parser (tags dropped, entities decoded). **HTML body**: the HTML parts, if any.
//! - **Size**: a message larger than [`EmailLimits::max_raw_bytes`] (25 MiB by default, the usual
//!   limit of mail providers) is refused before parsing.
//! - **Depth and parts**: mail-parser walks nested multiparts with a heap stack (a 20,000-deep
//!   nesting parses in milliseconds without growing the call stack), so nested multiparts are
//!   parsed and then refused when deeper than [`EmailLimits::max_mime_depth`] or with more parts
//!   than [`EmailLimits::max_parts`]. Nested *messages* (`message/rfc822`, `message/global`, and
//!   the entries of a `multipart/digest`) are different: mail-parser builds them as nested values,
//!   so a few thousand levels overflow the stack when the value is dropped, and base64-encoded
//!   ones are re-parsed recursively in quadratic time. This module therefore never lets
//!   mail-parser nest messages: before parsing, every `Content-Type` header (found the way
//!   mail-parser finds header names, anywhere a `:` follows the name) that declares a nested
//!   message or a digest is altered in a private copy of the bytes (one letter of its type, same
//!   length) so that the part is read as an opaque attachment. Its metadata still reports the
//!   original content type (`message/rfc822`); its body is not parsed. A header that cannot be
//!   read within 16 KiB is renamed the same way (the part becomes plain text). More `Content-Type`
//!   headers than `max_parts` are refused before parsing.
//!
//! # Threading
//!
//! [`thread_key`] joins the conversation of the message named by `In-Reply-To`, else of the most
//! recent known `References` entry. Only when a message has neither header does it fall back to
//! the subject: the subject with its reply and forward prefixes stripped (`Re:`, `AW:`, `Fwd:`,
//! `回复:`, `答复:`, `转发:`, ...), and only if a prefix was there, so a new message that happens
//! to share a subject never joins an old conversation. A message whose own Message-ID is already
//! known is a duplicate.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use mail_parser::{
    Address, HeaderValue, MessageParser, MessagePart, MimeHeaders, PartType, parsers::MessageStream,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Limits applied to a raw message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailLimits {
    /// Largest raw message accepted, in bytes.
    pub max_raw_bytes: usize,
    /// Deepest nesting of multiparts accepted (a single-part message has depth 0).
    pub max_mime_depth: usize,
    /// Most MIME parts accepted (and most `Content-Type` headers before parsing).
    pub max_parts: usize,
}

impl Default for EmailLimits {
    fn default() -> Self {
        Self {
            max_raw_bytes: 25 * 1024 * 1024,
            max_mime_depth: 32,
            max_parts: 2_000,
        }
    }
}

/// A message refused at intake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// The raw message is larger than allowed.
    #[error("raw: message is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Multiparts are nested deeper than allowed.
    #[error("raw: MIME parts are nested {depth} deep, more than the limit of {max}")]
    TooDeep {
        /// The depth found.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// More parts than allowed.
    #[error("raw: message has {parts} MIME parts or more, more than the limit of {max}")]
    TooManyParts {
        /// The count found (a lower bound when refused before parsing).
        parts: usize,
        /// The limit.
        max: usize,
    },
    /// Not an e-mail: no header was found.
    #[error("raw: not an e-mail message (no header found)")]
    NotAMessage,
}

/// A mailbox: optional display name and address (domain lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmailAddress {
    /// Display name, if any.
    pub name: Option<String>,
    /// `local@domain`, the domain lower-cased.
    pub address: String,
}

/// Metadata of an attachment (the bytes stay in the raw message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentMeta {
    /// File name, if given.
    pub name: Option<String>,
    /// `type/subtype`, lower-case (`application/octet-stream` when not given).
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
    /// Content-ID without angle brackets, for inline images referenced by the HTML.
    pub content_id: Option<String>,
    /// Whether it is shown inline rather than as an attachment.
    pub inline: bool,
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedEmail {
    /// Message-ID without angle brackets (generated when missing, see the module docs).
    pub message_id: String,
    /// Whether `message_id` was generated.
    pub message_id_generated: bool,
    /// `In-Reply-To` ids.
    pub in_reply_to: Vec<String>,
    /// `References` ids, oldest first.
    pub references: Vec<String>,
    /// Subject, decoded.
    pub subject: Option<String>,
    /// `From`.
    pub from: Vec<EmailAddress>,
    /// `Reply-To`.
    pub reply_to: Vec<EmailAddress>,
    /// `To`.
    pub to: Vec<EmailAddress>,
    /// `Cc`.
    pub cc: Vec<EmailAddress>,
    /// `Bcc`.
    pub bcc: Vec<EmailAddress>,
    /// `Date`, if valid.
    pub date: Option<DateTime<Utc>>,
    /// Plain-text body (derived from the HTML when there is only HTML).
    pub text_body: Option<String>,
    /// HTML body, if the message has HTML.
    pub html_body: Option<String>,
    /// Attachments, metadata only.
    pub attachments: Vec<AttachmentMeta>,
}

/// Replaces CR, LF and other control characters by a space, collapses such runs and trims.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for ch in s.chars() {
        if ch.is_control() {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
        pending_space = false;
        out.push(ch);
    }
    out.trim().to_string()
}

fn clean_opt(s: Option<&str>) -> Option<String> {
    s.map(clean).filter(|v| !v.is_empty())
}

fn clean_id(s: &str) -> Option<String> {
    let c = clean(s);
    let c = c.trim_start_matches('<').trim_end_matches('>').trim();
    (!c.is_empty()).then(|| c.to_string())
}

fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => clean_id(t).into_iter().collect(),
        HeaderValue::TextList(list) => list.iter().filter_map(|t| clean_id(t)).collect(),
        _ => Vec::new(),
    }
}

/// Normalises an address: trimmed, domain lower-cased, local part kept.
pub fn normalise_address(address: &str) -> String {
    let a = clean(address);
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            format!(
                "{}@{}",
                local.trim(),
                domain.trim().trim_end_matches('.').to_lowercase()
            )
        }
        None => a,
    }
}

fn addresses(a: Option<&Address<'_>>) -> Vec<EmailAddress> {
    let Some(a) = a else {
        return Vec::new();
    };
    a.iter()
        .filter_map(|addr| {
            let address = addr.address().map(normalise_address)?;
            if address.is_empty() {
                return None;
            }
            Some(EmailAddress {
                name: clean_opt(addr.name()),
                address,
            })
        })
        .collect()
}

/// How many bytes of a `Content-Type` value are read when scanning before the parse.
const CONTENT_TYPE_SCAN_CAP: usize = 16 * 1024;
const CONTENT_TYPE: &[u8] = b"content-type";

/// A `Content-Type` header altered before parsing so that mail-parser does not nest a message.
#[derive(Debug)]
struct Neutralised {
    /// Offset of the header's `:`.
    colon: usize,
    /// The content type it declared (`message/rfc822`), or `None` when it was unreadable.
    original: Option<String>,
}

/// If the bytes before the `:` at `colon` (on the same line, whitespace ignored, as mail-parser
/// reads header names) end with `content-type`, returns the offset of its `c`.
fn content_type_name_before(raw: &[u8], colon: usize) -> Option<usize> {
    let mut want = CONTENT_TYPE.len();
    let mut i = colon;
    while i > 0 && want > 0 {
        i -= 1;
        let b = raw.get(i).copied()?;
        if b == b'\n' {
            return None;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        want -= 1;
        if b.to_ascii_lowercase() != *CONTENT_TYPE.get(want)? {
            return None;
        }
    }
    (want == 0).then_some(i)
}

/// Reads a content-type value starting at `from` the way mail-parser does, within the scan cap.
/// Returns `(type, subtype, value_end)`, or `None` when the value does not end within the cap.
fn read_content_type(raw: &[u8], from: usize) -> Option<(String, String, usize)> {
    let end = from.saturating_add(CONTENT_TYPE_SCAN_CAP).min(raw.len());
    let slice = raw.get(from..end)?;
    let mut stream = MessageStream::new(slice);
    let value = stream.parse_content_type();
    let consumed = stream.offset();
    if consumed >= slice.len() && end < raw.len() {
        return None;
    }
    let (t, s) = match value.as_content_type() {
        Some(ct) => (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or_default().to_ascii_lowercase(),
        ),
        None => (String::new(), String::new()),
    };
    Some((t, s, from + consumed))
}

fn nests(ctype: &str, subtype: &str) -> bool {
    (ctype == "message" && matches!(subtype, "rfc822" | "global"))
        || (ctype == "multipart" && subtype == "digest")
}

/// Alters, in `buf`, the first occurrence of `token` (ASCII case-insensitive) in `range` by
/// replacing its first byte with `x`. Returns whether it found one.
fn alter_token(buf: &mut [u8], from: usize, to: usize, token: &[u8]) -> bool {
    let Some(hay) = buf.get(from..to) else {
        return false;
    };
    let Some(pos) = hay
        .windows(token.len())
        .position(|w| w.eq_ignore_ascii_case(token))
    else {
        return false;
    };
    match buf.get_mut(from + pos) {
        Some(b) => {
            *b = b'x';
            true
        }
        None => false,
    }
}

/// Finds every `Content-Type` header that would make mail-parser nest a message and alters it in
/// a copy of the bytes (same length). Refuses more `Content-Type` headers than `max_parts`.
fn neutralise_nested_messages(
    raw: &[u8],
    max_parts: usize,
) -> Result<(Cow<'_, [u8]>, Vec<Neutralised>), EmailError> {
    let mut candidates = Vec::new();
    for (colon, _) in raw.iter().enumerate().filter(|&(_, &b)| b == b':') {
        if let Some(name_at) = content_type_name_before(raw, colon) {
            candidates.push((colon, name_at));
            if candidates.len() > max_parts {
                return Err(EmailError::TooManyParts {
                    parts: candidates.len(),
                    max: max_parts,
                });
            }
        }
    }
    let mut buf: Option<Vec<u8>> = None;
    let mut done = Vec::new();
    for (colon, name_at) in candidates {
        let current: &[u8] = buf.as_deref().unwrap_or(raw);
        let parsed = read_content_type(current, colon + 1);
        let (original, value_end) = match &parsed {
            Some((t, s, end)) if nests(t, s) => (Some(format!("{t}/{s}")), *end),
            Some(_) => continue,
            None => (None, colon + 1),
        };
        let b = buf.get_or_insert_with(|| raw.to_vec());
        let mut safe = false;
        if let Some((t, s, _)) = &parsed {
            let token: &[u8] = if t == "multipart" {
                b"multipart"
            } else {
                s.as_bytes()
            };
            if alter_token(b, colon + 1, value_end, token) {
                safe = read_content_type(b, colon + 1).is_some_and(|(t2, s2, _)| !nests(&t2, &s2));
            }
        }
        if !safe && let Some(c) = b.get_mut(name_at) {
            // Rename the header: the part then has no content type (plain text).
            *c = b'x';
        }
        done.push(Neutralised { colon, original });
    }
    Ok((buf.map_or(Cow::Borrowed(raw), Cow::Owned), done))
}

/// Deepest multipart nesting of a parsed message, walked without recursion.
fn mime_depth(parts: &[MessagePart<'_>]) -> usize {
    let mut max = 0;
    let mut seen = vec![false; parts.len()];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((id, depth)) = stack.pop() {
        match seen.get_mut(id) {
            Some(s) if !*s => *s = true,
            _ => continue,
        }
        if let Some(PartType::Multipart(children)) = parts.get(id).map(|p| &p.body) {
            let d = depth + 1;
            max = max.max(d);
            stack.extend(children.iter().map(|&c| (c as usize, d)));
        }
    }
    max
}

fn generated_message_id(raw: &[u8]) -> String {
    format!("{}@generated.crm.invalid", hex::encode(Sha256::digest(raw)))
}

/// Parses a raw message within `limits`. See the module docs for the rules.
pub fn parse_email(raw: &[u8], limits: &EmailLimits) -> Result<ParsedEmail, EmailError> {
    if raw.len() > limits.max_raw_bytes {
        return Err(EmailError::TooLarge {
            size: raw.len(),
            max: limits.max_raw_bytes,
        });
    }
    let (bytes, neutralised) = neutralise_nested_messages(raw, limits.max_parts)?;
    let message = MessageParser::default()
        .parse(bytes.as_ref())
        .ok_or(EmailError::NotAMessage)?;
    if message.parts.len() > limits.max_parts {
        return Err(EmailError::TooManyParts {
            parts: message.parts.len(),
            max: limits.max_parts,
        });
    }
    let depth = mime_depth(&message.parts);
    if depth > limits.max_mime_depth {
        return Err(EmailError::TooDeep {
            depth,
            max: limits.max_mime_depth,
        });
    }

    let (message_id, message_id_generated) = match message.message_id().and_then(clean_id) {
        Some(id) => (id, false),
        None => (generated_message_id(raw), true),
    };

    let mut texts: Vec<String> = (0..message.text_body.len())
        .filter_map(|i| message.body_text(i))
        .map(|t| t.into_owned())
        .collect();
    // A broken multipart (its boundary never appears) leaves the text in an unnamed text part
    // that mail-parser files as an attachment: recover it as the body.
    let mut recovered: Vec<u32> = Vec::new();
    if texts.is_empty() && message.html_body.is_empty() {
        for &id in &message.attachments {
            if let Some(part) = message.parts.get(id as usize)
                && let PartType::Text(t) = &part.body
                && part.attachment_name().is_none()
            {
                texts.push(t.to_string());
                recovered.push(id);
            }
        }
    }
    let text_body = (!texts.is_empty()).then(|| texts.join("\n"));
    let has_html = message.html_body.iter().any(|&id| {
        message
            .parts
            .get(id as usize)
            .is_some_and(|p| matches!(p.body, PartType::Html(_)))
    });
    let html_body = has_html.then(|| {
        (0..message.html_body.len())
            .filter_map(|i| message.body_html(i))
            .map(|t| t.into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    });

    let attachments = message
        .attachments
        .iter()
        .filter(|id| !recovered.contains(id))
        .filter_map(|&id| message.parts.get(id as usize))
        .map(|part| {
            let original = neutralised
                .iter()
                .find(|n| {
                    (part.offset_header as usize..part.offset_body as usize).contains(&n.colon)
                })
                .and_then(|n| n.original.clone());
            let content_type = original.unwrap_or_else(|| match part.content_type() {
                Some(ct) => match ct.subtype() {
                    Some(s) => format!("{}/{}", ct.ctype(), s).to_ascii_lowercase(),
                    None => ct.ctype().to_ascii_lowercase(),
                },
                None => "application/octet-stream".to_string(),
            });
            AttachmentMeta {
                name: clean_opt(part.attachment_name()),
                content_type: clean(&content_type),
                size: part.len() as u64,
                content_id: part.content_id().and_then(clean_id),
                inline: matches!(part.body, PartType::InlineBinary(_))
                    || part.content_disposition().is_some_and(|d| d.is_inline()),
            }
        })
        .collect();

    Ok(ParsedEmail {
        message_id,
        message_id_generated,
        in_reply_to: ids(message.in_reply_to()),
        references: ids(message.references()),
        subject: clean_opt(message.subject()),
        from: addresses(message.from()),
        reply_to: addresses(message.reply_to()),
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        bcc: addresses(message.bcc()),
        date: message
            .date()
            .filter(|d| d.is_valid())
            .and_then(|d| DateTime::<Utc>::from_timestamp(d.to_timestamp(), 0)),
        text_body,
        html_body,
        attachments,
    })
}

/// A conversation's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ThreadId(pub Uuid);

/// How a message was matched to a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ThreadMatch {
    /// Its `In-Reply-To`.
    InReplyTo,
    /// An entry of its `References`.
    References,
    /// Its subject (no threading headers).
    Subject,
}

/// Which conversation a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ThreadDecision {
    /// The message itself is already known (same Message-ID): ingesting it again changes nothing.
    Duplicate {
        /// Its conversation.
        thread: ThreadId,
    },
    /// Join an existing conversation.
    Join {
        /// The conversation.
        thread: ThreadId,
        /// How it was found.
        by: ThreadMatch,
    },
    /// Start a new conversation.
    New,
}

const REPLY_PREFIXES: &[&str] = &[
    "re", "aw", "fw", "fwd", "wg", "sv", "vs", "antw", "tr", "rif", "r", "回复", "回覆", "答复",
    "答覆", "转发", "轉寄", "转寄", "返信", "转",
];

/// Strips one reply/forward prefix (`Re:`, `RE[2]:`, `回复：`...) from the start of `s`.
fn strip_one_prefix(s: &str) -> Option<&str> {
    let t = s.trim_start();
    for p in REPLY_PREFIXES {
        let Some(head) = t.get(..p.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(p) {
            continue;
        }
        let mut rest = t.get(p.len()..).unwrap_or_default().trim_start();
        // An optional counter: "Re[2]:" or "Re(2):".
        for (open, close) in [('[', ']'), ('(', ')')] {
            if let Some(after) = rest.strip_prefix(open)
                && let Some(end) = after.find(close)
                && after
                    .get(..end)
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            {
                rest = after
                    .get(end + close.len_utf8()..)
                    .unwrap_or_default()
                    .trim_start();
            }
        }
        if let Some(r) = rest.strip_prefix(':').or_else(|| rest.strip_prefix('：')) {
            return Some(r);
        }
    }
    None
}

/// A subject's threading form: reply/forward prefixes stripped, whitespace collapsed,
/// lower-cased; and whether a prefix was stripped.
pub fn normalise_subject(subject: &str) -> (String, bool) {
    let mut s = subject;
    let mut stripped = false;
    while let Some(rest) = strip_one_prefix(s) {
        s = rest;
        stripped = true;
    }
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    (collapsed.to_lowercase(), stripped)
}

/// Decides the conversation of a message, given lookups of known message ids and of normalised
/// subjects (the store may scope the latter to the sender). See the module docs.
pub fn thread_key(
    parsed: &ParsedEmail,
    by_message_id: impl Fn(&str) -> Option<ThreadId>,
    by_subject: impl Fn(&str) -> Option<ThreadId>,
) -> ThreadDecision {
    if let Some(thread) = by_message_id(&parsed.message_id) {
        return ThreadDecision::Duplicate { thread };
    }
    for id in &parsed.in_reply_to {
        if let Some(thread) = by_message_id(id) {
            return ThreadDecision::Join {
                thread,
                by: ThreadMatch::InReplyTo,
            };
        }
    }
    for id in parsed.references.iter().rev() {
        if let Some(thread) = by_message_id(id) {
            return ThreadDecision::Join {
                thread,
                by: ThreadMatch::References,
            };
        }
    }
    if parsed.in_reply_to.is_empty()
        && parsed.references.is_empty()
        && let Some(subject) = &parsed.subject
    {
        let (key, had_prefix) = normalise_subject(subject);
        if had_prefix
            && !key.is_empty()
            && let Some(thread) = by_subject(&key)
        {
            return ThreadDecision::Join {
                thread,
                by: ThreadMatch::Subject,
            };
        }
    }
    ThreadDecision::New
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn parse(raw: &[u8]) -> ParsedEmail {
        parse_email(raw, &EmailLimits::default()).unwrap()
    }

    fn no_crlf(s: &str) {
        assert!(!s.contains('\r') && !s.contains('\n'), "{s:?}");
    }

    const SIMPLE: &str = "From: \"Li Lei\" <Li.Lei@Example.COM>\r\n\
        To: support@Acme.Example, Bob <bob@EXAMPLE.org>\r\n\
        Cc: undisclosed-recipients:;\r\n\
        Subject: Printer broken\r\n\
        Date: Mon, 12 Jan 2026 10:15:00 +0800\r\n\
        Message-ID: <abc.123@mail.example.com>\r\n\
        In-Reply-To: <prev@mail.example.com>\r\n\
        References: <root@mail.example.com> <prev@mail.example.com>\r\n\
        \r\n\
        Hello, the printer is broken.\r\n";

    #[test]
    fn simple_message() {
        let p = parse(SIMPLE.as_bytes());
        assert_eq!(p.message_id, "abc.123@mail.example.com");
        assert!(!p.message_id_generated);
        assert_eq!(p.in_reply_to, vec!["prev@mail.example.com"]);
        assert_eq!(
            p.references,
            vec!["root@mail.example.com", "prev@mail.example.com"]
        );
        assert_eq!(p.subject.as_deref(), Some("Printer broken"));
        assert_eq!(
            p.from,
            vec![EmailAddress {
                name: Some("Li Lei".into()),
                address: "Li.Lei@example.com".into()
            }]
        );
        assert_eq!(p.to[0].address, "support@acme.example");
        assert_eq!(p.to[1].address, "bob@example.org");
        assert_eq!(p.to[1].name.as_deref(), Some("Bob"));
        assert!(p.cc.is_empty());
        assert_eq!(
            p.date,
            Some(
                DateTime::parse_from_rfc3339("2026-01-12T02:15:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
        assert_eq!(
            p.text_body.as_deref().map(str::trim),
            Some("Hello, the printer is broken.")
        );
        assert_eq!(p.html_body, None);
        assert!(p.attachments.is_empty());
    }

    #[test]
    fn missing_message_id_is_stable() {
        let raw = b"From: a@example.com\r\nSubject: no id\r\n\r\nbody\r\n";
        let a = parse(raw);
        let b = parse(raw);
        assert!(a.message_id_generated);
        assert_eq!(a.message_id, b.message_id);
        assert!(a.message_id.ends_with("@generated.crm.invalid"));
        assert_eq!(a.message_id.len(), 64 + "@generated.crm.invalid".len());
        let other = parse(b"From: a@example.com\r\nSubject: no id\r\n\r\nbody!\r\n");
        assert_ne!(other.message_id, a.message_id);
        // An empty header counts as missing.
        let e = parse(b"From: a@example.com\r\nMessage-ID: <>\r\n\r\nx\r\n");
        assert!(e.message_id_generated);
    }

    #[test]
    fn gbk_subject_and_body() {
        let (subject, _, _) = encoding_rs::GBK.encode("打印机坏了");
        let (body, _, _) = encoding_rs::GBK.encode("您好，打印机无法打印。");
        let mut raw = format!(
            "From: =?GBK?B?{}?= <wang@example.cn>\r\nSubject: =?GBK?B?{}?=\r\n\
             Content-Type: text/plain; charset=GBK\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
            b64(&encoding_rs::GBK.encode("王先生").0),
            b64(&subject)
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        let p = parse(&raw);
        assert_eq!(p.subject.as_deref(), Some("打印机坏了"));
        assert_eq!(p.from[0].name.as_deref(), Some("王先生"));
        assert_eq!(p.text_body.as_deref(), Some("您好，打印机无法打印。"));
    }

    #[test]
    fn big5_subject_and_base64_body() {
        let (subject, _, _) = encoding_rs::BIG5.encode("印表機故障");
        let (body, _, _) = encoding_rs::BIG5.encode("您好，印表機無法列印。");
        let raw = format!(
            "From: chen@example.tw\r\nSubject: =?Big5?B?{}?=\r\n\
             Content-Type: text/plain; charset=\"big5\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            b64(&subject),
            b64(&body)
        );
        let p = parse(raw.as_bytes());
        assert_eq!(p.subject.as_deref(), Some("印表機故障"));
        assert_eq!(p.text_body.as_deref(), Some("您好，印表機無法列印。"));
    }

    #[test]
    fn iso_2022_jp_subject_and_body() {
        let (subject, _, _) = encoding_rs::ISO_2022_JP.encode("プリンターの故障");
        let (body, _, _) = encoding_rs::ISO_2022_JP.encode("こんにちは、印刷できません。");
        let mut raw = format!(
            "From: tanaka@example.jp\r\nSubject: =?ISO-2022-JP?B?{}?=\r\n\
             Content-Type: text/plain; charset=ISO-2022-JP\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
            b64(&subject)
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        let p = parse(&raw);
        assert_eq!(p.subject.as_deref(), Some("プリンターの故障"));
        assert_eq!(p.text_body.as_deref(), Some("こんにちは、印刷できません。"));
    }

    #[test]
    fn html_only_gives_text() {
        let raw = b"From: a@example.com\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
            <html><body><p>Hello <b>world</b> &amp; friends</p><script>x</script></body></html>\r\n";
        let p = parse(raw);
        let html = p.html_body.unwrap();
        assert!(html.contains("<b>world</b>"));
        let text = p.text_body.unwrap();
        assert!(text.contains("Hello world & friends"), "{text:?}");
        assert!(!text.contains('<'));
    }

    #[test]
    fn alternative_with_attachments() {
        let raw = "From: a@example.com\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
            --outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
            --inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain version\r\n\
            --inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML version <img src=\"cid:logo@x\"></p>\r\n\
            --inner--\r\n\
            --outer\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Disposition: inline\r\n\
            Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n\
            --outer\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\n\
            Content-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
            JVBERi0xLjQK\r\n--outer--\r\n";
        let p = parse(raw.as_bytes());
        assert_eq!(p.text_body.as_deref().map(str::trim), Some("Plain version"));
        assert!(p.html_body.unwrap().contains("HTML version"));
        assert_eq!(p.attachments.len(), 2, "{:?}", p.attachments);
        let logo = &p.attachments[0];
        assert_eq!(logo.content_type, "image/png");
        assert_eq!(logo.content_id.as_deref(), Some("logo@x"));
        assert_eq!(logo.size, 8);
        assert!(logo.inline);
        let pdf = &p.attachments[1];
        assert_eq!(pdf.name.as_deref(), Some("invoice.pdf"));
        assert_eq!(pdf.content_type, "application/pdf");
        assert_eq!(pdf.size, 9);
        assert!(!pdf.inline);
    }

    #[test]
    fn broken_boundaries_do_not_fail() {
        // The declared boundary never appears.
        let raw =
            b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"nope\"\r\n\r\n\
            --other\r\nContent-Type: text/plain\r\n\r\nhello\r\n--other--\r\n";
        let p = parse(raw);
        assert!(p.text_body.unwrap_or_default().contains("hello"));
        // No closing boundary, truncated in the middle of a part.
        let raw = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--b\r\nContent-Type: text/plain\r\n\r\nsecond, trunc";
        let p = parse(raw);
        let text = p.text_body.unwrap_or_default();
        assert!(text.contains("first"), "{text:?}");
        // A boundary parameter without a value, and garbage after the headers.
        let raw = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n\x00\xff--\r\n";
        assert!(parse_email(raw, &EmailLimits::default()).is_ok());
    }

    fn nested_multipart(depth: usize) -> Vec<u8> {
        let mut s = String::from("From: a@example.com\r\nSubject: deep\r\n");
        for i in 0..depth {
            s.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
            ));
        }
        s.push_str("Content-Type: text/plain\r\n\r\nhello\r\n");
        for i in (0..depth).rev() {
            s.push_str(&format!("--b{i}--\r\n"));
        }
        s.into_bytes()
    }

    #[test]
    fn thousand_deep_multipart_is_refused_without_overflow() {
        let raw = nested_multipart(1000);
        assert_eq!(
            parse_email(&raw, &EmailLimits::default()).unwrap_err(),
            EmailError::TooDeep {
                depth: 1000,
                max: 32
            }
        );
        // With limits raised it parses (mail-parser walks multiparts without recursion).
        let wide = EmailLimits {
            max_mime_depth: 2000,
            ..EmailLimits::default()
        };
        let p = parse_email(&raw, &wide).unwrap();
        assert_eq!(p.text_body.as_deref().map(str::trim), Some("hello"));
        // Within the default depth it is accepted.
        assert!(parse_email(&nested_multipart(32), &EmailLimits::default()).is_ok());
        // Too many parts is refused before parsing.
        let tight = EmailLimits {
            max_parts: 100,
            ..EmailLimits::default()
        };
        assert!(matches!(
            parse_email(&raw, &tight),
            Err(EmailError::TooManyParts { max: 100, .. })
        ));
    }

    #[test]
    fn deeply_nested_messages_are_opaque_attachments() {
        // 50,000 nested message/rfc822 levels: mail-parser would build 50,000 nested values
        // (and overflow the stack dropping them); here the outermost is an opaque attachment.
        let mut s = String::from("From: a@example.com\r\nSubject: fwd\r\n");
        s.push_str("Content-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\n");
        s.push_str("Content-Type: text/plain\r\n\r\nsee attached\r\n--x\r\n");
        for _ in 0..50_000 {
            s.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        s.push_str("Subject: inner\r\n\r\nhello\r\n--x--\r\n");
        let limits = EmailLimits {
            max_parts: 100_000,
            ..EmailLimits::default()
        };
        let p = parse_email(s.as_bytes(), &limits).unwrap();
        assert_eq!(p.text_body.as_deref().map(str::trim), Some("see attached"));
        assert_eq!(p.attachments.len(), 1);
        assert_eq!(p.attachments[0].content_type, "message/rfc822");
        // With the default limits, that many Content-Type headers are refused before parsing.
        assert!(matches!(
            parse_email(s.as_bytes(), &EmailLimits::default()),
            Err(EmailError::TooManyParts { .. })
        ));
    }

    #[test]
    fn base64_nested_message_is_not_reparsed() {
        let mut inner = String::from("From: b@example.com\r\nSubject: inner\r\n");
        for _ in 0..10_000 {
            inner.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        inner.push_str("Subject: x\r\n\r\nhello\r\n");
        let raw = format!(
            "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n\
             --x\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
             --x\r\nContent-Type: Message/RFC822; name=\"fwd.eml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--x--\r\n",
            b64(inner.as_bytes())
        );
        let start = std::time::Instant::now();
        let p = parse(raw.as_bytes());
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(p.attachments.len(), 1);
        assert_eq!(p.attachments[0].content_type, "message/rfc822");
        assert_eq!(p.attachments[0].name.as_deref(), Some("fwd.eml"));
        assert_eq!(p.attachments[0].size, inner.len() as u64);
    }

    #[test]
    fn tricky_content_type_headers_are_neutralised() {
        // Header name with inner whitespace, folded value, comment, digest.
        for header in [
            "Content-Type:\r\n message/rfc822",
            "Content - Type: message/rfc822",
            "content-type: (comment) MESSAGE/Global",
            "Content-Type: multipart/digest; boundary=\"d\"",
        ] {
            let raw = format!(
                "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n\
                 --x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x\r\n{header}\r\n\r\n\
                 Subject: inner\r\n\r\ninner body\r\n--x--\r\n"
            );
            let p = parse(raw.as_bytes());
            assert_eq!(
                p.text_body.as_deref().map(str::trim),
                Some("hi"),
                "{header}"
            );
            assert_eq!(p.attachments.len(), 1, "{header}");
            let ct = &p.attachments[0].content_type;
            assert!(
                ct == "message/rfc822" || ct == "message/global" || ct == "multipart/digest",
                "{ct}"
            );
        }
        // A boundary glued to the next header (mail-parser reads headers right after it).
        let raw = "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n\
            --xContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n--x--\r\n";
        let (bytes, done) = neutralise_nested_messages(raw.as_bytes(), 10).unwrap();
        assert_eq!(done.len(), 1);
        assert!(
            !String::from_utf8_lossy(&bytes)
                .to_ascii_lowercase()
                .contains("message/rfc822")
        );
        assert!(parse_email(raw.as_bytes(), &EmailLimits::default()).is_ok());
        // An unreadably long value is renamed away.
        let long = format!(
            "From: a@example.com\r\nContent-Type:{}message/rfc822\r\n\r\nbody\r\n",
            "\r\n ".repeat(10_000)
        );
        let (bytes, done) = neutralise_nested_messages(long.as_bytes(), 10).unwrap();
        assert_eq!(done.len(), 1);
        assert!(done[0].original.is_none());
        assert!(String::from_utf8_lossy(&bytes).contains("xontent-Type:"));
    }

    #[test]
    fn too_large_is_refused() {
        let limits = EmailLimits {
            max_raw_bytes: 100,
            ..EmailLimits::default()
        };
        let raw = format!("From: a@example.com\r\n\r\n{}", "x".repeat(200));
        assert_eq!(
            parse_email(raw.as_bytes(), &limits)
                .unwrap_err()
                .to_string(),
            format!(
                "raw: message is {} bytes, more than the limit of 100",
                raw.len()
            )
        );
    }

    #[test]
    fn not_a_message() {
        assert_eq!(
            parse_email(b"", &EmailLimits::default()).unwrap_err(),
            EmailError::NotAMessage
        );
    }

    #[test]
    fn header_injection_is_stripped() {
        let raw = "From: =?UTF-8?Q?Eve=0D=0ABcc:_victim@example.com?= <eve@example.com>\r\n\
            To: support@example.com\r\n\
            Subject: =?UTF-8?Q?Hello=0D=0ABcc:_victim@example.com=0D=0A=0D=0Abody?=\r\n\
            Message-ID: <id=0D=0Ax@example.com>\r\n\
            In-Reply-To: =?UTF-8?Q?<a=0D=0Ab@x>?=\r\n\
            Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
            --b\r\nContent-Type: application/octet-stream\r\n\
            Content-Disposition: attachment; filename*=utf-8''evil%0D%0AX-Header:%20y.txt\r\n\
            Content-ID: <cid=0D=0A@x>\r\n\r\ndata\r\n--b--\r\n";
        let p = parse(raw.as_bytes());
        let subject = p.subject.clone().unwrap();
        no_crlf(&subject);
        assert!(subject.starts_with("Hello Bcc:"), "{subject:?}");
        no_crlf(&p.message_id);
        for a in p.from.iter().chain(&p.to) {
            no_crlf(&a.address);
            no_crlf(a.name.as_deref().unwrap_or_default());
        }
        assert_eq!(
            p.from[0].name.as_deref(),
            Some("Eve Bcc: victim@example.com")
        );
        for id in p.in_reply_to.iter().chain(&p.references) {
            no_crlf(id);
        }
        let att = &p.attachments[0];
        let name = att.name.clone().unwrap();
        no_crlf(&name);
        assert!(name.starts_with("evil"), "{name:?}");
        no_crlf(att.content_id.as_deref().unwrap_or_default());
        assert_eq!(clean("a\r\n\tb\u{0}c"), "a b c");
    }

    #[test]
    fn subject_normalisation() {
        assert_eq!(
            normalise_subject("Re: RE: Fwd:  Printer   broken"),
            ("printer broken".into(), true)
        );
        assert_eq!(
            normalise_subject("AW: WG: Drucker"),
            ("drucker".into(), true)
        );
        assert_eq!(
            normalise_subject("回复: 答复：打印机坏了"),
            ("打印机坏了".into(), true)
        );
        assert_eq!(normalise_subject("Re[2]: x"), ("x".into(), true));
        assert_eq!(normalise_subject("Printer"), ("printer".into(), false));
        assert_eq!(
            normalise_subject("Reply needed"),
            ("reply needed".into(), false)
        );
        assert_eq!(normalise_subject("Re: "), ("".into(), true));
    }

    #[test]
    fn threading() {
        let t1 = ThreadId(Uuid::from_u128(1));
        let t2 = ThreadId(Uuid::from_u128(2));
        let known = |id: &str| match id {
            "prev@mail.example.com" => Some(t1),
            "root@mail.example.com" => Some(t2),
            _ => None,
        };
        let by_subject = |s: &str| (s == "printer broken").then_some(t2);
        let mut p = parse(SIMPLE.as_bytes());
        assert_eq!(
            thread_key(&p, known, by_subject),
            ThreadDecision::Join {
                thread: t1,
                by: ThreadMatch::InReplyTo
            }
        );
        p.in_reply_to = vec!["unknown@x".into()];
        assert_eq!(
            thread_key(&p, known, by_subject),
            ThreadDecision::Join {
                thread: t1,
                by: ThreadMatch::References
            }
        );
        p.references = vec!["root@mail.example.com".into(), "zzz@x".into()];
        assert_eq!(
            thread_key(&p, known, by_subject),
            ThreadDecision::Join {
                thread: t2,
                by: ThreadMatch::References
            }
        );
        // Headers present but unknown: no subject fallback.
        p.references.clear();
        assert_eq!(thread_key(&p, known, by_subject), ThreadDecision::New);
        // No headers: subject fallback, only with a reply prefix.
        p.in_reply_to.clear();
        p.subject = Some("Re: Printer broken".into());
        assert_eq!(
            thread_key(&p, known, by_subject),
            ThreadDecision::Join {
                thread: t2,
                by: ThreadMatch::Subject
            }
        );
        p.subject = Some("Printer broken".into());
        assert_eq!(thread_key(&p, known, by_subject), ThreadDecision::New);
        // The same message again.
        p.message_id = "prev@mail.example.com".into();
        assert_eq!(
            thread_key(&p, known, by_subject),
            ThreadDecision::Duplicate { thread: t1 }
        );
    }
}
