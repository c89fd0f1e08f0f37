//! A room: its participants, their two transports, the tracks they publish and the forwarding
//! of every published track to every other participant.
//!
//! Owned by the media worker (one task); nothing here is shared or locked. Participants are a
//! `Vec` in join order (rooms hold at most a few dozen): forwarding walks it by index so the
//! publisher and each subscriber can be borrowed mutably in turn.

use crate::api::{
    CloseReason, ParticipantInfo, PublishTrack, SfuError, SfuEvent, SfuMetrics, SubscribedTrack,
    TrackInfo, TrackSettings,
};
use crate::bwe::{SubscriberBandwidth, UplinkCap};
use crate::codec::{is_keyframe_start, CodecFamily};
use crate::ids::{MediaKind, ParticipantId, RoomId, TrackId, TrackSource, TransportRole};
use crate::negotiation::NegotiationState;
use crate::peer::{build_peer_connection, IceCredentials, AUDIO_LEVEL_URI, MID_URI};
use crate::retransmit::{PacketCache, Resendable, SentLog};
use crate::rewrite::{RtpRewriter, Verdict};
use crate::routing::{ConsentState, IcePaths};
use crate::speakers::{LevelMeter, SpeakerDetector};
use rtc::ice::tcp_type::TcpType;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use rtc::shared::FiveTuple;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Least time between two keyframe requests sent to a publisher for one track; subscribers'
/// PLI/FIR and the forwarder's own requests within it are absorbed (a burst of new subscribers
/// costs the publisher one keyframe, not one each).
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// One of a participant's two peer connections.
pub(crate) struct Transport {
    pub pc: RTCPeerConnection,
    /// Its local ICE credentials (random, from the local description; `None` before one):
    /// binding requests are authenticated with them before a route is learnt (the core does it,
    /// `rtc` checks again). They change at an ICE restart (RFC 8445 section 9).
    pub ice: Option<IceCredentials>,
    /// The credentials an ICE restart replaced: still accepted until the peer's first check
    /// with the new ones (the restart is not complete before).
    pub retired_ice: Option<IceCredentials>,
    /// `ice` changed since the core last synced its ufrag table.
    pub ice_changed: bool,
    /// The peer's 5-tuples, the one media goes to, and consent (`rtc`'s lite agent keeps the
    /// first nominated pair for good; this follows the browser).
    pub paths: IcePaths,
    /// Cached `pc.poll_timeout()`, refreshed after every interaction.
    pub deadline: Option<Instant>,
    /// `rtc`'s connection state: `Connected` once ICE and DTLS are up (with `rtc`'s ICE
    /// timeouts off it leaves `Connected` only for `Failed` (DTLS) or `Closed`).
    pub state: RTCPeerConnectionState,
    /// Has output waiting in `pc.poll_write()`.
    pub dirty: bool,
    /// `rtc`'s ICE agent has selected a pair: before that it drops every non-STUN datagram.
    pub ice_connected: bool,
    /// Non-STUN datagrams (DTLS ClientHellos) that arrived before `ice_connected`, replayed
    /// once it is: a browser sends its ClientHello as soon as a check succeeds, before it
    /// nominates, and waits out a retransmission timer when it is lost (measured ≈ 0.6 s per
    /// transport). At most [`EARLY_DATAGRAMS`].
    pub early: Vec<(FiveTuple, bytes::BytesMut, Instant)>,
    /// Before `ice_connected`: the peer's latest verified check without USE-CANDIDATE, as a
    /// nomination ([`crate::routing::BindingRequest::nominating`]) and the 5-tuple it came on.
    /// A browser starts DTLS on a pair as soon as its check succeeds and nominates only with
    /// its next check, ~50 ms later (measured on loopback, every transport); RFC 8445 section
    /// 12.1 lets it use a valid pair before nomination, but `rtc` selects a pair only on
    /// USE-CANDIDATE and drops the DTLS meanwhile. When DTLS arrives on that 5-tuple, the core
    /// hands `rtc` this nomination first, so the handshake starts at once.
    pub nomination: Option<(FiveTuple, bytes::BytesMut)>,
    /// The connection media goes out on is backed up (an ICE-TCP write queue past its high
    /// mark, [`crate::Core::set_congested`]): video to this transport is dropped until it
    /// drains and then restarts on a keyframe; audio keeps flowing.
    pub congested: bool,
    /// Has been `Connected` before: until then video for it is held from a keyframe on
    /// ([`DownTrack::early`]) instead of dropped.
    pub connected_once: bool,
    /// Where media went when it last became `Connected`: a reconnect on the same 5-tuple (an
    /// ICE restart on the same network) is not a new path, and its loss is the link's own.
    pub connected_via: Option<FiveTuple>,
}

/// Most datagrams a transport holds before ICE selects a pair (a DTLS flight is 1–3 records).
pub const EARLY_DATAGRAMS: usize = 8;

impl Transport {
    /// Whether media can be sent: DTLS is up and consent has not expired. A `disconnected`
    /// transport (RFC 7675: consent still fresh) keeps receiving media.
    pub fn can_send(&self) -> bool {
        self.state == RTCPeerConnectionState::Connected
            && self.paths.state() != ConsentState::Failed
    }

    /// Re-reads the local ICE credentials after a local description was applied; a change (the
    /// first description, or an ICE restart) retires the old ones and marks the transport for the
    /// core's ufrag table.
    pub fn refresh_ice(&mut self) {
        let Some(now) = self
            .pc
            .local_description()
            .and_then(|d| IceCredentials::from_sdp(&d.sdp))
        else {
            return;
        };
        if self.ice.as_ref() != Some(&now) {
            self.retired_ice = self.ice.replace(now);
            self.ice_changed = true;
        }
    }

    fn new(
        participant: ParticipantId,
        role: TransportRole,
        local: &LocalCandidates,
        now: Instant,
    ) -> Result<Self, SfuError> {
        let mut pc = build_peer_connection(participant, role, now)
            .map_err(|e| SfuError::NegotiationFailed(e.to_string()))?;
        // UDP host candidates, then passive TCP ones (RFC 6544): browsers only make active TCP
        // candidates, so they connect over TCP only to a peer that offers passive ones. `rtc`
        // gives TCP candidates a lower priority, so UDP wins wherever it works.
        let udp = local.udp.iter().map(|a| (a, "udp", TcpType::Unspecified));
        let tcp = local.tcp.iter().map(|a| (a, "tcp", TcpType::Passive));
        for (addr, network, tcp_type) in udp.chain(tcp) {
            let candidate = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: network.to_owned(),
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    component: 1,
                    ..Default::default()
                },
                tcp_type,
            }
            .new_candidate_host()
            .and_then(|c| RTCIceCandidate::from(&c).to_json())
            .map_err(|e| SfuError::NegotiationFailed(e.to_string()))?;
            pc.add_local_candidate(candidate)
                .map_err(|e| SfuError::NegotiationFailed(e.to_string()))?;
        }
        Ok(Self {
            pc,
            ice: None,
            retired_ice: None,
            ice_changed: false,
            paths: IcePaths::new(),
            deadline: Some(now),
            state: RTCPeerConnectionState::New,
            dirty: true,
            ice_connected: false,
            early: Vec::new(),
            nomination: None,
            congested: false,
            connected_once: false,
            connected_via: None,
        })
    }
}

/// The addresses the media worker receives on, announced as host candidates: one per interface
/// and protocol (`address:port` as the peer reaches it).
#[derive(Debug, Clone, Default)]
pub struct LocalCandidates {
    /// UDP sockets.
    pub udp: Vec<SocketAddr>,
    /// Passive ICE-TCP listeners (RFC 6544; RFC 4571 framing).
    pub tcp: Vec<SocketAddr>,
}

/// A track a participant publishes.
pub(crate) struct Published {
    pub mid: String,
    pub source: TrackSource,
    pub muted: bool,
    /// A host muted it: its RTP is not forwarded until its publisher unmutes it.
    pub host_muted: bool,
    pub receiver: Option<RTCRtpReceiverId>,
    /// SSRCs seen for it (from `a=ssrc` and from the first packets).
    pub ssrcs: Vec<u32>,
    /// Negotiated codecs of the publisher leg (payload type → codec).
    pub codecs: Vec<RTCRtpCodecParameters>,
    /// Negotiated header extensions of the publisher leg.
    pub extensions: Vec<RTCRtpHeaderExtensionParameters>,
    pub last_keyframe_request: Option<Instant>,
    /// A keyframe asked for past the throttle (after a path switch, a reconnect, a drained
    /// queue) has not arrived yet: `(last request, requests so far)`. Asked again every
    /// [`KEYFRAME_RETRY`] until one arrives, at most [`KEYFRAME_RETRIES`] times in all: the first
    /// request often reaches a peer that is still switching pairs and is lost.
    pub keyframe_pending: Option<(Instant, u8)>,
    /// The publisher leg's id of the `ssrc-audio-level` header extension (RFC 6464), when a
    /// microphone negotiated it.
    pub audio_level_ext: Option<u8>,
    /// This track's audio levels since the room's last speaker tick.
    pub levels: LevelMeter,
    /// The publisher was told to stop encoding it: every subscriber disabled it
    /// ([`Room::update_publisher_pauses`]).
    pub paused: bool,
    /// Simulcast layers (RFC 8853), one per RID the publisher sends, lowest quality first;
    /// empty for a track sent as one stream.
    pub layers: Vec<Layer>,
    /// The packets it received lately, for subscribers' NACKs ([`crate::retransmit`]): one per
    /// track, whatever the number of subscribers; kept across renegotiations.
    pub cache: PacketCache,
    /// A single-stream video track's cap under its weakest subscriber ([`crate::uplink`]).
    pub uplink: UplinkCap,
}

/// One simulcast layer of a published video track.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// Its SSRC.
    pub ssrc: u32,
    /// Its RID (RFC 8851), as the publisher named it.
    pub rid: String,
    /// The last layer tick at which a subscriber wanted it.
    pub needed_at: Option<Instant>,
    /// The publisher was told to stop sending it (`publisher_layers`): nobody wanted it for
    /// [`LAYER_UNNEEDED`].
    pub paused: bool,
    /// Quality rank from its RID: `l`/`q` 0, `m`/`h`... see [`layer_rank`].
    pub rank: u8,
    /// Frame width in px, from its latest VP8 keyframe (0: not known yet).
    pub width: u16,
    /// Its latest packet: a layer silent for [`LAYER_IDLE`] is not chosen (the publisher's
    /// encoder dropped it, e.g. for lack of bandwidth or CPU).
    pub last_packet: Option<Instant>,
    /// RTP bytes received since the last layer tick.
    pub bytes: u64,
    /// Its bitrate, bits per second, averaged over the last layer ticks (0: not measured yet).
    pub bitrate: u64,
    /// When a PLI last asked this layer's encoder for a keyframe.
    pub last_keyframe_request: Option<Instant>,
}

