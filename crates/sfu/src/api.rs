//! The media plane's public interface: the commands the signaling layer sends, the events it
//! receives, and the cheap `Clone` handle that carries them.

use crate::ids::{MediaKind, ParticipantId, RoomId, TrackId, TrackSource, TransportRole};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Capacity of the command queue into the media worker. When full, `SfuHandle` calls wait
/// (back-pressure on the signaling sockets), they never drop a command.
pub const COMMAND_QUEUE: usize = 1024;

/// Settings of the media plane.
///
/// With several media workers ([`MediaConfig::workers`]), worker `i` (from 0) binds the ports
/// `udp_port + i` and `tcp_port + i` (a fixed port range, one port per worker; 0 stays 0: each
/// worker gets a free port of its own), and announces its own ports in its candidates.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// UDP port of worker 0's media sockets (0: chosen by the OS, once per interface); worker
    /// `i` uses `udp_port + i`.
    pub udp_port: u16,
    /// TCP port of worker 0's passive ICE-TCP listener on every interface (RFC 6544): `None`
    /// takes each worker's UDP port number, `Some(0)` lets the OS choose; worker `i` uses
    /// `tcp_port + i`.
    pub tcp_port: Option<u16>,
    /// ICE-TCP arrives through another listener on this port (the one-port front door, which
    /// hands each RFC 4571 connection over with [`SfuHandle::adopt_ice_tcp`]): the worker binds
    /// no TCP listener of its own and announces this port in its TCP candidates. Overrides
    /// `tcp_port`.
    pub tcp_shared_port: Option<u16>,
    /// One UDP socket per entry: `bind` is the local address, `announce` the address put in the
    /// ICE host candidate (differs behind a 1:1 NAT, e.g. a cloud VM's public IP).
    pub interfaces: Vec<MediaInterface>,
    /// Most participants a room admits (default 16).
    pub max_participants: usize,
    /// How long a participant whose signaling socket is gone stays in its room, media
    /// untouched, waiting to be resumed (default 20 s).
    pub resume_grace: Duration,
    /// How long a participant's publisher transport has from its join to connect (ICE and DTLS
    /// up) before the participant is removed with [`CloseReason::ConnectTimeout`] (default
    /// 20 s).
    pub connect_timeout: Duration,
    /// Media workers in the process (at least 1): each is a thread with its own sockets and
    /// [`crate::Core`]; a room lives on one worker, chosen by [`worker_for_room`].
    pub workers: usize,
}

impl MediaConfig {
    /// Worker `index`'s port for a configured `port`: 0 stays 0 (the OS chooses), else
    /// `port + index`. Errors: past 65535.
    pub fn worker_port(port: u16, index: usize) -> std::io::Result<u16> {
        if port == 0 {
            return Ok(0);
        }
        u16::try_from(usize::from(port) + index).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("media worker {index}: port {port} + {index} is past 65535"),
            )
        })
    }
}

/// The worker (index below `workers`) that hosts `room`: FNV-1a (64-bit) of the room id's
/// bytes, modulo `workers`. Stable across processes and versions, so every node and every
/// restart places a room on the same worker; a room is never split across workers.
pub fn worker_for_room(room: &RoomId, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// The worker (index below `workers`) that handed out `participant`: worker `i` hands out
/// `i + 1`, `i + 1 + workers`… ([`crate::Core::with_participant_ids`]). An id no worker
/// handed out (0) names worker 0, which answers that it does not know it.
pub fn worker_of_participant(participant: ParticipantId, workers: usize) -> usize {
    (participant.0.saturating_sub(1) % workers.max(1) as u64) as usize
}

/// One media socket: where it binds and what it announces.
#[derive(Debug, Clone, Copy)]
pub struct MediaInterface {
    /// Local address to bind (may be unspecified, `0.0.0.0`).
    pub bind: IpAddr,
    /// Address announced in the host candidate for this socket.
    pub announce: IpAddr,
}

/// A track as the others see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInfo {
    /// `<participant>-<mid>`.
    pub id: TrackId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Microphone, camera or screen.
    pub source: TrackSource,
    /// Whether the publisher said it is muted.
    pub muted: bool,
}

/// A participant as the others see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantInfo {
    /// Server-assigned id.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// Published tracks.
    pub tracks: Vec<TrackInfo>,
}

/// What a room's host does to the room or to another participant in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAction {
    /// Stop forwarding `source` of `participant` and tell it (it may unmute itself).
    Mute {
        /// Whose track.
        participant: ParticipantId,
        /// Which one.
        source: TrackSource,
    },
    /// Remove `participant`; its user may not join the room again while the room is open.
    Remove {
        /// Who.
        participant: ParticipantId,
    },
    /// Lock (`true`) or unlock the room to new joins (resumes still come back).
    Lock(bool),
}

/// Most users one room remembers as removed (the oldest is forgotten past it).
pub const MAX_REMOVED_USERS: usize = 256;

/// A room as operators see it ([`SfuHandle::snapshot`]): never a token or an ICE credential.
#[derive(Debug, Clone)]
pub struct RoomSnapshot {
    /// The room.
    pub id: RoomId,
    /// Its participants, in join order.
    pub participants: Vec<ParticipantSnapshot>,
}

