//! Sign-In with Ethereum ([EIP-4361](https://eips.ethereum.org/EIPS/eip-4361)): the nonces this
//! server hands out and the checks a signed sign-in message must pass before the HTTP layer
//! mints an access token whose subject is the wallet's EIP-55 address.
//!
//! Parsing and EIP-191 signature recovery are the `siwe` crate's (k256, the curve code the lock
//! already carries); this module adds what the crate leaves to the relying party: which domain
//! and URI are ours, nonce issue and single use, and the time window, each refusal with its own
//! stable code ([`SiweError::code`]). Only externally owned accounts sign in: EIP-1271 contract
//! wallets would need a chain call per sign-in (the crate's `ethers` feature) and are refused as
//! `bad_signature`.
//!
//! Owns: the nonce store, behind a `std::sync::Mutex` held for a map lookup and never across
//! `.await`. Nothing here is logged; callers must not log the message, its nonce or the
//! signature either.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an issued nonce can be used (5 min). A sign-in message must reach the server within
/// this of `GET /api/auth/siwe/nonce`.
pub const NONCE_TTL: Duration = Duration::from_secs(5 * 60);

/// Most nonces remembered at once (issued, used or expired). Past it the oldest is forgotten, so
/// a flood of nonce requests costs bounded memory; a forgotten nonce is then `unknown_nonce`.
/// The per-IP rate limit of the routes keeps one client from cycling the store quickly.
pub const NONCE_CAPACITY: usize = 10_000;

/// Length of a nonce: 22 characters of `[A-Za-z0-9]`, ≈131 bits of randomness (EIP-4361
/// section "Message Field Descriptions" asks for at least 8 alphanumeric characters).
pub const NONCE_LEN: usize = 22;

/// How far in the future `Issued At` and `Not Before` may lie, seconds: the signer's clock may run
/// ahead of ours by this much. `Expiration Time` gets no such slack.
pub const CLOCK_SKEW_S: i64 = 60;

/// Longest sign-in message accepted, bytes. A wallet-made EIP-4361 message is a few hundred bytes;
/// the slack is for a statement and a few resources.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Why a sign-in was refused. Each variant has one stable [`code`](SiweError::code); the HTTP layer
/// maps them to statuses in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiweError {
    /// `malformed_message`: not an EIP-4361 message (missing or misplaced fields, a non-EIP-55
    /// address, a bad timestamp, version other than 1, not in the canonical line layout the
    /// signature is checked over, over [`MAX_MESSAGE_BYTES`]), or the request body is not
    /// `{message, signature}`.
    #[error("malformed sign-in message: {0}")]
    Malformed(String),
    /// `bad_signature`: the signature is not 65 bytes of hex, or its EIP-191 `personal_sign`
    /// recovery does not yield the message's address.
    #[error("the signature does not recover to the message's address")]
    BadSignature,
    /// `wrong_domain`: the message's domain (its first line, EIP-4361 `domain`) is not the host
    /// this server is served from.
    #[error("the message is for {got}, this server is {expected}")]
    WrongDomain {
        /// What the server expects (`host[:port]`).
        expected: String,
        /// What the message says.
        got: String,
    },
    /// `wrong_uri`: the message's `URI` is not on this server's origin (scheme and authority).
    #[error("the message's URI is not on {expected}")]
    WrongUri {
        /// The origin the server expects (`https://host[:port]`, or `http(s)://host[:port]`).
        expected: String,
    },
    /// `unknown_nonce`: the nonce was never issued here, or was forgotten (server restart, or
    /// evicted past [`NONCE_CAPACITY`], or more than twice [`NONCE_TTL`] old).
    #[error("the nonce was not issued by this server; get a new one")]
    UnknownNonce,
    /// `reused_nonce`: the nonce was already presented once (successfully or not). Nonces are
    /// single-use: any verification attempt that names one consumes it.
    #[error("the nonce was already used; get a new one")]
    ReusedNonce,
    /// `expired`: the message's `Expiration Time` has passed, or its nonce is older than
    /// [`NONCE_TTL`].
    #[error("{0}")]
    Expired(&'static str),
    /// `not_yet_valid`: `Not Before` or `Issued At` lies in the future (beyond [`CLOCK_SKEW_S`]).
    #[error("{0}")]
    NotYetValid(&'static str),
}

impl SiweError {
    /// The stable error code, as sent in `{"code": …}` bodies.
    pub fn code(&self) -> &'static str {
        match self {
            SiweError::Malformed(_) => "malformed_message",
            SiweError::BadSignature => "bad_signature",
            SiweError::WrongDomain { .. } => "wrong_domain",
            SiweError::WrongUri { .. } => "wrong_uri",
            SiweError::UnknownNonce => "unknown_nonce",
            SiweError::ReusedNonce => "reused_nonce",
            SiweError::Expired(_) => "expired",
            SiweError::NotYetValid(_) => "not_yet_valid",
        }
    }
}

