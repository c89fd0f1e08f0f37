//! ICE servers handed to clients (`--ice-server`): confab needs none (it is ICE-lite with its
//! own candidates, and ICE-TCP on one port reaches networks that block UDP), but an operator who
//! runs a TURN server anyway can give it to every client. TURN credentials are time-limited, per
//! the TURN REST API convention (draft-uberti-behave-turn-rest-00 section 2.2, coturn's
//! `use-auth-secret`): username `<expiry, unix seconds>:<user id>`, password
//! `base64(HMAC-SHA1(shared secret, username))`. The secret never leaves the server.

use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};

/// Shortest TURN shared secret accepted, bytes (the floor of every secret).
pub const MIN_TURN_SECRET: usize = crate::config::secrets::MIN_SECRET_BYTES;

/// One entry of `RTCConfiguration.iceServers`, as the client gets it in `joined` / `resumed`.
pub use confab_protocol::IceServerMsg as IceServer;

/// Why `--ice-server` settings are unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IceConfigError {
    /// Not a `stun:`, `turn:` or `turns:` URL.
    #[error("--ice-server {0:?}: not a stun:, turn: or turns: URL")]
    Scheme(String),
    /// A TURN URL without a shared secret to make credentials with.
    #[error("--ice-server {0:?} is a TURN server: set CONFAB_TURN_SECRET or --turn-secret-file")]
    NoSecret(String),
    /// The shared secret is too short.
    #[error("the TURN secret must be at least {MIN_TURN_SECRET} bytes")]
    ShortSecret,
}

/// The configured ICE servers and the TURN secret.
#[derive(Debug, Default)]
pub struct IceServers {
    stun: Vec<String>,
    turn: Vec<String>,
    secret: Option<SecretString>,
    ttl_s: u64,
}

impl IceServers {
    /// Checks and keeps `urls` (empty: none handed out). TURN URLs need `secret` (at least
    /// [`MIN_TURN_SECRET`] bytes); credentials made from it are valid `ttl_s` seconds.
    pub fn new(
        urls: &[String],
        secret: Option<SecretString>,
        ttl_s: u64,
    ) -> Result<Self, IceConfigError> {
        let mut out = IceServers {
            ttl_s,
            ..Self::default()
        };
        for u in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            let lower = u.to_ascii_lowercase();
            if lower.starts_with("stun:") || lower.starts_with("stuns:") {
                out.stun.push(u.to_owned());
            } else if lower.starts_with("turn:") || lower.starts_with("turns:") {
                match &secret {
                    None => return Err(IceConfigError::NoSecret(u.to_owned())),
                    Some(s) if s.expose_secret().len() < MIN_TURN_SECRET => {
                        return Err(IceConfigError::ShortSecret)
                    }
                    Some(_) => out.turn.push(u.to_owned()),
                }
            } else {
                return Err(IceConfigError::Scheme(u.to_owned()));
            }
        }
        if !out.turn.is_empty() {
            out.secret = secret;
        }
        Ok(out)
    }

    /// The list for `user` at `now_unix` (seconds): the STUN URLs as they are, the TURN URLs
    /// with credentials expiring `ttl_s` later. Empty when none are configured.
    pub fn for_user(&self, user: &str, now_unix: u64) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun.is_empty() {
            out.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if let (false, Some(secret)) = (self.turn.is_empty(), &self.secret) {
            let username = format!("{}:{user}", now_unix.saturating_add(self.ttl_s));
            out.push(IceServer {
                urls: self.turn.clone(),
                credential: Some(turn_password(secret.expose_secret().as_bytes(), &username)),
                username: Some(username),
            });
        }
        out
    }

    /// [`Self::for_user`] now.
    pub fn for_user_now(&self, user: &str) -> Vec<IceServer> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.for_user(user, now)
    }
}

/// `base64(HMAC-SHA1(secret, username))` (TURN REST API, coturn `use-auth-secret`).
pub fn turn_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Option<SecretString> {
        Some(SecretString::from(s.to_owned()))
    }

    #[test]
    fn turn_credentials_follow_the_rest_api_convention() {
        // HMAC-SHA1 test vector (RFC 2202 section 3, case 2) through the same code path.
        assert_eq!(
            turn_password(b"Jefe", "what do ya want for nothing?"),
            base64::engine::general_purpose::STANDARD
                .encode(hex::decode("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79").unwrap())
        );
        let ice = IceServers::new(
            &[
                "stun:stun.example.org:3478".into(),
                "turn:turn.example.org:3478?transport=udp".into(),
            ],
            secret("0123456789abcdef0123456789abcdef"),
            3600,
        )
        .unwrap();
        let list = ice.for_user("u-42", 1_000_000);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].urls, vec!["stun:stun.example.org:3478"]);
        assert!(list[0].username.is_none() && list[0].credential.is_none());
        assert_eq!(list[1].username.as_deref(), Some("1003600:u-42"));
        assert_eq!(
            list[1].credential.as_deref(),
            Some(turn_password(b"0123456789abcdef0123456789abcdef", "1003600:u-42").as_str())
        );
        let json = serde_json::to_string(&list[0]).unwrap();
        assert!(!json.contains("username"), "{json}");
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let turn = vec!["turn:t.example:3478".to_owned()];
        assert_eq!(
            IceServers::new(&turn, None, 60).unwrap_err(),
            IceConfigError::NoSecret("turn:t.example:3478".into())
        );
        assert_eq!(
            IceServers::new(&turn, secret("short"), 60).unwrap_err(),
            IceConfigError::ShortSecret
        );
        assert!(matches!(
            IceServers::new(&["http://x".into()], None, 60),
            Err(IceConfigError::Scheme(_))
        ));
        assert!(IceServers::new(&[], None, 60)
            .unwrap()
            .for_user("u", 0)
            .is_empty());
    }
}
