//! ICE routing for an ICE-lite server (RFC 8445 section 2.5): which transport a datagram belongs
//! to, which 5-tuple a transport's media goes to, and whether its peer still consents to receive
//! (RFC 7675). Pure: no sockets, time passed in; unit-tested below.
//!
//! - [`RouteTable`]: 5-tuple → transport. A route is learnt only from a STUN binding request
//!   whose USERNAME names the transport's current local ufrag and whose MESSAGE-INTEGRITY
//!   verifies with its password ([`BindingRequest`]); routes idle for [`ROUTE_IDLE`] are
//!   forgotten; the table holds at most [`MAX_ROUTES`].
//! - [`IcePaths`]: per transport, the 5-tuples its peer uses, the one media is sent to, and the
//!   consent state. The browser is the controlling agent: the pair it nominated last wins
//!   (RFC 8445 section 8.1.1; Chromium nominates with USE-CANDIDATE on every check of its
//!   selected pair when the other side is ICE-lite, and moves that flag when it switches pairs).
//!   `rtc`'s lite agent keeps the first nominated pair for good, so the media loop overrides the
//!   destination of every non-STUN datagram with [`IcePaths::destination`].
//! - Consent: `disconnected` ([`ConsentState::Disconnected`]) is only a state to show; media
//!   keeps flowing. A transport fails only after [`CONSENT_TIMEOUT`] without an authenticated
//!   binding request (RFC 7675 section 5.1), or when it never completes ICE in that time.

use crate::ids::{ParticipantId, TransportRole};
use rtc::shared::{FiveTuple, TransportProtocol};
use rtc::stun::attributes::{
    ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{is_stun_message, Message, Setter, TransactionId, BINDING_REQUEST};
use rtc::stun::textattrs::Username;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A 5-tuple not heard from for this long is forgotten (by the route table and by its
/// transport's path set).
pub const ROUTE_IDLE: Duration = Duration::from_secs(30);

/// Most routes the table holds (all transports of a media worker). A binding request that
/// would learn one more is dropped (and counted by the caller); the peer's retransmission
/// succeeds once an idle route expires.
pub const MAX_ROUTES: usize = 65_536;

/// Most 5-tuples one transport keeps: a browser with several interfaces (Wi-Fi, VPN, Docker
/// bridge, loopback) pairs each with each server candidate. Past this, the path heard from
/// least recently is forgotten.
pub const MAX_PATHS: usize = 8;

/// RFC 7675 section 5.1: consent expires 30 s after the last authenticated binding request
/// (for an ICE-lite server, the peer's consent checks are the only proof it still wants media).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Nothing at all heard from the peer for this long: [`ConsentState::Disconnected`] (shown and
/// counted, media keeps flowing). Above the slowest consent interval RFC 7675 allows (5 s
/// + 20 %) with one check lost, so a conformant peer never flaps.
pub const DISCONNECTED_AFTER: Duration = Duration::from_secs(13);

/// A peer that checks another path without nominating it (full ICE agents nominate once) moves
/// the media there when the current path has been silent this long (browsers ping backup paths
/// every few seconds while the selected one is alive; a silent selected path is a dead one).
pub const PATH_QUIET: Duration = Duration::from_secs(3);

/// A peer sends media, RTCP and DataChannel data only on the pair it has selected (browsers,
/// aiortc, webrtc-rs alike): data arriving on another known path moves the media there once the
/// current path has been silent this long. The guard keeps a packet that was in flight on the
/// old path during a switch from moving the media back.
pub const DATA_SWITCH_QUIET: Duration = Duration::from_millis(250);

/// What arrived on a path, as [`IcePaths::on_datagram`] weighs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// A binding request whose MESSAGE-INTEGRITY verified: consent (RFC 7675); `nominate` when
    /// it carried USE-CANDIDATE.
    Check {
        /// USE-CANDIDATE present.
        nominate: bool,
    },
    /// DTLS, SRTP, SRTCP: sent only on the pair the peer selected.
    Data,
    /// Other STUN (a response to `rtc`'s triggered check, an unauthenticated request).
    OtherStun,
}

/// Which of the media worker's transports: a participant's publisher or subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransportKey {
    /// The participant.
    pub participant: ParticipantId,
    /// Which of its two transports.
    pub role: TransportRole,
}