/// One participant of a [`RoomSnapshot`].
#[derive(Debug, Clone)]
pub struct ParticipantSnapshot {
    /// Its id.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// The access token's subject that joined.
    pub user: String,
    /// Its signaling socket is gone and it waits to be resumed.
    pub detached: bool,
    /// What it publishes, with its mute state.
    pub tracks: Vec<TrackInfo>,
    /// Its publisher transport.
    pub publisher: TransportSnapshot,
    /// Its subscriber transport, once there is one.
    pub subscriber: Option<TransportSnapshot>,
}

/// One transport of a [`ParticipantSnapshot`].
#[derive(Debug, Clone)]
pub struct TransportSnapshot {
    /// `rtc`'s peer connection state: `new`, `connecting`, `connected`, `failed`, `closed`…
    pub state: String,
    /// ICE consent (RFC 7675) as the core tracks it: `new`, `checking`, `connected`,
    /// `disconnected`, `failed`.
    pub consent: String,
    /// The selected candidate pair media goes to: (`udp`/`tcp`, local address, remote address).
    pub selected: Option<(String, std::net::SocketAddr, std::net::SocketAddr)>,
}

/// The answer to a successful join.
#[derive(Debug, Clone)]
pub struct JoinInfo {
    /// Your id.
    pub participant: ParticipantId,
    /// Everybody else in the room, in join order.
    pub others: Vec<ParticipantInfo>,
    /// The room's capacity.
    pub max_participants: usize,
    /// The secret that lets this participant come back on a new socket within the grace period
    /// ([`SfuHandle::resume`]): 32 hex characters (128 random bits). Never logged.
    pub resume_token: String,
    /// This signaling connection's claim on the participant (a resume elsewhere ends it).
    pub attachment: Attachment,
}

/// Which signaling connection owns a participant. Every join and every resume is a new
/// attachment; the participant keeps the latest. A session that lost its socket detaches only
/// its own attachment ([`SfuHandle::detach`]), and a session whose event queue closed without a
/// `Closed` event asks [`Attachment::is_current`] to tell "resumed on another socket" (quiet)
/// from "removed" (report the leave).
#[derive(Debug, Clone)]
pub struct Attachment {
    current: Arc<AtomicU64>,
    mine: u64,
}

impl Attachment {
    /// The first attachment of a newly joined participant.
    pub(crate) fn first() -> Self {
        Attachment {
            current: Arc::new(AtomicU64::new(1)),
            mine: 1,
        }
    }

    /// A new attachment of the same participant; the older ones stop being current.
    pub(crate) fn next(&self) -> Self {
        let mine = self.current.fetch_add(1, Ordering::AcqRel) + 1;
        Attachment {
            current: Arc::clone(&self.current),
            mine,
        }
    }

    /// This attachment's number (1 for the join, then one more per resume).
    pub fn id(&self) -> u64 {
        self.mine
    }

    /// Whether no later attachment (a resume on another socket) has taken the participant.
    pub fn is_current(&self) -> bool {
        self.current.load(Ordering::Acquire) == self.mine
    }
}

/// The answer to a successful resume: the room and the participant's name besides what
/// [`JoinInfo`] carries (the others as they are now).
#[derive(Debug, Clone)]
pub struct ResumeInfo {
    /// The room the participant is in.
    pub room: RoomId,
    /// The participant's display name.
    pub name: String,
    /// Id, the others, capacity, the (unchanged) resume token.
    pub join: JoinInfo,
}

/// What one sending m-line of a `publish_offer` carries.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishTrack {
    /// The m-line's `a=mid`.
    pub mid: String,
    /// What it captures (the kind follows from it).
    pub source: TrackSource,
}

/// One m-line of a subscribe offer and the remote track it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribedTrack {
    /// The subscriber transport's `a=mid`.
    pub mid: String,
    /// The remote track.
    pub track: TrackId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Microphone, camera or screen.
    pub source: TrackSource,
}

/// Why the media plane removed a participant on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A transport failed: ICE consent expired or never came (RFC 7675), or DTLS failed or closed.
    TransportFailed,
    /// Handling this participant's input panicked; it was removed so the room goes on.
    InternalError,
    /// The participant's signaling session stopped reading its events for
    /// [`crate::mailbox::STALLED_AFTER`] (or [`crate::mailbox::MAX_QUEUED`] waited).
    SignalingBacklog,
    /// The server is shutting down.
    Shutdown,
    /// The participant came back on another socket ([`SfuHandle::resume`]): this socket's
    /// session ends quietly (no leave).
    Resumed,
    /// The participant's socket was gone for longer than the resume grace period: it has left.
    GraceExpired,
    /// A host of the room removed it; its user may not join that room again while it is open.
    Removed,
    /// Its publisher transport never connected (ICE and DTLS up) within the connect timeout of
    /// its join ([`MediaConfig::connect_timeout`]): a place in a room held by nobody is freed.
    ConnectTimeout,
    /// A DataChannel of this participant stopped acknowledging what the server sends: more
    /// than [`crate::DATA_CHANNEL_MAX_BUFFERED`] bytes waited unacknowledged (SCTP). Its
    /// own link or client is stuck; the server's memory does not grow for it.
    DataChannelBacklog,
}

