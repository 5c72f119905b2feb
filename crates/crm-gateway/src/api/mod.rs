//! gRPC services: each handler converts and validates, calls the use case, converts back.

pub mod access;
pub mod accounts;
pub mod activities;
pub mod analytics;
pub mod audit;
pub mod cases;
pub mod consents;
pub mod contacts;
pub mod custom_fields;
pub mod directory;
pub mod duplicates;
pub mod events;
pub mod imports;
pub mod leads;
mod macros;
pub mod mailboxes;
pub mod merges;
pub mod operations;
pub mod opportunities;
pub mod orders;
pub mod products;
pub mod timeline;
pub mod webhooks;

use crate::status::{OrStatus, status};
use crm_core::auth::TokenVerifier;
use crm_core::clock::Clock;
use crm_core::db::Db;
use crm_core::error::{Error, Result};
use crm_core::resource::{Record, Resource};
use crm_core::service::{Ctx, ListParams};
use std::sync::Arc;
use tonic::{Request, Status};
use uuid::Uuid;

/// Bearer tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Shared by every service: the database (set once it is migrated), the token verifier, the
/// clock and the policy cache.
#[derive(Clone)]
pub struct Gateway {
    pub db: Arc<std::sync::OnceLock<Db>>,
    pub verifier: Arc<TokenVerifier>,
    pub clock: Arc<dyn Clock>,
    pub policies: Arc<crm_core::tenant::PolicyCache>,
}

impl Gateway {
    /// Authenticates the request and loads the caller's rights.
    pub async fn ctx<T>(&self, req: &Request<T>) -> Result<Ctx, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                status(Error::unauthenticated(
                    "TOKEN_MISSING",
                    "send an authorization: Bearer <token> header",
                ))
            })?
            .to_str()
            .map_err(|_| {
                status(Error::unauthenticated(
                    "TOKEN_INVALID",
                    "the authorization header is not text",
                ))
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                status(Error::unauthenticated(
                    "TOKEN_MISSING",
                    "the authorization header must be Bearer <token>",
                ))
            })?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(status(Error::unauthenticated(
                "TOKEN_TOO_LARGE",
                format!("the bearer token is larger than {MAX_TOKEN_BYTES} bytes"),
            )));
        }
        let principal = verify_token(&self.verifier, token.trim()).or_status()?;
        crate::trace::record_tenant(&principal.tenant);
        let db = self.db.get().ok_or_else(|| {
            status(Error::unavailable(
                "the server is starting: the database is not ready yet",
            ))
        })?;
        let policy = self.policies.authorize(db, &principal).await.or_status()?;
        Ok(Ctx::new(db.clone(), principal, policy, self.clock.clone()))
    }
}

/// Tokens verified in the current second, with their principals.
///
/// Verifying a token (signature, then decoding and checking its claims) is a pure function of
/// the token, the verifier's key and settings, and the clock read in whole seconds (`exp`,
/// `nbf`, `iat`); it cost about a sixth of the gateway's instructions on a GetContact. A
/// success is therefore reused for the rest of the second it was made in (when every clock
/// read of the verification fell in that second), by the same verifier only: within that
/// second verifying again would give the same answer. Failures are never kept, and the whole
/// cache is dropped when the second changes.
struct VerifiedTokens {
    second: u64,
    bytes: usize,
    entries: std::collections::HashMap<String, (Arc<TokenVerifier>, crm_core::auth::Principal)>,
}

/// At most this many bytes of tokens are kept (within one second).
const VERIFIED_TOKENS_MAX_BYTES: usize = 1 << 20;

static VERIFIED_TOKENS: std::sync::Mutex<Option<VerifiedTokens>> = std::sync::Mutex::new(None);

/// The system clock in whole seconds, as the token checks read it.
fn unix_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// [`TokenVerifier::verify`], reusing a success of the same second (see [`VerifiedTokens`]).
fn verify_token(verifier: &Arc<TokenVerifier>, token: &str) -> Result<crm_core::auth::Principal> {
    let now = unix_second();
    if let Ok(cache) = VERIFIED_TOKENS.lock()
        && let Some(c) = cache.as_ref()
        && c.second == now
        && let Some((v, principal)) = c.entries.get(token)
        && Arc::ptr_eq(v, verifier)
    {
        return Ok(principal.clone());
    }
    let principal = verifier.verify(token)?;
    let after = unix_second();
    if after == now
        && let Ok(mut cache) = VERIFIED_TOKENS.lock()
    {
        let c = cache.get_or_insert_with(|| VerifiedTokens {
            second: now,
            bytes: 0,
            entries: std::collections::HashMap::new(),
        });
        if c.second != now {
            c.second = now;
            c.bytes = 0;
            c.entries.clear();
        }
        if c.bytes + token.len() <= VERIFIED_TOKENS_MAX_BYTES {
            c.bytes += token.len();
            c.entries
                .insert(token.to_owned(), (verifier.clone(), principal.clone()));
        }
    }
    Ok(principal)
}

/// A wire message that carries resource `R`.
pub trait Wire<R: Resource>: Sized {
    /// The request field holding the resource, e.g. `contact`.
    const FIELD: &'static str;
    fn into_domain(self) -> Result<R>;
    fn from_record(rec: Record<R>) -> Self;
    /// The resource name (`contacts/{id}`).
    fn name(&self) -> &str;
    fn etag(&self) -> &str;