impl Layer {
    /// Whether the publisher still sends it.
    fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }

    /// What it costs a subscriber, bits per second: measured, else the browser client's cap
    /// for its rank (150, 500, 1 500 kbit/s).
    fn cost(&self) -> u64 {
        if self.bitrate > 0 {
            self.bitrate
        } else {
            [150_000, 500_000, 1_500_000][usize::from(self.rank.min(2))]
        }
    }
}

/// The active layer of rank `want` or the next one below it (the lowest active one when none is
/// below; the top one when `want` is `None`).
fn layer_at_or_below(layers: &[Layer], want: Option<u8>, now: Instant) -> Option<&Layer> {
    pick_at_or_below(layers.iter().filter(|l| l.active(now)), want)
}

/// [`layer_at_or_below`] among every layer the publisher has sent, paused ones too: what a
/// rank costs once the publisher sends it again (for the bandwidth plan).
fn known_at_or_below(layers: &[Layer], want: Option<u8>) -> Option<&Layer> {
    pick_at_or_below(layers.iter().filter(|l| l.last_packet.is_some()), want)
}

fn pick_at_or_below<'a>(
    active: impl Iterator<Item = &'a Layer>,
    want: Option<u8>,
) -> Option<&'a Layer> {
    match want {
        None => active.max_by_key(|l| l.rank),
        Some(w) => {
            let all: Vec<&Layer> = active.collect();
            all.iter()
                .filter(|l| l.rank <= w)
                .max_by_key(|l| l.rank)
                .or_else(|| all.iter().min_by_key(|l| l.rank))
                .copied()
        }
    }
}

/// A simulcast layer with no packet for this long is treated as stopped.
pub const LAYER_IDLE: Duration = Duration::from_millis(1_500);

/// A layer no subscriber has wanted for this long is paused at the publisher (the lowest layer
/// never is): long enough that a tile resized back and forth does not make it flap.
pub const LAYER_UNNEEDED: Duration = Duration::from_secs(3);

/// How often each room re-chooses its subscribers' simulcast layers.
pub const LAYER_TICK: Duration = Duration::from_millis(500);

/// The quality rank of a simulcast RID: the browser client sends `l`, `m`, `h` (low to high);
/// `q` and `f` (quarter, full) of other clients' naming read as low and high (their `h`, half,
/// then ties with `f`: [`choose_layer`] goes by the widths learnt from keyframes once known).
/// Anything else ranks by the order its first packet came in (`fallback`), above those.
pub(crate) fn layer_rank(rid: &str, fallback: u8) -> u8 {
    match rid {
        "l" | "q" | "lo" | "low" => 0,
        "m" | "mid" => 1,
        "h" | "hi" | "high" | "f" => 2,
        _ => 3 + fallback,
    }
}

/// Which layer a subscriber that renders the track `size` (device px, if known) wide asks for:
/// the smallest known one (it has sent packets, even if it is paused now) at least nine tenths of
/// that width (by the widths learnt from keyframes, or by rank while unknown: up to 360 px the
/// lowest, up to 720 px the middle one), else the largest. `None` when no layer is known. What
/// is forwarded is then the nearest *active* layer at or below it ([`layer_at_or_below`]), and a
/// paused layer that is asked for is resumed at the publisher.
pub(crate) fn choose_layer(layers: &[Layer], size: Option<(u32, u32)>) -> Option<u8> {
    let mut active: Vec<&Layer> = layers.iter().filter(|l| l.last_packet.is_some()).collect();
    active.sort_by_key(|l| l.rank);
    let top = active.last()?.rank;
    let Some((w, _)) = size else {
        return Some(top);
    };
    if active.iter().all(|l| l.width > 0) {
        return Some(
            active
                .iter()
                .find(|l| u32::from(l.width) * 10 >= w * 9)
                .map_or(top, |l| l.rank),
        );
    }
    let pick = if w <= 360 {
        0
    } else if w <= 720 {
        1
    } else {
        usize::MAX
    };
    Some(active.get(pick).map_or(top, |l| l.rank))
}

/// How long a forced keyframe request waits for the keyframe before asking again.
pub const KEYFRAME_RETRY: Duration = Duration::from_millis(500);
/// Most forced keyframe requests for one wait.
pub const KEYFRAME_RETRIES: u8 = 4;

/// The forwarding of one remote track to this participant.
pub(crate) struct DownTrack {
    pub track: TrackId,
    pub source: TrackSource,
    pub sender: RTCRtpSenderId,
    /// The subscriber transport's mid, once negotiated.
    pub mid: Option<String>,
    pub rewriter: RtpRewriter,
    /// Where it stands in the subscriber transport's offer/answer: media flows only when
    /// [`DownTrackState::Open`].
    pub state: DownTrackState,
    /// What the subscriber asked for it (`track_settings`): disabled, nothing is forwarded.
    pub settings: TrackSettings,
    /// For a simulcast track: the layer forwarded now (its SSRC and rank) and the one wanted;
    /// a switch happens on a keyframe of the wanted layer.
    pub layer: LayerChoice,
    /// Video packets held while the subscriber transport connects for the first time, from
    /// the publisher's latest keyframe on (a newer keyframe starts it again), at most
    /// [`EARLY_RTP_PACKETS`]: sent the moment it connects, so the first frame does not wait
    /// for a keyframe request to reach the publisher, its encoder and its pacer (the request
    /// goes out with the subscribe offer instead). Empty once connected.
    pub early: Vec<rtc::rtp::Packet>,
    /// What it sent, for the subscriber's NACKs ([`crate::retransmit`]).
    pub sent: SentLog,
}

/// Which simulcast layer a downtrack forwards (RFC 8853 layers, one outgoing SSRC per
/// downtrack whatever the layer: the rewriter keeps sequence numbers, timestamps and VP8
/// picture ids continuous across a switch).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LayerChoice {
    /// `(ssrc, rank)` of the layer being forwarded; `None` before the first keyframe.
    pub current: Option<(u32, u8)>,
    /// The rank wanted ([`choose_layer`]); `None` until chosen (then the first keyframe of any
    /// layer starts the forwarding).
    pub target: Option<u8>,
    /// The current layer is above what the subscriber's link takes ([`crate::bwe`]): stop
    /// forwarding it now rather than at the switch, so the wanted layer's keyframe is not stuck
    /// behind it in a full bottleneck queue (video freezes until that keyframe instead).
    pub shed: bool,
}

impl LayerChoice {
    /// Which of the downtrack's sent packets are still worth sending again
    /// ([`crate::retransmit::SentLog::on_nack`]): all of them without simulcast layers (no
    /// target ever chosen), else those of the layer still flowing to the subscriber, none while
    /// it sheds or before it starts.
    pub(crate) fn resendable(&self) -> Resendable {
        if self.target.is_none() && self.current.is_none() {
            return Resendable::All;
        }
        match self.current {
            Some((ssrc, _)) if !self.shed => Resendable::Layer(ssrc),
            _ => Resendable::None,
        }
    }

    /// Whether to forward a packet of layer `(ssrc, rank)`; switches to it when it is the
    /// wanted layer and the packet starts a keyframe (or nothing is forwarded yet).
    fn admit(&mut self, ssrc: u32, rank: u8, keyframe: bool) -> bool {
        let other = self.current.is_some_and(|(s, _)| s != ssrc);
        match self.current {
            _ if keyframe && other && self.target == Some(rank) => {
                self.current = Some((ssrc, rank));
                self.shed = false;
                true
            }
            Some((s, _)) if s == ssrc => !self.shed,
            None if keyframe => {
                self.current = Some((ssrc, rank));
                self.shed = false;
                true
            }
            _ => false,
        }
    }
}

/// A downtrack's place in the subscriber transport's offer/answer exchange (JSEP, RFC 8829
/// section 5.2): added → carried by an offer → answered. A track added while an offer is in
/// flight is not in that offer, so that offer's answer leaves it [`Self::ToOpen`]; it opens with
/// the answer to the next offer, which carries it (and its keyframe is asked for then, not
/// before: a keyframe forwarded on an m-line the browser has not applied yet is lost, and video
/// would wait for the publisher's next one). A gone track's downtrack is removed at once: its
/// transceiver stops sending and the next offer marks its m-line inactive (free for reuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DownTrackState {
    /// On the subscriber transport, not yet in any offer sent.
    ToOpen,
    /// In the offer with this number ([`Participant::offers_sent`]), which is not answered yet.
    Negotiating {
        /// The offer that first carried it.
        offer: u64,
    },
    /// The subscriber answered an offer that carried it: media flows.
    Open,
}

/// Most video packets a downtrack holds before its subscriber transport first connects (about
/// 1 s of 640x360 VP8 at 30 fps, keyframe included); past it the held ones are dropped and the
/// forwarding starts on a keyframe asked for at the connection, as without holding.
pub const EARLY_RTP_PACKETS: usize = 384;

/// Bytes a participant's DataChannel may hold unacknowledged (sent by the server, not yet
/// acknowledged by the peer's SCTP) before the participant is removed with
/// [`CloseReason::DataChannelBacklog`]: 1 MiB, about 250 chat messages of the largest size.
pub const DATA_CHANNEL_MAX_BUFFERED: u32 = 1024 * 1024;

/// DataChannels one participant may have open (one per label); any more are closed as they open.
pub const MAX_DATA_CHANNELS: usize = 4;

pub(crate) struct Participant {
    pub id: ParticipantId,
    pub name: String,
    pub events: crate::mailbox::EventSender,
    pub publisher: Transport,
    pub subscriber: Option<Transport>,
    pub published: Vec<Published>,
    /// The last publisher offer as the client sent it (before
    /// [`crate::remote_offer::keep_learnt_layers`] trimmed it for `rtc`): what the next offer's
    /// m-sections are compared with.
    pub publisher_offer: Option<String>,
    pub downtracks: Vec<DownTrack>,
    /// Subscriber m-lines whose track is gone (sender removed, now inactive), by kind: the next
    /// track of that kind takes one over instead of adding an m-line.
    pub free_slots: Vec<(RTCRtpSenderId, MediaKind)>,
    pub negotiation: NegotiationState,
    /// Its link's bandwidth, from the REMB estimates of its subscriber transport: how far its
    /// simulcast layers come down ([`crate::bwe`]).
    pub bandwidth: SubscriberBandwidth,
    /// Subscribe offers created so far (not counting resends of the same offer): numbers the
    /// offers for [`DownTrackState::Negotiating`].
    pub offers_sent: u64,
    /// An ICE restart of the subscriber was asked for while an offer awaited its answer: the
    /// offer that follows that answer restarts ICE.
    pub ice_restart_wanted: bool,
    /// Set when the participant must be removed after the current operation.
    pub closing: Option<CloseReason>,
    /// DataChannels of the publisher transport: id → label.
    pub channels: Vec<(usize, String)>,
    /// Lets the participant come back on a new socket (32 hex characters, 128 random bits).
    pub resume_token: String,
    /// The access token's subject that joined: only it may resume.
    pub user: String,
    /// The signaling connection that owns it now (see [`crate::Attachment`]).
    pub attachment: crate::api::Attachment,
    /// Its signaling socket is gone since then: it leaves when the grace period ends unless
    /// it resumes.
    pub detached_since: Option<Instant>,
    /// Until its publisher transport first connects: when it is removed if that has not
    /// happened ([`crate::CloseReason::ConnectTimeout`]).
    pub connect_by: Option<Instant>,
    /// Whether it receives the others' tracks. A publish-only participant (a WHIP ingest)
    /// gets no downtracks and no subscriber transport; the others see it as anyone else.
    pub subscribes: bool,
}