/// An event for one participant's signaling session.
#[derive(Debug, Clone)]
pub enum SfuEvent {
    /// Someone joined the room.
    ParticipantJoined(ParticipantInfo),
    /// Someone left; their tracks are gone.
    ParticipantLeft(ParticipantId),
    /// Someone published a track; a subscribe offer carrying it follows.
    TrackPublished(TrackInfo),
    /// A track ended.
    TrackUnpublished(TrackId),
    /// Another participant's signaling socket is gone; it may come back within the grace
    /// period (its media may pause meanwhile).
    ParticipantReconnecting(ParticipantId),
    /// That participant is back.
    ParticipantReconnected(ParticipantId),
    /// A track's mute state changed.
    TrackMuted {
        /// The track.
        track: TrackId,
        /// Its source.
        source: TrackSource,
        /// New state.
        muted: bool,
    },
    /// A new offer for the subscriber transport; answer with [`SfuHandle::subscribe_answer`].
    SubscribeOffer {
        /// The SDP offer.
        sdp: String,
        /// What each sending m-line carries.
        tracks: Vec<SubscribedTrack>,
    },
    /// A text message arrived on one of the participant's DataChannels.
    DataMessage {
        /// The DataChannel's label (e.g. `chat`).
        label: String,
        /// The message.
        text: String,
    },
    /// A DataChannel of the participant's publisher transport opened.
    DataChannelOpen {
        /// Its label.
        label: String,
    },
    /// The media plane removed the participant; the session should close.
    Closed(CloseReason),
    /// A host muted this participant's `source`: the server forwards none of it until the
    /// participant unmutes it itself ([`SfuHandle::mute`]).
    MutedByHost(TrackSource),
    /// A host locked (`true`) or unlocked the room: while locked, nobody new joins.
    RoomLocked(bool),
    /// The simulcast layers (RIDs) of this participant's `source` that some subscriber wants:
    /// send those, stop the others.
    PublisherLayers {
        /// The participant's own track.
        source: TrackSource,
        /// RIDs to keep sending.
        active: Vec<String>,
    },
    /// Every subscriber of this participant's `source` disabled it (`true`): stop encoding it;
    /// or someone wants it again (`false`).
    PublisherPaused {
        /// The participant's own track.
        source: TrackSource,
        /// Stop or resume.
        paused: bool,
    },
    /// Who is speaking now, the dominant speaker first (at most
    /// [`crate::speakers::MAX_SPEAKERS`]; empty when nobody is). Sent to everyone in the room
    /// when the list changes, at most every [`crate::speakers::MIN_ANNOUNCE_INTERVAL`].
    ActiveSpeakers(Vec<crate::speakers::ActiveSpeaker>),
}

/// Room lifecycle, for the subsystems that hook into it (chat history, paid sessions).
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// A participant joined `room` (the room was created if it was empty).
    ParticipantJoined {
        /// The room.
        room: RoomId,
        /// Who.
        participant: ParticipantId,
        /// Display name.
        name: String,
    },
    /// A participant left `room`.
    ParticipantLeft {
        /// The room.
        room: RoomId,
        /// Who.
        participant: ParticipantId,
    },
    /// The last participant left: the room is closed.
    RoomClosed(RoomId),
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    /// The room already has `max` participants.
    #[error("the room is full ({max} participants)")]
    RoomFull {
        /// The room's capacity.
        max: usize,
    },
    /// The participant is not (or no longer) in a room.
    #[error("not in a room")]
    UnknownParticipant,
    /// The SDP does not parse or cannot be applied.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// The ICE candidate does not parse.
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    /// Offer/answer out of order, or the transport refused the description.
    #[error("negotiation failed: {0}")]
    NegotiationFailed(String),
    /// The media worker stopped.
    #[error("the media worker stopped")]
    Stopped,
    /// Handling this request panicked inside the media plane; the participant was removed.
    #[error("internal error in the media plane")]
    Internal,
    /// No participant with that id and resume token (it left, or the grace period expired).
    #[error("nothing to resume: the participant is gone or the token is wrong")]
    ResumeFailed,
    /// A host locked the room: nobody new joins.
    #[error("the room is locked")]
    RoomLocked,
    /// A host removed this user from the room: they may not join it again while it is open.
    #[error("a host removed you from this room")]
    Removed,
    /// The participant receives no such track.
    #[error("you receive no such track")]
    UnknownTrack,
}

/// How a subscriber wants one track it receives (`track_settings` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackSettings {
    /// Forward it (the default) or not: a hidden tile, audio-only mode. Video turned back on
    /// restarts on a keyframe asked for at once.
    pub enabled: bool,
    /// The size it is rendered at, CSS px `(width, height)`, if the client said (for choosing a
    /// simulcast layer).
    pub size: Option<(u32, u32)>,
}

impl Default for TrackSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            size: None,
        }
    }
}