/// Where the page is served from, as the domain and URI checks see it.
///
/// The rule: with `--public-origin` (e.g. `https://meet.example.com`) that origin, always;
/// without it, the `Host` of the sign-in request itself (any of `http`/`https` for the URI's
/// scheme, since behind the TLS front door or a proxy the server cannot see the page's scheme).
/// The second form is the zero-setup default and proves only that the signer saw a message
/// naming the host the request was sent to: a phishing site that relays its victims' messages
/// can set `Host` to its own name. Deployments on the internet should set `--public-origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// `http` or `https`; `None`: either.
    scheme: Option<String>,
    /// `host[:port]`, lower-cased, as the browser's `location.host` shows it.
    authority: String,
}

impl Site {
    /// Parses a configured public origin: `http://` or `https://`, a host, an optional port, and
    /// nothing else (a single trailing `/` is tolerated). Errors: a human reason.
    pub fn from_origin(origin: &str) -> Result<Site, String> {
        let origin = origin.trim().trim_end_matches('/');
        let (scheme, authority) = origin
            .split_once("://")
            .ok_or_else(|| format!("{origin:?} is not an origin like https://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("{origin:?}: the scheme must be http or https"));
        }
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "{origin:?}: only scheme, host and port, no path or user"
            ));
        }
        authority
            .parse::<http::uri::Authority>()
            .map_err(|e| format!("{origin:?}: {e}"))?;
        Ok(Site {
            scheme: Some(scheme),
            authority: authority.to_ascii_lowercase(),
        })
    }

    /// The site as a request's `Host` header names it (`host[:port]`), either scheme.
    pub fn from_host(host: &str) -> Site {
        Site {
            scheme: None,
            authority: host.trim().to_ascii_lowercase(),
        }
    }

    /// `host[:port]`: what the message's domain line must say.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Human form for error messages.
    fn origin_text(&self) -> String {
        match &self.scheme {
            Some(s) => format!("{s}://{}", self.authority),
            None => format!("http(s)://{}", self.authority),
        }
    }
}

/// A successful sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The signer, EIP-55 checksummed (`0x` and 40 hex digits).
    pub address: String,
    /// The message's EIP-155 chain id. Any chain is accepted: the signature proves control of the
    /// key whatever the chain, and confab binds nothing to a chain at sign-in.
    pub chain_id: u64,
    /// The message's `Expiration Time` (EIP-4361), Unix ms: a token minted from it must not
    /// outlive it.
    pub expires_at_unix_ms: Option<i64>,
}

/// `0x1234…abcd`: the first four and last four hex digits of an address, for display names.
pub fn short_address(address: &str) -> String {
    match (address.get(..6), address.len().checked_sub(4)) {
        (Some(head), Some(tail_at)) if address.len() > 10 => {
            format!("{head}…{}", &address[tail_at..])
        }
        _ => address.to_owned(),
    }
}

/// What the store knows of a presented nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Issued here, unused and within [`NONCE_TTL`]: now used.
    Fresh,
    /// Never issued, or forgotten.
    Unknown,
    /// Presented before.
    Used,
    /// Issued more than the TTL ago (now also marked used).
    Expired,
}

#[derive(Debug)]
struct NonceEntry {
    issued: Instant,
    used: bool,
}

/// Issued nonces, oldest first, bounded by a capacity. Not synchronized: [`Siwe`] holds it in a
/// mutex. Time is passed in, so it is tested without sleeping.
#[derive(Debug)]
pub struct NonceStore {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<String, NonceEntry>,
    /// Issue order (oldest at the front), for pruning and eviction; same keys as `entries`.
    order: VecDeque<String>,
}

impl NonceStore {
    /// An empty store whose nonces live `ttl` and which remembers at most `capacity` of them.
    /// Entries are remembered for twice the TTL, so a late or repeated use is told apart from an
    /// unknown nonce for a while.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// A new random nonce ([`NONCE_LEN`] alphanumeric characters), remembered from `now`.
    pub fn issue(&mut self, now: Instant) -> String {
        use rand::distr::{Alphanumeric, SampleString};
        let nonce = Alphanumeric.sample_string(&mut rand::rng(), NONCE_LEN);
        self.insert(nonce.clone(), now);
        nonce
    }

