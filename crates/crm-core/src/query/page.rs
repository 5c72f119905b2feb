//! Page sizes and opaque keyset page tokens (AIP-158).

use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 1000;

/// 0 means the default; above the maximum is lowered to it; negative is an error.
pub fn page_size(field: &str, requested: i32) -> Result<u64> {
    match requested {
        n if n < 0 => Err(Error::invalid(field, "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(u64::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)),
    }
}

/// Where the next page starts: the sort values and id of the last row served, bound to the
/// query that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageToken {
    /// Values of the order_by columns of the last row.
    pub v: Vec<Json>,
    /// Id of the last row.
    pub id: String,
    /// Digest of the query (collection, filter, order_by, parent).
    pub q: String,
}

/// Digest binding a token to its query.
pub fn query_digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

impl PageToken {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes a token and checks it belongs to this query.
    pub fn decode(field: &str, token: &str, digest: &str) -> Result<Option<PageToken>> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || Error::invalid(field, "is not a page token from this list");
        if token.len() > 4096 {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let t: PageToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        // A NUL can never have been issued (no stored text holds one), and PostgreSQL
        // refuses it in a parameter: such a token is forged.
        let nul = |v: &Json| v.as_str().is_some_and(|s| s.contains('\0'));
        if t.id.contains('\0') || t.v.iter().any(nul) {
            return Err(bad());
        }
        if t.q != digest {
            return Err(Error::invalid(
                field,
                "was issued for a different filter or order_by",
            ));
        }
        Ok(Some(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(page_size("p", 0).ok(), Some(50));
        assert_eq!(page_size("p", 7).ok(), Some(7));
        assert_eq!(page_size("p", 1_000_000_000).ok(), Some(1000));
        assert!(page_size("p", -1).is_err());
    }

    #[test]
    fn tokens_are_bound_to_their_query() {
        let d = query_digest(&["contacts", "region = \"x\"", ""]);
        let t = PageToken {
            v: vec![Json::String("Ann".into())],
            id: "x".into(),
            q: d.clone(),
        };
        let s = t.encode();
        assert_eq!(
            PageToken::decode("page_token", &s, &d).ok().flatten(),
            Some(t)
        );
        let other = query_digest(&["contacts", "", ""]);
        assert!(PageToken::decode("page_token", &s, &other).is_err());
        assert!(PageToken::decode("page_token", "%%%", &d).is_err());
        assert!(PageToken::decode("page_token", "e30", &d).is_err());
        let forged = PageToken {
            v: vec![Json::String("a\u{0}b".into())],
            id: "x".into(),
            q: d.clone(),
        };
        assert!(PageToken::decode("page_token", &forged.encode(), &d).is_err());
    }

    proptest! {
        #[test]
        fn garbage_tokens_never_panic(s in ".*") {
            let _ = PageToken::decode("page_token", &s, "x");
        }
    }
}
