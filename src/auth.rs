//! Access tokens: HS256 JWTs (RFC 7519) signed with the server's secret. `confab token` and
//! another backend holding the same secret mint them; every WebSocket upgrade and REST route checks
//! one: signature, `exp` (5 s leeway), `iss` = [`ISSUER`] and `aud` = [`AUDIENCE`] (RFC 7519
//! sections 4.1.1 and 4.1.3), and a `role` it knows ([`Role`]; absent: `participant`).

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lifetime of a guest token, seconds (2 h).
pub const GUEST_TOKEN_TTL_S: u64 = 2 * 60 * 60;

/// The `iss` every token carries (a token minted elsewhere with the shared secret must too).
pub const ISSUER: &str = "confab";

/// The `aud` every token carries.
pub const AUDIENCE: &str = "confab";

/// What a token lets its holder do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A participant who may also run the room (host controls).
    Host,
    /// Publishes and subscribes (the default).
    #[default]
    Participant,
    /// Subscribes only: a `publish_offer` is refused (`not_allowed`).
    Viewer,
    /// An operator: may read the admin views (`GET /api/rooms`, `GET /api/rooms/{id}`); in a
    /// room, a participant.
    Admin,
}

impl Role {
    /// `host`, `participant` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Participant => "participant",
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host" => Ok(Role::Host),
            "participant" => Ok(Role::Participant),
            "viewer" => Ok(Role::Viewer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: host, participant, viewer or admin"
            )),
        }
    }
}

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
    /// What the holder may do ([`Role`]); absent: `participant`.
    #[serde(default)]
    pub role: Role,
    /// Issuer: [`ISSUER`].
    #[serde(default)]
    pub iss: String,
    /// Audience: [`AUDIENCE`].
    #[serde(default)]
    pub aud: String,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing token.
    #[error("missing access token")]
    Missing,
    /// A valid token whose `exp` has passed: get a new one.
    #[error("the access token has expired")]
    Expired,
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

    /// Mints a `participant` token for `sub`/`name`, valid `ttl_s` seconds, optionally bound to
    /// `room`.
    pub fn mint(&self, sub: &str, name: &str, ttl_s: u64, room: Option<String>) -> String {
        self.mint_role(sub, name, ttl_s, room, Role::Participant)
    }

    /// [`mint`](Self::mint) with a [`Role`].
    pub fn mint_role(
        &self,
        sub: &str,
        name: &str,
        ttl_s: u64,
        room: Option<String>,
        role: Role,
    ) -> String {
        let iat = now_s();
        let claims = Claims {
            sub: sub.to_owned(),
            name: name.to_owned(),
            exp: iat + ttl_s,
            iat,
            room,
            role,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.secret.expose_secret().as_bytes()),
        )
        .expect("HS256 signing with an in-memory key cannot fail")
    }

    /// Verifies signature, expiry, issuer, audience and role. Errors: [`AuthError::Missing`],
    /// [`AuthError::Expired`] (otherwise valid), [`AuthError::Invalid`] (with the reason: bad
    /// signature, wrong `iss`/`aud`, unknown role, malformed).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        v.validate_exp = true;
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.required_spec_claims = ["exp", "sub", "iss", "aud"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        decode::<Claims>(
            token,
            &DecodingKey::from_secret(self.secret.expose_secret().as_bytes()),
            &v,
        )
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })
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
            role: Role::Participant,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let sign = |c: &Claims| {
            encode(
                &Header::default(),
                c,
                &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            )
            .unwrap()
        };
        assert!(matches!(a.verify(&sign(&claims)), Err(AuthError::Expired)));
        // Valid in time, but for another audience or from another issuer.
        let fresh = Claims {
            exp: now_s() + 60,
            ..claims.clone()
        };
        assert!(a.verify(&sign(&fresh)).is_ok());
        for bad in [
            Claims {
                aud: "other".into(),
                ..fresh.clone()
            },
            Claims {
                iss: "other".into(),
                ..fresh.clone()
            },
        ] {
            assert!(
                matches!(a.verify(&sign(&bad)), Err(AuthError::Invalid(_))),
                "{bad:?}"
            );
        }
        // A role it does not know is refused; no role is a participant.
        let json = serde_json::json!({"sub": "u", "name": "n", "exp": now_s() + 60, "iat": now_s(),
                                      "iss": ISSUER, "aud": AUDIENCE, "role": "root"});
        let t = encode(
            &Header::default(),
            &json,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(a.verify(&t).is_err());
        let t = a.mint_role("u", "n", 60, None, Role::Viewer);
        assert_eq!(a.verify(&t).unwrap().role, Role::Viewer);
    }

    #[test]
    fn the_secret_is_never_printed() {
        let a = authority("super-secret-value-super-secret-v");
        assert!(!format!("{a:?}").contains("super-secret"));
    }
}