    fn insert(&mut self, nonce: String, now: Instant) {
        self.prune(now);
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        self.entries.insert(
            nonce.clone(),
            NonceEntry {
                issued: now,
                used: false,
            },
        );
        self.order.push_back(nonce);
    }

    /// Consumes `nonce` at `now` and says what it was before. After this call it is used, whatever
    /// the answer (an unknown nonce stays unknown).
    pub fn consume(&mut self, nonce: &str, now: Instant) -> NonceState {
        self.prune(now);
        let Some(e) = self.entries.get_mut(nonce) else {
            return NonceState::Unknown;
        };
        let was_used = std::mem::replace(&mut e.used, true);
        if was_used {
            NonceState::Used
        } else if now.saturating_duration_since(e.issued) > self.ttl {
            NonceState::Expired
        } else {
            NonceState::Fresh
        }
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn prune(&mut self, now: Instant) {
        let keep = self.ttl * 2;
        while let Some(front) = self.order.front() {
            let old = self
                .entries
                .get(front)
                .is_none_or(|e| now.saturating_duration_since(e.issued) > keep);
            if !old {
                break;
            }
            if let Some(k) = self.order.pop_front() {
                self.entries.remove(&k);
            }
        }
    }
}

/// The sign-in service the HTTP layer holds: nonce issue and message verification.
#[derive(Debug)]
pub struct Siwe {
    nonces: Mutex<NonceStore>,
    public_origin: Option<Site>,
}

impl Siwe {
    /// A service with an empty nonce store ([`NONCE_TTL`], [`NONCE_CAPACITY`]); `public_origin`
    /// is `--public-origin` (see [`Site`] for the rule when it is `None`).
    pub fn new(public_origin: Option<Site>) -> Self {
        Self {
            nonces: Mutex::new(NonceStore::new(NONCE_TTL, NONCE_CAPACITY)),
            public_origin,
        }
    }

    /// A fresh nonce, valid [`NONCE_TTL`] from `now`.
    pub fn issue_nonce(&self, now: Instant) -> String {
        self.lock().issue(now)
    }

    /// The site a request with this `Host` header must name: the configured public origin if any,
    /// else the host itself.
    pub fn expected_site(&self, request_host: &str) -> Site {
        match &self.public_origin {
            Some(site) => site.clone(),
            None => Site::from_host(request_host),
        }
    }

