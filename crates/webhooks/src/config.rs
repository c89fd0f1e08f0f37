//! Settings of the delivery side: the signing secret, the endpoints, pacing and the retry policy.

use std::time::Duration;

use base64::Engine;
use confab_store::EndpointKind;
use secrecy::{ExposeSecret, SecretString};

/// Environment variable holding the signing secret (`whsec_<base64>`).
pub const SECRET_ENV: &str = "CONFAB_WEBHOOK_SECRET";
/// Environment variable naming a file that holds the signing secret.
pub const SECRET_FILE_ENV: &str = "CONFAB_WEBHOOK_SECRET_FILE";
/// Fewest bytes a decoded secret may have (Standard Webhooks: 24 to 64 bytes).
pub const MIN_SECRET_BYTES: usize = 24;
/// Most bytes a decoded secret may have.
pub const MAX_SECRET_BYTES: usize = 64;

/// Why the webhook settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Endpoints are configured but no secret is.
    #[error("webhook URLs are set but neither {SECRET_ENV} nor {SECRET_FILE_ENV} is")]
    MissingSecret,
    /// The secret is not `whsec_` + base64 of 24 to 64 bytes.
    #[error("bad webhook secret: {0}")]
    BadSecret(String),
    /// The secret file cannot be read.
    #[error("cannot read {SECRET_FILE_ENV}: {0}")]
    SecretFile(std::io::Error),
    /// An endpoint URL is not an absolute `http://` URL.
    #[error("bad webhook URL {url:?}: {why}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// Timing settings that would let two workers deliver one row at once.
    #[error("webhook settings: {0}")]
    Timing(String),
}