/// Who joins a room ([`Room::add_participant`]).
#[derive(Debug, Clone)]
pub struct Joining {
    /// Display name.
    pub name: String,
    /// The access token's subject.
    pub user: String,
    /// Whether it receives the others' tracks ([`Participant::subscribes`]).
    pub subscribes: bool,
}

impl Transport {
    /// What operators see of it.
    pub fn snapshot(&self) -> crate::TransportSnapshot {
        let consent = match self.paths.state() {
            ConsentState::New => "new",
            ConsentState::Checking => "checking",
            ConsentState::Connected => "connected",
            ConsentState::Disconnected => "disconnected",
            ConsentState::Failed => "failed",
        };
        crate::TransportSnapshot {
            state: self.state.to_string(),
            consent: consent.to_owned(),
            selected: self.paths.destination().map(|t| {
                let proto = match t.transport_protocol {
                    rtc::shared::TransportProtocol::UDP => "udp",
                    _ => "tcp",
                };
                (proto.to_owned(), t.local_addr, t.peer_addr)
            }),
        }
    }
}

impl Participant {
    /// What operators see of it.
    pub fn snapshot(&self) -> crate::ParticipantSnapshot {
        crate::ParticipantSnapshot {
            id: self.id,
            name: self.name.clone(),
            user: self.user.clone(),
            detached: self.detached_since.is_some(),
            tracks: self.info().tracks,
            publisher: self.publisher.snapshot(),
            subscriber: self.subscriber.as_ref().map(Transport::snapshot),
        }
    }

    pub fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.id,
            name: self.name.clone(),
            tracks: self.published.iter().map(|p| self.track_info(p)).collect(),
        }
    }

    fn track_info(&self, p: &Published) -> TrackInfo {
        TrackInfo {
            id: TrackId {
                participant: self.id,
                mid: p.mid.clone(),
            },
            kind: p.source.kind(),
            source: p.source,
            muted: p.muted,
        }
    }

    /// Queues an event for the signaling session ([`crate::mailbox`]: state events coalesce).
    /// A session that stopped reading for seconds, or is gone, closes the participant.
    pub fn send(&mut self, ev: SfuEvent) {
        if let Err(e) = self.events.send(ev, Instant::now()) {
            if e != crate::mailbox::Backlog::Closed {
                warn!(participant = %self.id, ?e, "signaling session stopped reading: removing participant");
            }
            self.closing.get_or_insert(CloseReason::SignalingBacklog);
        }
    }

    /// Sends `text` on the publisher transport's DataChannel `label`, if it is open (a message
    /// for a channel that is not open is dropped: chat is acknowledged end to end by the caller).
    /// A channel holding more than [`DATA_CHANNEL_MAX_BUFFERED`] bytes its peer has not
    /// acknowledged removes the participant ([`CloseReason::DataChannelBacklog`]): its link or
    /// client is stuck, and what is sent to it would only grow in memory.
    pub fn send_text(&mut self, label: &str, text: String, now: Instant) {
        let Some(&(id, _)) = self.channels.iter().find(|(_, l)| l == label) else {
            return;
        };
        if let Some(mut dc) = self.publisher.pc.data_channel(id) {
            if dc.outstanding_bytes() + text.len() > DATA_CHANNEL_MAX_BUFFERED as usize {
                if self.closing.is_none() {
                    warn!(participant = %self.id, label, "a DataChannel stopped draining: removing participant");
                }
                self.closing.get_or_insert(CloseReason::DataChannelBacklog);
                return;
            }
            if let Err(e) = dc.send_text(now, text) {
                debug!(participant = %self.id, "data channel send: {e}");
            }
        }
        self.publisher.dirty = true;
    }

    pub fn transport_mut(&mut self, role: TransportRole) -> Option<&mut Transport> {
        match role {
            TransportRole::Publisher => Some(&mut self.publisher),
            TransportRole::Subscriber => self.subscriber.as_mut(),
        }
    }

    /// Writes a PLI (RFC 4585 section 6.3.1) for the published track `mid` on the publisher
    /// transport, unless one went out within [`KEYFRAME_REQUEST_INTERVAL`]. Returns whether one
    /// was sent.
    pub fn request_keyframe(&mut self, mid: &str, now: Instant) -> bool {
        match self.published.iter().position(|p| p.mid == mid) {
            Some(i) => self.request_keyframe_at(i, now, false),
            None => false,
        }
    }

    /// [`Self::request_keyframe`] past the throttle: after an ICE path switch, when the
    /// requests of the outage went to the dead path.
    pub fn request_keyframe_now(&mut self, mid: &str, now: Instant) -> bool {
        match self.published.iter().position(|p| p.mid == mid) {
            Some(i) => self.request_keyframe_at(i, now, true),
            None => false,
        }
    }

    /// A PLI for one simulcast layer of track `mid` (its SSRC `ssrc`), unless that layer was
    /// asked within [`KEYFRAME_REQUEST_INTERVAL`]: a layer switch or a subscriber's keyframe
    /// request needs only the keyframe of the layer that subscriber gets. Asking every layer
    /// (as [`Self::request_keyframe`] does) makes the publisher's encoder spend a top-layer
    /// keyframe each time, about 0.3 s of that layer's bitrate in one frame: while a lossy
    /// subscriber switched down, such requests every 500 ms starved the publisher's top layer
    /// for the other subscribers (measured: a neighbour on a clean link received so little that
    /// its estimate fell from 580 to 57 kbit/s). Falls back to the whole track when `ssrc` is
    /// not one of its layers. Returns whether a PLI went out.
    pub fn request_layer_keyframe(&mut self, mid: &str, ssrc: u32, now: Instant) -> bool {
        let Some(i) = self.published.iter().position(|p| p.mid == mid) else {
            return false;
        };
        let p = &mut self.published[i];
        let Some(layer) = p.layers.iter_mut().find(|l| l.ssrc == ssrc) else {
            return self.request_keyframe_at(i, now, false);
        };
        if layer
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return false;
        }
        layer.last_keyframe_request = Some(now);
        let Some(receiver) = p.receiver else {
            return false;
        };
        self.write_plis(receiver, &[ssrc], now)
    }

    /// Writes one PLI per SSRC in `ssrcs` (RFC 4585 section 6.3.1) through the publisher
    /// transport's `receiver`. Returns whether they went out.
    fn write_plis(&mut self, receiver: RTCRtpReceiverId, ssrcs: &[u32], now: Instant) -> bool {
        let plis: Vec<Box<dyn rtc::rtcp::Packet>> = ssrcs
            .iter()
            .map(|&media_ssrc| {
                Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                }) as Box<dyn rtc::rtcp::Packet>
            })
            .collect();
        let Some(mut r) = self.publisher.pc.rtp_receiver(receiver) else {
            return false;
        };
        if let Err(e) = r.write_rtcp(now, plis) {
            debug!(participant = %self.id, "PLI write failed: {e}");
            return false;
        }
        self.publisher.dirty = true;
        tracing::trace!(participant = %self.id, ?ssrcs, "PLI sent");
        true
    }

    /// [`Self::request_keyframe`] for the track carrying `ssrc`.
    pub fn request_keyframe_for_ssrc(&mut self, ssrc: u32, now: Instant) -> bool {
        match self.published.iter().position(|p| p.ssrcs.contains(&ssrc)) {
            Some(i) => self.request_keyframe_at(i, now, false),
            None => false,
        }
    }

    /// Asks again for the keyframes a forced request has not brought within [`KEYFRAME_RETRY`]
    /// (gives up after [`KEYFRAME_RETRIES`] requests). Returns how many PLIs went out.
    pub fn retry_keyframes(&mut self, now: Instant) -> u64 {
        let mut sent = 0;
        for i in 0..self.published.len() {
            let Some((at, n)) = self.published[i].keyframe_pending else {
                continue;
            };
            if now.saturating_duration_since(at) < KEYFRAME_RETRY {
                continue;
            }
            if n >= KEYFRAME_RETRIES {
                self.published[i].keyframe_pending = None;
                continue;
            }
            sent += u64::from(self.request_keyframe_at(i, now, true));
        }
        sent
    }

    /// When [`Self::retry_keyframes`] next has work.
    pub fn keyframe_retry_deadline(&self) -> Option<Instant> {
        self.published
            .iter()
            .filter_map(|p| p.keyframe_pending.map(|(at, _)| at + KEYFRAME_RETRY))
            .min()
    }

    fn request_keyframe_at(&mut self, i: usize, now: Instant, force: bool) -> bool {
        let p = &mut self.published[i];
        if p.source.kind() != MediaKind::Video {
            return false;
        }
        if !force
            && p.last_keyframe_request
                .is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return false;
        }
        let (Some(receiver), Some(&ssrc)) = (p.receiver, p.ssrcs.first()) else {
            return false;
        };
        p.last_keyframe_request = Some(now);
        for l in &mut p.layers {
            l.last_keyframe_request = Some(now);
        }
        if force {
            let n = p.keyframe_pending.map_or(0, |(_, n)| n);
            p.keyframe_pending = Some((now, n.saturating_add(1)));
        }
        // Simulcast: every layer's encoder is asked (after a path switch or a reconnect any
        // subscriber may be waiting on any of them).
        let ssrcs: Vec<u32> = if p.layers.is_empty() {
            vec![ssrc]
        } else {
            p.layers.iter().map(|l| l.ssrc).collect()
        };
        self.write_plis(receiver, &ssrcs, now)
    }
}

/// One published track in [`Room::published_tracks`].
struct PublishedTrack {
    id: TrackId,
    source: TrackSource,
    codecs: Vec<RTCRtpCodecParameters>,
    extensions: Vec<RTCRtpHeaderExtensionParameters>,
}

