//! Access tokens: HS256 JWTs (RFC 7519) signed with the server's secret. `confab token` and
//! another backend holding the same secret mint them; every WebSocket upgrade checks one.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lifetime of a guest token, seconds (2 h).
pub const GUEST_TOKEN_TTL_S: u64 = 2 * 60 * 60;

/// The claims confab reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Subject: the user id.
    pub sub: String,
    /// Display name.
    pub name: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// If set, the token only admits to this room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing token.
    #[error("missing access token")]
    Missing,
    /// Bad signature, malformed, or expired.
    #[error("invalid access token: {0}")]
    Invalid(String),
}

/// Signs and checks tokens. The secret never appears in `Debug` output.
#[derive(Clone)]
pub struct TokenAuthority {
    secret: SecretString,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAuthority { secret: [redacted] }")
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenAuthority {
    /// An authority with `secret` (at least 32 bytes recommended).
    pub fn new(secret: SecretString) -> Self {
        Self { secret }
    }

    /// Mints a token for `sub`/`name`, valid `ttl_s` seconds, optionally bound to `room`.
    pub fn mint(&self, sub: &str, name: &str, ttl_s: u64, room: Option<String>) -> String {
        let iat = now_s();
        let claims = Claims {
            sub: sub.to_owned(),
            name: name.to_owned(),
            exp: iat + ttl_s,
            iat,
            room,
        };
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.secret.expose_secret().as_bytes()),
        )
        .expect("HS256 signing with an in-memory key cannot fail")
    }

    /// Verifies signature and expiry. Errors: [`AuthError`].
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        v.validate_exp = true;
        v.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        decode::<Claims>(
            token,
            &DecodingKey::from_secret(self.secret.expose_secret().as_bytes()),
            &v,
        )
        .map(|d| d.claims)
        .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(s: &str) -> TokenAuthority {
        TokenAuthority::new(SecretString::from(s.to_owned()))
    }

    #[test]
    fn a_minted_token_verifies_and_a_forged_one_does_not() {
        let a = authority("0123456789abcdef0123456789abcdef");
        let t = a.mint("u1", "Ada", 60, None);
        assert_eq!(a.verify(&t).unwrap().name, "Ada");
        assert!(authority("another-secret-another-secret-xx")
            .verify(&t)
            .is_err());
        assert!(a.verify("").is_err());
        assert!(a.verify("a.b.c").is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let a = authority("0123456789abcdef0123456789abcdef");
        let claims = Claims {
            sub: "u".into(),
            name: "n".into(),
            exp: now_s() - 60,
            iat: now_s() - 120,
            room: None,
        };
        let t = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(a.verify(&t).is_err());
    }

    #[test]
    fn the_secret_is_never_printed() {
        let a = authority("super-secret-value-super-secret-v");
        assert!(!format!("{a:?}").contains("super-secret"));
    }
}