/// The UDP 5-tuple of a datagram (`local` is the announced address of the socket it came in
/// on, as `rtc` knows its local candidates).
pub fn udp_tuple(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> FiveTuple {
    FiveTuple {
        local_addr: local,
        peer_addr: remote,
        transport_protocol: TransportProtocol::UDP,
    }
}

/// Whether a datagram is STUN by its first byte (RFC 7983 section 7: 0–3 STUN, 20–63 DTLS,
/// 128–191 RTP/RTCP).
pub fn looks_like_stun(data: &[u8]) -> bool {
    data.first().is_some_and(|b| *b < 4)
}

fn crypto() -> &'static dyn rtc::crypto::RTCCrypto {
    static PROVIDER: OnceLock<Arc<dyn rtc::crypto::RTCCryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| rtc::crypto::default_provider().expect("rtc's default crypto provider"))
        .crypto()
}

/// A STUN binding request (RFC 8489 section 6), parsed far enough to route and authenticate it.
pub struct BindingRequest {
    msg: Message,
    /// The server's half of USERNAME (`<server ufrag>:<peer ufrag>`, RFC 8445 section 7.2.2).
    pub local_ufrag: String,
    /// USE-CANDIDATE present: the controlling peer nominates this pair (RFC 8445 section 7.1.2).
    pub use_candidate: bool,
}

impl BindingRequest {
    /// Parses `data`; `None` for anything but a well-formed binding request with a USERNAME.
    pub fn parse(data: &[u8]) -> Option<Self> {
        if !looks_like_stun(data) || !is_stun_message(data) {
            return None;
        }
        let mut msg = Message::new();
        msg.unmarshal_binary(data).ok()?;
        if msg.typ != BINDING_REQUEST {
            return None;
        }
        let username = Username::get_from_as(&msg, ATTR_USERNAME).ok()?;
        let local_ufrag = username.text.split_once(':')?.0.to_owned();
        let use_candidate = msg.contains(ATTR_USE_CANDIDATE);
        Some(Self {
            msg,
            local_ufrag,
            use_candidate,
        })
    }

    /// Whether MESSAGE-INTEGRITY verifies with the server's ICE password `pwd` (short-term
    /// credentials, RFC 8489 section 9.1). A request without one fails.
    pub fn verify(&mut self, pwd: &str) -> bool {
        MessageIntegrity::check(&mut self.msg, pwd.as_bytes(), crypto()).is_ok()
    }

    /// This check as its nomination: the same attributes (USERNAME, PRIORITY, the peer's
    /// ICE-CONTROLLING tie-breaker) plus USE-CANDIDATE, under a new transaction id, with
    /// MESSAGE-INTEGRITY (key `pwd`, the server's password) and FINGERPRINT computed afresh.
    /// Encoded bytes; `None` if encoding fails. For [`crate::Core`] to hand `rtc` when the peer
    /// already sends DTLS on the pair (see `Transport::nomination`).
    pub fn nominating(&self, pwd: &str) -> Option<Vec<u8>> {
        let mut m = Message::new();
        m.build(&[Box::new(BINDING_REQUEST), Box::new(TransactionId::new())])
            .ok()?;
        for a in &self.msg.attributes.0 {
            if ![ATTR_MESSAGE_INTEGRITY, ATTR_FINGERPRINT, ATTR_USE_CANDIDATE].contains(&a.typ) {
                m.add(a.typ, &a.value);
            }
        }
        m.add(ATTR_USE_CANDIDATE, &[]);
        MessageIntegrity::new_short_term_integrity_with_provider(pwd.to_owned(), crypto())
            .add_to(&mut m)
            .ok()?;
        FINGERPRINT.add_to(&mut m).ok()?;
        Some(m.raw)
    }
}

struct Route {
    key: TransportKey,
    last_seen: Instant,
}

/// 5-tuple → transport, for every transport of one media worker. Owned by the media worker.
#[derive(Default)]
pub struct RouteTable {
    routes: HashMap<FiveTuple, Route>,
}

impl RouteTable {
    /// The transport `tuple` was learnt for, refreshing its idle timer.
    pub fn lookup(&mut self, tuple: &FiveTuple, now: Instant) -> Option<TransportKey> {
        let r = self.routes.get_mut(tuple)?;
        r.last_seen = now;
        Some(r.key)
    }