/// What forwarding one RTP packet asks of the caller afterwards.
#[derive(Default)]
pub(crate) struct ForwardOutcome {
    /// Some subscriber waits for a keyframe of this track.
    pub wants_keyframe: bool,
}

pub(crate) struct Room {
    pub id: RoomId,
    pub participants: Vec<Participant>,
    /// A host locked it: nobody new joins.
    pub locked: bool,
    /// Users a host removed: they may not join again while the room is open (at most
    /// [`crate::api::MAX_REMOVED_USERS`], oldest forgotten first).
    pub removed_users: std::collections::VecDeque<String>,
    /// Who is speaking, from the microphones' audio levels ([`crate::speakers`]).
    pub speakers: SpeakerDetector,
    /// When [`Room::select_layers`] runs next, and when it last ran.
    pub next_layer_tick: Instant,
    last_layer_tick: Instant,
    /// Someone publishes video / a microphone with audio levels ([`Room::update_flags`]).
    video: bool,
    audio_levels: bool,
    /// The media plane's counters.
    pub(crate) metrics: Arc<SfuMetrics>,
}

impl Room {
    pub fn new(id: RoomId, metrics: Arc<SfuMetrics>, now: Instant) -> Self {
        Self {
            metrics,
            id,
            participants: Vec::new(),
            locked: false,
            removed_users: std::collections::VecDeque::new(),
            speakers: SpeakerDetector::new(now),
            next_layer_tick: now + LAYER_TICK,
            last_layer_tick: now,
            video: false,
            audio_levels: false,
        }
    }

    pub fn index_of(&self, id: ParticipantId) -> Option<usize> {
        self.participants.iter().position(|p| p.id == id)
    }

    #[allow(clippy::too_many_arguments)] // each is one fact about the joining participant
    pub fn add_participant(
        &mut self,
        id: ParticipantId,
        joining: Joining,
        events: crate::mailbox::EventSender,
        local: &LocalCandidates,
        now: Instant,
        connect_by: Instant,
    ) -> Result<(), SfuError> {
        let Joining {
            name,
            user,
            subscribes,
        } = joining;
        let publisher = Transport::new(id, TransportRole::Publisher, local, now)?;
        let info = ParticipantInfo {
            id,
            name: name.clone(),
            tracks: vec![],
        };
        for other in &mut self.participants {
            other.send(SfuEvent::ParticipantJoined(info.clone()));
        }
        self.participants.push(Participant {
            id,
            name,
            user,
            events,
            publisher,
            subscriber: None,
            published: Vec::new(),
            publisher_offer: None,
            downtracks: Vec::new(),
            free_slots: Vec::new(),
            negotiation: NegotiationState::Stable,
            bandwidth: SubscriberBandwidth::default(),
            offers_sent: 0,
            ice_restart_wanted: false,
            closing: None,
            channels: Vec::new(),
            resume_token: hex_token(),
            attachment: crate::api::Attachment::first(),
            detached_since: None,
            connect_by: Some(connect_by),
            subscribes,
        });
        // Subscribe at once: the others' tracks are offered with `joined`, not after this
        // participant has published (which waits for its devices and its own transport).
        self.reconcile(local, now);
        Ok(())
    }

    /// Removes a participant, closes its transports and tells the others.
    pub fn remove_participant(
        &mut self,
        id: ParticipantId,
        local: &LocalCandidates,
        now: Instant,
    ) -> Option<Participant> {
        let idx = self.index_of(id)?;
        let mut gone = self.participants.remove(idx);
        let _ = rtc::sansio::Protocol::close(&mut gone.publisher.pc);
        if let Some(s) = gone.subscriber.as_mut() {
            let _ = rtc::sansio::Protocol::close(&mut s.pc);
        }
        for other in &mut self.participants {
            for t in &gone.published {
                other.send(SfuEvent::TrackUnpublished(TrackId {
                    participant: id,
                    mid: t.mid.clone(),
                }));
            }
            other.send(SfuEvent::ParticipantLeft(id));
        }
        self.reconcile(local, now);
        Some(gone)
    }

    /// Applies a publisher-transport offer; returns the SDP answer.
    pub fn publish_offer(
        &mut self,
        id: ParticipantId,
        sdp: String,
        tracks: Vec<PublishTrack>,
        local: &LocalCandidates,
        now: Instant,
    ) -> Result<String, SfuError> {
        let idx = self.index_of(id).ok_or(SfuError::UnknownParticipant)?;
        validate_track_list(&tracks)?;
        let p = &mut self.participants[idx];
        // A renegotiation must not make `rtc` forget the SSRCs of RID-named simulcast layers.
        let for_rtc = crate::remote_offer::keep_learnt_layers(p.publisher_offer.as_deref(), &sdp)
            .into_owned();
        let offer = RTCSessionDescription::offer(for_rtc)
            .map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        p.publisher
            .pc
            .set_remote_description(now, offer)
            .map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let answer = p
            .publisher
            .pc
            .create_answer(None)
            .map_err(|e| SfuError::NegotiationFailed(e.to_string()))?;
        p.publisher
            .pc
            .set_local_description(now, answer)
            .map_err(|e| SfuError::NegotiationFailed(e.to_string()))?;
        let sdp_answer = p
            .publisher
            .pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| SfuError::NegotiationFailed("no local description".into()))?;
        p.publisher_offer = Some(sdp);
        p.publisher.dirty = true;
        p.publisher.deadline = Some(now);
        p.publisher.paths.start(now);
        p.publisher.refresh_ice();

