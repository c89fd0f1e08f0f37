//! The media worker: one tokio task that owns the media sockets, every room, every peer
//! connection and the address → transport routing table. Nothing it owns is shared: signaling
//! reaches it through [`Command`]s, it answers through oneshot replies and per-participant event
//! queues, and it publishes counters through relaxed atomics.
//!
//! Per datagram: route it (5-tuple table, or the STUN USERNAME's ufrag for a new address), feed
//! it to that transport's `rtc` peer connection, drain what the connection produced (events,
//! RTP/RTCP/DataChannel messages), forward RTP to the subscribers' transports, and flush the
//! transports that have output.

use crate::api::{
    CloseReason, Command, JoinInfo, MediaConfig, RoomEvent, SfuError, SfuEvent, SfuHandle,
    SfuMetrics, COMMAND_QUEUE,
};
use crate::ids::{ParticipantId, RoomId, TransportRole};
use crate::peer::decode_ufrag;
use crate::room::{Room, Transport};
use crate::routing::{
    looks_like_stun, udp_tuple, BindingRequest, ConsentState, Heard, RouteTable, TransportKey,
    ROUTE_IDLE,
};
use bytes::BytesMut;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

/// Capacity of the room-lifecycle broadcast; a subscriber that lags more than this many events
/// behind loses the oldest ones (and is told so by `broadcast::error::RecvError::Lagged`).
pub const ROOM_EVENTS: usize = 1024;

/// Largest datagram read (bytes); RTP over UDP stays under the path MTU (~1200–1500).
const MAX_DATAGRAM: usize = 2048;

/// Datagrams read from one socket before the loop looks at commands and timers again.
const RECV_BATCH: usize = 64;

struct MediaSocket {
    socket: UdpSocket,
    /// The address rtc sees as the local side: the announced IP and the bound port (must equal
    /// a local candidate's address).
    tag: SocketAddr,
}

/// Starts the media worker on the current tokio runtime. Binds one UDP socket per configured
/// interface (errors: the bind error). Returns the handle, the room-lifecycle broadcast and the
/// task.
pub fn spawn_media_worker(
    config: MediaConfig,
) -> std::io::Result<(
    SfuHandle,
    broadcast::Sender<RoomEvent>,
    tokio::task::JoinHandle<()>,
)> {
    let mut sockets = Vec::new();
    for iface in &config.interfaces {
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(iface.bind, config.udp_port))?;
        std_socket.set_nonblocking(true)?;
        let port = std_socket.local_addr()?.port();
        let socket = UdpSocket::from_std(std_socket)?;
        sockets.push(MediaSocket {
            socket,
            tag: SocketAddr::new(iface.announce, port),
        });
    }
    if sockets.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no media interface configured",
        ));
    }
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (room_events, _) = broadcast::channel(ROOM_EVENTS);
    let metrics = Arc::new(SfuMetrics::default());
    let udp_addrs = Arc::new(sockets.iter().map(|s| s.tag).collect::<Vec<_>>());
    let local: Vec<SocketAddr> = sockets.iter().map(|s| s.tag).collect();
    info!(addrs = ?local, "media worker listening (UDP)");
    let worker = Worker {
        sockets,
        local,
        max_participants: config.max_participants.max(1),
        rooms: HashMap::new(),
        where_is: HashMap::new(),
        routes: RouteTable::default(),
        next_id: 1,
        metrics: metrics.clone(),
        room_events: room_events.clone(),
        rx_buf: BytesMut::with_capacity(64 * 1024),
        last_sweep: Instant::now(),
    };
    let task = tokio::spawn(worker.run(rx));
    Ok((
        SfuHandle {
            tx,
            metrics,
            udp_addrs,
        },
        room_events,
        task,
    ))
}

struct Worker {
    sockets: Vec<MediaSocket>,
    local: Vec<SocketAddr>,
    max_participants: usize,
    rooms: HashMap<RoomId, Room>,
    where_is: HashMap<ParticipantId, RoomId>,
    routes: RouteTable,
    next_id: u64,
    metrics: Arc<SfuMetrics>,
    room_events: broadcast::Sender<RoomEvent>,
    /// Receive buffer; each datagram is split off it, so allocation happens once per ~64 KiB
    /// rather than once per packet.
    rx_buf: BytesMut,
    last_sweep: Instant,
}

