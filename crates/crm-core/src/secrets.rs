//! Sealed secrets: credentials a tenant stores (a mailbox password, an API key of another
//! system) are kept encrypted at rest and never returned by any API.
//!
//! A [`Sealer`] encrypts with ChaCha20-Poly1305 (an AEAD: tampering is detected) under a
//! 256-bit key from the operator's configuration, with a random 96-bit nonce per value. The
//! sealed text is `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`, where the key id is
//! the first 8 hex digits of the key's SHA-256, so keys can be rotated: the current key seals,
//! every listed key opens. Each value is bound to where it is stored through the associated
//! data (use [`Sealer::context`]: tenant, collection, record id and field), so a sealed value
//! copied into another record, field or tenant does not open.
//!
//! The gateway gives its [`Db`](crate::db::Db) a sealer at start ([`Db::with_sealer`](crate::db::Db::with_sealer));
//! domain code takes it with [`Db::sealer`](crate::db::Db::sealer), which answers
//! FAILED_PRECONDITION `SECRETS_NOT_CONFIGURED` when the operator configured none.
//! Store a sealed value in a field declared [`FieldSpec::bulk`](crate::resource::FieldSpec::bulk),
//! so audit records and events keep its size and digest only.
//!
//! ```
//! use crm_core::secrets::Sealer;
//! let sealer = Sealer::new([7u8; 32], &[]);
//! let aad = Sealer::context(uuid::Uuid::nil(), "mailboxAccounts", uuid::Uuid::nil(), "password");
//! let sealed = sealer.seal(&aad, b"hunter2");
//! assert_eq!(sealer.open(&aad, &sealed).unwrap(), b"hunter2");
//! assert!(sealer.open("another place", &sealed).is_err());
//! ```

use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The version prefix of sealed text.
const VERSION: &str = "v1";
/// Nonce length of ChaCha20-Poly1305.
const NONCE_LEN: usize = 12;
/// The longest sealed text opened (a guard against absurd input).
const MAX_SEALED_CHARS: usize = 64 * 1024;

/// One key and its id.
struct Key {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl Key {
    fn new(bytes: [u8; 32]) -> Key {
        let id = hex::encode(&Sha256::digest(bytes)[..4]);
        Key {
            id,
            cipher: ChaCha20Poly1305::new(&bytes.into()),
        }
    }
}

/// Seals and opens secrets (see the module docs).
pub struct Sealer {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.current.id)
            .field("previous_keys", &self.previous.len())
            .finish()
    }
}

impl Sealer {
    /// A sealer that seals with `current` and also opens values sealed with `previous` keys.
    pub fn new(current: [u8; 32], previous: &[[u8; 32]]) -> Sealer {
        Sealer {
            current: Key::new(current),
            previous: previous.iter().map(|k| Key::new(*k)).collect(),
        }
    }

    /// A key derived from a passphrase-like secret (at least 16 bytes), for deployments that
    /// configure one shared secret: SHA-256 over a purpose label and the secret.
    pub fn derive_key(secret: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"crm sealed secrets v1\0");
        h.update(secret.as_bytes());
        h.finalize().into()
    }

    /// Decodes a configured key: standard base64 of exactly 32 bytes.
    pub fn parse_key(text: &str) -> std::result::Result<[u8; 32], String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("is not base64: {e}"))?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| format!("must be 32 bytes, not {}", bytes.len()))
    }

    /// The associated data binding a sealed value to its place.
    pub fn context(tenant: Uuid, collection: &str, id: Uuid, field: &str) -> String {
        format!("{tenant}/{collection}/{id}/{field}")
    }

    /// The id of the key that seals.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plain` for the place `aad`.
    pub fn seal(&self, aad: &str, plain: &[u8]) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        // Encryption with a valid key and nonce cannot fail for in-memory buffers; an empty
        // ciphertext would fail to open and be reported then.
        let ct = self
            .current
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!(
            "{VERSION}.{}.{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(out)
        )
    }

    /// Opens a value sealed for the place `aad`. FAILED_PRECONDITION `SECRET_UNREADABLE` when
    /// it is not sealed text, was sealed with a key not configured, for another place, or was
    /// altered.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>> {
        let bad = |why: &str| {
            Error::failed_precondition(
                "SECRET_UNREADABLE",
                format!("a stored secret cannot be opened: {why}; set it again"),
            )
        };
        if sealed.len() > MAX_SEALED_CHARS {
            return Err(bad("too long"));
        }
        let mut parts = sealed.splitn(3, '.');
        let (Some(version), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not sealed text"));
        };
        if version != VERSION {
            return Err(bad("unknown format"));
        }
        let key = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.id == kid)
            .ok_or_else(|| bad("sealed with a key that is not configured"))?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("not sealed text"))?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(bad("too short"));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| bad("too short"))?;
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| bad("altered, or sealed for another place"))
    }

    /// True when `sealed` was sealed with a key other than the current one (re-seal it).
    pub fn needs_reseal(&self, sealed: &str) -> bool {
        sealed.split('.').nth(1) != Some(self.current.id.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_to_place() {
        let s = Sealer::new([1u8; 32], &[]);
        let a = s.seal("t/c/1/password", b"secret");
        let b = s.seal("t/c/1/password", b"secret");
        assert_ne!(a, b, "a fresh nonce per value");
        assert!(!a.contains("secret"));
        assert_eq!(s.open("t/c/1/password", &a).unwrap(), b"secret");
        assert_eq!(
            s.open("t/c/2/password", &a).unwrap_err().reason,
            "SECRET_UNREADABLE"
        );
        // Any altered character fails.
        let mut altered = a.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(s.open("t/c/1/password", &altered).is_err());
        for junk in [
            "",
            "v1",
            "v1..",
            "v2.x.y",
            "v1.00000000.%%%",
            "v1.abcd.AAAA",
        ] {
            assert!(s.open("t/c/1/password", junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn rotation_opens_old_values_and_seals_with_the_new_key() {
        let old = Sealer::new([1u8; 32], &[]);
        let sealed = old.seal("p", b"x");
        let new = Sealer::new([2u8; 32], &[[1u8; 32]]);
        assert_eq!(new.open("p", &sealed).unwrap(), b"x");
        assert!(new.needs_reseal(&sealed));
        assert!(!new.needs_reseal(&new.seal("p", b"x")));
        let forgotten = Sealer::new([2u8; 32], &[]);
        assert!(forgotten.open("p", &sealed).is_err());
    }

    #[test]
    fn keys_parse_and_derive() {
        let k = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert_eq!(Sealer::parse_key(&k).unwrap(), [9u8; 32]);
        assert!(Sealer::parse_key("c2hvcnQ=").is_err());
        assert!(Sealer::parse_key("not base64!").is_err());
        assert_eq!(Sealer::derive_key("a"), Sealer::derive_key("a"));
        assert_ne!(Sealer::derive_key("a"), Sealer::derive_key("b"));
    }
}