        // Which receiving m-lines carry which declared track.
        let ssrcs_by_mid = ssrcs_from_remote(&p.publisher.pc);
        let mut next: Vec<Published> = Vec::new();
        let transceivers: Vec<_> = p.publisher.pc.get_transceivers().collect();
        for t in &tracks {
            let mut found = None;
            for &tid in &transceivers {
                let Some(tr) = p.publisher.pc.rtp_transceiver(tid) else {
                    continue;
                };
                if tr.mid().as_deref() == Some(t.mid.as_str()) {
                    found = tr.receiver();
                }
            }
            let Some(receiver) = found else {
                return Err(SfuError::InvalidSdp(format!(
                    "mid {} names no receiving m-line of the offer",
                    t.mid
                )));
            };
            let (codecs, extensions, kind) = match p.publisher.pc.rtp_receiver(receiver) {
                Some(mut r) => {
                    let kind = r.track().kind();
                    let params = r.get_parameters();
                    (
                        params.rtp_parameters.codecs.clone(),
                        params.rtp_parameters.header_extensions.clone(),
                        kind,
                    )
                }
                None => continue,
            };
            let expected = match t.source.kind() {
                MediaKind::Audio => RtpCodecKind::Audio,
                MediaKind::Video => RtpCodecKind::Video,
            };
            if kind != expected {
                return Err(SfuError::InvalidSdp(format!(
                    "mid {} is {kind} but declared {:?}",
                    t.mid, t.source
                )));
            }
            if codecs.is_empty() {
                return Err(SfuError::InvalidSdp(format!(
                    "mid {}: no codec in common with the server",
                    t.mid
                )));
            }
            let old = p
                .published
                .iter()
                .position(|o| o.mid == t.mid && o.source == t.source);
            let cache = match old {
                Some(i) => {
                    std::mem::replace(&mut p.published[i].cache, PacketCache::new(t.source.kind()))
                }
                None => PacketCache::new(t.source.kind()),
            };
            let (muted, host_muted, mut ssrcs, last, layers) = match old {
                Some(i) => (
                    p.published[i].muted,
                    p.published[i].host_muted,
                    p.published[i].ssrcs.clone(),
                    p.published[i].last_keyframe_request,
                    p.published[i].layers.clone(),
                ),
                None => (false, false, vec![], None, vec![]),
            };
            for s in ssrcs_by_mid
                .iter()
                .filter(|(m, _)| m == &t.mid)
                .map(|(_, s)| *s)
            {
                if !ssrcs.contains(&s) {
                    ssrcs.push(s);
                }
            }
            next.push(Published {
                mid: t.mid.clone(),
                source: t.source,
                muted,
                host_muted,
                receiver: Some(receiver),
                ssrcs,
                codecs,
                last_keyframe_request: last,
                keyframe_pending: None,
                audio_level_ext: (t.source == TrackSource::Microphone)
                    .then(|| {
                        extensions
                            .iter()
                            .find(|e| e.uri == AUDIO_LEVEL_URI)
                            .and_then(|e| u8::try_from(e.id).ok())
                    })
                    .flatten(),
                levels: LevelMeter::default(),
                paused: false,
                layers,
                extensions,
                cache,
                uplink: UplinkCap::default(),
            });
        }
        let removed: Vec<TrackId> = p
            .published
            .iter()
            .filter(|o| !next.iter().any(|n| n.mid == o.mid && n.source == o.source))
            .map(|o| TrackId {
                participant: id,
                mid: o.mid.clone(),
            })
            .collect();
        let added: Vec<TrackInfo> = next
            .iter()
            .filter(|n| {
                !p.published
                    .iter()
                    .any(|o| n.mid == o.mid && n.source == o.source)
            })
            .map(|n| p.track_info(n))
            .collect();
        p.published = next;
        for (j, other) in self.participants.iter_mut().enumerate() {
            if j == idx {
                continue;
            }
            for t in &removed {
                other.send(SfuEvent::TrackUnpublished(t.clone()));
            }
            for t in &added {
                other.send(SfuEvent::TrackPublished(t.clone()));
            }
        }
        self.reconcile(local, now);
        self.refresh_mappings();
        Ok(sdp_answer)
    }

    /// Applies the answer to the subscriber transport's pending offer. The very answer already
    /// applied, sent again (a client answering an offer it got twice, after a resume or a
    /// resend), changes nothing: it is never taken for the answer to a later offer.
    pub fn subscribe_answer(
        &mut self,
        id: ParticipantId,
        sdp: String,
        now: Instant,
    ) -> Result<(), SfuError> {
        let idx = self.index_of(id).ok_or(SfuError::UnknownParticipant)?;
        let p = &mut self.participants[idx];
        let Some(sub) = p.subscriber.as_mut() else {
            return Err(SfuError::NegotiationFailed(
                "no subscribe offer is awaiting an answer".into(),
            ));
        };
        if sub
            .pc
            .current_remote_description()
            .is_some_and(|d| d.sdp == sdp)
        {
            return Ok(());
        }
        if p.negotiation == NegotiationState::Stable {
            return Err(SfuError::NegotiationFailed(
                "no subscribe offer is awaiting an answer".into(),
            ));
        }
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        sub.pc
            .set_remote_description(now, answer)
            .map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        sub.dirty = true;
        sub.deadline = Some(now);
        sub.paths.start(now);
        let again = p
            .negotiation
            .answer_received(now)
            .map_err(|e| SfuError::NegotiationFailed(e.to_string()))?;
        // This answers the latest offer sent (one at a time; a resend is the same offer): what
        // it carried opens. Tracks added since (`ToOpen`) wait for the next offer. Video needs
        // a keyframe to start; ask for it now only if the transport already carries media (a
        // renegotiation). Before its first connection the keyframe was asked for with the offer
        // and is held (`DownTrack::early`); the connection sends it, or asks again if none came.
        let connected = sub_connected(p);
        let answered = p.offers_sent;
        let mut need_keyframes: Vec<TrackId> = Vec::new();
        for dt in &mut p.downtracks {
            if let DownTrackState::Negotiating { offer } = dt.state {
                if offer <= answered {
                    dt.state = DownTrackState::Open;
                    if dt.track_is_video() && connected {
                        need_keyframes.push(dt.track.clone());
                    }
                }
            }
        }
        if again {
            let ice_restart = std::mem::take(&mut p.ice_restart_wanted);
            Self::send_offer_with(p, now, ice_restart);
        }
        self.refresh_mappings();
        for t in need_keyframes {
            if let Some(pi) = self.index_of(t.participant) {
                let sent = self.participants[pi].request_keyframe(&t.mid, now);
                SfuMetrics::add(&self.metrics.plis_sent, u64::from(sent));
            }
        }
        Ok(())
    }

    /// Participant `id`'s settings for `track`, which it receives (`track_settings`). Turning
    /// video back on asks its publisher for a keyframe at once (past the throttle, repeated until
    /// it comes). Errors: `UnknownParticipant`, `UnknownTrack`.
    pub fn set_track_settings(
        &mut self,
        id: ParticipantId,
        track: &TrackId,
        settings: TrackSettings,
        now: Instant,
    ) -> Result<(), SfuError> {
        let idx = self.index_of(id).ok_or(SfuError::UnknownParticipant)?;
        let p = &mut self.participants[idx];
        let connected = sub_connected(p);
        let dt = p
            .downtracks
            .iter_mut()
            .find(|d| d.track == *track)
            .ok_or(SfuError::UnknownTrack)?;
        let resumed = settings.enabled && !dt.settings.enabled;
        dt.settings = settings;
        if resumed && dt.track_is_video() && dt.is_open() && connected {
            if let Some(pi) = self.index_of(track.participant) {
                let sent = self.participants[pi].request_keyframe_now(&track.mid, now);
                SfuMetrics::add(&self.metrics.plis_sent, u64::from(sent));
            }
        }
        self.update_publisher_pauses();
        Ok(())
    }

    /// Tells each publisher whose video track has subscribers, all of which disabled it, to stop
    /// encoding it, and to start again once one enables it or a new subscriber comes
    /// ([`SfuEvent::PublisherPaused`], sent on change only). A track nobody subscribes to (a
    /// participant alone) is never paused: the next subscriber would wait for the encoder.
    pub fn update_publisher_pauses(&mut self) {
        for i in 0..self.participants.len() {
            let pid = self.participants[i].id;
            for ti in 0..self.participants[i].published.len() {
                let (mid, source, was) = {
                    let t = &self.participants[i].published[ti];
                    if t.source.kind() != MediaKind::Video {
                        continue;
                    }
                    (t.mid.clone(), t.source, t.paused)
                };
                let mut subscribers = 0;
                let mut wanted = false;
                for (j, q) in self.participants.iter().enumerate() {
                    if j == i {
                        continue;
                    }
                    for d in &q.downtracks {
                        if d.track.participant == pid && d.track.mid == mid {
                            subscribers += 1;
                            wanted |= d.settings.enabled;
                        }
                    }
                }
                let paused = subscribers > 0 && !wanted;
                if paused != was {
                    let p = &mut self.participants[i];
                    p.published[ti].paused = paused;
                    p.send(SfuEvent::PublisherPaused { source, paused });
                }
            }
        }
    }

    /// Whether anyone publishes video (the layer tick runs only then: simulcast layers, and
    /// the caps of single-stream video, [`crate::uplink`]).
    pub fn has_video(&self) -> bool {
        self.video
    }

    /// Recomputes [`Self::has_video`] and [`Self::has_audio`] (after a negotiation, a
    /// departure or a new layer: they are read at every deadline computation, per datagram).
    pub fn update_flags(&mut self) {
        self.video = self.participants.iter().any(|p| {
            p.published
                .iter()
                .any(|t| t.source.kind() == MediaKind::Video)
        });
        self.audio_levels = self
            .participants
            .iter()
            .any(|p| p.published.iter().any(|t| t.audio_level_ext.is_some()));
    }

    /// The layer tick ([`LAYER_TICK`]): measures each layer's bitrate, then for every
    /// subscriber of simulcast tracks decides what its link allows ([`crate::bwe`]: its REMB
    /// estimate against what the layers its tiles ask for cost) and, per downtrack, the layer it
    /// should get: the one its tile size asks for ([`choose_layer`]), at most the bandwidth cap,
    /// among those the publisher still sends. A downtrack whose wanted layer is not the one it
    /// forwards asks for a keyframe (throttled per track) so the switch can happen; video that
    /// resumes after a bandwidth pause asks for one too.
    pub fn select_layers(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_layer_tick)
            .as_secs_f64()
            .max(0.05);
        self.last_layer_tick = now;
        // Each subscriber's loss as its NACKs show it since the last tick, for the uplink caps
        // and the layer plans below.
        for p in &mut self.participants {
            let (sent, nacked) = p
                .downtracks
                .iter_mut()
                .map(|d| d.sent.take_counts())
                .fold((0u32, 0u32), |(s, n), (a, b)| {
                    (s.saturating_add(a), n.saturating_add(b))
                });
            p.bandwidth.on_nacks(sent, nacked, now);
        }
        self.cap_uplinks(now);
        let mut layered: Vec<(TrackId, Vec<Layer>)> = Vec::new();
        for p in &mut self.participants {
            for t in &mut p.published {
                if t.layers.is_empty() {
                    continue;
                }
                for l in &mut t.layers {
                    let rate = (l.bytes as f64 * 8.0 / elapsed) as u64;
                    l.bytes = 0;
                    // A paused layer keeps the bitrate it had: what it will cost when resumed.
                    if rate == 0 && !l.active(now) {
                        continue;
                    }
                    l.bitrate = if l.bitrate == 0 {
                        rate
                    } else {
                        (l.bitrate + rate) / 2
                    };
                }
                layered.push((
                    TrackId {
                        participant: p.id,
                        mid: t.mid.clone(),
                    },
                    t.layers.clone(),
                ));
            }
        }
        if layered.is_empty() {
            return;
        }
        // Keyframes switches wait for: (track, SSRC of the layer switched to).
        let mut wanted: Vec<(TrackId, u32)> = Vec::new();
        // Per layered track: the ranks some enabled downtrack asks for now (after its cap).
        let mut needs: Vec<(TrackId, Vec<u8>)> = layered
            .iter()
            .map(|(t, _)| (t.clone(), Vec::new()))
            .collect();
        for p in &mut self.participants {
            // Per simulcast downtrack: its index, its track's layers, what its tile asks for.
            let plans: Vec<(usize, &Vec<Layer>, Option<u8>)> = p
                .downtracks
                .iter()
                .enumerate()
                .filter_map(|(d, dt)| {
                    let (_, layers) = layered.iter().find(|(t, _)| *t == dt.track)?;
                    Some((d, layers, choose_layer(layers, dt.settings.size)))
                })
                .collect();
            if plans.is_empty() {
                continue;
            }
            let capped = |asked: Option<u8>, cap: Option<u8>| match (asked, cap) {
                (Some(a), Some(c)) => Some(a.min(c)),
                (a, None) => a,
                (None, c) => c,
            };
            let mut ranks: Vec<u8> = plans
                .iter()
                .flat_map(|(_, layers, _)| {
                    layers
                        .iter()
                        .filter(|l| l.last_packet.is_some())
                        .map(|l| l.rank)
                })
                .collect();
            ranks.sort_unstable();
            ranks.dedup();
            let downtracks = &p.downtracks;
            let cost = |cap: Option<u8>| -> u64 {
                plans
                    .iter()
                    .filter(|(d, _, _)| downtracks[*d].settings.enabled)
                    .filter_map(|(_, layers, asked)| {
                        known_at_or_below(layers, capped(*asked, cap)).map(Layer::cost)
                    })
                    .sum()
            };
            // The highest rank an enabled downtrack's tile asks for, among the layers known.
            let top_asked = plans
                .iter()
                .filter(|(d, _, _)| downtracks[*d].settings.enabled)
                .filter_map(|(_, layers, asked)| known_at_or_below(layers, *asked).map(|l| l.rank))
                .max();
            let before = p.bandwidth.allowance();
            let allowed = p.bandwidth.plan(now, &ranks, top_asked, cost);
            if allowed != before {
                debug!(participant = %p.id, estimate = ?p.bandwidth.estimate(now), ?allowed, "subscriber bandwidth allowance");
            }
            let resumed = before.video_paused && !allowed.video_paused;
            for (d, layers, asked) in plans {
                let capped_ask = capped(asked, allowed.cap);
                let target_layer = layer_at_or_below(layers, capped_ask, now);
                let target = target_layer.map(|l| l.rank);
                let target_ssrc = target_layer.map(|l| l.ssrc);
                let dt = &mut p.downtracks[d];
                if let (Some(r), true) = (capped_ask, dt.settings.enabled && !allowed.video_paused)
                {
                    if let Some((_, n)) = needs.iter_mut().find(|(t, _)| *t == dt.track) {
                        n.push(r);
                    }
                }
                dt.layer.target = target;
                // A downswitch forced by a full link sheds the current layer at once; otherwise
                // it waits for the lower layer's keyframe like any switch (no freeze).
                let sheds = p.bandwidth.sheds();
                dt.layer.shed = match (dt.layer.current, allowed.cap) {
                    (Some((_, rank)), Some(cap)) => {
                        sheds && rank > cap && target.is_some_and(|t| t < rank)
                    }
                    _ => false,
                };
                let stale = dt.layer.current.is_some_and(|(ssrc, _)| {
                    !layers.iter().any(|l| l.ssrc == ssrc && l.active(now))
                });
                if stale {
                    // Its layer stopped: any keyframe may restart it.
                    dt.layer.current = None;
                    dt.rewriter.request_resync();
                }
                let switching = target.is_some()
                    && (dt.layer.current.map(|(_, r)| r) != target || resumed)
                    && dt.settings.enabled
                    && dt.is_open();
                if let (true, Some(ssrc)) = (switching, target_ssrc) {
                    if !wanted.iter().any(|(t, s)| *t == dt.track && *s == ssrc) {
                        wanted.push((dt.track.clone(), ssrc));
                    }
                }
            }
        }
        for (t, ssrc) in wanted {
            if let Some(pi) = self.index_of(t.participant) {
                let sent = self.participants[pi].request_layer_keyframe(&t.mid, ssrc, now);
                SfuMetrics::add(&self.metrics.plis_sent, u64::from(sent));
            }
        }
        self.pause_unneeded_layers(&needs, now);
    }

    /// Asks each publisher of a simulcast track to send only the layers some subscriber wants
    /// (`needs`: the ranks asked for per track) plus its lowest one, and to resume a paused
    /// layer as soon as one is wanted ([`SfuEvent::PublisherLayers`], on a change only). A layer
    /// is paused once nobody has wanted it for [`LAYER_UNNEEDED`]; a track nobody subscribes to
    /// keeps every layer (a newcomer never waits for an encoder to start).
    fn pause_unneeded_layers(&mut self, needs: &[(TrackId, Vec<u8>)], now: Instant) {
        for (track, asked) in needs {
            let subscribed = self
                .participants
                .iter()
                .any(|q| q.downtracks.iter().any(|d| d.track == *track));
            let Some(pi) = self.index_of(track.participant) else {
                continue;
            };
            let p = &mut self.participants[pi];
            let Some(t) = p.published.iter_mut().find(|t| t.mid == track.mid) else {
                continue;
            };
            let lowest = t.layers.iter().map(|l| l.rank).min();
            let mut changed = false;
            for l in &mut t.layers {
                let wanted = !subscribed || Some(l.rank) == lowest || asked.contains(&l.rank);
                if wanted {
                    l.needed_at = Some(now);
                }
                let pause = !wanted
                    && l.needed_at
                        .is_none_or(|at| now.saturating_duration_since(at) >= LAYER_UNNEEDED);
                if pause != l.paused {
                    l.paused = pause;
                    changed = true;
                }
            }
            if changed {
                let active: Vec<String> = t
                    .layers
                    .iter()
                    .filter(|l| !l.paused)
                    .map(|l| l.rid.clone())
                    .collect();
                debug!(participant = %p.id, mid = %t.mid, ?active, "simulcast layers the publisher sends");
                let source = t.source;
                p.send(SfuEvent::PublisherLayers { source, active });
            }
        }
    }

    /// Whether anyone publishes a microphone with audio levels (the speaker tick runs only then).
    pub fn has_audio(&self) -> bool {
        self.audio_levels
    }

    /// The speaker tick ([`crate::speakers::TICK`]): takes every microphone's levels and, when
    /// the list of active speakers changed, tells everyone in the room
    /// ([`SfuEvent::ActiveSpeakers`]).
    pub fn tick_speakers(&mut self, now: Instant) {
        let window: Vec<_> = self
            .participants
            .iter_mut()
            .map(|p| {
                let mic = p.published.iter_mut().find(|t| t.audio_level_ext.is_some());
                let obs = mic.map(|t| {
                    let w = t.levels.take();
                    (!t.muted && !t.host_muted).then_some(w)
                });
                (p.id, obs.flatten())
            })
            .collect();
        if let Some(list) = self.speakers.tick(now, window) {
            for p in &mut self.participants {
                p.send(SfuEvent::ActiveSpeakers(list.clone()));
            }
        }
    }

    /// What every participant publishes, with the publisher leg's negotiated parameters: a
    /// snapshot taken on negotiation (never per packet), so the participants can then be
    /// borrowed mutably one by one.
    fn published_tracks(&self) -> Vec<PublishedTrack> {
        self.participants
            .iter()
            .flat_map(|p| {
                p.published.iter().map(move |t| PublishedTrack {
                    id: TrackId {
                        participant: p.id,
                        mid: t.mid.clone(),
                    },
                    source: t.source,
                    codecs: t.codecs.clone(),
                    extensions: t.extensions.clone(),
                })
            })
            .collect()
    }

    /// Brings every participant's downtracks in line with what the others publish, and
    /// (re)offers subscriber transports whose set changed.
    pub fn reconcile(&mut self, local: &LocalCandidates, now: Instant) {
        self.update_flags();
        let published = self.published_tracks();
        // Video forwarded to a transport that has not connected yet: its keyframe is asked for
        // now, with the offer, and held until the transport connects (`DownTrack::early`).
        let mut warm: Vec<TrackId> = Vec::new();
        for p in self.participants.iter_mut().filter(|p| p.subscribes) {
            let mut changed = false;
            // Remove forwardings of tracks that are gone.
            let mut i = 0;
            while i < p.downtracks.len() {
                if published.iter().any(|t| t.id == p.downtracks[i].track) {
                    i += 1;
                    continue;
                }
                let dt = p.downtracks.remove(i);
                if let Some(sub) = p.subscriber.as_mut() {
                    match sub.pc.remove_track(dt.sender) {
                        Ok(()) => p.free_slots.push((dt.sender, dt.source.kind())),
                        Err(e) => debug!("remove_track: {e}"),
                    }
                }
                changed = true;
            }
            // Add the missing ones.
            for PublishedTrack {
                id: track,
                source,
                codecs,
                ..
            } in &published
            {
                if track.participant == p.id || p.downtracks.iter().any(|d| d.track == *track) {
                    continue;
                }
                if p.subscriber.is_none() {
                    match Transport::new(p.id, TransportRole::Subscriber, local, now) {
                        Ok(t) => p.subscriber = Some(t),
                        Err(e) => {
                            warn!(participant = %p.id, "cannot build subscriber transport: {e}");
                            continue;
                        }
                    }
                }
                let sub = p.subscriber.as_mut().expect("just built");
                let out_ssrc = rand::random::<u32>() | 1;
                let kind = match source.kind() {
                    MediaKind::Audio => RtpCodecKind::Audio,
                    MediaKind::Video => RtpCodecKind::Video,
                };
                let codings = codecs
                    .iter()
                    .map(|c| RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(out_ssrc),
                            ..Default::default()
                        },
                        active: true,
                        codec: c.rtp_codec.clone(),
                        ..Default::default()
                    })
                    .collect();
                let media_track = MediaStreamTrack::new(
                    track.participant.to_string(),
                    track.to_string(),
                    track.to_string(),
                    kind,
                    codings,
                );
                // Reuse the m-line of a track that is gone (its transceiver has no sender: same
                // kind, not stopped): `add_track` takes the first such and makes it sendonly, so
                // the subscriber's SDP stays as long as the most tracks it ever received at once,
                // however many people come and go. Else a new sendonly m-line.
                let reusable = p.free_slots.iter().any(|(_, k)| *k == source.kind());
                let added = if reusable {
                    sub.pc.add_track(media_track).inspect(|id| {
                        p.free_slots.retain(|(s, _)| s != id);
                    })
                } else {
                    sub.pc
                        .add_transceiver_from_track(
                            media_track,
                            Some(RTCRtpTransceiverInit {
                                direction: RTCRtpTransceiverDirection::Sendonly,
                                streams: vec![],
                                send_encodings: vec![],
                            }),
                        )
                        .map(RTCRtpSenderId::from)
                };
                let sender = match added {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(participant = %p.id, "add forwarding transceiver: {e}");
                        continue;
                    }
                };
                let first = codecs
                    .first()
                    .map(|c| c.rtp_codec.clone())
                    .unwrap_or_default();
                p.downtracks.push(DownTrack {
                    track: track.clone(),
                    source: *source,
                    sender,
                    mid: None,
                    rewriter: RtpRewriter::new(
                        out_ssrc,
                        CodecFamily::from_mime(&first.mime_type),
                        first.clock_rate,
                    ),
                    state: DownTrackState::ToOpen,
                    settings: TrackSettings::default(),
                    layer: LayerChoice::default(),
                    early: Vec::new(),
                    sent: SentLog::new(source.kind()),
                });
                if !sub.connected_once && source.kind() == MediaKind::Video {
                    warm.push(track.clone());
                }
                changed = true;
            }
            if changed && p.negotiation.request_offer(now) {
                Self::send_offer(p, now);
            }
        }
        self.update_publisher_pauses();
        warm.sort_by_key(|t| t.to_string());
        warm.dedup();
        for t in warm {
            if let Some(pi) = self.index_of(t.participant) {
                let sent = self.participants[pi].request_keyframe_now(&t.mid, now);
                SfuMetrics::add(&self.metrics.plis_sent, u64::from(sent));
            }
        }
    }

    /// Offers `p`'s subscriber transport again, with an ICE restart when asked (RFC 8445
    /// section 9: new credentials, fresh checks; the client saw the transport fail). An offer
    /// still in flight is never rolled back: it is sent again unchanged, and a restart waits for
    /// its answer ([`Participant::ice_restart_wanted`]).
    pub(crate) fn reoffer(p: &mut Participant, now: Instant, ice_restart: bool) {
        let Some(sub) = p.subscriber.as_mut() else {
            return;
        };
        if p.negotiation != NegotiationState::Stable {
            if sub.pc.pending_local_description().is_some() {
                // Never roll back an offer the client may have applied already: a new one would
                // order its m-lines differently, which a browser refuses (JSEP, RFC 8829
                // section 5.2.2).
                // An ICE restart follows the answer to the offer the client has (on this socket,
                // or sent again by `resume`); otherwise that offer goes out again unchanged
                // (the answer timeout, a resume).
                if ice_restart {
                    p.ice_restart_wanted = true;
                    p.negotiation.request_offer(now);
                } else {
                    Self::resend_offer(p);
                }
                return;
            }
            p.negotiation = NegotiationState::Stable;
        }
        p.negotiation.request_offer(now);
        Self::send_offer_with(p, now, ice_restart);
    }

    /// Sends `p`'s subscribe offer that is still awaiting its answer again, unchanged (to a new
    /// signaling socket after a resume). Not a new offer: the client may have applied the first
    /// one already (its answer lost with the old socket), and a new offer built after a rollback
    /// may order the m-lines differently, which a browser refuses (JSEP, RFC 8829 section 5.2.2).
    pub(crate) fn resend_offer(p: &mut Participant) {
        let Some(sub) = p.subscriber.as_mut() else {
            return;
        };
        let Some(sdp) = sub.pc.pending_local_description().map(|d| d.sdp) else {
            return;
        };
        let tracks = p
            .downtracks
            .iter()
            .filter_map(|dt| {
                dt.mid.as_ref().map(|mid| SubscribedTrack {
                    mid: mid.clone(),
                    track: dt.track.clone(),
                    kind: dt.source.kind(),
                    source: dt.source,
                })
            })
            .collect();
        p.send(SfuEvent::SubscribeOffer { sdp, tracks });
    }

    /// Creates, applies and sends a subscribe offer for `p` (its negotiation state already says
    /// an offer is due).
    pub(crate) fn send_offer(p: &mut Participant, now: Instant) {
        Self::send_offer_with(p, now, false);
    }

    fn send_offer_with(p: &mut Participant, now: Instant, ice_restart: bool) {
        let Some(sub) = p.subscriber.as_mut() else {
            return;
        };
        let options = ice_restart
            .then_some(rtc::peer_connection::configuration::RTCOfferOptions { ice_restart: true });
        let offer = match sub.pc.create_offer(options) {
            Ok(o) => o,
            Err(e) => {
                warn!(participant = %p.id, "create subscribe offer: {e}");
                return;
            }
        };
        if let Err(e) = sub.pc.set_local_description(now, offer) {
            warn!(participant = %p.id, "apply subscribe offer: {e}");
            return;
        }
        sub.refresh_ice();
        sub.dirty = true;
        sub.deadline = Some(now);
        let Some(sdp) = sub.pc.local_description().map(|d| d.sdp) else {
            return;
        };
        p.offers_sent += 1;
        let offer_no = p.offers_sent;
        // Learn each forwarding's mid on this transport; what this offer carries for the first
        // time is now being negotiated.
        let mut tracks = Vec::new();
        for dt in &mut p.downtracks {
            if let Some(t) = sub.pc.rtp_transceiver(dt.sender.into()) {
                dt.mid = t.mid().clone();
            }
            if dt.state == DownTrackState::ToOpen && dt.mid.is_some() {
                dt.state = DownTrackState::Negotiating { offer: offer_no };
            }
            if let Some(mid) = &dt.mid {
                tracks.push(SubscribedTrack {
                    mid: mid.clone(),
                    track: dt.track.clone(),
                    kind: dt.source.kind(),
                    source: dt.source,
                });
            }
        }
        p.send(SfuEvent::SubscribeOffer { sdp, tracks });
    }

    /// Recomputes every downtrack's payload-type and header-extension translation from the two
    /// legs' negotiated parameters (after any negotiation).
    pub fn refresh_mappings(&mut self) {
        self.update_flags();
        let published = self.published_tracks();
        for p in &mut self.participants {
            let Some(sub) = p.subscriber.as_mut() else {
                continue;
            };
            for dt in &mut p.downtracks {
                if dt.state != DownTrackState::Open {
                    continue;
                }
                let Some(PublishedTrack {
                    codecs: pub_codecs,
                    extensions: pub_exts,
                    ..
                }) = published.iter().find(|t| t.id == dt.track)
                else {
                    continue;
                };
                let Some(mut sender) = sub.pc.rtp_sender(dt.sender) else {
                    continue;
                };
                let params = sender.get_parameters().rtp_parameters.clone();
                dt.rewriter.reset_mappings();
                for c in pub_codecs {
                    let to = params
                        .codecs
                        .iter()
                        .find(|s| {
                            s.rtp_codec
                                .mime_type
                                .eq_ignore_ascii_case(&c.rtp_codec.mime_type)
                                && s.rtp_codec.sdp_fmtp_line == c.rtp_codec.sdp_fmtp_line
                        })
                        .or_else(|| {
                            params.codecs.iter().find(|s| {
                                s.rtp_codec
                                    .mime_type
                                    .eq_ignore_ascii_case(&c.rtp_codec.mime_type)
                            })
                        })
                        .map(|s| s.payload_type);
                    dt.rewriter.set_payload_type(c.payload_type, to);
                }
                for e in pub_exts {
                    // The publisher's transport-cc sequence numbers mean nothing on another leg: never forwarded.
                    if e.uri == rtc::sdp::extmap::TRANSPORT_CC_URI {
                        continue;
                    }
                    // A simulcast layer's RID means nothing on the subscriber's single stream.
                    if e.uri == crate::peer::RID_URI || e.uri == crate::peer::REPAIRED_RID_URI {
                        continue;
                    }
                    if let Some(s) = params.header_extensions.iter().find(|s| s.uri == e.uri) {
                        if e.id > 0 && e.id < 256 && s.id > 0 && s.id < 256 {
                            dt.rewriter.set_extension(e.id as u8, s.id as u8);
                        }
                    }
                }
                if let (Some(s), Some(mid)) = (
                    params.header_extensions.iter().find(|s| s.uri == MID_URI),
                    &dt.mid,
                ) {
                    dt.rewriter.set_mid_extension(s.id as u8, mid);
                }
            }
        }
    }

    /// After participant `idx`'s transport `role` moved to another ICE path (packets were lost
    /// on the old one): asks for a keyframe of every video track that crossed it — the
    /// participant's own tracks (publisher), or the tracks it receives (subscriber) — so
    /// receivers recover at once rather than after their own PLI. Not throttled: the requests
    /// of the outage went to the dead path. Returns how many PLIs went out.
    pub fn request_keyframes_after_path_switch(
        &mut self,
        idx: usize,
        role: TransportRole,
        now: Instant,
    ) -> u64 {
        let tracks: Vec<TrackId> = match role {
            TransportRole::Publisher => {
                let p = &self.participants[idx];
                p.published
                    .iter()
                    .filter(|t| t.source.kind() == MediaKind::Video)
                    .map(|t| TrackId {
                        participant: p.id,
                        mid: t.mid.clone(),
                    })
                    .collect()
            }
            TransportRole::Subscriber => self.participants[idx]
                .downtracks
                .iter()
                .filter(|d| d.is_open() && d.track_is_video())
                .map(|d| d.track.clone())
                .collect(),
        };
        let mut sent = 0;
        for t in tracks {
            if let Some(pi) = self.index_of(t.participant) {
                sent += u64::from(self.participants[pi].request_keyframe_now(&t.mid, now));
            }
        }
        sent
    }

    /// Forwards one RTP packet of publisher `idx` to every subscriber of the track.
    pub fn forward_rtp(
        &mut self,
        idx: usize,
        packet: &rtc::rtp::Packet,
        now: Instant,
        metrics: &Arc<SfuMetrics>,
    ) -> ForwardOutcome {
        let mut outcome = ForwardOutcome::default();
        let publisher_id = self.participants[idx].id;
        let ssrc = packet.header.ssrc;
        let Some(mid_idx) = self.participants[idx]
            .published
            .iter()
            .position(|p| p.ssrcs.contains(&ssrc))
        else {
            return outcome;
        };
        SfuMetrics::inc(&metrics.rtp_in);
        self.participants[idx].published[mid_idx].cache.insert(
            &packet.header,
            &packet.payload,
            now,
        );
        // Simulcast: which layer this packet belongs to, and whether it starts a keyframe (a
        // layer switch waits for one). Not simulcast: `None`, nothing to decide.
        let layer = {
            let t = &mut self.participants[idx].published[mid_idx];
            match t.layers.iter_mut().find(|l| l.ssrc == ssrc) {
                Some(l) => {
                    l.last_packet = Some(now);
                    l.bytes += packet.payload.len() as u64 + 12;
                    let family = t
                        .codecs
                        .iter()
                        .find(|c| c.payload_type == packet.header.payload_type)
                        .map(|c| CodecFamily::from_mime(&c.rtp_codec.mime_type));
                    let key = family.is_some_and(|f| is_keyframe_start(f, &packet.payload));
                    if key && family == Some(CodecFamily::Vp8) {
                        if let Some((w, _)) = crate::codec::vp8_keyframe_size(&packet.payload) {
                            l.width = w;
                        }
                    }
                    Some((l.rank, key))
                }
                None => None,
            }
        };
        {
            let t = &mut self.participants[idx].published[mid_idx];
            if let Some(ext) = t.audio_level_ext {
                if let Some(&level) = packet
                    .header
                    .extensions
                    .iter()
                    .find(|e| e.id == ext)
                    .and_then(|e| e.payload.first())
                {
                    t.levels.observe(level);
                }
            }
            if t.host_muted {
                return outcome;
            }
        }
        if self.participants[idx].published[mid_idx]
            .keyframe_pending
            .is_some()
        {
            let t = &mut self.participants[idx].published[mid_idx];
            let family = t
                .codecs
                .iter()
                .find(|c| c.payload_type == packet.header.payload_type)
                .map(|c| CodecFamily::from_mime(&c.rtp_codec.mime_type));
            if family.is_some_and(|f| is_keyframe_start(f, &packet.payload)) {
                t.keyframe_pending = None;
            }
        }
        // Copy the mid (at most 32 bytes, validated) to the stack: no allocation, and the
        // publisher is not borrowed while the subscribers are.
        let mut mid_buf = [0u8; 32];
        let mid_len = {
            let m = self.participants[idx].published[mid_idx].mid.as_bytes();
            let n = m.len().min(32);
            mid_buf[..n].copy_from_slice(&m[..n]);
            n
        };
        let mid = &mid_buf[..mid_len];
        // The track's own payload type (not RTX): what a held group of pictures starts with.
        let primary_pt = self.participants[idx].published[mid_idx]
            .codecs
            .first()
            .map(|c| c.payload_type);
        for (j, sub_p) in self.participants.iter_mut().enumerate() {
            if j == idx {
                continue;
            }
            let Some(sub) = sub_p.subscriber.as_mut() else {
                continue;
            };
            crate::core::blame(sub_p.id);
            let can_send = sub.can_send();
            let congested = sub.congested;
            let video_paused = sub_p.bandwidth.allowance().video_paused;
            let warming = !sub.connected_once;
            for dt in &mut sub_p.downtracks {
                if dt.track.participant != publisher_id || dt.track.mid.as_bytes() != mid {
                    continue;
                }
                if let Some((rank, key)) = layer {
                    // Another simulcast layer than this subscriber's: not for it (and not
                    // counted against its leg's sequence numbers).
                    let was = dt.layer.current;
                    if !dt.layer.admit(ssrc, rank, key) {
                        continue;
                    }
                    if was.is_some_and(|w| Some(w) != dt.layer.current) {
                        SfuMetrics::inc(&metrics.layer_switches);
                    }
                }
                if !dt.settings.enabled || (video_paused && dt.track_is_video()) {
                    // The subscriber turned it off, or its link cannot take any video now
                    // (`crate::bwe`): its leg renumbers past this, and video restarts on a
                    // keyframe.
                    if dt.is_open() {
                        dt.rewriter.skip(&packet.header);
                    }
                    continue;
                }
                if warming && dt.track_is_video() {
                    dt.hold_early(packet, primary_pt);
                    continue;
                }
                if dt.state != DownTrackState::Open {
                    continue;
                }
                if !can_send {
                    // The subscriber sees no gap for this: the leg renumbers past it and video
                    // resumes on a keyframe.
                    dt.rewriter.skip(&packet.header);
                    SfuMetrics::inc(&metrics.drops_not_connected);
                    continue;
                }
                if congested && dt.track_is_video() {
                    // Its TCP connection is backed up: video gives way (to the next keyframe,
                    // asked for when it drains), so audio is not queued behind it.
                    dt.rewriter.skip(&packet.header);
                    SfuMetrics::inc(&metrics.drops_congested);
                    continue;
                }
                if dt.send(sub, packet.clone(), now, metrics) == Sent::WaitingForKeyframe {
                    outcome.wants_keyframe = true;
                }
            }
        }
        crate::core::blame(publisher_id);
        outcome
    }

    /// Participant `idx`'s subscriber transport connected for the first time: sends what each
    /// negotiated video downtrack held (`DownTrack::early`), and asks for a keyframe for those
    /// that hold none and whose publisher is not already asked (past the throttle, as at any
    /// (re)connection). Returns the PLIs sent.
    pub fn first_connected(&mut self, idx: usize, now: Instant, metrics: &Arc<SfuMetrics>) -> u64 {
        let mut wanted: Vec<TrackId> = Vec::new();
        {
            let p = &mut self.participants[idx];
            let Some(sub) = p.subscriber.as_mut() else {
                return 0;
            };
            sub.connected_once = true;
            for dt in &mut p.downtracks {
                let held = std::mem::take(&mut dt.early);
                if !dt.is_open() || !dt.track_is_video() {
                    continue;
                }
                let sent = held
                    .into_iter()
                    .filter(|pkt| dt.send(sub, pkt.clone(), now, metrics) == Sent::Yes)
                    .count();
                if sent == 0 {
                    wanted.push(dt.track.clone());
                } else {
                    SfuMetrics::add(&metrics.rtp_early_sent, sent as u64);
                }
            }
        }
        let mut plis = 0;
        for t in wanted {
            let Some(pi) = self.index_of(t.participant) else {
                continue;
            };
            let publisher = &mut self.participants[pi];
            // The request sent with the offer is still awaited (and repeated until it comes):
            // its keyframe is forwarded as it arrives.
            let awaited = publisher
                .published
                .iter()
                .any(|p| p.mid == t.mid && p.keyframe_pending.is_some());
            if !awaited {
                plis += u64::from(publisher.request_keyframe_now(&t.mid, now));
            }
        }
        plis
    }
}