    /// Learns (or moves) `tuple` for `key` after an authenticated binding request. Returns
    /// false when the table is full.
    pub fn learn(&mut self, tuple: FiveTuple, key: TransportKey, now: Instant) -> bool {
        if self.routes.len() >= MAX_ROUTES && !self.routes.contains_key(&tuple) {
            return false;
        }
        self.routes.insert(
            tuple,
            Route {
                key,
                last_seen: now,
            },
        );
        true
    }

    /// Forgets one route (its transport dropped the path).
    pub fn forget(&mut self, tuple: &FiveTuple) {
        self.routes.remove(tuple);
    }

    /// Forgets every route of `participant` (it left).
    pub fn forget_participant(&mut self, participant: ParticipantId) {
        self.routes.retain(|_, r| r.key.participant != participant);
    }

    /// Forgets routes idle for [`ROUTE_IDLE`].
    pub fn expire(&mut self, now: Instant) {
        self.routes
            .retain(|_, r| now.saturating_duration_since(r.last_seen) < ROUTE_IDLE);
    }

    /// Routes held.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no route is held.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Consent and liveness of one transport, as an ICE-lite server can judge it from what it
/// receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentState {
    /// No remote description applied yet: nothing is expected.
    New,
    /// Waiting for the first authenticated binding request, for at most [`CONSENT_TIMEOUT`].
    Checking,
    /// Consent is fresh and the peer was heard within [`DISCONNECTED_AFTER`].
    Connected,
    /// Consent is fresh but nothing was heard for [`DISCONNECTED_AFTER`]: shown, media goes on.
    Disconnected,
    /// Consent expired (or ICE never completed): stop sending, the transport is dead.
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Path {
    tuple: FiveTuple,
    last_heard: Instant,
}

/// What one datagram changed in an [`IcePaths`].
#[derive(Debug, Default, PartialEq)]
pub struct PathUpdate {
    /// A path forgotten to make room ([`MAX_PATHS`]): the caller drops its route.
    pub evicted: Option<FiveTuple>,
    /// Media now goes to this 5-tuple instead of the previous one.
    pub switched_to: Option<FiveTuple>,
    /// The consent state this datagram moved the transport to (`checking` → `connected` on the
    /// first authenticated check, `disconnected` → `connected` on anything). Only time moves it
    /// the other way ([`IcePaths::poll`]).
    pub state: Option<ConsentState>,
}

/// The 5-tuples one transport's peer uses, which one media goes to, and consent.
#[derive(Debug)]
pub struct IcePaths {
    paths: Vec<Path>,
    active: Option<FiveTuple>,
    /// The peer confirmed `active` (nominated it, or sent data on it): moving away from it is a
    /// switch. Before that, `active` is only the first path checked, and the first nomination
    /// elsewhere is the initial selection.
    active_confirmed: bool,
    started: Option<Instant>,
    last_consent: Option<Instant>,
    last_heard: Option<Instant>,
    state: ConsentState,
}

impl Default for IcePaths {
    fn default() -> Self {
        Self::new()
    }
}

impl IcePaths {
    /// A transport whose remote description is not applied yet.
    pub fn new() -> Self {
        Self {
            paths: Vec::with_capacity(2),
            active: None,
            active_confirmed: false,
            started: None,
            last_consent: None,
            last_heard: None,
            state: ConsentState::New,
        }
    }

    /// ICE can start (the remote description is applied): from now the peer has
    /// [`CONSENT_TIMEOUT`] to send an authenticated check. Idempotent.
    pub fn start(&mut self, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
            if self.state == ConsentState::New {
                self.state = ConsentState::Checking;
            }
        }
    }

    /// The current consent state (as of the last [`Self::poll`]).
    pub fn state(&self) -> ConsentState {
        self.state
    }

    /// Where media goes: the path the peer nominated last (or, failing a nomination, the path
    /// its latest check came on). `None` before any check: the caller keeps `rtc`'s address.
    pub fn destination(&self) -> Option<FiveTuple> {
        self.active
    }