    /// Verifies a signed sign-in message (`message` exactly as signed, `signature` the 65-byte
    /// `personal_sign` result in hex, `0x` optional) for `site`, at wall time `now_unix_ms`
    /// (milliseconds since the Unix epoch) and monotonic time `now`.
    ///
    /// The nonce is consumed as soon as the message parses, before any other check, so a message
    /// can be presented once only. Checks, in the order their errors are reported:
    /// 1. the message parses as EIP-4361 and re-serializes to the same text: `malformed_message`;
    /// 2. EIP-191 recovery yields the message's `address`: `bad_signature`;
    /// 3. `domain` is `site`'s `host[:port]` (case-insensitive): `wrong_domain`;
    /// 4. `URI` has `site`'s scheme (http/https if unset) and `host[:port]`: `wrong_uri`;
    /// 5. the nonce was issued here, unused, within [`NONCE_TTL`]: `unknown_nonce`,
    ///    `reused_nonce`, `expired`;
    /// 6. `Expiration Time` (if any) is after now: `expired`; `Not Before` (if any) and
    ///    `Issued At` are not after now + [`CLOCK_SKEW_S`]: `not_yet_valid`.
    ///
    /// `Chain ID` may be any chain; `Statement`, `Request ID` and `Resources` are not interpreted.
    pub fn verify(
        &self,
        message: &str,
        signature: &str,
        site: &Site,
        now_unix_ms: i64,
        now: Instant,
    ) -> Result<SignedIn, SiweError> {
        let parsed = parse(message)?;
        let nonce = self.lock().consume(&parsed.nonce, now);
        check(&parsed, signature, site, nonce, now_unix_ms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NonceStore> {
        // A panic while holding this lock cannot leave the map inconsistent in a way that
        // matters (at worst a nonce is lost), so a poisoned lock is used as is.
        self.nonces.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Parses `raw` as an EIP-4361 message (section "ABNF Message Format") and insists that it is in
/// the canonical layout, since the signature is checked over the re-serialized message.
fn parse(raw: &str) -> Result<siwe::Message, SiweError> {
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(SiweError::Malformed(format!(
            "longer than {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    let parsed: siwe::Message = raw
        .parse()
        .map_err(|e: siwe::ParseError| SiweError::Malformed(e.to_string()))?;
    if parsed.to_string() != raw {
        return Err(SiweError::Malformed(
            "not in the EIP-4361 line layout (blank lines, line endings or trailing text)".into(),
        ));
    }
    Ok(parsed)
}

/// Every check after parsing, on a nonce already consumed (`nonce` is what the store said).
fn check(
    m: &siwe::Message,
    signature: &str,
    site: &Site,
    nonce: NonceState,
    now_unix_ms: i64,
) -> Result<SignedIn, SiweError> {
    // EIP-4361 section "Verifying a signed message": EIP-191 `personal_sign` over the message,
    // recovered to the message's address.
    let sig_hex = signature.trim();
    let sig_hex = sig_hex.strip_prefix("0x").unwrap_or(sig_hex);
    let mut sig = [0u8; 65];
    hex::decode_to_slice(sig_hex, &mut sig).map_err(|_| SiweError::BadSignature)?;
    m.verify_eip191(&sig).map_err(|_| SiweError::BadSignature)?;

    // EIP-4361 section "Security Considerations", "Verifying the domain binding": the domain the
    // wallet showed the user must be ours.
    let domain = m.domain.as_str();
    if !domain.eq_ignore_ascii_case(site.authority()) {
        return Err(SiweError::WrongDomain {
            expected: site.authority().to_owned(),
            got: domain.to_owned(),
        });
    }
    // `URI` (the subject of the sign-in) on the same origin.
    let scheme = m.uri.scheme_str().to_ascii_lowercase();
    let scheme_ok = match &site.scheme {
        Some(s) => *s == scheme,
        None => scheme == "http" || scheme == "https",
    };
    let authority_ok = m
        .uri
        .authority_str()
        .is_some_and(|a| a.eq_ignore_ascii_case(site.authority()));
    if !(scheme_ok && authority_ok) {
        return Err(SiweError::WrongUri {
            expected: site.origin_text(),
        });
    }

    // EIP-4361 `nonce`: issued by us, single use (replay protection).
    match nonce {
        NonceState::Fresh => {}
        NonceState::Unknown => return Err(SiweError::UnknownNonce),
        NonceState::Used => return Err(SiweError::ReusedNonce),
        NonceState::Expired => {
            return Err(SiweError::Expired(
                "the nonce expired before the message arrived; sign in again",
            ))
        }
    }

    // EIP-4361 `expiration-time`, `not-before`, `issued-at`.
    let ms = |t: &siwe::TimeStamp| {
        let t: &time::OffsetDateTime = t.as_ref();
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    };
    if let Some(exp) = &m.expiration_time {
        if ms(exp) <= now_unix_ms {
            return Err(SiweError::Expired(
                "the message's expiration time has passed",
            ));
        }
    }
    let latest = now_unix_ms.saturating_add(CLOCK_SKEW_S * 1000);
    if let Some(nbf) = &m.not_before {
        if ms(nbf) > latest {
            return Err(SiweError::NotYetValid(
                "the message's not-before time is ahead",
            ));
        }
    }
    if ms(&m.issued_at) > latest {
        return Err(SiweError::NotYetValid(
            "the message is issued in the future",
        ));
    }
    Ok(SignedIn {
        address: siwe::eip55(&m.address),
        chain_id: m.chain_id,
        expires_at_unix_ms: m.expiration_time.as_ref().map(ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::{local::PrivateKeySigner, SignerSync};

    /// anvil's first two well-known development keys (plain keys here, no chain).
    const KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const ADDR_0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    const KEY_1: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    /// 2026-01-01T00:00:00Z in ms.
    const NOW_MS: i64 = 1_767_225_600_000;

    fn message(domain: &str, uri: &str, nonce: &str, tail: &str) -> String {
        format!(
            "{domain} wants you to sign in with your Ethereum account:\n{ADDR_0}\n\n\
             Sign in to confab.\n\nURI: {uri}\nVersion: 1\nChain ID: 31337\nNonce: {nonce}\n\
             Issued At: 2026-01-01T00:00:00Z{tail}"
        )
    }

    fn sign(key: &str, msg: &str) -> String {
        let s: PrivateKeySigner = key.parse().unwrap();
        format!(
            "0x{}",
            hex::encode(s.sign_message_sync(msg.as_bytes()).unwrap().as_bytes())
        )
    }

    fn site() -> Site {
        Site::from_host("localhost:8080")
    }

    fn run(msg: &str, sig: &str, nonce: NonceState, now_ms: i64) -> Result<SignedIn, SiweError> {
        check(&parse(msg)?, sig, &site(), nonce, now_ms)
    }

    #[test]
    fn a_message_signed_by_its_address_for_this_site_passes() {
        let m = message(
            "localhost:8080",
            "http://localhost:8080/rooms/a",
            "abcdefgh1234",
            "",
        );
        let ok = run(&m, &sign(KEY_0, &m), NonceState::Fresh, NOW_MS).unwrap();
        assert_eq!(ok.address, ADDR_0);
        assert_eq!(ok.chain_id, 31337);
        // Either scheme when no public origin is configured; the domain is case-insensitive.
        let m = message(
            "LOCALHOST:8080",
            "https://localhost:8080",
            "abcdefgh1234",
            "",
        );
        assert!(run(&m, &sign(KEY_0, &m), NonceState::Fresh, NOW_MS).is_ok());
    }

    #[test]
    fn each_failed_check_has_its_own_code() {
        let good = message(
            "localhost:8080",
            "http://localhost:8080/",
            "abcdefgh1234",
            "",
        );
        let code =
            |m: &str, sig: &str, n: NonceState, now: i64| run(m, sig, n, now).unwrap_err().code();
        assert_eq!(
            code(&good, &sign(KEY_1, &good), NonceState::Fresh, NOW_MS),
            "bad_signature"
        );
        assert_eq!(
            code(&good, "0x1234", NonceState::Fresh, NOW_MS),
            "bad_signature"
        );
        let m = message("evil.example", "http://localhost:8080/", "abcdefgh1234", "");
        assert_eq!(
            code(&m, &sign(KEY_0, &m), NonceState::Fresh, NOW_MS),
            "wrong_domain"
        );
        let m = message("localhost:8080", "http://evil.example/", "abcdefgh1234", "");
        assert_eq!(
            code(&m, &sign(KEY_0, &m), NonceState::Fresh, NOW_MS),
            "wrong_uri"
        );
        let m = message(
            "localhost:8080",
            "ftp://localhost:8080/",
            "abcdefgh1234",
            "",
        );
        assert_eq!(
            code(&m, &sign(KEY_0, &m), NonceState::Fresh, NOW_MS),
            "wrong_uri"
        );
        let sig = sign(KEY_0, &good);
        assert_eq!(
            code(&good, &sig, NonceState::Unknown, NOW_MS),
            "unknown_nonce"
        );
        assert_eq!(code(&good, &sig, NonceState::Used, NOW_MS), "reused_nonce");
        assert_eq!(code(&good, &sig, NonceState::Expired, NOW_MS), "expired");
        let m = message(
            "localhost:8080",
            "http://localhost:8080/",
            "abcdefgh1234",
            "\nExpiration Time: 2026-01-01T00:01:00Z",
        );
        let sig = sign(KEY_0, &m);
        assert!(run(&m, &sig, NonceState::Fresh, NOW_MS + 59_000).is_ok());
        assert_eq!(
            code(&m, &sig, NonceState::Fresh, NOW_MS + 60_000),
            "expired"
        );
        let m = message(
            "localhost:8080",
            "http://localhost:8080/",
            "abcdefgh1234",
            "\nNot Before: 2026-01-01T00:05:00Z",
        );
        let sig = sign(KEY_0, &m);
        assert_eq!(code(&m, &sig, NonceState::Fresh, NOW_MS), "not_yet_valid");
        assert!(run(&m, &sig, NonceState::Fresh, NOW_MS + 300_000).is_ok());
        // Issued At ahead of our clock: tolerated within the skew, refused past it.
        let sig = sign(KEY_0, &good);
        assert!(run(&good, &sig, NonceState::Fresh, NOW_MS - CLOCK_SKEW_S * 1000).is_ok());
        assert_eq!(
            code(
                &good,
                &sig,
                NonceState::Fresh,
                NOW_MS - CLOCK_SKEW_S * 1000 - 1
            ),
            "not_yet_valid"
        );
    }

    #[test]
    fn messages_outside_eip_4361_are_malformed() {
        let good = message(
            "localhost:8080",
            "http://localhost:8080/",
            "abcdefgh1234",
            "",
        );
        for bad in [
            "hello".to_owned(),
            good.replace(ADDR_0, &ADDR_0.to_lowercase()),
            good.replace("Nonce: abcdefgh1234\n", ""),
            good.replace("abcdefgh1234", "short"),
            good.replace("Version: 1", "Version: 2"),
            good.replace('\n', "\r\n"),
            format!("{good}\n"),
            good.replace("Issued At: 2026-01-01T00:00:00Z", "Issued At: yesterday"),
            good.replace("Sign in to confab.\n\n", "Sign in to confab.\nX\n"),
            format!("{good}\nResources:\n- {}", "a".repeat(MAX_MESSAGE_BYTES)),
        ] {
            let e = parse(&bad).expect_err(&bad);
            assert_eq!(e.code(), "malformed_message", "{bad:?}");
        }
        assert!(parse(&good).is_ok());
    }

    #[test]
    fn a_nonce_is_fresh_once_then_used_and_expires_after_its_ttl() {
        let t = Instant::now();
        let mut s = NonceStore::new(Duration::from_secs(300), 100);
        let n = s.issue(t);
        assert_eq!(n.len(), NONCE_LEN);
        assert!(n.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(n, s.issue(t), "nonces are random");
        assert_eq!(s.consume(&n, t), NonceState::Fresh);
        assert_eq!(s.consume(&n, t), NonceState::Used);
        assert_eq!(s.consume("neverissued1", t), NonceState::Unknown);
        let late = s.issue(t);
        assert_eq!(
            s.consume(&late, t + Duration::from_secs(301)),
            NonceState::Expired
        );
        assert_eq!(
            s.consume(&late, t + Duration::from_secs(302)),
            NonceState::Used
        );
        // Forgotten after twice the TTL.
        let old = s.issue(t);
        assert_eq!(
            s.consume(&old, t + Duration::from_secs(601)),
            NonceState::Unknown
        );
        assert!(s.is_empty());
    }

    #[test]
    fn the_nonce_store_is_bounded_and_forgets_the_oldest_first() {
        let t = Instant::now();
        let mut s = NonceStore::new(Duration::from_secs(300), 3);
        let first = s.issue(t);
        let kept: Vec<String> = (0..3).map(|_| s.issue(t)).collect();
        assert_eq!(s.len(), 3);
        assert_eq!(s.consume(&first, t), NonceState::Unknown);
        for n in &kept {
            assert_eq!(s.consume(n, t), NonceState::Fresh);
        }
    }

    #[test]
    fn verify_consumes_the_nonce_even_when_another_check_fails() {
        let siwe = Siwe::new(None);
        let now = Instant::now();
        let n = siwe.issue_nonce(now);
        let m = message("localhost:8080", "http://localhost:8080/", &n, "");
        let e = siwe
            .verify(&m, &sign(KEY_1, &m), &site(), NOW_MS, now)
            .unwrap_err();
        assert_eq!(e.code(), "bad_signature");
        let e = siwe
            .verify(&m, &sign(KEY_0, &m), &site(), NOW_MS, now)
            .unwrap_err();
        assert_eq!(e.code(), "reused_nonce");
    }

    #[test]
    fn a_configured_public_origin_wins_over_the_request_host() {
        let siwe = Siwe::new(Some(
            Site::from_origin("https://Meet.Example.com/").unwrap(),
        ));
        let s = siwe.expected_site("127.0.0.1:8080");
        assert_eq!(s.authority(), "meet.example.com");
        let m = message(
            "meet.example.com",
            "http://meet.example.com/",
            "abcdefgh1234",
            "",
        );
        let e = check(
            &parse(&m).unwrap(),
            &sign(KEY_0, &m),
            &s,
            NonceState::Fresh,
            NOW_MS,
        );
        assert_eq!(
            e.unwrap_err().code(),
            "wrong_uri",
            "the scheme is pinned too"
        );
        for bad in [
            "meet.example.com",
            "ftp://x",
            "https://x/path",
            "https://u@x",
            "https://",
        ] {
            assert!(Site::from_origin(bad).is_err(), "{bad}");
        }
        assert!(Site::from_origin("http://localhost:8080").is_ok());
    }

    #[test]
    fn a_short_address_keeps_the_ends() {
        assert_eq!(short_address(ADDR_0), "0xf39F…2266");
        assert_eq!(short_address("0x12"), "0x12");
    }
}