/// 128 random bits as 32 hex characters.
fn hex_token() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `p`'s subscriber transport can carry media now.
fn sub_connected(p: &Participant) -> bool {
    p.subscriber.as_ref().is_some_and(|s| s.can_send())
}

impl DownTrack {
    /// The subscriber answered an offer carrying it: media may flow.
    pub(crate) fn is_open(&self) -> bool {
        self.state == DownTrackState::Open
    }

    pub(crate) fn track_is_video(&self) -> bool {
        self.source.kind() == MediaKind::Video
    }

    /// Holds `packet` in [`Self::early`] if a group of pictures is being held, or starts one if
    /// it is the first packet of a keyframe of the track's own payload type (`primary_pt`, not
    /// RTX). A newer keyframe starts the group again; past [`EARLY_RTP_PACKETS`] it is dropped.
    fn hold_early(&mut self, packet: &rtc::rtp::Packet, primary_pt: Option<u8>) {
        let starts = Some(packet.header.payload_type) == primary_pt
            && self.rewriter.codec().needs_keyframe()
            && is_keyframe_start(self.rewriter.codec(), &packet.payload);
        if starts {
            self.early.clear();
        } else if self.early.is_empty() {
            return;
        } else if self.early.len() >= EARLY_RTP_PACKETS {
            self.early.clear();
            return;
        }
        if self.early.capacity() == 0 {
            self.early.reserve_exact(EARLY_RTP_PACKETS);
        }
        self.early.push(packet.clone());
    }