/// The Standard Webhooks signing secret: `whsec_` followed by the standard base64 of 24 to 64
/// random bytes (spec section "Signature scheme"). `Debug` is redacted.
#[derive(Clone)]
pub struct WebhookSecret(SecretString);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`. Errors: [`ConfigError::BadSecret`] for a missing prefix, bad
    /// base64, or fewer than [`MIN_SECRET_BYTES`] / more than [`MAX_SECRET_BYTES`] bytes.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        let Some(b64) = s.strip_prefix("whsec_") else {
            return Err(ConfigError::BadSecret(
                "it must start with whsec_ (Standard Webhooks form)".into(),
            ));
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| ConfigError::BadSecret(format!("not base64 after whsec_: {e}")))?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(ConfigError::BadSecret(format!(
                "{} bytes; it must have {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES}",
                key.len()
            )));
        }
        Ok(Self(SecretString::from(s.to_owned())))
    }

    /// From [`SECRET_ENV`], else the file named by [`SECRET_FILE_ENV`]; `None` when neither is set.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        if let Ok(s) = std::env::var(SECRET_ENV) {
            return Self::parse(&s).map(Some);
        }
        match std::env::var(SECRET_FILE_ENV) {
            Ok(path) => {
                let s = std::fs::read_to_string(path).map_err(ConfigError::SecretFile)?;
                Self::parse(&s).map(Some)
            }
            Err(_) => Ok(None),
        }
    }

    /// The signer for this secret.
    pub(crate) fn signer(&self) -> standardwebhooks::Webhook {
        standardwebhooks::Webhook::new(self.0.expose_secret())
            .expect("checked to be base64 in parse")
    }
}

/// Checks that `url` is an absolute `http://` or `https://` URL with a host. An `https://`
/// endpoint's certificate is checked against the system's trust roots (on Linux the
/// `ca-certificates` bundle; `SSL_CERT_FILE` names another).
pub fn check_url(url: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::BadUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "http" | "https" => {}
        _ => return Err(bad("not an http:// or https:// URL")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(())
}

/// Exponential back-off with a cap and jitter, forever: the delay after the `n`-th consecutive
/// failure is `min(initial × 2^(n-1), max_delay)` minus up to `jitter` of itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// The longest wait between two attempts (before jitter).
    pub max_delay: Duration,
    /// Fraction of each delay taken off at random, in `[0, 1]`.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 2 s, 4 s, 8 s … capped at 10 min, 20 % jitter; no last attempt.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(2),
            max_delay: Duration::from_secs(600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th consecutive failure (1-based) with a uniform `sample` in
    /// `[0, 1)` (clamped) for the jitter.
    pub fn delay(&self, failures: u32, sample: f64) -> Duration {
        let factor = 2u32
            .checked_pow(failures.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        let base = self.initial.saturating_mul(factor).min(self.max_delay);
        base.mul_f64(1.0 - self.jitter.clamp(0.0, 1.0) * sample.clamp(0.0, 1.0))
    }
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Endpoints, in the order given: `--webhook-url` ones (standard) and `--langdao-events-url`
    /// (langdao).
    pub endpoints: Vec<(String, EndpointKind)>,
    /// The signing secret.
    pub secret: WebhookSecret,
    /// Bound of one HTTP request (connect + send + response head).
    pub timeout: Duration,
    /// How long a claimed row stays reserved to one worker; at least 3 × `timeout` (an attempt
    /// never outlasts its request, so no two workers post one row at once).
    pub lease: Duration,
    /// Rows claimed (and posted concurrently) per pass.
    pub batch: i64,
    /// Sleep between passes when nobody wakes the worker.
    pub idle_poll: Duration,
    /// Retry policy.
    pub backoff: Backoff,
    /// Delivered and expired rows are deleted this long after they were last changed.
    pub retention: Duration,
}

impl DeliveryConfig {
    /// Defaults around the given endpoints and secret: 10 s timeout, 60 s lease, 32 rows a pass,
    /// 1 s idle poll, [`Backoff::default`], 7 days retention.
    pub fn new(endpoints: Vec<(String, EndpointKind)>, secret: WebhookSecret) -> Self {
        Self {
            endpoints,
            secret,
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            batch: 32,
            idle_poll: Duration::from_secs(1),
            backoff: Backoff::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// Checks every URL and that the lease outlasts an attempt. Errors: [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (url, _) in &self.endpoints {
            check_url(url)?;
        }
        if self.lease < self.timeout.saturating_mul(3) {
            return Err(ConfigError::Timing(format!(
                "the lease ({:?}) must be at least 3 × the request timeout ({:?})",
                self.lease, self.timeout
            )));
        }
        if self.backoff.initial.is_zero() || self.batch < 1 {
            return Err(ConfigError::Timing(
                "the first retry delay and the batch must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standard_secret_parses_and_short_or_prefixless_ones_are_refused() {
        assert!(WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
        assert!(WebhookSecret::parse("").is_err());
        assert!(WebhookSecret::parse("whsec_").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err());
        assert!(WebhookSecret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err());
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        assert_eq!(
            format!(
                "{:?}",
                WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap()
            ),
            "WebhookSecret(<redacted>)"
        );
    }

    #[test]
    fn only_absolute_http_urls_are_endpoints() {
        assert!(check_url("http://127.0.0.1:9000/hooks").is_ok());
        assert!(check_url("https://example.com/hooks").is_ok());
        assert!(check_url("ftp://example.com/hooks").is_err());
        assert!(check_url("ftp://example.com/").is_err());
        assert!(check_url("/relative").is_err());
    }

    #[test]
    fn back_off_doubles_to_its_cap_and_never_ends() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            jitter: 0.5,
        };
        let d: Vec<u64> = (1..=6).map(|n| b.delay(n, 0.0).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(10));
        assert_eq!(b.delay(4, 1.0), Duration::from_secs(4));
    }

    #[test]
    fn a_lease_shorter_than_three_timeouts_is_refused() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let mut c = DeliveryConfig::new(vec![("http://h/".into(), EndpointKind::Standard)], secret);
        assert!(c.validate().is_ok());
        c.lease = Duration::from_secs(20);
        assert!(c.validate().is_err());
    }
}