    /// Parses the id out of a resource name.
    fn parse_id(field: &str, name: &str) -> Result<Uuid> {
        crm_core::ids::parse_name(field, R::COLLECTION, name.trim())
    }
}

pub async fn create<R: Resource, W: Wire<R>>(
    ctx: &Ctx,
    msg: Option<W>,
    request_id: &str,
) -> Result<W, Status> {
    let msg = crate::convert::required(W::FIELD, msg).or_status()?;
    let data = msg
        .into_domain()
        .map_err(|e| e.in_field(W::FIELD))
        .or_status()?;
    let rec = ctx
        .create(data, request_id)
        .await
        .map_err(|e| e.in_field(W::FIELD))
        .or_status()?;
    Ok(W::from_record(rec))
}

pub async fn get<R: Resource, W: Wire<R>>(ctx: &Ctx, name: &str) -> Result<W, Status> {
    let id = W::parse_id("name", name).or_status()?;
    ctx.get::<R>(id).await.map(W::from_record).or_status()
}

pub async fn update<R: Resource, W: Wire<R>>(
    ctx: &Ctx,
    msg: Option<W>,
    mask: Option<prost_types::FieldMask>,
) -> Result<W, Status> {
    let msg = crate::convert::required(W::FIELD, msg).or_status()?;
    let id = W::parse_id(&format!("{}.name", W::FIELD), msg.name()).or_status()?;
    let etag = msg.etag().to_owned();
    let mask = crate::convert::mask(mask);
    let data = msg
        .into_domain()
        .map_err(|e| e.in_field(W::FIELD))
        .or_status()?;
    let rec = ctx
        .update(id, data, &mask, &etag)
        .await
        .map_err(|e| e.in_field(W::FIELD))
        .or_status()?;
    Ok(W::from_record(rec))
}

pub async fn delete<R: Resource, W: Wire<R>>(
    ctx: &Ctx,
    name: &str,
    etag: &str,
) -> Result<(), Status> {
    let id = W::parse_id("name", name).or_status()?;
    ctx.delete::<R>(id, etag).await.or_status()
}

pub async fn list<R: Resource, W: Wire<R>>(
    ctx: &Ctx,
    params: ListParams,
) -> Result<(Vec<W>, String), Status> {
    let page = ctx.list::<R>(&params).await.or_status()?;
    Ok((
        page.items.into_iter().map(W::from_record).collect(),
        page.next_page_token,
    ))
}

pub fn params(page_size: i32, page_token: String, filter: String, order_by: String) -> ListParams {
    ListParams {
        page_size,
        page_token,
        filter,
        order_by,
        parent: None,
    }
}

/// How long a streaming watch waits for one poll of the database.
pub(crate) const WATCH_POLL_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// One poll of a streaming watch, bounded by [`WATCH_POLL_BOUND`]: its value, or `None` once
/// its error (UNAVAILABLE when the database did not answer in time) was sent to the client.
pub(crate) async fn watch_poll<T, M>(
    tx: &tokio::sync::mpsc::Sender<std::result::Result<M, Status>>,
    poll: impl std::future::Future<Output = Result<T>>,
) -> Option<T> {
    let e = match tokio::time::timeout(WATCH_POLL_BOUND, poll).await {
        Ok(Ok(v)) => return Some(v),
        Ok(Err(e)) => e,
        Err(_) => Error::unavailable("the database did not answer the watch's poll"),
    };
    let _ = tx.send(Err(status(e))).await;
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crm_core::auth::{Principal, mint_hs256};

    fn principal(tenant: &str) -> Principal {
        Principal {
            tenant: tenant.into(),
            user: Uuid::now_v7(),
            roles: vec!["admin".into()],
        }
    }

    #[test]
    fn verified_tokens_are_reused_only_by_their_verifier() {
        let v = Arc::new(TokenVerifier::hs256(b"one", "crm", "crm-api"));
        let other = Arc::new(TokenVerifier::hs256(b"two", "crm", "crm-api"));
        let p = principal("cache-a");
        let now = chrono::Utc::now().timestamp();
        let token = mint_hs256(b"one", "crm", "crm-api", &p, now, 3600).unwrap();
        assert_eq!(verify_token(&v, &token).unwrap(), p);
        assert_eq!(verify_token(&v, &token).unwrap(), p);
        // Another key never accepts it, cached or not.
        assert!(verify_token(&other, &token).is_err());
        assert_eq!(verify_token(&v, &token).unwrap(), p);
    }

    #[test]
    fn failures_are_not_kept() {
        let v = Arc::new(TokenVerifier::hs256(b"one", "crm", "crm-api"));
        let p = principal("cache-b");
        let now = chrono::Utc::now().timestamp();
        let expired = mint_hs256(b"one", "crm", "crm-api", &p, now - 7200, 60).unwrap();
        for _ in 0..2 {
            let e = verify_token(&v, &expired).unwrap_err();
            assert_eq!(e.reason, "TOKEN_EXPIRED");
        }
        let bad = format!("{expired}x");
        assert!(verify_token(&v, &bad).is_err());
    }
}