    /// Rewrites `out` for this leg and writes it to `sub`, counting the outcome.
    fn send(
        &mut self,
        sub: &mut Transport,
        mut out: rtc::rtp::Packet,
        now: Instant,
        metrics: &Arc<SfuMetrics>,
    ) -> Sent {
        let src = (out.header.ssrc, out.header.sequence_number);
        match self.rewriter.rewrite(&mut out.header, &out.payload, now) {
            Verdict::Forward => {
                let vp8 = self.rewriter.vp8_rewrite();
                if let Some(p) = self.rewriter.rewrite_payload(&out.payload) {
                    out.payload = p;
                }
                let len = out.payload.len() as u64 + 12;
                let (out_seq, out_ts, out_pt) = (
                    out.header.sequence_number,
                    out.header.timestamp,
                    out.header.payload_type,
                );
                match sub
                    .pc
                    .rtp_sender(self.sender)
                    .map(|mut s| s.write_rtp(now, out))
                {
                    Some(Ok(())) => {
                        self.sent.record(src, (out_seq, out_ts, out_pt), vp8, now);
                        SfuMetrics::inc(&metrics.rtp_forwarded);
                        SfuMetrics::add(&metrics.bytes_forwarded, len);
                        sub.dirty = true;
                        Sent::Yes
                    }
                    Some(Err(e)) => {
                        self.rewriter.undo_forward();
                        SfuMetrics::inc(&metrics.drops_write_error);
                        debug!(track = %self.track, "forward write: {e}");
                        Sent::No
                    }
                    None => {
                        self.rewriter.undo_forward();
                        SfuMetrics::inc(&metrics.drops_write_error);
                        Sent::No
                    }
                }
            }
            Verdict::WaitingForKeyframe => {
                SfuMetrics::inc(&metrics.drops_keyframe_wait);
                Sent::WaitingForKeyframe
            }
            Verdict::UnmappedPayloadType => {
                SfuMetrics::inc(&metrics.drops_unmapped_pt);
                Sent::No
            }
        }
    }
}