    /// Records a datagram that came on `tuple`; see [`Heard`] for what moves the media.
    pub fn on_datagram(&mut self, tuple: FiveTuple, heard: Heard, now: Instant) -> PathUpdate {
        let mut update = PathUpdate::default();
        self.last_heard = Some(now);
        if let Heard::Check { .. } = heard {
            self.last_consent = Some(now);
        }
        update.state = self.revive();
        let confirms = matches!(heard, Heard::Data | Heard::Check { nominate: true });
        // The common case, every media packet: it came on the path media goes to.
        if self.active == Some(tuple) {
            if let Some(p) = self.paths.iter_mut().find(|p| p.tuple == tuple) {
                p.last_heard = now;
            }
            self.active_confirmed |= confirms;
            return update;
        }
        // How long the active path had been silent before this datagram.
        let active_quiet = self
            .active
            .and_then(|a| self.paths.iter().find(|p| p.tuple == a))
            .map_or(Duration::MAX, |p| {
                now.saturating_duration_since(p.last_heard)
            });
        match self.paths.iter_mut().find(|p| p.tuple == tuple) {
            Some(p) => p.last_heard = now,
            None => {
                if !matches!(heard, Heard::Check { .. }) {
                    // Only an authenticated check adds a path (the route table already
                    // refuses anything else); nothing to record.
                    return update;
                }
                if self.paths.len() >= MAX_PATHS {
                    let (i, _) = self
                        .paths
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| Some(p.tuple) != self.active)
                        .min_by_key(|(_, p)| p.last_heard)
                        .expect("MAX_PATHS > 1");
                    update.evicted = Some(self.paths.swap_remove(i).tuple);
                }
                self.paths.push(Path {
                    tuple,
                    last_heard: now,
                });
            }
        }
        let move_here = match (self.active, heard) {
            (Some(a), _) if a == tuple => false,
            (None, Heard::Check { .. }) => true,
            (None, _) => false,
            // The controlling agent's latest nomination wins (RFC 8445 section 8.1.1).
            (Some(_), Heard::Check { nominate: true }) => true,
            // A check without nomination moves media only off a path gone silent.
            (Some(_), Heard::Check { nominate: false }) => active_quiet >= PATH_QUIET,
            // The peer already sends its data here: it selected this pair.
            (Some(_), Heard::Data) => active_quiet >= DATA_SWITCH_QUIET,
            (Some(_), Heard::OtherStun) => false,
        };
        if move_here {
            if self.active_confirmed {
                update.switched_to = Some(tuple);
            }
            self.active = Some(tuple);
            self.active_confirmed = confirms;
        }
        update
    }

    /// What a datagram revives: a first authenticated check ends `checking`, anything heard ends
    /// `disconnected`.
    fn revive(&mut self) -> Option<ConsentState> {
        let next = match self.state {
            ConsentState::Checking if self.last_consent.is_some() => ConsentState::Connected,
            ConsentState::Disconnected => ConsentState::Connected,
            _ => return None,
        };
        self.state = next;
        Some(next)
    }

    /// Re-evaluates the consent state at `now` (the timers' side: disconnected, failed);
    /// returns the new state when it changed.
    pub fn poll(&mut self, now: Instant) -> Option<ConsentState> {
        let next = match self.state {
            ConsentState::New | ConsentState::Failed => self.state,
            ConsentState::Checking => match (self.last_consent, self.started) {
                (Some(_), _) => self.live_state(now),
                (None, Some(s)) if now.saturating_duration_since(s) >= CONSENT_TIMEOUT => {
                    ConsentState::Failed
                }
                _ => ConsentState::Checking,
            },
            ConsentState::Connected | ConsentState::Disconnected => self.live_state(now),
        };
        if next == self.state {
            return None;
        }
        self.state = next;
        if next == ConsentState::Failed {
            self.active = None;
        }
        Some(next)
    }

    fn live_state(&self, now: Instant) -> ConsentState {
        let since =
            |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if since(self.last_consent) >= CONSENT_TIMEOUT {
            ConsentState::Failed
        } else if since(self.last_heard) >= DISCONNECTED_AFTER {
            ConsentState::Disconnected
        } else {
            ConsentState::Connected
        }
    }

    /// When [`Self::poll`] may next change the state (`None`: only a datagram can).
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            ConsentState::New | ConsentState::Failed => None,
            ConsentState::Checking => self.started.map(|s| s + CONSENT_TIMEOUT),
            ConsentState::Connected => {
                let consent = self.last_consent.map(|t| t + CONSENT_TIMEOUT);
                let quiet = self.last_heard.map(|t| t + DISCONNECTED_AFTER);
                consent.into_iter().chain(quiet).min()
            }
            ConsentState::Disconnected => self.last_consent.map(|t| t + CONSENT_TIMEOUT),
        }
    }

    /// Forgets paths idle for [`ROUTE_IDLE`] (the route table forgets them at the same age).
    pub fn expire(&mut self, now: Instant) {
        let active = self.active;
        self.paths.retain(|p| {
            Some(p.tuple) == active || now.saturating_duration_since(p.last_heard) < ROUTE_IDLE
        });
    }

    /// The 5-tuples currently known, for diagnostics.
    pub fn paths(&self) -> impl Iterator<Item = FiveTuple> + '_ {
        self.paths.iter().map(|p| p.tuple)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rtc::stun::attributes::ATTR_PRIORITY;

    fn tuple(port: u16) -> FiveTuple {
        udp_tuple(
            "127.0.0.1:7882".parse().unwrap(),
            format!("10.0.0.2:{port}").parse().unwrap(),
        )
    }

    struct UseCandidate;
    impl Setter for UseCandidate {
        fn add_to(&self, m: &mut Message) -> Result<(), rtc::shared::error::Error> {
            m.add(ATTR_USE_CANDIDATE, &[]);
            Ok(())
        }
    }
    struct Priority(u32);
    impl Setter for Priority {
        fn add_to(&self, m: &mut Message) -> Result<(), rtc::shared::error::Error> {
            m.add(ATTR_PRIORITY, &self.0.to_be_bytes());
            Ok(())
        }
    }

    /// A binding request as a browser sends it: USERNAME, PRIORITY, maybe USE-CANDIDATE,
    /// MESSAGE-INTEGRITY with `pwd`, FINGERPRINT.
    pub(crate) fn request(username: &str, pwd: &str, nominate: bool) -> Vec<u8> {
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, username.to_owned())),
            Box::new(Priority(1_845_501_695)),
        ];
        if nominate {
            setters.push(Box::new(UseCandidate));
        }
        setters.push(Box::new(
            MessageIntegrity::new_short_term_integrity_with_provider(pwd.to_owned(), crypto()),
        ));
        setters.push(Box::new(FINGERPRINT));
        m.build(&setters).unwrap();
        m.raw
    }

    #[test]
    fn a_check_turned_into_its_nomination_keeps_the_peers_attributes_and_verifies() {
        let raw = request("srv1:brow", "server-password-24-chars", false);
        let mut check = BindingRequest::parse(&raw).unwrap();
        assert!(check.verify("server-password-24-chars"));
        let nominated = check.nominating("server-password-24-chars").unwrap();
        let mut n = BindingRequest::parse(&nominated).expect("still a binding request");
        assert!(n.use_candidate, "USE-CANDIDATE added");
        assert_eq!(n.local_ufrag, "srv1");
        assert!(
            n.verify("server-password-24-chars"),
            "MESSAGE-INTEGRITY recomputed"
        );
        assert!(!n.verify("another-password-24-chars"));
        assert_ne!(
            n.msg.transaction_id, check.msg.transaction_id,
            "a new transaction"
        );
        let priority = |m: &Message| m.get(ATTR_PRIORITY).unwrap();
        assert_eq!(
            priority(&n.msg),
            priority(&check.msg),
            "the peer's PRIORITY kept"
        );
        rtc::stun::fingerprint::FINGERPRINT
            .check(&n.msg)
            .expect("FINGERPRINT recomputed");
    }

    #[test]
    fn a_binding_request_is_parsed_and_verified_with_the_servers_password_only() {
        let raw = request("srv1:brow", "server-password-24-chars", true);
        let mut r = BindingRequest::parse(&raw).expect("a binding request");
        assert_eq!(r.local_ufrag, "srv1");
        assert!(r.use_candidate);
        assert!(!r.verify("another-password-24-chars"));
        assert!(r.verify("server-password-24-chars"));
        let raw = request("srv1:brow", "server-password-24-chars", false);
        assert!(!BindingRequest::parse(&raw).unwrap().use_candidate);
        assert!(
            BindingRequest::parse(&[0x80, 0x60, 0, 1]).is_none(),
            "RTP is not STUN"
        );
        assert!(BindingRequest::parse(&raw[..10]).is_none(), "truncated");
    }

    #[test]
    fn routes_are_learnt_looked_up_and_expire_when_idle() {
        let mut t = RouteTable::default();
        let key = TransportKey {
            participant: ParticipantId(1),
            role: TransportRole::Subscriber,
        };
        let t0 = Instant::now();
        assert_eq!(t.lookup(&tuple(1), t0), None);
        assert!(t.learn(tuple(1), key, t0));
        assert_eq!(t.lookup(&tuple(1), t0 + Duration::from_secs(20)), Some(key));
        t.expire(t0 + Duration::from_secs(45));
        assert_eq!(t.len(), 1, "looked up 25 s ago: kept");
        t.expire(t0 + Duration::from_secs(51));
        assert!(t.is_empty());
        t.learn(tuple(2), key, t0);
        t.forget_participant(ParticipantId(1));
        assert!(t.is_empty());
    }

    #[test]
    fn media_follows_the_latest_nomination_and_keeps_the_old_path_routable() {
        let mut p = IcePaths::new();
        let t0 = Instant::now();
        p.start(t0);
        assert_eq!(p.destination(), None);
        p.on_datagram(tuple(1), Heard::Check { nominate: true }, t0);
        assert_eq!(p.destination(), Some(tuple(1)));
        // A check on another path without nomination (a backup ping) moves nothing while the
        // nominated path is alive.
        let u = p.on_datagram(
            tuple(2),
            Heard::Check { nominate: false },
            t0 + Duration::from_millis(500),
        );
        assert_eq!(u.switched_to, None);
        assert_eq!(p.destination(), Some(tuple(1)));
        // The browser switches pairs: its next check on the new pair carries USE-CANDIDATE.
        let u = p.on_datagram(
            tuple(2),
            Heard::Check { nominate: true },
            t0 + Duration::from_secs(2),
        );
        assert_eq!(u.switched_to, Some(tuple(2)));
        assert_eq!(p.destination(), Some(tuple(2)));
        // Late packets on the old path still count (the route stays until it goes quiet).
        p.on_datagram(tuple(1), Heard::Data, t0 + Duration::from_secs(2));
        assert_eq!(p.destination(), Some(tuple(2)));
        assert_eq!(p.paths().count(), 2);
    }

    #[test]
    fn the_first_nomination_after_a_plain_check_is_the_initial_selection_not_a_switch() {
        let mut p = IcePaths::new();
        let t0 = Instant::now();
        p.start(t0);
        // aiortc checks every pair; the first answered check is not its choice yet.
        p.on_datagram(tuple(1), Heard::Check { nominate: false }, t0);
        let u = p.on_datagram(tuple(2), Heard::Check { nominate: true }, t0);
        assert_eq!(u.switched_to, None);
        assert_eq!(p.destination(), Some(tuple(2)));
        // From then on a move is a switch.
        let u = p.on_datagram(tuple(1), Heard::Check { nominate: true }, t0);
        assert_eq!(u.switched_to, Some(tuple(1)));
    }

    #[test]
    fn a_peer_that_never_renominates_moves_media_off_a_silent_path() {
        let mut p = IcePaths::new();
        let t0 = Instant::now();
        p.start(t0);
        p.on_datagram(tuple(1), Heard::Check { nominate: true }, t0);
        let u = p.on_datagram(tuple(2), Heard::Check { nominate: false }, t0 + PATH_QUIET);
        assert_eq!(u.switched_to, Some(tuple(2)));
    }

    #[test]
    fn data_on_another_path_moves_media_once_the_active_path_is_silent() {
        let mut p = IcePaths::new();
        let t0 = Instant::now();
        p.start(t0);
        p.on_datagram(tuple(1), Heard::Check { nominate: true }, t0);
        p.on_datagram(tuple(2), Heard::Check { nominate: false }, t0);
        // Both paths carry traffic (a switch in progress): a stray packet moves nothing.
        p.on_datagram(tuple(1), Heard::Data, t0 + Duration::from_millis(100));
        let u = p.on_datagram(tuple(2), Heard::Data, t0 + Duration::from_millis(200));
        assert_eq!(u.switched_to, None);
        // The old path went silent (its link is down); the peer's media arrives on the other.
        let u = p.on_datagram(tuple(2), Heard::Data, t0 + Duration::from_millis(400));
        assert_eq!(u.switched_to, Some(tuple(2)));
        // A packet that was in flight on the old path does not move it back.
        let u = p.on_datagram(tuple(1), Heard::Data, t0 + Duration::from_millis(420));
        assert_eq!(u.switched_to, None);
        assert_eq!(p.destination(), Some(tuple(2)));
        // Data never adds a path, and STUN responses move nothing.
        p.on_datagram(tuple(3), Heard::Data, t0 + Duration::from_secs(2));
        assert_eq!(p.paths().count(), 2);
        let u = p.on_datagram(tuple(1), Heard::OtherStun, t0 + Duration::from_secs(3));
        assert_eq!(u.switched_to, None);
    }

    #[test]
    fn consent_checks_every_six_seconds_never_read_as_disconnected() {
        let mut p = IcePaths::new();
        let t0 = Instant::now();
        p.start(t0);
        assert_eq!(p.poll(t0), None);
        assert_eq!(p.state(), ConsentState::Checking);
        let mut t = t0;
        for k in 0..20 {
            let u = p.on_datagram(tuple(1), Heard::Check { nominate: false }, t);
            if k == 0 {
                assert_eq!(u.state, Some(ConsentState::Connected));
            }
            // Polled every 500 ms until the next check, 6 s later (RFC 7675's slowest).
            for k in 1..12 {
                assert_eq!(p.poll(t + Duration::from_millis(500 * k)), None);
            }
            t += Duration::from_secs(6);
        }
    }

    #[test]
    fn silence_shows_disconnected_and_consent_expires_after_thirty_seconds() {
        let mut p = IcePaths::new();
        let t0 = Instant::now();
        p.start(t0);
        p.on_datagram(tuple(1), Heard::Check { nominate: true }, t0);
        p.poll(t0);
        assert_eq!(p.next_deadline(), Some(t0 + DISCONNECTED_AFTER));
        assert_eq!(
            p.poll(t0 + DISCONNECTED_AFTER),
            Some(ConsentState::Disconnected)
        );
        assert_eq!(p.destination(), Some(tuple(1)), "media still flows");
        // Media (not consent) arriving again: connected again.
        let u = p.on_datagram(tuple(1), Heard::Data, t0 + Duration::from_secs(20));
        assert_eq!(u.state, Some(ConsentState::Connected));
        assert_eq!(p.poll(t0 + Duration::from_secs(20)), None);
        assert_eq!(p.poll(t0 + CONSENT_TIMEOUT), Some(ConsentState::Failed));
        assert_eq!(p.destination(), None);
        let u = p.on_datagram(
            tuple(1),
            Heard::Check { nominate: true },
            t0 + Duration::from_secs(31),
        );
        assert_eq!(u.state, None, "failed is final");
        assert_eq!(
            p.poll(t0 + Duration::from_secs(31)),
            None,
            "failed is final"
        );
    }

    #[test]
    fn a_transport_that_never_completes_ice_fails_after_thirty_seconds() {
        let mut p = IcePaths::new();
        let t0 = Instant::now();
        assert_eq!(p.poll(t0 + Duration::from_secs(100)), None, "not started");
        p.start(t0);
        assert_eq!(p.next_deadline(), Some(t0 + CONSENT_TIMEOUT));
        assert_eq!(p.poll(t0 + Duration::from_secs(29)), None);
        assert_eq!(p.poll(t0 + CONSENT_TIMEOUT), Some(ConsentState::Failed));
    }

    #[test]
    fn paths_are_bounded_and_the_active_one_is_never_evicted() {
        let mut p = IcePaths::new();
        let t0 = Instant::now();
        p.start(t0);
        p.on_datagram(tuple(100), Heard::Check { nominate: true }, t0);
        let mut evicted = Vec::new();
        for i in 0..MAX_PATHS as u16 + 3 {
            let u = p.on_datagram(
                tuple(i),
                Heard::Check { nominate: false },
                t0 + Duration::from_millis(10 * i as u64 + 10),
            );
            evicted.extend(u.evicted);
        }
        assert_eq!(p.paths().count(), MAX_PATHS);
        assert_eq!(evicted.len(), 4);
        assert!(!evicted.contains(&tuple(100)));
        assert_eq!(p.destination(), Some(tuple(100)));
        // An unauthenticated datagram from an unknown path adds nothing.
        p.on_datagram(tuple(999), Heard::Data, t0 + Duration::from_secs(1));
        assert!(!p.paths().any(|t| t == tuple(999)));
    }
}
