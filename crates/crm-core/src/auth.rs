//! Who is calling: JWT bearer tokens carrying tenant, user and roles.

use crate::error::{Error, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub user: Uuid,
    pub roles: Vec<String>,
}

/// Claims of a crm token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (a UUID).
    pub sub: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// One audience, or several (RFC 7519 allows both; identity providers send arrays).
    pub aud: Audience,
    pub iss: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// The `aud` claim: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// At most this many roles in a token, each at most this many bytes.
const MAX_TOKEN_ROLES: usize = 100;
const MAX_ROLE_BYTES: usize = 200;

/// Clock skew tolerated between the identity provider and this server, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// How tokens are checked.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// HS256 with a shared secret (development and simple deployments).
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
            issuer,
            audience,
        )
    }

    /// RS256 with the identity provider's public key in PEM form (production).
    pub fn rs256_pem(pem: &[u8], issuer: &str, audience: &str) -> Result<Self> {
        let key = DecodingKey::from_rsa_pem(pem)
            .map_err(|e| Error::internal(format!("bad RS256 public key: {e}")))?;
        Ok(Self::new(key, Algorithm::RS256, issuer, audience))
    }

    fn new(key: DecodingKey, alg: Algorithm, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Self { key, validation }
    }

    /// Verifies a token and returns its principal; every failure is UNAUTHENTICATED.
    pub fn verify(&self, token: &str) -> Result<Principal> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                let (reason, what) = match e.kind() {
                    K::ExpiredSignature => ("TOKEN_EXPIRED", "the token has expired"),
                    K::ImmatureSignature => (
                        "TOKEN_NOT_YET_VALID",
                        "the token is not valid yet (nbf is in the future)",
                    ),
                    K::InvalidAudience => {
                        ("TOKEN_WRONG_AUDIENCE", "the token is for another audience")
                    }
                    K::InvalidIssuer => ("TOKEN_WRONG_ISSUER", "the token is from another issuer"),
                    K::InvalidSignature => {
                        ("TOKEN_BAD_SIGNATURE", "the token signature is invalid")
                    }
                    K::InvalidAlgorithm => {
                        ("TOKEN_BAD_ALGORITHM", "the token algorithm is not accepted")
                    }
                    _ => ("TOKEN_INVALID", "the token is malformed"),
                };
                Error::unauthenticated(reason, what)
            })?;
        let c = data.claims;
        let now = chrono::Utc::now().timestamp();
        if c.iat
            .is_some_and(|iat| iat > now.saturating_add(LEEWAY_SECONDS as i64))
        {
            return Err(Error::unauthenticated(
                "TOKEN_NOT_YET_VALID",
                "the token was issued in the future (iat)",
            ));
        }
        if c.roles.len() > MAX_TOKEN_ROLES
            || c.roles.iter().any(|r| {
                r.is_empty() || r.len() > MAX_ROLE_BYTES || r.chars().any(char::is_control)
            })
        {
            return Err(Error::unauthenticated(
                "TOKEN_INVALID",
                "the token roles are not valid role names",
            ));
        }
        let user = Uuid::try_parse(&c.sub).map_err(|_| {
            Error::unauthenticated("TOKEN_INVALID", "the token subject is not a user id")
        })?;
        crate::validate::tenant_id(&c.tenant).map_err(|_| {
            Error::unauthenticated("TOKEN_INVALID", "the token tenant is not valid")
        })?;
        Ok(Principal {
            tenant: c.tenant,
            user,
            roles: c.roles,
        })
    }
}

/// Mints a token (development: `crm token`, tests, the demo).
pub fn mint_hs256(
    secret: &[u8],
    issuer: &str,
    audience: &str,
    principal: &Principal,
    now: i64,
    ttl_seconds: i64,
) -> Result<String> {
    let claims = Claims {
        sub: principal.user.to_string(),
        tenant: principal.tenant.clone(),
        roles: principal.roles.clone(),
        aud: Audience::One(audience.to_owned()),
        iss: issuer.to_owned(),
        iat: Some(now),
        nbf: None,
        exp: now + ttl_seconds,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| Error::internal(format!("cannot sign token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn principal() -> Principal {
        Principal {
            tenant: "acme".into(),
            user: Uuid::now_v7(),
            roles: vec!["rep".into()],
        }
    }

    #[test]
    fn valid_token_round_trips() -> Result<()> {
        let now = chrono::Utc::now().timestamp();
        let t = mint_hs256(b"s3cret", "crm", "crm-api", &principal(), now, 60)?;
        let p = TokenVerifier::hs256(b"s3cret", "crm", "crm-api").verify(&t)?;
        assert_eq!(p.tenant, "acme");
        assert_eq!(p.roles, vec!["rep".to_string()]);
        Ok(())
    }

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap_or_default()
    }

    #[test]
    fn checks_nbf_iat_audience_arrays_and_roles() {
        let now = chrono::Utc::now().timestamp();
        let v = TokenVerifier::hs256(b"s3cret", "crm", "crm-api");
        let user = Uuid::now_v7().to_string();
        let claims = |extra: serde_json::Value| {
            let mut c = serde_json::json!({"sub": user, "tenant": "acme", "roles": ["rep"],
                "aud": "crm-api", "iss": "crm", "exp": now + 600, "iat": now});
            if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    c.insert(k.clone(), v.clone());
                }
            }
            sign(c)
        };
        let reason = |t: &str| v.verify(t).err().map(|e| e.reason);
        assert_eq!(reason(&claims(serde_json::json!({}))), None);
        assert_eq!(
            reason(&claims(serde_json::json!({"aud": ["other", "crm-api"]}))),
            None
        );
        assert_eq!(
            reason(&claims(serde_json::json!({"aud": ["other"]}))),
            Some("TOKEN_WRONG_AUDIENCE")
        );
        assert_eq!(
            reason(&claims(serde_json::json!({"nbf": now + 3600}))),
            Some("TOKEN_NOT_YET_VALID")
        );
        assert_eq!(reason(&claims(serde_json::json!({"nbf": now - 10}))), None);
        assert_eq!(
            reason(&claims(serde_json::json!({"iat": now + 3600}))),
            Some("TOKEN_NOT_YET_VALID")
        );
        // A few seconds of skew are tolerated.
        assert_eq!(reason(&claims(serde_json::json!({"iat": now + 5}))), None);
        assert_eq!(
            reason(&claims(serde_json::json!({"roles": ["a\u{0}"]}))),
            Some("TOKEN_INVALID")
        );
    }

    #[test]
    fn rejects_expired_wrong_audience_and_bad_signature() -> Result<()> {
        let now = chrono::Utc::now().timestamp();
        let v = TokenVerifier::hs256(b"s3cret", "crm", "crm-api");
        let expired = mint_hs256(b"s3cret", "crm", "crm-api", &principal(), now - 3600, 60)?;
        let other_aud = mint_hs256(b"s3cret", "crm", "other", &principal(), now, 60)?;
        let bad_sig = mint_hs256(b"other", "crm", "crm-api", &principal(), now, 60)?;
        for (t, reason) in [
            (expired.as_str(), "TOKEN_EXPIRED"),
            (other_aud.as_str(), "TOKEN_WRONG_AUDIENCE"),
            (bad_sig.as_str(), "TOKEN_BAD_SIGNATURE"),
            ("garbage", "TOKEN_INVALID"),
            ("", "TOKEN_INVALID"),
        ] {
            let e = v.verify(t).err();
            assert_eq!(e.as_ref().map(|e| e.kind), Some(ErrorKind::Unauthenticated));
            assert_eq!(e.map(|e| e.reason), Some(reason));
        }
        Ok(())
    }
}