/// What [`DownTrack::send`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Rewritten and written to the subscriber transport.
    Yes,
    /// Dropped: the leg waits for a keyframe (the caller asks the publisher for one).
    WaitingForKeyframe,
    /// Dropped: no payload-type mapping, or the write failed (counted).
    No,
}

/// `(mid, ssrc)` pairs from the `a=ssrc` lines of the remote description.
fn ssrcs_from_remote(pc: &RTCPeerConnection) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let Some(parsed) = pc.remote_description().and_then(|d| d.unmarshal().ok()) else {
        return out;
    };
    for media in &parsed.media_descriptions {
        let Some(mid) = media.attribute("mid").flatten() else {
            continue;
        };
        // The first SSRC of the m-line is the media SSRC (later ones may be RTX/FEC of a group).
        if let Some(ssrc) = media
            .attribute("ssrc")
            .flatten()
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
        {
            out.push((mid.to_owned(), ssrc));
        }
    }
    out
}

fn validate_track_list(tracks: &[PublishTrack]) -> Result<(), SfuError> {
    if tracks.len() > 3 {
        return Err(SfuError::InvalidSdp(
            "at most 3 tracks (microphone, camera, screen)".into(),
        ));
    }
    for (i, t) in tracks.iter().enumerate() {
        if t.mid.is_empty() || t.mid.len() > 32 {
            return Err(SfuError::InvalidSdp(
                "a track's mid has 1 to 32 characters".into(),
            ));
        }
        if tracks[..i]
            .iter()
            .any(|o| o.mid == t.mid || o.source == t.source)
        {
            return Err(SfuError::InvalidSdp(
                "each mid and each source at most once".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(ssrc: u32, rank: u8, width: u16, at: Option<Instant>) -> Layer {
        Layer {
            ssrc,
            rid: String::new(),
            needed_at: None,
            paused: false,
            rank,
            width,
            last_packet: at,
            bytes: 0,
            bitrate: 0,
            last_keyframe_request: None,
        }
    }

    #[test]
    fn the_layer_chosen_is_the_smallest_that_fills_the_tile_among_those_still_sent() {
        let now = Instant::now();
        let live = Some(now);
        let layers = [
            layer(1, 0, 320, live),
            layer(2, 1, 640, live),
            layer(3, 2, 1280, live),
        ];
        assert_eq!(choose_layer(&layers, Some((250, 140))), Some(0));
        assert_eq!(choose_layer(&layers, Some((600, 340))), Some(1));
        assert_eq!(choose_layer(&layers, Some((940, 530))), Some(2));
        assert_eq!(choose_layer(&layers, Some((2560, 1440))), Some(2));
        assert_eq!(choose_layer(&layers, None), Some(2), "no size: the best");
        // The publisher stopped its high layer: the best still sent.
        let gone = Some(now - LAYER_IDLE);
        let layers = [
            layer(1, 0, 320, live),
            layer(2, 1, 640, live),
            layer(3, 2, 1280, gone),
        ];
        // Still asked for (to resume it at the publisher); forwarded: the best still sent.
        assert_eq!(choose_layer(&layers, Some((940, 530))), Some(2));
        assert_eq!(
            layer_at_or_below(&layers, Some(2), now).map(|l| l.rank),
            Some(1)
        );
        // Widths not known yet: by rank.
        let layers = [
            layer(1, 0, 0, live),
            layer(2, 1, 0, live),
            layer(3, 2, 0, live),
        ];
        assert_eq!(choose_layer(&layers, Some((300, 170))), Some(0));
        assert_eq!(choose_layer(&layers, Some((700, 400))), Some(1));
        assert_eq!(choose_layer(&layers, Some((1000, 560))), Some(2));
        assert_eq!(choose_layer(&[layer(1, 0, 0, None)], None), None);
    }

    #[test]
    fn a_downtrack_switches_layers_only_on_a_keyframe_of_the_wanted_one() {
        let mut c = LayerChoice::default();
        // Nothing forwarded yet: the first keyframe of any layer starts it.
        assert!(!c.admit(1, 0, false));
        assert!(c.admit(2, 1, true));
        assert!(c.admit(2, 1, false));
        assert!(!c.admit(1, 0, true), "not wanted: stays on layer 1");
        c.target = Some(2);
        assert!(
            c.admit(2, 1, false),
            "the current layer flows until the switch"
        );
        assert!(!c.admit(3, 2, false), "the wanted layer's deltas wait");
        assert!(c.admit(3, 2, true), "its keyframe switches");
        assert!(
            !c.admit(2, 1, false),
            "the old layer is no longer forwarded"
        );
        assert_eq!(c.current, Some((3, 2)));
        // The link cannot take layer 2: it is shed at once, before layer 1's keyframe.
        c.target = Some(1);
        c.shed = true;
        assert!(!c.admit(3, 2, false), "shed");
        assert!(!c.admit(2, 1, false));
        assert!(c.admit(2, 1, true), "the keyframe switches");
        assert!(!c.shed);
        assert!(c.admit(2, 1, false));
    }
}