/// Defines [`SfuMetrics`]: the counters and gauges listed here (each summed by
/// [`SfuMetrics::add_from`]) plus the worker's beat and the processing-time histogram.
macro_rules! media_metrics {
    ($( $(#[$doc:meta])* pub $field:ident: AtomicU64, )*) => {
        /// Counters of the media plane, one set per media worker, updated by that worker with
        /// relaxed atomics (no lock on the packet path) and read by `/metrics`, `/healthz` and
        /// the benchmark (summed over workers by [`SfuHandle::metrics_total`]).
        #[derive(Debug, Default)]
        pub struct SfuMetrics {
            $( $(#[$doc])* pub $field: AtomicU64, )*
            /// When the media worker's loop last ran its timers: ms since a process-wide epoch (0: never).
            /// The loop runs them at least once a second ([`SfuMetrics::since_worker_beat`]).
            pub worker_beat_ms: AtomicU64,
            /// Per-datagram processing time histogram (not cumulative): slot `i` counts datagrams that
            /// took more than `PROCESSING_BUCKETS_NS[i - 1]` and at most `PROCESSING_BUCKETS_NS[i]` ns;
            /// the last slot counts the slower rest. `/metrics` exports it as a Prometheus histogram.
            pub processing_hist: [AtomicU64; PROCESSING_BUCKETS_NS.len() + 1],
        }

        impl SfuMetrics {
            /// Adds `other`'s counters, gauges and histogram to these (relaxed reads). The
            /// beat is not a sum: [`SfuHandle::metrics_total`] sets it to the stalest worker's.
            pub fn add_from(&self, other: &SfuMetrics) {
                $( Self::add(&self.$field, Self::get(&other.$field)); )*
                for (mine, theirs) in self.processing_hist.iter().zip(&other.processing_hist) {
                    Self::add(mine, Self::get(theirs));
                }
            }
        }
    };
}

media_metrics! {
    /// UDP datagrams received.
    pub datagrams_in: AtomicU64,
    /// UDP datagrams sent.
    pub datagrams_out: AtomicU64,
    /// RTP packets received from publishers.
    pub rtp_in: AtomicU64,
    /// RTP packets handed to subscriber transports.
    pub rtp_forwarded: AtomicU64,
    /// RTP payload+header bytes handed to subscriber transports.
    pub bytes_forwarded: AtomicU64,
    /// RTP packets sent again to a subscriber that NACKed them (RFC 4585 section 6.2.1).
    pub rtp_retransmitted: AtomicU64,
    /// Distinct RTP packets subscribers NACKed (each counted at its first NACK, while the
    /// server still holds it).
    pub rtp_nacked: AtomicU64,
    /// NACKed packets not sent again because the downtrack's retransmission credit was spent
    /// (`crate::retransmit::RETRANSMIT_BURST`).
    pub nacks_over_budget: AtomicU64,
    /// REMB bandwidth estimates received from subscribers (draft-alvestrand-rmcat-remb).
    pub bandwidth_estimates_in: AtomicU64,
    /// REMBs sent to publishers of single-stream video to cap or uncap their bitrate
    /// (`crate::bwe::UplinkCap`).
    pub uplink_caps_sent: AtomicU64,
    /// Video packets dropped because the subscriber waits for a keyframe.
    pub drops_keyframe_wait: AtomicU64,
    /// Packets dropped because the subscriber leg has no such payload type.
    pub drops_unmapped_pt: AtomicU64,
    /// Datagrams dropped because the socket's send buffer was full.
    pub drops_socket_full: AtomicU64,
    /// Datagrams from an unknown address that were not a STUN request we issued.
    pub drops_unroutable: AtomicU64,
    /// STUN that `rtc` addressed to a 5-tuple the peer was never heard on (a candidate address
    /// the client only named): an ICE-lite server answers checks and sends none (RFC 8445
    /// section 2.5), so the server never sends to an address that did not first reach it.
    pub drops_unheard_destination: AtomicU64,
    /// Frames dropped because an ICE-TCP connection's write queue was full (a slow TCP peer
    /// loses its own packets; nobody else waits).
    pub drops_tcp_queue_full: AtomicU64,
    /// ICE-TCP connections accepted, and refused past the connection limit.
    pub tcp_connections: AtomicU64,
    /// ICE-TCP connections refused (over the limit).
    pub tcp_refused: AtomicU64,
    /// Forwarding writes the subscriber transport refused.
    pub drops_write_error: AtomicU64,
    /// Packets not forwarded to a subscriber whose transport cannot send yet (not connected,
    /// or consent expired); the leg's sequence numbers skip nothing and video restarts on a
    /// keyframe.
    pub drops_not_connected: AtomicU64,
    /// Times a transport's media moved to another 5-tuple because the peer nominated it (or
    /// checked it after the old one went quiet).
    pub ice_path_switches: AtomicU64,
    /// Times a downtrack began forwarding another simulcast layer (on that layer's keyframe).
    pub layer_switches: AtomicU64,
    /// Transports whose pair the server selected when the peer's DTLS arrived on it, before
    /// the peer's USE-CANDIDATE (`Transport::nomination` in `room.rs`).
    pub ice_early_nominations: AtomicU64,
    /// Video packets held for a subscriber transport while it connected for the first time
    /// (from the publisher's latest keyframe, `DownTrack::early` in `room.rs`) and sent the
    /// moment it connected.
    pub rtp_early_sent: AtomicU64,
    /// Times a transport went `disconnected` (nothing heard for
    /// [`crate::routing::DISCONNECTED_AFTER`]; media keeps flowing).
    pub consent_disconnects: AtomicU64,
    /// Transports that failed: consent expired (RFC 7675, 30 s) or ICE never completed.
    pub consent_failures: AtomicU64,
    /// Participants removed because handling their input panicked (the others stay).
    pub participant_panics: AtomicU64,
    /// Video packets not sent to a subscriber whose ICE-TCP connection was backed up (they
    /// restart on a keyframe once it drains; audio is never dropped this way).
    pub drops_congested: AtomicU64,
    /// Signaling sockets lost without a `leave` (the participant waits to be resumed).
    pub detaches: AtomicU64,
    /// Participants taken over on a new socket with their resume token.
    pub resumes: AtomicU64,
    /// Detached participants removed because the resume grace period ended.
    pub resume_grace_expiries: AtomicU64,
    /// Participants removed because their publisher transport never connected in time.
    pub connect_timeouts: AtomicU64,
    /// Subscriber transports offered again with an ICE restart at the client's request.
    pub ice_restarts: AtomicU64,
    /// Binding requests that did not authenticate: a USERNAME naming no current transport
    /// (unknown or stale ufrag) or a MESSAGE-INTEGRITY that did not verify. From a new 5-tuple
    /// they are dropped; on a learnt one `rtc` answers them with an error; neither counts as
    /// consent.
    pub stun_auth_failures: AtomicU64,
    /// Keyframe requests (PLI) sent to publishers.
    pub plis_sent: AtomicU64,
    /// Keyframe requests (PLI/FIR) received from subscribers.
    pub keyframe_requests_in: AtomicU64,
    /// Rooms open now.
    pub rooms: AtomicU64,
    /// Participants connected now.
    pub participants: AtomicU64,
    /// ICE routes held now: entries (5-tuples) in the core's route table
    /// ([`crate::routing::RouteTable::len`]). A gauge, in routes; the core sets it on its timer
    /// ticks, when it learns a route and when a participant leaves (never per media packet).
    pub routes: AtomicU64,
    /// m-lines held now by subscriber transports: the `m=` sections of every participant's
    /// latest subscribe offer, summed over participants. A gauge, in m-lines; the core updates
    /// it when an offer is made and when a participant leaves.
    pub subscriber_mlines: AtomicU64,
    /// Sum of per-datagram processing time, ns (receive to last resulting send).
    pub processing_ns: AtomicU64,
    /// Datagrams whose processing time is in `processing_ns`.
    pub processing_samples: AtomicU64,
}

/// Upper bounds (ns) of [`SfuMetrics::processing_hist`]'s buckets, 1 µs to 50 ms.
pub const PROCESSING_BUCKETS_NS: [u64; 15] = [
    1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
    5_000_000, 10_000_000, 20_000_000, 50_000_000,
];

/// The instant the process first asked for it: the zero of [`SfuMetrics::worker_beat_ms`].
pub(crate) fn process_epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

impl SfuMetrics {
    /// Records that the media worker's loop is turning (called from its timer branch).
    pub(crate) fn worker_beat(&self) {
        let ms = process_epoch().elapsed().as_millis() as u64;
        self.worker_beat_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// How long ago the media worker's loop last turned; `None` if it never did. A live worker
    /// turns at least once a second, so seconds here mean it is stuck (for `/healthz`).
    pub fn since_worker_beat(&self) -> Option<std::time::Duration> {
        let ms = self.worker_beat_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| {
            process_epoch()
                .elapsed()
                .saturating_sub(std::time::Duration::from_millis(ms))
        })
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
    /// Records one datagram's processing time: the sum, the count and the histogram bucket
    /// (a scan of 15 bounds, three relaxed atomic adds; no lock, no allocation).
    pub(crate) fn record_processing(&self, ns: u64) {
        Self::add(&self.processing_ns, ns);
        Self::inc(&self.processing_samples);
        let slot = PROCESSING_BUCKETS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(PROCESSING_BUCKETS_NS.len());
        Self::inc(&self.processing_hist[slot]);
    }
}

pub(crate) enum Command {
    Join {
        room: RoomId,
        name: String,
        user: String,
        events: crate::mailbox::EventSender,
        subscribes: bool,
        reply: oneshot::Sender<Result<JoinInfo, SfuError>>,
    },
    PublishOffer {
        participant: ParticipantId,
        sdp: String,
        tracks: Vec<PublishTrack>,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    SubscribeAnswer {
        participant: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    TrackSettings {
        participant: ParticipantId,
        track: TrackId,
        settings: TrackSettings,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Candidate {
        participant: ParticipantId,
        role: TransportRole,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Mute {
        participant: ParticipantId,
        source: TrackSource,
        muted: bool,
    },
    SendData {
        participant: ParticipantId,
        label: String,
        text: String,
    },
    Broadcast {
        room: RoomId,
        except: Option<ParticipantId>,
        label: String,
        text: String,
    },
    Leave {
        participant: ParticipantId,
    },
    Detach {
        participant: ParticipantId,
        attachment: u64,
    },
    Resume {
        participant: ParticipantId,
        token: String,
        user: String,
        events: crate::mailbox::EventSender,
        reply: oneshot::Sender<Result<ResumeInfo, SfuError>>,
    },
    RestartIce {
        participant: ParticipantId,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Snapshot {
        room: Option<RoomId>,
        reply: oneshot::Sender<Result<Vec<RoomSnapshot>, SfuError>>,
    },
    Host {
        host: ParticipantId,
        action: HostAction,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    AdoptTcp {
        stream: std::net::TcpStream,
        local_ip: IpAddr,
        remote: std::net::SocketAddr,
    },
    KnowsUfrag {
        ufrag: String,
        reply: oneshot::Sender<Result<bool, SfuError>>,
    },
    Shutdown,
}

impl Command {
    /// The command's name, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::PublishOffer { .. } => "publish_offer",
            Self::SubscribeAnswer { .. } => "subscribe_answer",
            Self::TrackSettings { .. } => "track_settings",
            Self::Candidate { .. } => "candidate",
            Self::Mute { .. } => "mute",
            Self::SendData { .. } => "send_data",
            Self::Broadcast { .. } => "broadcast",
            Self::Leave { .. } => "leave",
            Self::Detach { .. } => "detach",
            Self::Resume { .. } => "resume",
            Self::RestartIce { .. } => "restart_ice",
            Self::Snapshot { .. } => "snapshot",
            Self::Host { .. } => "host",
            Self::AdoptTcp { .. } => "adopt_tcp",
            Self::KnowsUfrag { .. } => "knows_ufrag",
            Self::Shutdown => "shutdown",
        }
    }
}

/// One media worker as a [`SfuHandle`] reaches it: its command queue, its counters and the
/// addresses it announces. Made by [`crate::spawn_media_worker`].
#[derive(Clone)]
pub struct MediaWorker {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) metrics: Arc<SfuMetrics>,
    pub(crate) udp_addrs: Vec<std::net::SocketAddr>,
    pub(crate) tcp_addrs: Vec<std::net::SocketAddr>,
}

impl MediaWorker {
    /// This worker's counters.
    pub fn metrics(&self) -> &Arc<SfuMetrics> {
        &self.metrics
    }
}

/// A cheap, cloneable handle to the media workers. Every call is a command over one worker's
/// bounded queue ([`COMMAND_QUEUE`]); request/response calls wait for that worker's reply. A
/// room's commands go to the worker [`worker_for_room`] names, a participant's to the worker
/// that handed out its id ([`worker_of_participant`]).
#[derive(Clone)]
pub struct SfuHandle {
    workers: Arc<[MediaWorker]>,
    udp_addrs: Arc<Vec<std::net::SocketAddr>>,
    tcp_addrs: Arc<Vec<std::net::SocketAddr>>,
}

impl SfuHandle {
    /// A handle over `workers`, in index order (worker `i` must have been spawned as index `i`
    /// of `workers.len()`). Errors: an empty list.
    pub fn new(workers: Vec<MediaWorker>) -> std::io::Result<Self> {
        if workers.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no media worker",
            ));
        }
        let udp_addrs = workers.iter().flat_map(|w| w.udp_addrs.clone()).collect();
        let tcp_addrs = workers.iter().flat_map(|w| w.tcp_addrs.clone()).collect();
        Ok(Self {
            workers: workers.into(),
            udp_addrs: Arc::new(udp_addrs),
            tcp_addrs: Arc::new(tcp_addrs),
        })
    }

    fn for_room(&self, room: &RoomId) -> &MediaWorker {
        &self.workers[worker_for_room(room, self.workers.len())]
    }

    fn for_participant(&self, participant: ParticipantId) -> &MediaWorker {
        &self.workers[worker_of_participant(participant, self.workers.len())]
    }

    async fn call<T>(
        worker: &MediaWorker,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, SfuError> {
        let (reply, rx) = oneshot::channel();
        worker
            .tx
            .send(make(reply))
            .await
            .map_err(|_| SfuError::Stopped)?;
        rx.await.map_err(|_| SfuError::Stopped)?
    }

    async fn send(worker: &MediaWorker, command: Command) {
        let _ = worker.tx.send(command).await;
    }

    /// Joins `room` as `name` on behalf of `user` (the access token's subject: only that user
    /// may resume the participant); `events` receives this participant's [`SfuEvent`]s (create
    /// it from [`crate::mailbox::mailbox`]). Errors: [`SfuError::RoomFull`], [`SfuError::Stopped`].
    pub async fn join(
        &self,
        room: RoomId,
        name: String,
        user: String,
        events: crate::mailbox::EventSender,
    ) -> Result<JoinInfo, SfuError> {
        self.join_as(room, name, user, events, true).await
    }

    /// [`Self::join`] for a participant that only publishes (a WHIP ingest, RFC 9725): it
    /// gets no subscriber transport and no subscribe offers; the others see it as anyone
    /// else. Errors: as [`Self::join`].
    pub async fn join_publisher(
        &self,
        room: RoomId,
        name: String,
        user: String,
        events: crate::mailbox::EventSender,
    ) -> Result<JoinInfo, SfuError> {
        self.join_as(room, name, user, events, false).await
    }

    async fn join_as(
        &self,
        room: RoomId,
        name: String,
        user: String,
        events: crate::mailbox::EventSender,
        subscribes: bool,
    ) -> Result<JoinInfo, SfuError> {
        Self::call(self.for_room(&room), |reply| Command::Join {
            room,
            name,
            user,
            events,
            subscribes,
            reply,
        })
        .await
    }

    /// Applies the client's offer on its publisher transport and returns the SDP answer.
    /// Errors: [`SfuError::InvalidSdp`], [`SfuError::UnknownParticipant`].
    pub async fn publish_offer(
        &self,
        participant: ParticipantId,
        sdp: String,
        tracks: Vec<PublishTrack>,
    ) -> Result<String, SfuError> {
        Self::call(self.for_participant(participant), |reply| {
            Command::PublishOffer {
                participant,
                sdp,
                tracks,
                reply,
            }
        })
        .await
    }

    /// How `participant` wants one track it receives ([`TrackSettings`]). Errors:
    /// [`SfuError::UnknownTrack`] (it receives no such track), [`SfuError::UnknownParticipant`].
    pub async fn track_settings(
        &self,
        participant: ParticipantId,
        track: TrackId,
        settings: TrackSettings,
    ) -> Result<(), SfuError> {
        Self::call(self.for_participant(participant), |reply| {
            Command::TrackSettings {
                participant,
                track,
                settings,
                reply,
            }
        })
        .await
    }

    /// Applies the client's answer to the last subscribe offer.
    /// Errors: [`SfuError::NegotiationFailed`] (no offer pending), [`SfuError::InvalidSdp`].
    pub async fn subscribe_answer(
        &self,
        participant: ParticipantId,
        sdp: String,
    ) -> Result<(), SfuError> {
        Self::call(self.for_participant(participant), |reply| {
            Command::SubscribeAnswer {
                participant,
                sdp,
                reply,
            }
        })
        .await
    }

    /// Adds a trickled remote ICE candidate (RFC 8838). An empty `candidate` is end-of-candidates.
    /// Errors: [`SfuError::InvalidCandidate`].
    pub async fn candidate(
        &self,
        participant: ParticipantId,
        role: TransportRole,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    ) -> Result<(), SfuError> {
        Self::call(self.for_participant(participant), |reply| {
            Command::Candidate {
                participant,
                role,
                candidate,
                sdp_mid,
                sdp_mline_index,
                reply,
            }
        })
        .await
    }

    /// Records the mute state of one of the participant's sources and tells the others.
    pub async fn mute(&self, participant: ParticipantId, source: TrackSource, muted: bool) {
        let command = Command::Mute {
            participant,
            source,
            muted,
        };
        Self::send(self.for_participant(participant), command).await;
    }

    /// Sends a text message on the participant's DataChannel `label` (if open).
    pub async fn send_data(&self, participant: ParticipantId, label: String, text: String) {
        let command = Command::SendData {
            participant,
            label,
            text,
        };
        Self::send(self.for_participant(participant), command).await;
    }

    /// Sends a text message on the DataChannel `label` of every participant of `room` (but
    /// `except`), where open. Used to relay chat.
    pub async fn broadcast_data(
        &self,
        room: RoomId,
        except: Option<ParticipantId>,
        label: String,
        text: String,
    ) {
        let worker = self.for_room(&room);
        let command = Command::Broadcast {
            room,
            except,
            label,
            text,
        };
        Self::send(worker, command).await;
    }

    /// Removes the participant from its room (idempotent).
    pub async fn leave(&self, participant: ParticipantId) {
        Self::send(
            self.for_participant(participant),
            Command::Leave { participant },
        )
        .await;
    }

    /// The participant's signaling socket is gone (not a leave): it stays in the room for the
    /// resume grace period, its media untouched, and the others get `ParticipantReconnecting`.
    /// Its old event queue keeps receiving until it resumes (`Closed(Resumed)`) or the grace
    /// period ends (`Closed(GraceExpired)`, after which it has left).
    /// A detach by an attachment that is no longer current (the participant already resumed on
    /// another socket) is ignored.
    pub async fn detach(&self, participant: ParticipantId, attachment: &Attachment) {
        let command = Command::Detach {
            participant,
            attachment: attachment.id(),
        };
        Self::send(self.for_participant(participant), command).await;
    }

    /// Takes a participant over on a new socket: `token` is its [`JoinInfo::resume_token`],
    /// `user` the new socket's access-token subject (must be the one that joined), `events` its
    /// new queue. A subscribe offer still unanswered is sent again (no ICE restart: the client
    /// asks for one with [`Self::restart_ice`] when its transports did not survive). Errors:
    /// [`SfuError::ResumeFailed`].
    pub async fn resume(
        &self,
        participant: ParticipantId,
        token: String,
        user: String,
        events: crate::mailbox::EventSender,
    ) -> Result<ResumeInfo, SfuError> {
        Self::call(self.for_participant(participant), |reply| Command::Resume {
            participant,
            token,
            user,
            events,
            reply,
        })
        .await
    }

    /// Offers the participant's subscriber transport again with an ICE restart (the client's
    /// subscriber went `failed`, or its network changed).
    pub async fn restart_ice(&self, participant: ParticipantId) -> Result<(), SfuError> {
        Self::call(self.for_participant(participant), |reply| {
            Command::RestartIce { participant, reply }
        })
        .await
    }

    /// `host` (a participant the signaling layer knows holds a `host` token) acts on its room.
    /// Errors: [`SfuError::UnknownParticipant`] when either is not in a room, or the target is
    /// in another room (or is the host itself, for a removal); [`SfuError::Stopped`].
    pub async fn host(&self, host: ParticipantId, action: HostAction) -> Result<(), SfuError> {
        Self::call(self.for_participant(host), |reply| Command::Host {
            host,
            action,
            reply,
        })
        .await
    }

    /// Every room (`room: None`, from every worker) or that one room, as operators see it, by
    /// room id. Errors: [`SfuError::Stopped`].
    pub async fn snapshot(&self, room: Option<RoomId>) -> Result<Vec<RoomSnapshot>, SfuError> {
        if let Some(id) = room {
            let worker = self.for_room(&id);
            return Self::call(worker, |reply| Command::Snapshot {
                room: Some(id),
                reply,
            })
            .await;
        }
        let mut rooms = Vec::new();
        for worker in self.workers.iter() {
            rooms
                .extend(Self::call(worker, |reply| Command::Snapshot { room: None, reply }).await?);
        }
        rooms.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(rooms)
    }

    /// Hands an ICE-TCP connection (RFC 6544 passive, RFC 4571 framing) accepted elsewhere
    /// (the one-port front door, after its first bytes read as framed STUN) to the worker
    /// whose transport it is for. `first_frame` is the connection's first RFC 4571 frame's
    /// payload (a STUN binding request, peeked, not read: nothing may have been read from
    /// `stream`); the worker is the one whose transport's local ufrag its USERNAME names (RFC
    /// 8445 section 7.2.2). A frame that names no transport's ufrag goes to worker 0, which
    /// treats it like any unknown check (dropped, counted in `stun_auth_failures`; the
    /// connection closes when idle). `local_ip` is the address it was
    /// accepted on; the connection is tagged with the TCP candidate announced for it (or the
    /// first one, behind a 1:1 NAT). Subject to the worker's connection limit like its own
    /// listeners' connections.
    pub async fn adopt_ice_tcp(
        &self,
        stream: std::net::TcpStream,
        local_ip: IpAddr,
        remote: std::net::SocketAddr,
        first_frame: &[u8],
    ) {
        let worker = match &*self.workers {
            [only] => only,
            all => {
                let ufrag =
                    crate::routing::BindingRequest::parse(first_frame).map(|r| r.local_ufrag);
                let mut owner = &all[0];
                if let Some(ufrag) = ufrag {
                    for worker in all {
                        let ufrag = ufrag.clone();
                        if Self::call(worker, |reply| Command::KnowsUfrag { ufrag, reply }).await
                            == Ok(true)
                        {
                            owner = worker;
                            break;
                        }
                    }
                }
                owner
            }
        };
        let command = Command::AdoptTcp {
            stream,
            local_ip,
            remote,
        };
        Self::send(worker, command).await;
    }

    /// Closes every room (participants get [`CloseReason::Shutdown`]) and stops every worker.
    pub async fn shutdown(&self) {
        for worker in self.workers.iter() {
            Self::send(worker, Command::Shutdown).await;
        }
    }

    /// The media workers, in index order (for per-worker counters).
    pub fn workers(&self) -> &[MediaWorker] {
        &self.workers
    }

    /// Every worker's counters added up ([`SfuMetrics::add_from`]), read now; the beat
    /// ([`SfuMetrics::since_worker_beat`]) is the stalest worker's.
    pub fn metrics_total(&self) -> SfuMetrics {
        let total = SfuMetrics::default();
        let mut stalest = u64::MAX;
        for worker in self.workers.iter() {
            total.add_from(&worker.metrics);
            stalest = stalest.min(SfuMetrics::get(&worker.metrics.worker_beat_ms));
        }
        total.worker_beat_ms.store(stalest, Ordering::Relaxed);
        total
    }

    /// Participants in every room of every worker now (the `participants` gauges summed).
    pub fn participants(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| SfuMetrics::get(&w.metrics.participants))
            .sum()
    }

    /// The announced address of each media socket of every worker (`announce ip : bound
    /// port`), worker by worker.
    pub fn udp_addrs(&self) -> &[std::net::SocketAddr] {
        &self.udp_addrs
    }

    /// The announced addresses of every worker's ICE-TCP candidates (one per interface each).
    pub fn tcp_addrs(&self) -> &[std::net::SocketAddr] {
        &self.tcp_addrs
    }
}
