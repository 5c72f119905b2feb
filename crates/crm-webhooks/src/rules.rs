//! The pure logic of webhooks: target URLs, the body, signatures, the retry schedule and
//! what an answer means. No I/O; time is passed in.

use crm_core::journal::{OutboxEvent, named_refs};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value as Json, json};
use sha2::Sha256;
use std::time::Duration;
use uuid::Uuid;

/// The header with the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "crm-signature";
/// The header with the signing time (unix seconds), also inside the signature header.
pub const TIMESTAMP_HEADER: &str = "crm-timestamp";
/// The header with the event id (the same for every delivery of an event: the key of an
/// idempotent receiver).
pub const EVENT_ID_HEADER: &str = "crm-event-id";
/// The header with the event type, `contacts.updated`.
pub const EVENT_TYPE_HEADER: &str = "crm-event-type";
/// The header with the delivery (`webhookSubscriptions/{s}/deliveries/{d}`).
pub const DELIVERY_HEADER: &str = "crm-delivery";

/// Checks a target URL: absolute `http` or `https`, with a host, without user name,
/// password or fragment, at most [`crate::model::MAX_URL_BYTES`]; returns it normalised.
pub fn check_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is required".into());
    }
    if text.len() > crate::model::MAX_URL_BYTES {
        return Err(format!(
            "must be at most {} bytes",
            crate::model::MAX_URL_BYTES
        ));
    }
    let u = url::Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err("must be an http or https URL".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(
            "must not carry a user name or password (the signature authenticates deliveries)"
                .into(),
        );
    }
    if u.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    Ok(u.to_string())
}

/// The body of a delivery: the event as JSON (see docs/api/webhooks.md), references as
/// resource names.
pub fn body(e: &OutboxEvent) -> String {
    let p = &e.payload;
    let text = |k: &str| {
        p.get(k)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let collection = crm_core::registry::registry().collection(&e.collection);
    let data = match p.get("data").and_then(Json::as_object) {
        Some(d) => {
            let named: Map<String, Json> = d
                .iter()
                .map(|(k, v)| {
                    let v = match collection.and_then(|c| c.field(k)) {
                        Some(f) => named_refs(f.kind, v),
                        None => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            Json::Object(named)
        }
        None => Json::Null,
    };
    let verb = e.event_type.rsplit('.').next().unwrap_or_default();
    json!({
        "id": e.id.to_string(),
        "type": e.event_type,
        "subject": e.subject,
        "tenant": e.tenant,
        "resource_type": e.collection,
        "verb": verb,
        "resource": text("resource"),
        "revision": p.get("revision").and_then(Json::as_i64).unwrap_or_default(),
        "actor": text("actor"),
        "event_time": e.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "changed_fields": p.get("changed_fields").cloned().unwrap_or_else(|| json!([])),
        "data": data,
    })
    .to_string()
}

/// `hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    match signed(secret, timestamp, body) {
        Some(mac) => hex::encode(mac.finalize().into_bytes()),
        None => String::new(),
    }
}

/// The MAC of `"<timestamp>.<body>"`; HMAC takes keys of any length, so it is always
/// `Some`.
fn signed(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The signature header's value: `t=<timestamp>,v1=<signature>`.
pub fn signature_header(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// Why a received delivery was refused by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The header is not `t=<unix seconds>,v1=<hex>[,v1=...]`.
    Malformed,
    /// The timestamp is further from now than the tolerance (a replayed request).
    Stale,
    /// No `v1` signature matches.
    Mismatch,
}

/// What a receiver does: checks the signature header of `body` against `secret` and the
/// timestamp against `now` (unix seconds) within `tolerance_seconds`. Comparisons are in
/// constant time. Several `v1` entries are accepted (any one matching).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| VerifyError::Malformed)?)
            }
            Some(("v1", s)) => signatures.push(hex::decode(s).map_err(|_| VerifyError::Malformed)?),
            _ => {}
        }
    }
    let t = timestamp.ok_or(VerifyError::Malformed)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if (now - t).abs() > tolerance_seconds {
        return Err(VerifyError::Stale);
    }
    for s in signatures {
        if signed(secret, t, body).is_some_and(|m| m.verify_slice(&s).is_ok()) {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

/// The retry schedule: the delay after failed attempt number `attempt` (1-based) is `base`
/// doubled for each earlier failure, at most `max`, less a jitter of up to a quarter fixed
/// per delivery and attempt (deliveries failing together do not all come back at once).
pub fn retry_delay(base: Duration, max: Duration, attempt: u32, delivery: Uuid) -> Duration {
    crm_core::jobs::rules::backoff(base, max, attempt, delivery)
}

/// What the target's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// 410 Gone: the target asks for no more deliveries; the subscription is switched off
    /// and the delivery is dead.
    Gone,
    /// Anything else (3xx, 4xx, 5xx, no answer): tried again later.
    Retry,
}

/// The verdict of an HTTP status.
pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        _ => Verdict::Retry,
    }
}

