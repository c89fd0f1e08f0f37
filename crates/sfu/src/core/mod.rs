//! The media core: every room, every participant's two `rtc` peer connections, the routing
//! table, path selection and consent, and forwarding. Sans-IO in the str0m sense: it owns no
//! socket and reads no clock. The media worker's socket loop (`worker.rs`) is a thin shell that
//! feeds it and writes what it produces; the in-memory tests (`core_tests.rs`) drive it against
//! real `rtc` peers with simulated time.
//!
//! Inputs, each with the `now` it happens at: a datagram ([`Core::handle_datagram`], with its
//! transport protocol and local and remote address), a command (`join`, `publish_offer`, …), a
//! timeout ([`Core::handle_timeout`]). Outputs: datagrams to send ([`Core::poll_transmit`], keyed by
//! protocol, local and remote address), the next deadline ([`Core::poll_timeout`]), and events on
//! each participant's own bounded queue (given at [`Core::join`]) and on the room-lifecycle
//! broadcast.
//!
//! The run-loop contract: after any input, drain [`Core::poll_transmit`] until `None` and then ask
//! [`Core::poll_timeout`] again; call [`Core::handle_timeout`] when that instant has passed. Inside,
//! every touch of a peer connection (`handle_read`, `handle_timeout`, `set_*_description`,
//! `write_rtp`, …) is followed by draining its events and reads (`drive`) and its writes
//! (`flush`), which is what keeps `rtc`'s queues empty between inputs.