impl Worker {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let sleep = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(sleep);
        loop {
            let deadline = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
            if self.rx_buf.capacity() < MAX_DATAGRAM {
                self.rx_buf.reserve(64 * 1024);
            }
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => {
                        self.shutdown();
                        return;
                    }
                    Some(cmd) => self.handle_command(cmd),
                },
                (i, n, peer) = std::future::poll_fn(|cx| poll_recv_any(&self.sockets, &mut self.rx_buf, cx)) => {
                    let started = Instant::now();
                    self.on_datagram(i, peer, n, started);
                    // Drain what else is queued on that socket without going back through select.
                    for _ in 0..RECV_BATCH {
                        if self.rx_buf.capacity() < MAX_DATAGRAM {
                            self.rx_buf.reserve(64 * 1024);
                        }
                        match try_recv(&self.sockets[i].socket, &mut self.rx_buf) {
                            Some((n, peer)) => self.on_datagram(i, peer, n, Instant::now()),
                            None => break,
                        }
                    }
                }
                _ = &mut sleep => self.on_timeout(Instant::now()),
            }
        }
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
            }
        }
        consider(Some(self.last_sweep + ROUTE_IDLE));
        min
    }

    fn on_datagram(&mut self, sock: usize, peer: SocketAddr, n: usize, now: Instant) {
        let data = self.rx_buf.split_to(n);
        SfuMetrics::inc(&self.metrics.datagrams_in);
        let tuple = udp_tuple(self.sockets[sock].tag, peer);
        let Some((key, heard)) = self.route(tuple, &data, now) else {
            SfuMetrics::inc(&self.metrics.drops_unroutable);
            return;
        };
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
        }
        let switched = update.switched_to.inspect(|to| {
            SfuMetrics::inc(&self.metrics.ice_path_switches);
            debug!(participant = %key.participant, ?role, local = %to.local_addr, remote = %to.peer_addr, "media follows the peer to another path");
        });
        if let Some(state) = update.state {
            on_consent_change(key, state, &self.metrics);
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: tuple.local_addr,
                peer_addr: peer,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        };
        if let Err(e) = t.pc.handle_read(msg) {
            debug!(participant = %key.participant, ?role, "handle_read: {e}");
        }
        t.dirty = true;
        if switched.is_some() {
            // Packets were lost on the old path: a keyframe now, not when the receivers ask.
            let sent = room.request_keyframes_after_path_switch(idx, role, now);
            SfuMetrics::add(&self.metrics.plis_sent, sent);
        }
        drive(room, idx, role, now, &self.metrics);
        // Common case: flush this room in place, without cloning its id and looking it up again
        // (an allocation and two string hashes per datagram). Rare case (someone is closing):
        // the full after_room_change.
        flush(room, &self.sockets, &self.metrics);
        if room.participants.iter().any(|p| p.closing.is_some()) {
            let room_id = room.id.clone();
            self.after_room_change(&room_id, now);
        }
        self.metrics
            .record_processing(now.elapsed().as_nanos() as u64);
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
        tuple: rtc::shared::FiveTuple,
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
        let verified = decode_ufrag(&req.local_ufrag).and_then(|(participant, role)| {
            let room = self.rooms.get(self.where_is.get(&participant)?)?;
            let p = &room.participants[room.index_of(participant)?];
            let t: &Transport = match role {
                TransportRole::Publisher => &p.publisher,
                TransportRole::Subscriber => p.subscriber.as_ref()?,
            };
            (t.ice.ufrag == req.local_ufrag && req.verify(&t.ice.pwd))
                .then_some(TransportKey { participant, role })
        });
        match verified {
            Some(key) => {
                tracing::trace!(participant = %key.participant, role = ?key.role, local = %tuple.local_addr, remote = %tuple.peer_addr, nominate = req.use_candidate, "binding request");
                if !self.routes.learn(tuple, key, now) {
                    return None;
                }
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

    fn on_timeout(&mut self, now: Instant) {
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
                if p.negotiation.timed_out(now) {
                    warn!(participant = %p.id, "subscribe offer not answered in time: offering again");
                    if let Some(sub) = p.subscriber.as_mut() {
                        if let Ok(rb) =
                            rtc::peer_connection::sdp::RTCSessionDescription::rollback(None)
                        {
                            let _ = sub.pc.set_local_description(now, rb);
                        }
                    }
                    Room::send_offer(p, now);
                }
            }
            flush(room, &self.sockets, &self.metrics);
            if room.participants.is_empty() || room.participants.iter().any(|p| p.closing.is_some())
            {
                changed.push(room.id.clone());
            }
        }
        for room_id in changed {
            self.after_room_change(&room_id, now);
        }
    }

    fn handle_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Join {
                room,
                name,
                events,
                reply,
            } => {
                let r = self.join(room, name, events, now);
                let _ = reply.send(r);
            }
            Command::PublishOffer {
                participant,
                sdp,
                tracks,
                reply,
            } => {
                let local = self.local.clone();
                let r = self.with_room(participant, now, |room| {
                    room.publish_offer(participant, sdp, tracks, &local, now)
                });
                let _ = reply.send(r);
            }
            Command::SubscribeAnswer {
                participant,
                sdp,
                reply,
            } => {
                let r = self.with_room(participant, now, |room| {
                    room.subscribe_answer(participant, sdp, now)
                });
                let _ = reply.send(r);
            }
            Command::Candidate {
                participant,
                role,
                candidate,
                sdp_mid,
                sdp_mline_index,
                reply,
            } => {
                let r = self.with_room(participant, now, |room| {
                    let idx = room
                        .index_of(participant)
                        .ok_or(SfuError::UnknownParticipant)?;
                    let t = room.participants[idx].transport_mut(role).ok_or_else(|| {
                        SfuError::InvalidCandidate("that transport does not exist yet".into())
                    })?;
                    add_remote_candidate(t, candidate, sdp_mid, sdp_mline_index)
                });
                let _ = reply.send(r);
            }
            Command::Mute {
                participant,
                source,
                muted,
            } => {
                let _ = self.with_room(participant, now, |room| {
                    let idx = room
                        .index_of(participant)
                        .ok_or(SfuError::UnknownParticipant)?;
                    let p = &mut room.participants[idx];
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
            Command::SendData {
                participant,
                label,
                text,
            } => {
                let _ = self.with_room(participant, now, |room| {
                    let idx = room
                        .index_of(participant)
                        .ok_or(SfuError::UnknownParticipant)?;
                    room.participants[idx].send_text(&label, text, now);
                    Ok(())
                });
            }
            Command::Broadcast {
                room,
                except,
                label,
                text,
            } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    for p in r.participants.iter_mut().filter(|p| Some(p.id) != except) {
                        p.send_text(&label, text.clone(), now);
                    }
                    self.after_room_change(&room, now);
                }
            }
            Command::Leave { participant } => self.leave(participant, None, now),
            Command::Shutdown => {}
        }
    }

    fn join(
        &mut self,
        room_id: RoomId,
        name: String,
        events: mpsc::Sender<SfuEvent>,
        now: Instant,
    ) -> Result<JoinInfo, SfuError> {
        let max = self.max_participants;
        let room = self
            .rooms
            .entry(room_id.clone())
            .or_insert_with(|| Room::new(room_id.clone()));
        if room.participants.len() >= max {
            let empty = room.participants.is_empty();
            if empty {
                self.rooms.remove(&room_id);
            }
            return Err(SfuError::RoomFull { max });
        }
        let pid = ParticipantId(self.next_id);
        self.next_id += 1;
        let others = room.participants.iter().map(|p| p.info()).collect();
        if let Err(e) = room.add_participant(pid, name.clone(), events, &self.local, now) {
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
        Ok(JoinInfo {
            participant: pid,
            others,
            max_participants: max,
        })
    }

    fn leave(&mut self, pid: ParticipantId, reason: Option<CloseReason>, now: Instant) {
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
        self.after_room_change(&room_id, now);
    }

    /// Runs `f` on the participant's room, then drives and flushes the room.
    fn with_room<T>(
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
            drive(room, idx, TransportRole::Publisher, now, &self.metrics);
            drive(room, idx, TransportRole::Subscriber, now, &self.metrics);
        }
        self.after_room_change(&room_id, now);
        r
    }

    /// Flushes the room's output, removes participants marked as closing, closes the room when
    /// it is empty.
    fn after_room_change(&mut self, room_id: &RoomId, now: Instant) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        flush(room, &self.sockets, &self.metrics);
        let closing: Vec<(ParticipantId, CloseReason)> = room
            .participants
            .iter()
            .filter_map(|p| p.closing.map(|r| (p.id, r)))
            .collect();
        let empty = room.participants.is_empty();
        for (pid, reason) in closing {
            self.leave(pid, Some(reason), now);
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

    fn shutdown(&mut self) {
        let now = Instant::now();
        let pids: Vec<ParticipantId> = self.where_is.keys().copied().collect();
        for pid in pids {
            self.leave(pid, Some(CloseReason::Shutdown), now);
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
        on_pc_event(room, idx, role, ev, now);
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
                let wants = packets.iter().any(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                });
                if !wants {
                    continue;
                }
                SfuMetrics::inc(&metrics.keyframe_requests_in);
                let target = room.participants[idx]
                    .downtracks
                    .iter()
                    .find(|d| d.track.to_string() == track_id)
                    .map(|d| d.track.clone());
                if let Some(track) = target {
                    if let Some(pi) = room.index_of(track.participant) {
                        if room.participants[pi].request_keyframe(&track.mid, now) {
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
) {
    let p = &mut room.participants[idx];
    match ev {
        RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init))
            if role == TransportRole::Publisher =>
        {
            if let Some(t) = p
                .published
                .iter_mut()
                .find(|t| t.receiver == Some(init.receiver_id))
            {
                if !t.ssrcs.contains(&init.ssrc) {
                    t.ssrcs.push(init.ssrc);
                }
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
                (TransportRole::Subscriber, RTCPeerConnectionState::Connected) => {
                    // Start every video forwarding with a keyframe.
                    let wanted: Vec<crate::ids::TrackId> = p
                        .downtracks
                        .iter()
                        .filter(|d| d.negotiated && d.source.kind() == crate::ids::MediaKind::Video)
                        .map(|d| d.track.clone())
                        .collect();
                    for t in wanted {
                        if let Some(pi) = room.index_of(t.participant) {
                            room.participants[pi].request_keyframe(&t.mid, now);
                        }
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
                if !p.channels.iter().any(|(c, _)| *c == id) {
                    p.channels.push((id, label.clone()));
                    p.send(SfuEvent::DataChannelOpen { label });
                }
            }
        }
        _ => {}
    }
}

/// Sends every dirty transport's pending datagrams.
fn flush(room: &mut Room, sockets: &[MediaSocket], metrics: &Arc<SfuMetrics>) {
    for p in &mut room.participants {
        for t in std::iter::once(&mut p.publisher).chain(p.subscriber.as_mut()) {
            if !t.dirty {
                continue;
            }
            // Media, RTCP and DataChannel data go where the peer nominated last; STUN answers go
            // back where each request came from (rtc addressed them).
            let dest = t.paths.destination();
            let failed = t.paths.state() == ConsentState::Failed;
            while let Some(out) = t.pc.poll_write() {
                let stun = looks_like_stun(&out.message);
                if failed && !stun {
                    continue; // consent expired (RFC 7675 section 5.1): send nothing more
                }
                let (local, remote) = match dest {
                    Some(d) if !stun => (d.local_addr, d.peer_addr),
                    _ => (out.transport.local_addr, out.transport.peer_addr),
                };
                let Some(s) = sockets.iter().find(|s| s.tag == local).or(sockets.first()) else {
                    break;
                };
                match s.socket.try_send_to(&out.message, remote) {
                    Ok(_) => SfuMetrics::inc(&metrics.datagrams_out),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        SfuMetrics::inc(&metrics.drops_socket_full);
                    }
                    Err(e) => debug!("send_to {remote}: {e}"),
                }
            }
            t.dirty = false;
            t.deadline = t.pc.poll_timeout();
        }
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

fn poll_recv_any(
    sockets: &[MediaSocket],
    buf: &mut BytesMut,
    cx: &mut std::task::Context<'_>,
) -> Poll<(usize, usize, SocketAddr)> {
    for (i, s) in sockets.iter().enumerate() {
        let spare = buf.spare_capacity_mut();
        let len = MAX_DATAGRAM.min(spare.len());
        let mut rb = tokio::io::ReadBuf::uninit(&mut spare[..len]);
        match s.socket.poll_recv_from(cx, &mut rb) {
            Poll::Ready(Ok(peer)) => {
                let n = rb.filled().len();
                // SAFETY: poll_recv_from initialised the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                return Poll::Ready((i, n, peer));
            }
            Poll::Ready(Err(e)) => {
                // ICMP port unreachable and the like surface here on some platforms: not fatal.
                debug!("recv_from: {e}");
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

fn try_recv(socket: &UdpSocket, buf: &mut BytesMut) -> Option<(usize, SocketAddr)> {
    let spare = buf.spare_capacity_mut();
    let len = MAX_DATAGRAM.min(spare.len());
    // SAFETY: u8 has no invalid bit patterns; the kernel writes at most `len` bytes and we only
    // expose the `n` it reports.
    let slice = unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr() as *mut u8, len) };
    match socket.try_recv_from(slice) {
        Ok((n, peer)) => {
            unsafe { buf.set_len(buf.len() + n) };
            Some((n, peer))
        }
        Err(_) => None,
    }
}