/// Whether an address is one a production target must not have: loopback, private
/// (RFC 1918, unique local), link-local (cloud metadata), unspecified, multicast,
/// broadcast, documentation or shared (CGNAT) space, and IPv4-mapped forms of them.
pub fn is_private(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_signature_header_carries_the_timestamp_and_verifies() {
        let s = sign(b"whsec_test_secret_123", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(s.len(), 64);
        let h = signature_header(b"whsec_test_secret_123", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(h, format!("t=1700000000,v1={s}"));
        assert_eq!(
            verify(
                b"whsec_test_secret_123",
                &h,
                br#"{"a":1}"#,
                1_700_000_100,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn a_known_vector() {
        // RFC 4231 test case 2.
        let mut m = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // sign() is that HMAC over "<timestamp>.<body>".
        let mut m = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        m.update(b"42.what do ya want for nothing?");
        assert_eq!(
            sign(b"Jefe", 42, b"what do ya want for nothing?"),
            hex::encode(m.finalize().into_bytes())
        );
    }

    #[test]
    fn verification_refuses_tampering_staleness_and_garbage() {
        let secret = b"0123456789abcdef";
        let h = signature_header(secret, 1000, b"body");
        assert_eq!(verify(secret, &h, b"body", 1000, 300), Ok(()));
        assert_eq!(
            verify(secret, &h, b"bodY", 1000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"another-secret-xx", &h, b"body", 1000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(secret, &h, b"body", 1301, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(secret, "", b"body", 1000, 300),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify(secret, "t=x,v1=00", b"body", 1000, 300),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify(secret, "t=1000", b"body", 1000, 300),
            Err(VerifyError::Malformed)
        );
        // A second v1 (a secret being rotated on the receiver's side) may match.
        let two = format!(
            "t=1000,v1={},v1={}",
            "00".repeat(32),
            sign(secret, 1000, b"body")
        );
        assert_eq!(verify(secret, &two, b"body", 1000, 300), Ok(()));
    }

    proptest! {
        #[test]
        fn what_is_signed_verifies(secret in proptest::collection::vec(any::<u8>(), 16..64),
                                   body in proptest::collection::vec(any::<u8>(), 0..512),
                                   t in 0i64..4_000_000_000) {
            let h = signature_header(&secret, t, &body);
            prop_assert_eq!(verify(&secret, &h, &body, t, 0), Ok(()));
        }

        #[test]
        fn verify_never_panics(header in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = verify(b"0123456789abcdef", &header, &body, 0, 300);
        }
    }

    #[test]
    fn the_retry_delay_doubles_up_to_the_cap_with_bounded_jitter() {
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(6 * 3600);
        let id = Uuid::now_v7();
        for attempt in 1..=20u32 {
            let d = retry_delay(base, max, attempt, id);
            let full = base
                .checked_mul(1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX))
                .unwrap_or(max)
                .min(max);
            assert!(d <= full, "attempt {attempt}: {d:?} > {full:?}");
            assert!(
                d >= full.mul_f64(0.75),
                "attempt {attempt}: {d:?} too short"
            );
        }
        // Deterministic per delivery and attempt.
        assert_eq!(retry_delay(base, max, 3, id), retry_delay(base, max, 3, id));
        // Different deliveries spread out.
        let spread: std::collections::HashSet<Duration> = (0..50)
            .map(|_| retry_delay(base, max, 2, Uuid::now_v7()))
            .collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn urls_are_http_without_credentials() {
        assert_eq!(
            check_url(" https://hooks.example.com/crm?x=1 ").unwrap(),
            "https://hooks.example.com/crm?x=1"
        );
        assert!(check_url("http://127.0.0.1:8080/h").is_ok());
        for bad in [
            "",
            "hooks.example.com/x",
            "ftp://example.com/x",
            "https://user:pw@example.com/x",
            "https://user@example.com/x",
            "https://example.com/x#frag",
            "http://",
            "javascript:alert(1)",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn answers_are_judged_by_status() {
        assert_eq!(verdict(200), Verdict::Delivered);
        assert_eq!(verdict(204), Verdict::Delivered);
        assert_eq!(verdict(301), Verdict::Retry);
        assert_eq!(verdict(404), Verdict::Retry);
        assert_eq!(verdict(410), Verdict::Gone);
        assert_eq!(verdict(500), Verdict::Retry);
    }

    #[test]
    fn private_addresses_are_recognised() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }
}