use crate::api::{
    CloseReason, JoinInfo, PublishTrack, ResumeInfo, RoomEvent, SfuError, SfuEvent, SfuMetrics,
};
use crate::ids::{ParticipantId, RoomId, TrackSource, TransportRole};
use crate::room::{LocalCandidates, Room, Transport};
use crate::routing::{
    looks_like_stun, BindingRequest, ConsentState, Heard, RouteTable, TransportKey, ROUTE_IDLE,
};
use bytes::BytesMut;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::{FiveTuple, TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;
use tracing::{debug, error, info, trace, warn};

/// How long a participant whose signaling socket is gone stays, by default.
pub const DEFAULT_RESUME_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a participant's publisher transport has from its join to connect, by default: a
/// participant whose media never comes (a client that joins and stops there, or one whose network
/// lets neither UDP nor TCP through) stops holding a place in its room.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How often the timer refreshes the `routes` and `subscriber_mlines` gauges at most, besides
/// the updates on commands and leaves.
const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The m-lines of every participant's latest subscribe offer (`SfuMetrics::subscriber_mlines`),
/// recounted for a participant only when it has made a new offer since the last count.
#[derive(Default)]
struct MlineCount {
    /// Per participant: `(offers sent when counted, m-lines of that offer)`.
    per: HashMap<ParticipantId, (u64, u64)>,
    /// Sum of the m-lines over `per`.
    total: u64,
}

impl MlineCount {
    /// Counts `p`'s subscriber m-lines again if it made an offer since the last count.
    fn note(&mut self, p: &crate::room::Participant) {
        let Some(sub) = p.subscriber.as_ref() else {
            self.forget(p.id);
            return;
        };
        if self
            .per
            .get(&p.id)
            .is_some_and(|(seen, _)| *seen == p.offers_sent)
        {
            return;
        }
        let n = sub.pc.local_description().map_or(0, |d| {
            d.sdp.lines().filter(|l| l.starts_with("m=")).count() as u64
        });
        let old = self
            .per
            .insert(p.id, (p.offers_sent, n))
            .map_or(0, |(_, n)| n);
        self.total = self.total.saturating_sub(old) + n;
    }

    /// Drops a participant that left.
    fn forget(&mut self, pid: ParticipantId) {
        if let Some((_, n)) = self.per.remove(&pid) {
            self.total = self.total.saturating_sub(n);
        }
    }
}

/// A datagram for the I/O shell to send.
#[derive(Debug)]
pub struct Transmit {
    /// UDP (TCP once ICE-TCP lands).
    pub protocol: TransportProtocol,
    /// The local address to send from: one of the addresses the core was given.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The bytes (already SRTP/DTLS-protected where that applies).
    pub data: BytesMut,
    /// On ICE-TCP only (always `false` on UDP): SRTP of a video downtrack (media or
    /// retransmission; any RTP that is not a forwarded audio track's SSRC). On a backed-up ICE-TCP connection it waits behind everything else
    /// (audio, RTCP, STUN, DTLS and DataChannel data), so a keyframe burst never holds audio
    /// (issue "reach", part 2: "never audio first"). The RTP header is in the clear under
    /// SRTP (RFC 3711 section 3.1), which is what this is read from.
    pub video: bool,
}

/// The media core. See the module docs for the run-loop contract.
pub struct Core {
    /// The local addresses candidates are announced with (one per media socket and protocol).
    local: LocalCandidates,
    max_participants: usize,
    /// How long a detached participant waits to be resumed ([`Core::detach`]).
    resume_grace: std::time::Duration,
    connect_timeout: std::time::Duration,
    rooms: HashMap<RoomId, Room>,
    where_is: HashMap<ParticipantId, RoomId>,
    routes: RouteTable,
    /// Local ufrag → transport, for every transport's current and retired credentials: how a
    /// binding request from an unknown 5-tuple finds its transport (RFC 8445 section 7.2.2).
    ufrags: HashMap<String, TransportKey>,
    /// The next participant id this core hands out; then `id_step` more
    /// ([`Core::with_participant_ids`]).
    next_id: u64,
    id_step: u64,
    metrics: Arc<SfuMetrics>,
    room_events: broadcast::Sender<RoomEvent>,
    /// Datagrams produced and not yet taken by [`Core::poll_transmit`].
    transmits: VecDeque<Transmit>,
    last_sweep: Instant,
    /// Subscriber m-lines per participant, for the `subscriber_mlines` gauge.
    mlines: MlineCount,
    /// When the timer last refreshed the gauges ([`GAUGE_REFRESH`]).
    gauges_at: Instant,
    /// Test hook: the next datagram of this participant panics inside the guarded region.
    #[cfg(test)]
    pub(crate) panic_on_datagram_of: Option<ParticipantId>,
}

thread_local! {
    /// Who the media thread is handling right now, for [`Core::guarded`] to blame after a panic.
    static BLAME: std::cell::Cell<Option<ParticipantId>> = const { std::cell::Cell::new(None) };
}

/// Marks `participant` as the one being handled (a thread-local write: cheap enough per packet).
pub(crate) fn blame(participant: ParticipantId) {
    BLAME.with(|b| b.set(Some(participant)));
}

fn current_blame() -> Option<ParticipantId> {
    BLAME.with(|b| b.get())
}

impl Core {
    /// A core announcing `local` in its host candidates (each must be an address the shell
    /// receives on and can send from), holding at most `max_participants` per room.
    pub fn new(
        local: LocalCandidates,
        max_participants: usize,
        metrics: Arc<SfuMetrics>,
        room_events: broadcast::Sender<RoomEvent>,
        now: Instant,
    ) -> Self {
        Self {
            local,
            max_participants: max_participants.max(1),
            resume_grace: DEFAULT_RESUME_GRACE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            rooms: HashMap::new(),
            where_is: HashMap::new(),
            routes: RouteTable::default(),
            ufrags: HashMap::new(),
            next_id: 1,
            id_step: 1,
            metrics,
            room_events,
            transmits: VecDeque::new(),
            last_sweep: now,
            mlines: MlineCount::default(),
            gauges_at: now,
            #[cfg(test)]
            panic_on_datagram_of: None,
        }
    }

    /// Sets how long a detached participant waits to be resumed (default
    /// [`DEFAULT_RESUME_GRACE`]).
    pub fn with_resume_grace(mut self, grace: std::time::Duration) -> Self {
        self.resume_grace = grace;
        self
    }

    /// Sets how long a participant's publisher transport has from its join to connect (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Makes this core hand out participant ids `first`, `first + step`, `first + 2 * step`…
    /// (default 1, 2, 3…): with one core per media worker, worker `i` of `n` takes `i + 1` and
    /// step `n`, so ids stay unique in the process and name their worker
    /// ([`crate::api::worker_of_participant`]). A `step` of 0 counts as 1.
    pub fn with_participant_ids(mut self, first: u64, step: u64) -> Self {
        self.next_id = first.max(1);
        self.id_step = step.max(1);
        self
    }

    /// Whether `ufrag` is the local ICE ufrag (current, or retired mid-restart) of one of this
    /// core's transports: how a connection that reached the process elsewhere (the one-port
    /// front door) finds the worker that owns its transport (RFC 8445 section 7.2.2).
    pub fn knows_ufrag(&self, ufrag: &str) -> bool {
        self.ufrags.contains_key(ufrag)
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Core::handle_timeout`] is next due (`None`: nothing is scheduled; call it again
    /// within [`ROUTE_IDLE`] anyway for route expiry).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut min: Option<Instant> = None;
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                min = Some(min.map_or(d, |m| m.min(d)));
            }
        };
        for room in self.rooms.values() {
            for p in &room.participants {
                for t in std::iter::once(&p.publisher).chain(p.subscriber.as_ref()) {
                    consider(t.deadline);
                    consider(t.paths.next_deadline());
                }
                consider(p.negotiation.deadline());
                consider(p.keyframe_retry_deadline());
                consider(p.detached_since.map(|t| t + self.resume_grace));
                consider(p.connect_by);
            }
            if room.has_audio() {
                consider(Some(room.speakers.deadline()));
            }
            if room.has_video() {
                consider(Some(room.next_layer_tick));
            }
        }
        consider(Some(self.last_sweep + ROUTE_IDLE));
        min
    }

    /// A datagram arrived on `tuple` (`tuple.local_addr`: the announced address of the socket it
    /// came in on). Unroutable datagrams are dropped and counted.
    pub fn handle_datagram(&mut self, tuple: FiveTuple, data: BytesMut, now: Instant) {
        SfuMetrics::inc(&self.metrics.datagrams_in);
        let Some((key, heard)) = self.route(tuple, &data, now) else {
            SfuMetrics::inc(&self.metrics.drops_unroutable);
            return;
        };
        self.guarded(Some(key.participant), now, |core| {
            core.on_routed(key, heard, tuple, data, now)
        });
    }

    /// [`Core::handle_datagram`] past routing: the transport's paths and consent, `rtc`, and
    /// forwarding.
    fn on_routed(
        &mut self,
        key: TransportKey,
        heard: Heard,
        tuple: FiveTuple,
        data: BytesMut,
        now: Instant,
    ) {
        #[cfg(test)]
        if self.panic_on_datagram_of == Some(key.participant) {
            panic!(
                "injected panic while handling {}'s datagram",
                key.participant
            );
        }
        let Some(room_id) = self.where_is.get(&key.participant) else {
            SfuMetrics::inc(&self.metrics.drops_unroutable);
            return;
        };
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(idx) = room.index_of(key.participant) else {
            return;
        };
        let role = key.role;
        let Some(t) = room.participants[idx].transport_mut(role) else {
            return;
        };
        let update = t.paths.on_datagram(tuple, heard, now);
        if let Some(gone) = update.evicted {
            self.routes.forget(&gone);
            // A path eviction (rare), not every packet.
            self.metrics.routes.store(
                self.routes.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let switched = update.switched_to.inspect(|to| {
            SfuMetrics::inc(&self.metrics.ice_path_switches);
            debug!(participant = %key.participant, ?role, local = %to.local_addr, remote = %to.peer_addr, "media follows the peer to another path");
        });
        if let Some(state) = update.state {
            on_consent_change(key, state, &self.metrics);
        }
        let mut nominated_early = false;
        let data = if heard == Heard::Data && !t.ice_connected {
            // `rtc` would drop it (no selected pair yet): keep it for when there is one.
            if t.early.len() < crate::room::EARLY_DATAGRAMS {
                t.early.push((tuple, data, now));
            }
            // The peer already uses this pair (DTLS on the path its check came from): nominate
            // it for `rtc` now rather than at the peer's next check (`Transport::nomination`);
            // the replay below then hands `rtc` what was kept.
            let Some((_, check)) = t.nomination.take_if(|(at, _)| *at == tuple) else {
                return;
            };
            nominated_early = true;
            check
        } else {
            data
        };
        read_into(t, key, tuple, data, now);
        if switched.is_some() {
            if role == TransportRole::Subscriber {
                room.participants[idx].bandwidth.path_changed(now);
            }
            // Packets were lost on the old path: a keyframe now, not when the receivers ask.
            let sent = room.request_keyframes_after_path_switch(idx, role, now);
            SfuMetrics::add(&self.metrics.plis_sent, sent);
        }
        drive(room, idx, role, now, &self.metrics);
        if let Some(t) = room.participants[idx].transport_mut(role) {
            if t.ice_connected && !t.early.is_empty() {
                if nominated_early {
                    SfuMetrics::inc(&self.metrics.ice_early_nominations);
                }
                for (tuple, data, at) in std::mem::take(&mut t.early) {
                    read_into(t, key, tuple, data, at.max(now));
                }
                drive(room, idx, role, now, &self.metrics);
            }
        }
        // Common case: flush this room in place, without cloning its id and looking it up again
        // (an allocation and two string hashes per datagram). Rare case (someone is closing):
        // the full after_room_change.
        flush(room, &mut self.transmits, &self.metrics);
        if room.participants.iter().any(|p| p.closing.is_some()) {
            let room_id = room.id.clone();
            self.after_room_change(&room_id, now);
        }
    }

    /// Finds the transport a datagram belongs to, and what kind of evidence it is for the
    /// transport's path selection.
    ///
    /// A binding request (RFC 8445 section 7.2.2) is routed by the USERNAME's server half,
    /// which must be the named transport's current ufrag, and must verify with its password;
    /// then its 5-tuple is learnt. Anything else must come on a learnt 5-tuple. A request that
    /// fails authentication on a known 5-tuple still reaches `rtc` (which answers it with an
    /// error), but proves nothing.
    fn route(
        &mut self,
        tuple: FiveTuple,
        data: &[u8],
        now: Instant,
    ) -> Option<(TransportKey, Heard)> {
        if !looks_like_stun(data) {
            return self.routes.lookup(&tuple, now).map(|k| (k, Heard::Data));
        }
        let Some(mut req) = BindingRequest::parse(data) else {
            // A response to `rtc`'s triggered check, an indication, or noise.
            return self
                .routes
                .lookup(&tuple, now)
                .map(|k| (k, Heard::OtherStun));
        };
        // The transport whose current (or, mid-restart, retired) ufrag the request names, if
        // its password verifies the request.
        let verified = self.ufrags.get(&req.local_ufrag).copied().and_then(|key| {
            let room = self.rooms.get_mut(self.where_is.get(&key.participant)?)?;
            let idx = room.index_of(key.participant)?;
            let t: &mut Transport = room.participants[idx].transport_mut(key.role)?;
            if t.ice.as_ref().is_some_and(|c| c.ufrag == req.local_ufrag) {
                let pwd = &t.ice.as_ref()?.pwd;
                if !req.verify(pwd) {
                    return None;
                }
                if !t.ice_connected && !req.use_candidate {
                    t.nomination = req
                        .nominating(pwd)
                        .map(|b| (tuple, bytes::BytesMut::from(&b[..])));
                }
                // The peer uses the new credentials: the restart is complete.
                if let Some(old) = t.retired_ice.take() {
                    self.ufrags.remove(&old.ufrag);
                }
                Some(key)
            } else if t
                .retired_ice
                .as_ref()
                .is_some_and(|c| c.ufrag == req.local_ufrag)
            {
                req.verify(&t.retired_ice.as_ref()?.pwd).then_some(key)
            } else {
                None
            }
        });
        match verified {
            Some(key) => {
                tracing::trace!(participant = %key.participant, role = ?key.role, local = %tuple.local_addr, remote = %tuple.peer_addr, nominate = req.use_candidate, "binding request");
                if !self.routes.learn(tuple, key, now) {
                    return None;
                }
                self.publish_routes();
                Some((
                    key,
                    Heard::Check {
                        nominate: req.use_candidate,
                    },
                ))
            }
            None => {
                SfuMetrics::inc(&self.metrics.stun_auth_failures);
                self.routes
                    .lookup(&tuple, now)
                    .map(|k| (k, Heard::OtherStun))
            }
        }
    }

    /// Timers: `rtc`'s (retransmissions, RTCP reports, …), consent, the subscribe-offer timeout,
    /// route expiry. Due ones run; the rest wait.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.guarded(None, now, |core| core.run_timers(now));
    }

    fn run_timers(&mut self, now: Instant) {
        let sweep = now >= self.last_sweep + ROUTE_IDLE;
        if sweep {
            self.routes.expire(now);
            self.last_sweep = now;
        }
        // Rooms are walked in place: no room-id clone or lookup per room and timer tick (ticks
        // come at ~10 per second per transport). Only rooms where someone is closing go through
        // after_room_change; every other room is flushed here.
        let mut changed: Vec<RoomId> = Vec::new();
        for room in self.rooms.values_mut() {
            for idx in 0..room.participants.len() {
                blame(room.participants[idx].id);
                for role in [TransportRole::Publisher, TransportRole::Subscriber] {
                    let due = room.participants[idx]
                        .transport_mut(role)
                        .is_some_and(|t| t.deadline.is_some_and(|d| d <= now));
                    if due {
                        if let Some(t) = room.participants[idx].transport_mut(role) {
                            if let Err(e) = t.pc.handle_timeout(now) {
                                debug!("handle_timeout: {e}");
                            }
                            t.dirty = true;
                        }
                        drive(room, idx, role, now, &self.metrics);
                    }
                }
                let retried = room.participants[idx].retry_keyframes(now);
                SfuMetrics::add(&self.metrics.plis_sent, retried);
                let p = &mut room.participants[idx];
                for role in [TransportRole::Publisher, TransportRole::Subscriber] {
                    let key = TransportKey {
                        participant: p.id,
                        role,
                    };
                    let Some(t) = p.transport_mut(role) else {
                        continue;
                    };
                    if sweep {
                        t.paths.expire(now);
                    }
                    if let Some(state) = t.paths.poll(now) {
                        on_consent_change(key, state, &self.metrics);
                        if state == ConsentState::Failed {
                            p.closing.get_or_insert(CloseReason::TransportFailed);
                        }
                    }
                }
                if let Some(by) = p.connect_by {
                    if p.publisher.state == RTCPeerConnectionState::Connected {
                        p.connect_by = None;
                    } else if now >= by {
                        info!(participant = %p.id, "publisher transport not connected {} s after joining: removed", self.connect_timeout.as_secs());
                        SfuMetrics::inc(&self.metrics.connect_timeouts);
                        p.closing.get_or_insert(CloseReason::ConnectTimeout);
                        p.connect_by = None;
                    }
                }
                if p.detached_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.resume_grace)
                {
                    info!(participant = %p.id, "not resumed within {} s: leaving", self.resume_grace.as_secs());
                    if p.closing.is_none() {
                        SfuMetrics::inc(&self.metrics.resume_grace_expiries);
                    }
                    p.closing.get_or_insert(CloseReason::GraceExpired);
                }
                if p.negotiation.timed_out(now) {
                    // The same offer again, never a rollback and a new one: the client may have
                    // applied it (its answer lost), and a new offer's m-line order may differ.
                    warn!(participant = %p.id, "subscribe offer not answered in time: sending it again");
                    Room::reoffer(p, now, false);
                    sync_ufrags(room, &mut self.ufrags);
                }
            }
            if room.speakers.deadline() <= now {
                room.tick_speakers(now);
            }
            if room.next_layer_tick <= now {
                room.next_layer_tick = now + crate::room::LAYER_TICK;
                room.select_layers(now);
            }
            flush(room, &mut self.transmits, &self.metrics);
            if room.participants.is_empty() || room.participants.iter().any(|p| p.closing.is_some())
            {
                changed.push(room.id.clone());
            }
        }
        for room_id in changed {
            self.after_room_change(&room_id, now);
        }
        // Offers made on the datagram path (a publisher's track arriving) are counted here, at
        // most once per GAUGE_REFRESH: a walk over every participant, off the packet path.
        if sweep || now >= self.gauges_at + GAUGE_REFRESH {
            self.gauges_at = now;
            for room in self.rooms.values() {
                for p in &room.participants {
                    self.mlines.note(p);
                }
            }
            self.publish_mlines();
            self.publish_routes();
        }
    }

    /// Joins (creating when needed) `room` as `name`; `events` is this participant's queue
    /// ([`mod@crate::mailbox`]: a session that stops reading for seconds closes the participant). Errors: `RoomFull`,
    /// `NegotiationFailed` (no peer connection could be built).
    pub fn join(
        &mut self,
        room: RoomId,
        name: String,
        user: String,
        events: crate::mailbox::EventSender,
        now: Instant,
    ) -> Result<JoinInfo, SfuError> {
        self.join_room(room, name, user, events, true, now)
    }

    /// [`Core::join`] for a participant that only publishes (a WHIP ingest, RFC 9725): it
    /// receives nothing (no downtracks, no subscriber transport, no subscribe offers); the
    /// others see it and its tracks like anyone else's.
    pub fn join_publisher(
        &mut self,
        room: RoomId,
        name: String,
        user: String,
        events: crate::mailbox::EventSender,
        now: Instant,
    ) -> Result<JoinInfo, SfuError> {
        self.join_room(room, name, user, events, false, now)
    }

    /// Applies a publisher-transport offer; returns the SDP answer. Errors: `InvalidSdp`,
    /// `NegotiationFailed`, `UnknownParticipant`.
    pub fn publish_offer(
        &mut self,
        participant: ParticipantId,
        sdp: String,
        tracks: Vec<PublishTrack>,
        now: Instant,
    ) -> Result<String, SfuError> {
        let local = self.local.clone();
        self.with_room(participant, now, |room| {
            room.publish_offer(participant, sdp, tracks, &local, now)
        })
    }

    /// Applies the answer to the subscriber transport's pending offer.
    pub fn subscribe_answer(
        &mut self,
        participant: ParticipantId,
        sdp: String,
        now: Instant,
    ) -> Result<(), SfuError> {
        self.with_room(participant, now, |room| {
            room.subscribe_answer(participant, sdp, now)
        })
    }

    /// How `participant` wants one track it receives ([`crate::api::TrackSettings`]): a
    /// disabled downtrack forwards nothing (its leg's sequence numbers skip nothing), an enabled
    /// video one restarts on a keyframe asked for at once. When every subscriber of a video
    /// track disabled it, its publisher is told to stop encoding it. Errors:
    /// [`SfuError::UnknownTrack`], [`SfuError::UnknownParticipant`].
    pub fn track_settings(
        &mut self,
        participant: ParticipantId,
        track: &crate::ids::TrackId,
        settings: crate::api::TrackSettings,
        now: Instant,
    ) -> Result<(), SfuError> {
        self.with_room(participant, now, |room| {
            room.set_track_settings(participant, track, settings, now)
        })
    }

    /// A trickled ICE candidate of the client (RFC 8838; empty: end of candidates).
    pub fn add_candidate(
        &mut self,
        participant: ParticipantId,
        role: TransportRole,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
        now: Instant,
    ) -> Result<(), SfuError> {
        self.with_participant(participant, now, |room, idx| {
            let t = room.participants[idx].transport_mut(role).ok_or_else(|| {
                SfuError::InvalidCandidate("that transport does not exist yet".into())
            })?;
            add_remote_candidate(t, candidate, sdp_mid, sdp_mline_index)
        })
    }

    /// The participant's `source` track is (un)muted: the others are told.
    pub fn mute(
        &mut self,
        participant: ParticipantId,
        source: TrackSource,
        muted: bool,
        now: Instant,
    ) {
        let _ = self.with_participant(participant, now, |room, idx| {
            let p = &mut room.participants[idx];
            let Some(t) = p.published.iter_mut().find(|t| t.source == source) else {
                return Ok(());
            };
            if !muted && t.host_muted {
                // The participant unmutes itself: forwarding resumes, from a fresh keyframe.
                t.host_muted = false;
                let mid = t.mid.clone();
                p.request_keyframe_now(&mid, now);
            }
            let Some(t) = p.published.iter_mut().find(|t| t.source == source) else {
                return Ok(());
            };
            if t.muted == muted {
                return Ok(());
            }
            t.muted = muted;
            let track = crate::ids::TrackId {
                participant,
                mid: t.mid.clone(),
            };
            for (j, other) in room.participants.iter_mut().enumerate() {
                if j != idx {
                    other.send(SfuEvent::TrackMuted {
                        track: track.clone(),
                        source,
                        muted,
                    });
                }
            }
            Ok(())
        });
    }

    /// Sends `text` to one participant on its DataChannel `label` (dropped if not open).
    pub fn send_data(
        &mut self,
        participant: ParticipantId,
        label: &str,
        text: String,
        now: Instant,
    ) {
        let _ = self.with_participant(participant, now, |room, idx| {
            room.participants[idx].send_text(label, text, now);
            Ok(())
        });
    }

    /// Sends `text` on DataChannel `label` to everyone in `room` but `except`.
    pub fn broadcast(
        &mut self,
        room: &RoomId,
        except: Option<ParticipantId>,
        label: &str,
        text: &str,
        now: Instant,
    ) {
        if let Some(r) = self.rooms.get_mut(room) {
            let sent = std::panic::catch_unwind(AssertUnwindSafe(|| {
                for p in r.participants.iter_mut().filter(|p| Some(p.id) != except) {
                    blame(p.id);
                    p.send_text(label, text.to_owned(), now);
                }
            }));
            if sent.is_err() {
                if let Some(culprit) = current_blame() {
                    self.evict_after_panic(culprit, now);
                }
            }
            self.after_room_change(room, now);
        }
    }

    /// The participant's signaling socket is gone (not a leave): it stays for the resume grace
    /// period with its media untouched; the others get `ParticipantReconnecting`.
    pub fn detach(&mut self, participant: ParticipantId, attachment: u64, now: Instant) {
        let metrics = Arc::clone(&self.metrics);
        let _ = self.with_participant(participant, now, |room, idx| {
            let p = &room.participants[idx];
            if p.detached_since.is_some() || p.attachment.id() != attachment {
                // Already detached, or resumed on another socket since: not this socket's.
                return Ok(());
            }
            room.participants[idx].detached_since = Some(now);
            SfuMetrics::inc(&metrics.detaches);
            for (j, other) in room.participants.iter_mut().enumerate() {
                if j != idx {
                    other.send(SfuEvent::ParticipantReconnecting(participant));
                }
            }
            info!(participant = %participant, "signaling socket gone: waiting to be resumed");
            Ok(())
        });
    }

    /// The participant comes back on a new socket: `token` must be its resume token (compared
    /// in constant time), `events` its new queue. The old queue gets `Closed(Resumed)`; the
    /// others get `ParticipantReconnected` if it was detached; a subscribe offer that went to
    /// the old socket is sent again. Works whether or not the old socket was noticed gone (a
    /// network change leaves it open until its idle timeout). Errors: `ResumeFailed`.
    pub fn resume(
        &mut self,
        participant: ParticipantId,
        token: &str,
        user: &str,
        events: crate::mailbox::EventSender,
        now: Instant,
    ) -> Result<ResumeInfo, SfuError> {
        let max = self.max_participants;
        let metrics = Arc::clone(&self.metrics);
        if !self.where_is.contains_key(&participant) {
            return Err(SfuError::ResumeFailed);
        }
        self.with_room(participant, now, |room| {
            let idx = room.index_of(participant).ok_or(SfuError::ResumeFailed)?;
            if !constant_time_eq(
                room.participants[idx].resume_token.as_bytes(),
                token.as_bytes(),
            ) || room.participants[idx].user != user
            {
                // A token is no use to anyone but the user it was issued to.
                return Err(SfuError::ResumeFailed);
            }
            let others = room
                .participants
                .iter()
                .filter(|p| p.id != participant)
                .map(|p| p.info())
                .collect();
            let p = &mut room.participants[idx];
            let old = std::mem::replace(&mut p.events, events);
            // Before the old queue closes, so that its session, seeing it closed, finds itself
            // no longer current even when this event did not fit.
            p.attachment = p.attachment.next();
            let _ = old.send(SfuEvent::Closed(CloseReason::Resumed), now);
            let was_detached = p.detached_since.take().is_some();
            // An offer sent to the old socket will never be answered there: send the same offer
            // again (a new one only if none is pending). ICE is not restarted here (a socket drop
            // leaves media untouched); the client asks with `restart_ice` (and restarts its
            // publisher itself) when its transports failed.
            if p.negotiation != crate::negotiation::NegotiationState::Stable {
                Room::reoffer(p, now, false);
            }
            let info = ResumeInfo {
                room: room.id.clone(),
                name: p.name.clone(),
                join: JoinInfo {
                    participant,
                    others,
                    max_participants: max,
                    resume_token: p.resume_token.clone(),
                    attachment: p.attachment.clone(),
                },
            };
            if was_detached {
                for (j, other) in room.participants.iter_mut().enumerate() {
                    if j != idx {
                        other.send(SfuEvent::ParticipantReconnected(participant));
                    }
                }
            }
            SfuMetrics::inc(&metrics.resumes);
            info!(participant = %participant, "resumed");
            Ok(info)
        })
    }

    /// `host` acts on its room ([`crate::HostAction`]). Errors: [`SfuError::UnknownParticipant`]
    /// when the host or the target is in no room, the target is in another room, or a host
    /// would remove itself.
    pub fn host(
        &mut self,
        host: ParticipantId,
        action: crate::HostAction,
        now: Instant,
    ) -> Result<(), SfuError> {
        let room_id = self
            .where_is
            .get(&host)
            .cloned()
            .ok_or(SfuError::UnknownParticipant)?;
        let same_room = |p: &ParticipantId| self.where_is.get(p) == Some(&room_id);
        match action {
            crate::HostAction::Lock(locked) => {
                let room = self
                    .rooms
                    .get_mut(&room_id)
                    .ok_or(SfuError::UnknownParticipant)?;
                if room.locked != locked {
                    room.locked = locked;
                    for p in &mut room.participants {
                        p.send(SfuEvent::RoomLocked(locked));
                    }
                    info!(room = %room_id, locked, "room lock changed by a host");
                }
                Ok(())
            }
            crate::HostAction::Remove { participant } => {
                if participant == host || !same_room(&participant) {
                    return Err(SfuError::UnknownParticipant);
                }
                if let Some(room) = self.rooms.get_mut(&room_id) {
                    if let Some(user) = room
                        .index_of(participant)
                        .map(|i| room.participants[i].user.clone())
                    {
                        if room.removed_users.len() >= crate::api::MAX_REMOVED_USERS {
                            room.removed_users.pop_front();
                        }
                        room.removed_users.push_back(user);
                    }
                }
                info!(room = %room_id, %participant, "removed by a host");
                self.remove(participant, Some(CloseReason::Removed), now);
                Ok(())
            }
            crate::HostAction::Mute {
                participant,
                source,
            } => {
                if !same_room(&participant) {
                    return Err(SfuError::UnknownParticipant);
                }
                let muted_now = self.with_participant(participant, now, |room, idx| {
                    let p = &mut room.participants[idx];
                    let Some(t) = p.published.iter_mut().find(|t| t.source == source) else {
                        return Ok(false);
                    };
                    t.host_muted = true;
                    p.send(SfuEvent::MutedByHost(source));
                    Ok(true)
                })?;
                if muted_now {
                    // The others see it muted, as if the participant had said so.
                    self.mute(participant, source, true, now);
                }
                Ok(())
            }
        }
    }

    /// Every room (`None`) or one, as operators see it ([`crate::RoomSnapshot`]), by room id.
    pub fn snapshot(&self, room: Option<&RoomId>) -> Vec<crate::RoomSnapshot> {
        let mut rooms: Vec<crate::RoomSnapshot> = self
            .rooms
            .values()
            .filter(|r| room.is_none_or(|id| *id == r.id))
            .map(|r| crate::RoomSnapshot {
                id: r.id.clone(),
                participants: r.participants.iter().map(|p| p.snapshot()).collect(),
            })
            .collect();
        rooms.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        rooms
    }

    /// Offers the subscriber transport again with an ICE restart (the client saw it fail).
    pub fn restart_ice(
        &mut self,
        participant: ParticipantId,
        now: Instant,
    ) -> Result<(), SfuError> {
        let metrics = Arc::clone(&self.metrics);
        self.with_participant(participant, now, |room, idx| {
            Room::reoffer(&mut room.participants[idx], now, true);
            SfuMetrics::inc(&metrics.ice_restarts);
            Ok(())
        })
    }

    /// The connection on `tuple` (an ICE-TCP connection) is backed up (`true`: its write queue
    /// passed the high mark) or drained again (`false`). While backed up, video to the
    /// transport it carries is dropped (renumbered, no gap) and audio flows; when it drains,
    /// its video restarts on keyframes requested at once. Unknown tuples are ignored.
    pub fn set_congested(&mut self, tuple: FiveTuple, congested: bool, now: Instant) {
        let Some(key) = self.routes.lookup(&tuple, now) else {
            return;
        };
        let metrics = Arc::clone(&self.metrics);
        let _ = self.with_participant(key.participant, now, |room, idx| {
            let Some(t) = room.participants[idx].transport_mut(key.role) else {
                return Ok(());
            };
            if t.congested == congested {
                return Ok(());
            }
            t.congested = congested;
            debug!(participant = %key.participant, role = ?key.role, congested, "TCP write queue");
            if !congested && key.role == TransportRole::Subscriber {
                for dt in &mut room.participants[idx].downtracks {
                    dt.rewriter.request_resync();
                }
                let sent = room.request_keyframes_after_path_switch(idx, key.role, now);
                SfuMetrics::add(&metrics.plis_sent, sent);
            }
            Ok(())
        });
    }

    /// The participant leaves (its transports close, the others are told).
    pub fn leave(&mut self, participant: ParticipantId, now: Instant) {
        self.remove(participant, None, now);
    }

    fn join_room(
        &mut self,
        room_id: RoomId,
        name: String,
        user: String,
        events: crate::mailbox::EventSender,
        subscribes: bool,
        now: Instant,
    ) -> Result<JoinInfo, SfuError> {
        let max = self.max_participants;
        let room = self
            .rooms
            .entry(room_id.clone())
            .or_insert_with(|| Room::new(room_id.clone(), self.metrics.clone(), now));
        if room.locked {
            return Err(SfuError::RoomLocked);
        }
        if room.removed_users.contains(&user) {
            return Err(SfuError::Removed);
        }
        if room.participants.len() >= max {
            let empty = room.participants.is_empty();
            if empty {
                self.rooms.remove(&room_id);
            }
            return Err(SfuError::RoomFull { max });
        }
        let pid = ParticipantId(self.next_id);
        self.next_id += self.id_step;
        let others = room.participants.iter().map(|p| p.info()).collect();
        let joining = crate::room::Joining {
            name: name.clone(),
            user,
            subscribes,
        };
        if let Err(e) = room.add_participant(
            pid,
            joining,
            events,
            &self.local,
            now,
            now + self.connect_timeout,
        ) {
            if room.participants.is_empty() {
                self.rooms.remove(&room_id);
            }
            return Err(e);
        }
        self.where_is.insert(pid, room_id.clone());
        SfuMetrics::inc(&self.metrics.participants);
        self.metrics.rooms.store(
            self.rooms.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let _ = self.room_events.send(RoomEvent::ParticipantJoined {
            room: room_id.clone(),
            participant: pid,
            name,
        });
        info!(room = %room_id, participant = %pid, "joined");
        self.after_room_change(&room_id, now);
        let (resume_token, attachment) = self
            .rooms
            .get(&room_id)
            .and_then(|r| {
                r.index_of(pid).map(|i| {
                    let p = &r.participants[i];
                    (p.resume_token.clone(), p.attachment.clone())
                })
            })
            .unwrap_or_else(|| (String::new(), crate::api::Attachment::first()));
        Ok(JoinInfo {
            participant: pid,
            others,
            max_participants: max,
            resume_token,
            attachment,
        })
    }

    fn remove(&mut self, pid: ParticipantId, reason: Option<CloseReason>, now: Instant) {
        let Some(room_id) = self.where_is.remove(&pid) else {
            return;
        };
        let local = self.local.clone();
        if let Some(room) = self.rooms.get_mut(&room_id) {
            if let Some(mut gone) = room.remove_participant(pid, &local, now) {
                if let Some(r) = reason {
                    gone.send(SfuEvent::Closed(r));
                }
                self.metrics
                    .participants
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let _ = self.room_events.send(RoomEvent::ParticipantLeft {
                    room: room_id.clone(),
                    participant: pid,
                });
                info!(room = %room_id, participant = %pid, ?reason, "left");
            }
        }
        self.routes.forget_participant(pid);
        self.ufrags.retain(|_, k| k.participant != pid);
        self.mlines.forget(pid);
        self.publish_routes();
        self.publish_mlines();
        self.after_room_change(&room_id, now);
    }

    /// Runs `f` on the participant's room, then drives and flushes the room.
    fn with_room<T>(
        &mut self,
        pid: ParticipantId,
        now: Instant,
        f: impl FnOnce(&mut Room) -> Result<T, SfuError>,
    ) -> Result<T, SfuError> {
        self.guarded(Some(pid), now, |core| core.with_room_unguarded(pid, now, f))
            .unwrap_or(Err(SfuError::Internal))
    }

    /// [`Self::with_room`] with `pid`'s index in its room (errors: `UnknownParticipant`).
    fn with_participant<T>(
        &mut self,
        pid: ParticipantId,
        now: Instant,
        f: impl FnOnce(&mut Room, usize) -> Result<T, SfuError>,
    ) -> Result<T, SfuError> {
        self.with_room(pid, now, |room| {
            let idx = room.index_of(pid).ok_or(SfuError::UnknownParticipant)?;
            f(room, idx)
        })
    }

    fn with_room_unguarded<T>(
        &mut self,
        pid: ParticipantId,
        now: Instant,
        f: impl FnOnce(&mut Room) -> Result<T, SfuError>,
    ) -> Result<T, SfuError> {
        let room_id = self
            .where_is
            .get(&pid)
            .cloned()
            .ok_or(SfuError::UnknownParticipant)?;
        let room = self
            .rooms
            .get_mut(&room_id)
            .ok_or(SfuError::UnknownParticipant)?;
        let r = f(room);
        for idx in 0..room.participants.len() {
            blame(room.participants[idx].id);
            drive(room, idx, TransportRole::Publisher, now, &self.metrics);
            drive(room, idx, TransportRole::Subscriber, now, &self.metrics);
        }
        sync_ufrags(room, &mut self.ufrags);
        self.after_room_change(&room_id, now);
        r
    }

    /// Flushes the room's output, removes participants marked as closing, closes the room when
    /// it is empty.
    fn after_room_change(&mut self, room_id: &RoomId, now: Instant) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        sync_ufrags(room, &mut self.ufrags);
        flush(room, &mut self.transmits, &self.metrics);
        // Commands end here: count the subscribe offers they made (a look-up per participant of
        // this room; the SDP is read only for a participant whose offer is new).
        for p in &room.participants {
            self.mlines.note(p);
        }
        self.metrics
            .subscriber_mlines
            .store(self.mlines.total, std::sync::atomic::Ordering::Relaxed);
        let closing: Vec<(ParticipantId, CloseReason)> = room
            .participants
            .iter()
            .filter_map(|p| p.closing.map(|r| (p.id, r)))
            .collect();
        let empty = room.participants.is_empty();
        for (pid, reason) in closing {
            self.remove(pid, Some(reason), now);
        }
        let now_empty = empty
            || self
                .rooms
                .get(room_id)
                .is_some_and(|r| r.participants.is_empty());
        if now_empty && self.rooms.remove(room_id).is_some() {
            self.metrics.rooms.store(
                self.rooms.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let _ = self
                .room_events
                .send(RoomEvent::RoomClosed(room_id.clone()));
            info!(room = %room_id, "room closed");
        }
    }

    /// Runs `f`, catching a panic: the participant being handled when it happened (`first`, or
    /// whoever the code marked with [`blame`] since) is removed with
    /// [`CloseReason::InternalError`], and everyone else goes on. `None` after a panic.
    fn guarded<T>(
        &mut self,
        first: Option<ParticipantId>,
        now: Instant,
        f: impl FnOnce(&mut Self) -> T,
    ) -> Option<T> {
        BLAME.with(|b| b.set(first));
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(v) => Some(v),
            Err(_) => {
                if let Some(culprit) = current_blame() {
                    self.evict_after_panic(culprit, now);
                }
                None
            }
        }
    }

    /// Removes a participant whose handling panicked. If even the orderly removal panics, its
    /// state is dropped from the maps directly.
    fn evict_after_panic(&mut self, pid: ParticipantId, now: Instant) {
        SfuMetrics::inc(&self.metrics.participant_panics);
        error!(participant = %pid, "panic while handling this participant: removed, the room goes on");
        let orderly = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.remove(pid, Some(CloseReason::InternalError), now)
        }));
        if orderly.is_ok() {
            return;
        }
        let Some(room_id) = self.where_is.remove(&pid) else {
            return;
        };
        self.routes.forget_participant(pid);
        self.ufrags.retain(|_, k| k.participant != pid);
        self.mlines.forget(pid);
        self.publish_routes();
        self.publish_mlines();
        if let Some(room) = self.rooms.get_mut(&room_id) {
            let before = room.participants.len();
            room.participants.retain(|p| p.id != pid);
            if room.participants.len() < before {
                self.metrics
                    .participants
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            for other in &mut room.participants {
                other.send(SfuEvent::ParticipantLeft(pid));
            }
        }
        let _ = self.room_events.send(RoomEvent::ParticipantLeft {
            room: room_id.clone(),
            participant: pid,
        });
    }

    /// Sets the `routes` gauge from the route table (a relaxed store).
    fn publish_routes(&self) {
        self.metrics.routes.store(
            self.routes.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Sets the `subscriber_mlines` gauge from the running count (a relaxed store).
    fn publish_mlines(&self) {
        self.metrics
            .subscriber_mlines
            .store(self.mlines.total, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes every participant (`Closed(Shutdown)` on each queue) and every room.
    pub fn shutdown(&mut self, now: Instant) {
        let pids: Vec<ParticipantId> = self.where_is.keys().copied().collect();
        for pid in pids {
            self.remove(pid, Some(CloseReason::Shutdown), now);
        }
    }
}

fn add_remote_candidate(
    t: &mut crate::room::Transport,
    candidate: String,
    sdp_mid: Option<String>,
    sdp_mline_index: Option<u16>,
) -> Result<(), SfuError> {
    let body = candidate.strip_prefix("candidate:").unwrap_or(&candidate);
    if body.is_empty() {
        return Ok(()); // end-of-candidates (RFC 8838 section 8.2)
    }
    if body.len() > 512 {
        return Err(SfuError::InvalidCandidate("longer than 512 bytes".into()));
    }
    // Syntax check (RFC 8839 section 5.1) before handing it to ICE.
    let fields: Vec<&str> = body.split_whitespace().collect();
    let ok = fields.len() >= 8
        && fields[1].parse::<u16>().is_ok()
        && fields[3].parse::<u32>().is_ok()
        && fields[5].parse::<u16>().is_ok()
        && fields[6] == "typ";
    if !ok {
        return Err(SfuError::InvalidCandidate(
            "not an RFC 8839 candidate-attribute".into(),
        ));
    }
    // mDNS names (RFC 8828) cannot be resolved here; the address is learnt from STUN instead.
    if fields[4].ends_with(".local") {
        return Ok(());
    }
    t.pc.add_remote_candidate(RTCIceCandidateInit {
        candidate,
        sdp_mid,
        sdp_mline_index,
        username_fragment: None,
        ..Default::default()
    })
    .map_err(|e| SfuError::InvalidCandidate(e.to_string()))
}

/// Drains what one transport produced: state events, then RTP/RTCP/DataChannel messages.
fn drive(
    room: &mut Room,
    idx: usize,
    role: TransportRole,
    now: Instant,
    metrics: &Arc<SfuMetrics>,
) {
    loop {
        let ev = match room.participants[idx].transport_mut(role) {
            Some(t) => t.pc.poll_event(),
            None => return,
        };
        let Some(ev) = ev else { break };
        on_pc_event(room, idx, role, ev, now, metrics);
    }
    loop {
        let msg = match room.participants[idx].transport_mut(role) {
            Some(t) => t.pc.poll_read(),
            None => return,
        };
        let Some(msg) = msg else { break };
        match msg.message {
            RTCMessage::RtpPacket(_, packet) if role == TransportRole::Publisher => {
                let out = room.forward_rtp(idx, &packet, now, metrics);
                if out.wants_keyframe
                    && room.participants[idx].request_keyframe_for_ssrc(packet.header.ssrc, now)
                {
                    SfuMetrics::inc(&metrics.plis_sent);
                }
            }
            RTCMessage::RtcpPacket(track_id, packets) if role == TransportRole::Subscriber => {
                // Lost packets the subscriber asks for again (RFC 4585 section 6.2.1).
                room.answer_nacks(idx, &packets, now, metrics);
                // The browser's receive-side estimate of this subscriber's link.
                if let Some(remb) = packets.iter().find_map(|p| {
                    p.as_any()
                        .downcast_ref::<rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate>()
                }) {
                    if remb.bitrate.is_finite() && remb.bitrate >= 0.0 {
                        trace!(target: "confab_sfu::bwe", participant = %room.participants[idx].id, bps = remb.bitrate as u64, "REMB");
                        room.participants[idx]
                            .bandwidth
                            .on_estimate(remb.bitrate as u64, now);
                        SfuMetrics::inc(&metrics.bandwidth_estimates_in);
                    }
                }
                // Loss the receiver reports for what it gets (RFC 3550 section 6.4.1).
                let lost = packets
                    .iter()
                    .filter_map(|p| {
                        p.as_any()
                            .downcast_ref::<rtc::rtcp::receiver_report::ReceiverReport>()
                    })
                    .flat_map(|rr| rr.reports.iter().map(|b| b.fraction_lost))
                    .max();
                if let Some(lost) = lost {
                    trace!(target: "confab_sfu::bwe", participant = %room.participants[idx].id, lost, "receiver report");
                    room.participants[idx]
                        .bandwidth
                        .on_loss(f64::from(lost) / 256.0, now);
                }
                let wants = packets.iter().any(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                });
                if !wants {
                    continue;
                }
                SfuMetrics::inc(&metrics.keyframe_requests_in);
                // A simulcast downtrack needs the keyframe of the layer it forwards only.
                let target = room.participants[idx]
                    .downtracks
                    .iter()
                    .find(|d| d.track.to_string() == track_id)
                    .map(|d| (d.track.clone(), d.layer.current.map(|(ssrc, _)| ssrc)));
                if let Some((track, layer)) = target {
                    if let Some(pi) = room.index_of(track.participant) {
                        let publisher = &mut room.participants[pi];
                        let sent = match layer {
                            Some(ssrc) => publisher.request_layer_keyframe(&track.mid, ssrc, now),
                            None => publisher.request_keyframe(&track.mid, now),
                        };
                        if sent {
                            SfuMetrics::inc(&metrics.plis_sent);
                        }
                    }
                }
            }
            RTCMessage::DataChannelMessage(id, m) => {
                let p = &mut room.participants[idx];
                let Some(label) = p
                    .channels
                    .iter()
                    .find(|(c, _)| *c == id)
                    .map(|(_, l)| l.clone())
                else {
                    continue;
                };
                if !m.is_string {
                    continue;
                }
                match String::from_utf8(m.data.to_vec()) {
                    Ok(text) => p.send(SfuEvent::DataMessage { label, text }),
                    Err(_) => debug!("non-UTF-8 text message dropped"),
                }
            }
            _ => {}
        }
    }
    if let Some(t) = room.participants[idx].transport_mut(role) {
        t.dirty = true;
    }
}

fn on_pc_event(
    room: &mut Room,
    idx: usize,
    role: TransportRole,
    ev: RTCPeerConnectionEvent,
    now: Instant,
    metrics: &Arc<SfuMetrics>,
) {
    let p = &mut room.participants[idx];
    match ev {
        RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init))
            if role == TransportRole::Publisher =>
        {
            let mut layer_added = false;
            if let Some(t) = p
                .published
                .iter_mut()
                .find(|t| t.receiver == Some(init.receiver_id))
            {
                if !t.ssrcs.contains(&init.ssrc) {
                    t.ssrcs.push(init.ssrc);
                }
                // A simulcast layer (RFC 8853): its RID names it.
                if let Some(rid) = init.rid.as_deref() {
                    if !t.layers.iter().any(|l| l.ssrc == init.ssrc) && t.layers.len() < 8 {
                        let rank = crate::room::layer_rank(rid, t.layers.len() as u8);
                        debug!(participant = %p.id, mid = %t.mid, rid, ssrc = init.ssrc, rank, "simulcast layer");
                        t.layers.push(crate::room::Layer {
                            ssrc: init.ssrc,
                            rid: rid.to_owned(),
                            needed_at: None,
                            paused: false,
                            rank,
                            width: 0,
                            last_packet: None,
                            bytes: 0,
                            bitrate: 0,
                            last_keyframe_request: None,
                        });
                        t.layers.sort_by_key(|l| l.rank);
                        layer_added = true;
                    }
                }
            }
            if layer_added {
                room.update_flags();
            }
        }
        RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
            if let Some(t) = p.transport_mut(role) {
                t.ice_connected = matches!(
                    state,
                    RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
                );
            }
        }
        RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
            debug!(participant = %p.id, ?role, %state, "transport state");
            if let Some(t) = p.transport_mut(role) {
                t.state = state;
            }
            match (role, state) {
                // With `rtc`'s ICE timeouts off these come from DTLS (a failed handshake or a
                // close_notify), never from a consent gap.
                (_, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) => {
                    p.closing.get_or_insert(CloseReason::TransportFailed);
                }
                // (Re)connected, at the start or after an ICE restart: start (or restart) every
                // video forwarding with a keyframe, past the throttle: a request sent while the
                // peer was still switching pairs (at the path switch) is often lost.
                // The first time: what each downtrack held meanwhile goes out at once.
                (TransportRole::Subscriber, RTCPeerConnectionState::Connected)
                    if p.subscriber.as_ref().is_some_and(|s| !s.connected_once) =>
                {
                    if let Some(s) = p.subscriber.as_mut() {
                        s.connected_via = s.paths.destination();
                    }
                    let plis = room.first_connected(idx, now, metrics);
                    SfuMetrics::add(&metrics.plis_sent, plis);
                }
                (TransportRole::Subscriber, RTCPeerConnectionState::Connected) => {
                    // Only a reconnect on another 5-tuple (a new network, a resume from
                    // elsewhere) forgets the measured link; an ICE restart on the same path
                    // keeps its loss, which is the link's own.
                    if let Some(s) = p.subscriber.as_mut() {
                        let via = s.paths.destination();
                        if via != s.connected_via {
                            p.bandwidth.path_changed(now);
                        }
                        s.connected_via = via;
                    }
                    let wanted: Vec<crate::ids::TrackId> = p
                        .downtracks
                        .iter()
                        .filter(|d| d.is_open() && d.source.kind() == crate::ids::MediaKind::Video)
                        .map(|d| d.track.clone())
                        .collect();
                    for t in wanted {
                        if let Some(pi) = room.index_of(t.participant) {
                            let sent = room.participants[pi].request_keyframe_now(&t.mid, now);
                            SfuMetrics::add(&metrics.plis_sent, u64::from(sent));
                        }
                    }
                }
                (TransportRole::Publisher, RTCPeerConnectionState::Connected) => {
                    let mids: Vec<String> = p
                        .published
                        .iter()
                        .filter(|t| t.source.kind() == crate::ids::MediaKind::Video)
                        .map(|t| t.mid.clone())
                        .collect();
                    for mid in mids {
                        room.participants[idx].request_keyframe_now(&mid, now);
                    }
                }
                _ => {}
            }
        }
        RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id)) => {
            let label = p
                .publisher
                .pc
                .data_channel(id)
                .map(|dc| dc.label().to_owned());
            if let Some(label) = label {
                let known = p.channels.iter().any(|(c, _)| *c == id);
                // One channel per label (a second `chat` would replay the history again) and a
                // few labels: more is a client hurting the server, and is closed.
                let extra = p.channels.iter().any(|(_, l)| *l == label)
                    || p.channels.len() >= crate::room::MAX_DATA_CHANNELS;
                if !known && extra {
                    debug!(participant = %p.id, "a DataChannel too many: closed");
                    if let Some(mut dc) = p.publisher.pc.data_channel(id) {
                        let _ = dc.close();
                    }
                    p.publisher.dirty = true;
                } else if !known {
                    p.channels.push((id, label.clone()));
                    p.send(SfuEvent::DataChannelOpen { label });
                }
            }
        }

        _ => {}
    }
}

/// Compares two secrets without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hands one datagram to the transport's peer connection.
fn read_into(t: &mut Transport, key: TransportKey, tuple: FiveTuple, data: BytesMut, now: Instant) {
    let msg = TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: tuple.local_addr,
            peer_addr: tuple.peer_addr,
            ecn: None,
            transport_protocol: tuple.transport_protocol,
        },
        message: data,
    };
    if let Err(e) = t.pc.handle_read(msg) {
        debug!(participant = %key.participant, role = ?key.role, "handle_read: {e}");
    }
    t.dirty = true;
}

/// Enters the room's new local ufrags (a first description, an ICE restart) in `table`; the
/// retired ones stay until the peer's first check with the new credentials.
fn sync_ufrags(room: &mut Room, table: &mut HashMap<String, TransportKey>) {
    for p in &mut room.participants {
        let id = p.id;
        for role in [TransportRole::Publisher, TransportRole::Subscriber] {
            let Some(t) = p.transport_mut(role) else {
                continue;
            };
            if !t.ice_changed {
                continue;
            }
            t.ice_changed = false;
            if let Some(c) = &t.ice {
                table.insert(
                    c.ufrag.clone(),
                    TransportKey {
                        participant: id,
                        role,
                    },
                );
            }
        }
    }
}

/// Queues every dirty transport's pending datagrams as [`Transmit`]s.
fn flush(room: &mut Room, out: &mut VecDeque<Transmit>, metrics: &SfuMetrics) {
    for p in &mut room.participants {
        let downtracks = &p.downtracks;
        for t in std::iter::once(&mut p.publisher).chain(p.subscriber.as_mut()) {
            if !t.dirty {
                continue;
            }
            // Media, RTCP and DataChannel data go where the peer nominated last; STUN answers go
            // back where each request came from (rtc addressed them).
            let dest = t.paths.destination();
            let failed = t.paths.state() == ConsentState::Failed;
            while let Some(msg) = t.pc.poll_write() {
                let stun = looks_like_stun(&msg.message);
                if failed && !stun {
                    continue; // consent expired (RFC 7675 section 5.1): send nothing more
                }
                let (local, remote, protocol) = match dest {
                    Some(d) if !stun => (d.local_addr, d.peer_addr, d.transport_protocol),
                    _ => (
                        msg.transport.local_addr,
                        msg.transport.peer_addr,
                        msg.transport.transport_protocol,
                    ),
                };
                // `rtc`'s agent also sends checks to the client's candidates (lite or not). A
                // lite server only answers (RFC 8445 section 2.5): STUN goes only where a check
                // came from, never to an address the client merely named (which could be
                // anyone's: a reflection the client aims at a third party).
                if stun
                    && !t.paths.paths().any(|p| {
                        p.local_addr == local
                            && p.peer_addr == remote
                            && p.transport_protocol == protocol
                    })
                {
                    SfuMetrics::inc(&metrics.drops_unheard_destination);
                    continue;
                }
                // Only ICE-TCP writers read it (UDP has no queue to reorder), and only a
                // subscriber transport sends RTP (a publisher transport is receive-only).
                let video = protocol == TransportProtocol::TCP
                    && rtp_ssrc(&msg.message).is_some_and(|ssrc| {
                        !downtracks
                            .iter()
                            .any(|dt| !dt.track_is_video() && dt.rewriter.out_ssrc() == ssrc)
                    });
                out.push_back(Transmit {
                    protocol,
                    local,
                    remote,
                    data: msg.message,
                    video,
                });
            }
            t.dirty = false;
            t.deadline = t.pc.poll_timeout();
        }
    }
}

/// The SSRC of an RTP (or SRTP) packet, `None` for anything else: STUN, DTLS (RFC 7983
/// section 7: first byte 128..=191 is RTP/RTCP) and RTCP (RFC 5761 section 4: second byte
/// 192..=223).
fn rtp_ssrc(data: &[u8]) -> Option<u32> {
    if data.len() < 12 || !(128..=191).contains(&data[0]) || (192..=223).contains(&data[1]) {
        return None;
    }
    Some(u32::from_be_bytes([data[8], data[9], data[10], data[11]]))
}

#[cfg(test)]
mod rtp_ssrc_tests {
    #[test]
    fn reads_rtp_only() {
        let mut rtp = [0u8; 20];
        rtp[0] = 0x80;
        rtp[1] = 96 | 0x80; // marker bit set, payload type 96
        rtp[8..12].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
        assert_eq!(super::rtp_ssrc(&rtp), Some(0xdead_beef));
        let mut rtcp = rtp;
        rtcp[1] = 200; // sender report
        assert_eq!(super::rtp_ssrc(&rtcp), None);
        assert_eq!(
            super::rtp_ssrc(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0]),
            None
        );
        assert_eq!(super::rtp_ssrc(&[23u8; 40]), None, "DTLS application data");
        assert_eq!(super::rtp_ssrc(&rtp[..11]), None, "too short");
    }
}

/// Logs and counts a transport's consent change (RFC 7675). `Disconnected` is only shown:
/// forwarding goes on; `Failed` ends the participant (the caller marks it closing).
fn on_consent_change(key: TransportKey, state: ConsentState, metrics: &SfuMetrics) {
    match state {
        ConsentState::Disconnected => {
            SfuMetrics::inc(&metrics.consent_disconnects);
            info!(participant = %key.participant, role = ?key.role, "transport disconnected: nothing heard for {} s (media keeps flowing)", crate::routing::DISCONNECTED_AFTER.as_secs());
        }
        ConsentState::Failed => {
            SfuMetrics::inc(&metrics.consent_failures);
            warn!(participant = %key.participant, role = ?key.role, "transport failed: no consent for {} s (RFC 7675)", crate::routing::CONSENT_TIMEOUT.as_secs());
        }
        ConsentState::Connected => {
            debug!(participant = %key.participant, role = ?key.role, "transport connected");
        }
        ConsentState::New | ConsentState::Checking => {}
    }
}

#[cfg(test)]
pub(crate) mod tests;
