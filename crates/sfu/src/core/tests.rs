//! The core driven in memory against real `rtc` peers, with simulated time and no sockets
//! (str0m's way): every client is an `rtc` peer connection pair (publisher: it offers;
//! subscriber: it answers the core) on its own address, and [`Net`] carries datagrams between
//! them and the core, advancing a simulated clock in 10 ms steps. Each client publishes a
//! VP8-like track at 100 packets/s (a keyframe every 100 packets) and counts what it receives.

use super::Core;
use crate::api::{PublishTrack, RoomEvent, SfuEvent, SfuMetrics};
use crate::ids::{ParticipantId, RoomId, TrackSource, TransportRole};
use crate::routing::udp_tuple;
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The core's one media address.
const SERVER: &str = "10.0.0.1:7882";
/// One simulated step: a video packet per client per step.
const STEP: Duration = Duration::from_millis(10);

fn vp8() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: String::new(),
                },
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: "pli".into(),
                },
            ],
        },
        payload_type: 96,
    }
}

/// How a client's ICE agent checks consent: `None` = `rtc`'s defaults (every 2 s), `Some(k)`
/// = every `k` with no disconnected state and failed after 30 s (an RFC 7675 peer).
fn client_pc(addr: SocketAddr, consent_every: Option<Duration>, now: Instant) -> RTCPeerConnection {
    // Checks every 200 ms for up to 50 s per pair, as patient as a browser (rtc's default gives
    // up after 1.4 s, which a subscribe offer answered late would outlast).
    let mut se = SettingEngineBuilder::new()
        .with_answering_dtls_role(RTCDtlsRole::Client)
        .with_ice_connection_attempts(None, Some(250));
    if let Some(k) = consent_every {
        se = se.with_ice_timeouts(Some(Duration::ZERO), Some(Duration::from_secs(30)), Some(k));
    }
    let mut me = MediaEngine::default();
    me.register_codec(vp8(), RtpCodecKind::Video).unwrap();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_setting_engine(se.build())
        .with_media_engine(me)
        .build(now)
        .unwrap();
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .unwrap();
    pc.add_local_candidate(RTCIceCandidate::from(&host).to_json().unwrap())
        .unwrap();
    pc
}

/// A client's publisher connection on `addr` with one VP8 camera track, its offer set as local
/// description: (connection, offer, the track's mid, its sender, its SSRC).
pub(crate) fn camera_publisher(
    name: &str,
    addr: SocketAddr,
    consent_every: Option<Duration>,
    now: Instant,
) -> (
    RTCPeerConnection,
    RTCSessionDescription,
    String,
    RTCRtpSenderId,
    u32,
) {
    let mut publisher = client_pc(addr, consent_every, now);
    let ssrc = rand::random::<u32>() | 1;
    let track = MediaStreamTrack::new(
        format!("{name}-stream"),
        format!("{name}-camera"),
        format!("{name}-camera"),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: vp8().rtp_codec,
            ..Default::default()
        }],
    );
    let sender = publisher.add_track(track).expect("add_track");
    let offer = publisher.create_offer(None).expect("offer");
    publisher
        .set_local_description(now, offer.clone())
        .expect("set local offer");
    let mid = publisher
        .rtp_transceiver(sender.into())
        .and_then(|t| t.mid().clone())
        .expect("a mid");
    (publisher, offer, mid, sender, ssrc)
}

/// What a client received on one subscribed track.
#[derive(Default, Debug, Clone)]
struct Received {
    packets: u64,
    /// `packets` at the last [`Net::mark`].
    marked: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Longest time between two packets since the last [`Net::mark`].
    max_gap: Duration,
    last_seq: Option<u16>,
    /// Sequence numbers that skipped ahead (a gap nobody will fill) since the last mark.
    seq_jumps: u64,
    /// Packets at or behind the highest sequence number received (retransmissions).
    behind: u64,
    /// The SSRC the core sends it with.
    ssrc: u32,
}

/// One simulated participant.
struct Client {
    name: String,
    id: ParticipantId,
    events: crate::mailbox::EventReceiver,
    pub_addr: SocketAddr,
    sub_addr: SocketAddr,
    publisher: RTCPeerConnection,
    subscriber: Option<RTCPeerConnection>,
    consent_every: Option<Duration>,
    sender: Option<(RTCRtpSenderId, u32, u8)>,
    seq: u16,
    sent: u64,
    /// By remote track id (`a=msid` track of the subscriber m-line).
    received: HashMap<String, Received>,
    /// Every subscribe offer received: (tracks it says it carries, its audio/video m-lines).
    offers: Vec<(usize, usize)>,
    /// The SDP of each of those offers.
    offer_sdps: Vec<String>,
    /// Answers are held back while true (an unanswered offer).
    hold_answers: bool,
    held: Option<String>,
    closed: Option<crate::api::CloseReason>,
    /// Every other event, in order.
    seen: Vec<SfuEvent>,
    /// The resume token from the join.
    resume_token: String,
}

/// The core and its clients on one simulated network.
struct Net {
    core: Core,
    clients: Vec<Client>,
    now: Instant,
    metrics: Arc<SfuMetrics>,
    room: RoomId,
    _room_events: broadcast::Receiver<RoomEvent>,
    next_host: u8,
    /// Client addresses no datagram reaches or leaves from (a cut link, an expired NAT
    /// mapping); checked after `nat`.
    cut: Vec<SocketAddr>,
    /// Client addresses rewritten on the way to the core (a NAT rebinding): from → to.
    nat: HashMap<SocketAddr, SocketAddr>,
    /// RTP packets lost on their way from the core: (client address, SSRC, sequence number),
    /// each dropped once (its retransmission passes).
    lose: Vec<(SocketAddr, u32, u16)>,
    /// Client addresses whose DTLS application data (SCTP: DataChannel messages and their
    /// acknowledgements) never reaches the core.
    mute_sctp: Vec<SocketAddr>,
    /// Every address the core sent a datagram to that no client listens on.
    strays: Vec<SocketAddr>,
    /// The next [`Net::join`] only publishes ([`Core::join_publisher`]).
    publish_only: bool,
}

impl Net {
    /// Ada and Bob joined (see [`Net::join`]), 2 s of simulated time later.
    fn ada_and_bob() -> Self {
        let mut net = Net::new();
        net.join("ada", None);
        net.join("bob", None);
        net.run(Duration::from_secs(2));
        net
    }

    fn new() -> Self {
        let now = Instant::now();
        let metrics = Arc::new(SfuMetrics::default());
        let (tx, rx) = broadcast::channel(1024);
        let local = crate::room::LocalCandidates {
            udp: vec![SERVER.parse().unwrap()],
            tcp: vec![],
        };
        let core = Core::new(local, 16, metrics.clone(), tx, now);
        Self {
            core,
            clients: Vec::new(),
            now,
            metrics,
            room: RoomId::parse("mem").unwrap(),
            _room_events: rx,
            next_host: 2,
            cut: Vec::new(),
            nat: HashMap::new(),
            lose: Vec::new(),
            mute_sctp: Vec::new(),
            strays: Vec::new(),
            publish_only: false,
        }
    }

    /// Joins a client and publishes its camera; returns its index.
    fn join(&mut self, name: &str, consent_every: Option<Duration>) -> usize {
        self.join_with(name, consent_every, false)
    }

    /// [`Net::join`]; with `hold_answers` the client answers no subscribe offer until
    /// [`Net::release_answer`].
    fn join_with(
        &mut self,
        name: &str,
        consent_every: Option<Duration>,
        hold_answers: bool,
    ) -> usize {
        let host = self.next_host;
        self.next_host += 1;
        let pub_addr: SocketAddr = format!("10.0.1.{host}:5000").parse().unwrap();
        let sub_addr: SocketAddr = format!("10.0.1.{host}:5001").parse().unwrap();
        let (tx, rx) = crate::mailbox::mailbox();
        let (room, user) = (self.room.clone(), format!("user-{name}"));
        let info = if std::mem::take(&mut self.publish_only) {
            self.core
                .join_publisher(room, name.into(), user, tx, self.now)
        } else {
            self.core.join(room, name.into(), user, tx, self.now)
        }
        .expect("join");
        let (mut publisher, offer, mid, sender, ssrc) =
            camera_publisher(name, pub_addr, consent_every, self.now);
        let answer = self
            .core
            .publish_offer(
                info.participant,
                offer.sdp.clone(),
                vec![PublishTrack {
                    mid,
                    source: TrackSource::Camera,
                }],
                self.now,
            )
            .expect("publish answer");
        publisher
            .set_remote_description(self.now, RTCSessionDescription::answer(answer).unwrap())
            .expect("set remote answer");
        let pt = publisher
            .rtp_sender(sender)
            .and_then(|mut s| {
                s.get_parameters()
                    .rtp_parameters
                    .codecs
                    .first()
                    .map(|c| c.payload_type)
            })
            .unwrap_or(96);
        self.clients.push(Client {
            name: name.into(),
            id: info.participant,
            events: rx,
            pub_addr,
            sub_addr,
            publisher,
            subscriber: None,
            consent_every,
            sender: Some((sender, ssrc, pt)),
            seq: rand::random(),
            sent: 0,
            received: HashMap::new(),
            offers: Vec::new(),
            offer_sdps: Vec::new(),
            hold_answers,
            held: None,
            closed: None,
            seen: Vec::new(),
            resume_token: info.resume_token.clone(),
        });
        self.pump();
        self.clients.len() - 1
    }

    /// The client leaves (its peer connections close with it).
    fn leave(&mut self, i: usize) -> Client {
        let c = self.clients.remove(i);
        self.core.leave(c.id, self.now);
        self.pump();
        c
    }

    fn client(&self, name: &str) -> &Client {
        self.clients
            .iter()
            .find(|c| c.name == name)
            .expect("client")
    }

    fn client_mut(&mut self, name: &str) -> &mut Client {
        self.clients
            .iter_mut()
            .find(|c| c.name == name)
            .expect("client")
    }

    /// Moves datagrams and signaling until nothing moves.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            // Core → clients.
            while let Some(t) = self.core.poll_transmit() {
                moved = true;
                if self.cut.contains(&t.remote) {
                    continue;
                }
                // SRTP leaves the RTP header in the clear (RFC 3711 section 3.1).
                let d = &t.data;
                if d.len() >= 12 && d[0] >> 6 == 2 && !(200..=206).contains(&d[1]) {
                    let seq = u16::from_be_bytes([d[2], d[3]]);
                    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
                    if let Some(i) = self.lose.iter().position(|l| *l == (t.remote, ssrc, seq)) {
                        self.lose.remove(i);
                        continue;
                    }
                }
                let remote = self
                    .nat
                    .iter()
                    .find(|(_, to)| **to == t.remote)
                    .map(|(from, _)| *from)
                    .unwrap_or(t.remote);
                let now = self.now;
                if self.pc_at(remote).is_none() {
                    self.strays.push(remote);
                }
                if let Some(pc) = self.pc_at(remote) {
                    let _ = pc.handle_read(TaggedBytesMut {
                        now,
                        transport: TransportContext {
                            local_addr: remote,
                            peer_addr: t.local,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: t.data,
                    });
                }
            }
            // Clients → core, and what the clients read.
            for ci in 0..self.clients.len() {
                for role in [TransportRole::Publisher, TransportRole::Subscriber] {
                    let now = self.now;
                    let c = &mut self.clients[ci];
                    let (pc, addr) = match role {
                        TransportRole::Publisher => (&mut c.publisher, c.pub_addr),
                        TransportRole::Subscriber => match c.subscriber.as_mut() {
                            Some(pc) => (pc, c.sub_addr),
                            None => continue,
                        },
                    };
                    let mut out = Vec::new();
                    while let Some(m) = pc.poll_write() {
                        out.push(m);
                    }
                    while pc.poll_event().is_some() {}
                    while let Some(m) = pc.poll_read() {
                        if let RTCMessage::RtpPacket(track, packet) = m.message {
                            let r = c.received.entry(track).or_default();
                            r.packets += 1;
                            r.first.get_or_insert(now);
                            if let Some(last) = r.last {
                                r.max_gap = r.max_gap.max(now - last);
                            }
                            r.last = Some(now);
                            r.ssrc = packet.header.ssrc;
                            let seq = packet.header.sequence_number;
                            if let Some(prev) = r.last_seq {
                                let d = seq.wrapping_sub(prev);
                                if d > 1 && d < 0x8000 {
                                    r.seq_jumps += 1;
                                }
                                if d < 0x8000 && d != 0 {
                                    r.last_seq = Some(seq);
                                } else {
                                    r.behind += 1;
                                }
                            } else {
                                r.last_seq = Some(seq);
                            }
                        }
                    }
                    let from = self.nat.get(&addr).copied().unwrap_or(addr);
                    let cut = self.cut.contains(&from);
                    let mute_sctp = self.mute_sctp.contains(&from);
                    for m in out {
                        moved = true;
                        // DTLS application data: content type 23 (RFC 6347 section 4.1).
                        if cut || (mute_sctp && m.message.first() == Some(&23)) {
                            continue;
                        }
                        self.core.handle_datagram(
                            udp_tuple(m.transport.peer_addr, from),
                            m.message,
                            now,
                        );
                    }
                }
            }
            // Signaling.
            for ci in 0..self.clients.len() {
                while let Some(ev) = self.clients[ci].events.try_recv() {
                    moved = true;
                    self.on_event(ci, ev);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never settled");
    }

    fn pc_at(&mut self, addr: SocketAddr) -> Option<&mut RTCPeerConnection> {
        for c in &mut self.clients {
            if c.pub_addr == addr {
                return Some(&mut c.publisher);
            }
            if c.sub_addr == addr {
                return c.subscriber.as_mut();
            }
        }
        None
    }

    fn on_event(&mut self, ci: usize, ev: SfuEvent) {
        let now = self.now;
        match ev {
            SfuEvent::SubscribeOffer { sdp, tracks } => {
                let c = &mut self.clients[ci];
                let mlines = sdp
                    .lines()
                    .filter(|l| l.starts_with("m=audio") || l.starts_with("m=video"))
                    .count();
                c.offers.push((tracks.len(), mlines));
                c.offer_sdps.push(sdp.clone());
                let sub = c
                    .subscriber
                    .get_or_insert_with(|| client_pc(c.sub_addr, c.consent_every, now));
                sub.set_remote_description(now, RTCSessionDescription::offer(sdp).unwrap())
                    .expect("set remote offer");
                let answer = sub.create_answer(None).expect("answer");
                sub.set_local_description(now, answer.clone())
                    .expect("set local answer");
                if c.hold_answers {
                    c.held = Some(answer.sdp);
                    return;
                }
                let id = c.id;
                self.core
                    .subscribe_answer(id, answer.sdp, now)
                    .expect("subscribe answer");
            }
            SfuEvent::Closed(reason) => self.clients[ci].closed = Some(reason),
            other => self.clients[ci].seen.push(other),
        }
    }

    /// Sends the answer held back by `hold_answers`.
    fn release_answer(&mut self, name: &str) {
        let now = self.now;
        let c = self.client_mut(name);
        c.hold_answers = false;
        let (id, sdp) = (c.id, c.held.take().expect("a held answer"));
        self.core.subscribe_answer(id, sdp, now).expect("answer");
        self.pump();
    }

    /// Runs `d` of simulated time: every step each client sends one video packet, every peer
    /// connection and the core get their timers, and the network is pumped.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            let now = self.now;
            for c in &mut self.clients {
                let _ = c.publisher.handle_timeout(now);
                if let Some(s) = c.subscriber.as_mut() {
                    let _ = s.handle_timeout(now);
                }
                let Some((sender, ssrc, pt)) = c.sender else {
                    continue;
                };
                let key = c.sent % 100 == 0;
                c.seq = c.seq.wrapping_add(1);
                let packet = rtc::rtp::packet::Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        payload_type: pt,
                        sequence_number: c.seq,
                        timestamp: (c.sent as u32).wrapping_mul(900),
                        ssrc,
                        marker: true,
                        ..Default::default()
                    },
                    // VP8 payload descriptor (S=1), then the frame header's P bit (0: keyframe).
                    payload: Bytes::from(vec![0x10, if key { 0x00 } else { 0x01 }, 0, 0, 0, 0]),
                };
                if let Some(mut s) = c.publisher.rtp_sender(sender) {
                    if s.write_rtp(now, packet).is_ok() {
                        c.sent += 1;
                    }
                }
            }
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now);
            }
            self.pump();
        }
    }

    /// Packets `to` received from `from`'s camera so far (the core names the forwarded track
    /// `<publisher id>-<mid>`).
    fn received(&self, to: &str, from: &str) -> Received {
        let prefix = format!("{}-", self.client(from).id);
        self.client(to)
            .received
            .iter()
            .find(|(t, _)| t.starts_with(&prefix))
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    }

    /// `to` NACKs (RFC 4585 section 6.2.1) packets `seqs` of `from`'s camera as it received
    /// them (sequence numbers of the core's leg), then the network is pumped.
    fn nack(&mut self, to: &str, from: &str, seqs: &[u16]) {
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
            nack_pairs_from_sequence_numbers, TransportLayerNack,
        };
        let media_ssrc = self.received(to, from).ssrc;
        let now = self.now;
        let pc = self
            .client_mut(to)
            .subscriber
            .as_mut()
            .expect("a subscriber");
        let receiver = pc.get_receivers().next().expect("a receiver");
        pc.rtp_receiver(receiver)
            .expect("receiver")
            .write_rtcp(
                now,
                vec![Box::new(TransportLayerNack {
                    sender_ssrc: 1,
                    media_ssrc,
                    nacks: nack_pairs_from_sequence_numbers(seqs),
                })],
            )
            .expect("write NACK");
        self.pump();
    }

    /// Starts a measuring window: every client's per-track gap and jump counters restart.
    fn mark(&mut self) {
        for c in &mut self.clients {
            for r in c.received.values_mut() {
                r.marked = r.packets;
                r.max_gap = Duration::ZERO;
                r.seq_jumps = 0;
            }
        }
    }

    /// Asserts `to` got `from`'s video at the full rate since the last [`Net::mark`], `window`
    /// ago: a packet every 10 ms step, no gap over `max_gap`, no sequence jump.
    fn assert_flowing(&self, to: &str, from: &str, window: Duration, max_gap: Duration) {
        let r = self.received(to, from);
        let got = r.packets - r.marked;
        let expected = (window.as_millis() / STEP.as_millis()) as u64;
        assert!(
            got * 100 >= expected * 98,
            "{to} <- {from}: {got} packets of {expected} in {window:?}: {r:?}"
        );
        assert!(
            r.max_gap <= max_gap,
            "{to} <- {from}: a {:?} gap: {r:?}",
            r.max_gap
        );
        assert_eq!(r.seq_jumps, 0, "{to} <- {from}: a sequence gap: {r:?}");
    }

    /// Every track `to` receives, by the core's track id.
    fn all_received(&self, to: &str) -> Vec<Received> {
        self.client(to).received.values().cloned().collect()
    }

    fn metric(&self, f: impl Fn(&SfuMetrics) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.metrics).load(Ordering::Relaxed)
    }
}

#[test]
fn two_clients_exchange_video_through_the_core_in_memory() {
    let mut net = Net::ada_and_bob();
    net.mark();
    net.run(Duration::from_secs(3));
    net.assert_flowing("ada", "bob", Duration::from_secs(3), STEP);
    net.assert_flowing("bob", "ada", Duration::from_secs(3), STEP);
    assert_eq!(net.all_received("ada").len(), 1);
}

#[test]
fn peers_checking_consent_at_the_slowest_rfc_7675_pace_keep_a_minute_of_media() {
    let mut net = Net::new();
    // RFC 7675: every 5 s ± 20 %; 6 s is the slowest a conformant peer (aiortc) checks.
    let every = Some(Duration::from_secs(6));
    net.join("ada", every);
    net.join("bob", every);
    net.run(Duration::from_secs(2));
    net.mark();
    net.run(Duration::from_secs(60));
    net.assert_flowing("ada", "bob", Duration::from_secs(60), STEP);
    net.assert_flowing("bob", "ada", Duration::from_secs(60), STEP);
    assert_eq!(net.metric(|m| &m.consent_disconnects), 0);
    assert_eq!(net.metric(|m| &m.consent_failures), 0);
    assert_eq!(net.metric(|m| &m.ice_path_switches), 0);
    assert_eq!(net.metric(|m| &m.drops_not_connected), 0);
}

#[test]
fn joins_and_leaves_in_any_order_keep_everyone_elses_media_flowing() {
    let mut net = Net::new();
    net.join("ada", None);
    net.join("bob", None);
    net.join("cy", None);
    net.run(Duration::from_secs(2));
    // The first to join leaves, a fourth joins, the second leaves.
    let ada = net.leave(0);
    net.join("dee", None);
    net.run(Duration::from_secs(1));
    let bob = net.leave(0);
    net.run(Duration::from_secs(1));
    net.mark();
    net.run(Duration::from_secs(3));
    net.assert_flowing("cy", "dee", Duration::from_secs(3), STEP);
    net.assert_flowing("dee", "cy", Duration::from_secs(3), STEP);
    // The leavers' tracks are gone from the others' subscriber transports.
    let cy = net.client("cy");
    for gone in [ada.id, bob.id] {
        let prefix = format!("{gone}-");
        let still = cy
            .received
            .iter()
            .filter(|(t, _)| t.starts_with(&prefix))
            .map(|(_, r)| r.last)
            .max()
            .flatten();
        assert!(
            still.is_none_or(|t| net.now - t >= Duration::from_secs(3)),
            "no media of {gone} after it left"
        );
    }
    assert_eq!(net.metric(|m| &m.participants), 2);
}

#[test]
fn a_track_published_while_an_offer_is_in_flight_arrives_after_the_answer_that_carries_it() {
    let mut net = Net::new();
    net.join("ada", None);
    // Bob's first subscribe offer (Ada's track) stays unanswered while Cy publishes.
    net.join_with("bob", None, true);
    net.run(Duration::from_millis(200));
    let offers_before = net.client("bob").offers.len();
    net.join("cy", None);
    net.run(Duration::from_millis(500));
    assert_eq!(
        net.client("bob").offers.len(),
        offers_before,
        "no second offer while one is in flight"
    );
    net.release_answer("bob");
    net.run(Duration::from_secs(2));
    assert!(
        net.client("bob").offers.len() > offers_before,
        "the offer carrying Cy's track followed the answer"
    );
    net.mark();
    net.run(Duration::from_secs(2));
    net.assert_flowing("bob", "ada", Duration::from_secs(2), STEP);
    net.assert_flowing("bob", "cy", Duration::from_secs(2), STEP);
    assert_eq!(
        net.metric(|m| &m.drops_write_error),
        0,
        "nothing was forwarded on an m-line the subscriber had not answered"
    );
}

/// `to`'s downtrack of `from`'s camera, as the core sees it.
fn downtrack_state(net: &Net, to: &str, from: &str) -> Option<crate::room::DownTrackState> {
    let (to, from) = (net.client(to).id, net.client(from).id);
    let room = net.core.rooms.get(&net.room)?;
    let p = &room.participants[room.index_of(to)?];
    p.downtracks
        .iter()
        .find(|d| d.track.participant == from)
        .map(|d| d.state)
}

#[test]
fn a_track_added_while_an_offer_is_in_flight_opens_only_with_the_answer_to_the_offer_carrying_it() {
    use crate::room::DownTrackState;
    let mut net = Net::ada_and_bob();
    // Bob's next answers are held: Cy's track is offered to him, and Dee publishes meanwhile.
    net.client_mut("bob").hold_answers = true;
    net.join("cy", None);
    net.run(Duration::from_millis(100));
    assert!(matches!(
        downtrack_state(&net, "bob", "cy"),
        Some(DownTrackState::Negotiating { .. })
    ));
    net.join("dee", None);
    net.run(Duration::from_millis(100));
    assert_eq!(
        downtrack_state(&net, "bob", "dee"),
        Some(DownTrackState::ToOpen),
        "not in the offer in flight"
    );
    // Bob answers the offer carrying Cy only. Dee's track goes out in the next offer (held
    // again): it is negotiating, and nothing of Dee reaches Bob before he answers that one
    // (his client has applied the offer already, so it would decode anything sent).
    let (id, sdp) = {
        let c = net.client_mut("bob");
        (c.id, c.held.take().expect("a held answer"))
    };
    net.core.subscribe_answer(id, sdp, net.now).expect("answer");
    net.pump();
    assert_eq!(
        downtrack_state(&net, "bob", "cy"),
        Some(DownTrackState::Open)
    );
    assert!(matches!(
        downtrack_state(&net, "bob", "dee"),
        Some(DownTrackState::Negotiating { .. })
    ));
    net.run(Duration::from_millis(1_500));
    assert_eq!(
        net.received("bob", "dee").packets,
        0,
        "nothing forwarded on an m-line Bob has not answered"
    );
    assert!(net.received("bob", "cy").packets > 0);
    // The answer carrying Dee opens it and asks Dee for a keyframe then.
    let plis = net.metric(|m| &m.plis_sent);
    net.release_answer("bob");
    assert_eq!(
        downtrack_state(&net, "bob", "dee"),
        Some(DownTrackState::Open)
    );
    assert!(
        net.metric(|m| &m.plis_sent) > plis,
        "a keyframe is asked for when the downtrack opens"
    );
    net.run(Duration::from_millis(1_100));
    net.mark();
    net.run(Duration::from_secs(2));
    for from in ["ada", "cy", "dee"] {
        net.assert_flowing("bob", from, Duration::from_secs(2), STEP);
    }
}

#[test]
fn an_unanswered_subscribe_offer_is_offered_again_and_then_media_flows() {
    let mut net = Net::new();
    net.join("ada", None);
    net.join_with("bob", None, true);
    net.run(Duration::from_secs(11));
    assert!(
        net.client("bob").offers.len() >= 2,
        "offered again after the 10 s answer timeout: {:?}",
        net.client("bob").offers
    );
    let sdps = &net.client("bob").offer_sdps;
    assert_eq!(
        sdps[1], sdps[0],
        "the same offer, not a rolled-back new one"
    );
    net.release_answer("bob");
    net.run(Duration::from_secs(2));
    net.mark();
    net.run(Duration::from_secs(2));
    net.assert_flowing("bob", "ada", Duration::from_secs(2), STEP);
}

#[test]
fn a_nat_rebinding_moves_media_to_the_new_address_after_the_next_consent_check() {
    let mut net = Net::ada_and_bob();
    // Bob's NAT gives both his transports new public ports; the old mappings die.
    let (pub_addr, sub_addr) = (net.client("bob").pub_addr, net.client("bob").sub_addr);
    for (old, port) in [(pub_addr, 6000), (sub_addr, 6001)] {
        net.nat.insert(old, SocketAddr::new(old.ip(), port));
        net.cut.push(old);
    }
    net.run(Duration::from_secs(3));
    assert!(
        net.metric(|m| &m.ice_path_switches) >= 1,
        "the core moved to the new address"
    );
    net.mark();
    net.run(Duration::from_secs(3));
    net.assert_flowing("ada", "bob", Duration::from_secs(3), STEP);
    net.assert_flowing("bob", "ada", Duration::from_secs(3), STEP);
}

#[test]
fn thirty_participants_coming_and_going_never_grow_the_subscriber_sdp_past_the_live_tracks() {
    let mut net = Net::new();
    net.join("stay", None);
    for i in 0..30 {
        // One at a time, and for the second half two at once (overlapping stays).
        let name = format!("p{i}");
        net.join(&name, None);
        net.run(Duration::from_millis(300));
        if i >= 15 && i % 2 == 1 {
            continue;
        }
        while net.clients.len() > 1 {
            let leaving = net.clients.len() - 1;
            net.leave(leaving);
        }
        net.run(Duration::from_millis(300));
    }
    let offers = &net.client("stay").offers;
    assert!(offers.len() >= 30, "an offer per change: {}", offers.len());
    for (tracks, mlines) in offers {
        assert!(
            *mlines <= tracks + 2,
            "an offer carried {mlines} m-lines for {tracks} live tracks (slack 2): {offers:?}"
        );
    }
    // The latest publisher's video still reaches the one who stayed, on a reused m-line.
    net.join("last", None);
    net.run(Duration::from_secs(1));
    net.mark();
    net.run(Duration::from_secs(2));
    net.assert_flowing("stay", "last", Duration::from_secs(2), STEP);
}

#[test]
fn a_panic_while_handling_one_participant_removes_that_participant_and_nobody_else() {
    let mut net = Net::new();
    net.join("ada", None);
    net.join("bob", None);
    net.join("cy", None);
    net.run(Duration::from_secs(2));
    let bob = net.client("bob").id;
    net.core.panic_on_datagram_of = Some(bob);
    // The panic message goes to stderr; the test only cares that the core survives it.
    net.run(Duration::from_millis(100));
    net.core.panic_on_datagram_of = None;
    assert_eq!(
        net.client("bob").closed,
        Some(crate::api::CloseReason::InternalError),
        "Bob is told why he is out"
    );
    assert_eq!(net.metric(|m| &m.participant_panics), 1);
    assert_eq!(net.metric(|m| &m.participants), 2);
    let bob = net.clients.iter().position(|c| c.name == "bob").unwrap();
    net.clients.remove(bob);
    net.run(Duration::from_secs(1));
    net.mark();
    net.run(Duration::from_secs(2));
    net.assert_flowing("ada", "cy", Duration::from_secs(2), STEP);
    net.assert_flowing("cy", "ada", Duration::from_secs(2), STEP);
}

#[test]
fn an_ice_restart_from_a_client_that_changed_network_gets_new_credentials_and_media_flows_on() {
    use crate::peer::IceCredentials;
    use rtc::peer_connection::configuration::RTCOfferOptions;
    let mut net = Net::ada_and_bob();
    // Bob's network changes (a new address: every old 5-tuple is dead), and his publisher
    // transport restarts ICE with new credentials, as a browser does after a handover.
    let old_pub = net.client("bob").pub_addr;
    net.nat.insert(old_pub, "10.0.9.9:7000".parse().unwrap());
    net.cut.push(old_pub);
    let (id, mid) = {
        let c = net.client_mut("bob");
        let (sender, _, _) = c.sender.expect("a sender");
        let mid = c
            .publisher
            .rtp_transceiver(sender.into())
            .and_then(|t| t.mid().clone())
            .unwrap();
        (c.id, mid)
    };
    let now = net.now;
    let c = net.client_mut("bob");
    let old_server =
        IceCredentials::from_sdp(&c.publisher.remote_description().unwrap().sdp).unwrap();
    let offer = c
        .publisher
        .create_offer(Some(RTCOfferOptions { ice_restart: true }))
        .unwrap();
    c.publisher
        .set_local_description(now, offer.clone())
        .unwrap();
    let answer = net
        .core
        .publish_offer(
            id,
            offer.sdp,
            vec![PublishTrack {
                mid,
                source: TrackSource::Camera,
            }],
            now,
        )
        .expect("the restart offer is answered");
    let new_server = IceCredentials::from_sdp(&answer).unwrap();
    assert_ne!(
        new_server.ufrag, old_server.ufrag,
        "the server's ufrag changed (RFC 8445 section 9)"
    );
    assert_ne!(new_server.pwd, old_server.pwd, "and its password");
    net.client_mut("bob")
        .publisher
        .set_remote_description(now, RTCSessionDescription::answer(answer).unwrap())
        .unwrap();
    net.run(Duration::from_secs(2));
    net.mark();
    net.run(Duration::from_secs(2));
    net.assert_flowing("ada", "bob", Duration::from_secs(2), STEP);
    assert!(
        net.metric(|m| &m.ice_path_switches) >= 1,
        "media moved to Bob's new address"
    );
}

fn saw(c: &Client, f: impl Fn(&SfuEvent) -> bool) -> bool {
    c.seen.iter().any(f)
}

#[test]
fn a_participant_whose_socket_drops_stays_with_its_media_and_resumes_unseen_as_a_leave() {
    let mut net = Net::ada_and_bob();
    let ada = net.client("ada").id;
    // Ada's signaling socket is gone; her transports are untouched.
    net.core.detach(ada, 1, net.now);
    net.pump();
    assert!(saw(
        net.client("bob"),
        |e| matches!(e, SfuEvent::ParticipantReconnecting(p) if *p == ada)
    ));
    net.mark();
    net.run(Duration::from_secs(3));
    net.assert_flowing("bob", "ada", Duration::from_secs(3), STEP);
    net.assert_flowing("ada", "bob", Duration::from_secs(3), STEP);
    // A wrong token is refused; the right one takes her over on a new queue.
    let (tx, rx) = crate::mailbox::mailbox();
    assert_eq!(
        net.core
            .resume(
                ada,
                "0123456789abcdef0123456789abcdef",
                "user-ada",
                crate::mailbox::mailbox().0,
                net.now
            )
            .err(),
        Some(crate::api::SfuError::ResumeFailed)
    );
    let token = net.client("ada").resume_token.clone();
    assert_eq!(
        net.core
            .resume(
                ada,
                &token,
                "user-bob",
                crate::mailbox::mailbox().0,
                net.now
            )
            .err(),
        Some(crate::api::SfuError::ResumeFailed),
        "the right token from another user"
    );
    let info = net
        .core
        .resume(ada, &token, "user-ada", tx, net.now)
        .expect("resumed");
    assert_eq!(info.join.participant, ada);
    assert_eq!(info.join.others.len(), 1);
    let mut old = std::mem::replace(&mut net.client_mut("ada").events, rx);
    assert!(
        matches!(
            old.try_recv(),
            Some(SfuEvent::Closed(crate::api::CloseReason::Resumed))
        ) || {
            // Events that were queued before the handover come first.
            let mut last = None;
            while let Some(e) = old.try_recv() {
                last = Some(e);
            }
            matches!(
                last,
                Some(SfuEvent::Closed(crate::api::CloseReason::Resumed))
            )
        }
    );
    net.pump();
    assert!(saw(
        net.client("bob"),
        |e| matches!(e, SfuEvent::ParticipantReconnected(p) if *p == ada)
    ));
    assert!(!saw(net.client("bob"), |e| matches!(
        e,
        SfuEvent::ParticipantLeft(_)
    )));
    // The old socket's session noticing its loss late does not detach the resumed participant.
    assert_eq!(info.join.attachment.id(), 2);
    assert!(info.join.attachment.is_current());
    net.client_mut("bob").seen.clear();
    net.core.detach(ada, 1, net.now);
    net.pump();
    assert!(
        !saw(net.client("bob"), |e| matches!(
            e,
            SfuEvent::ParticipantReconnecting(_)
        )),
        "a stale detach is ignored"
    );
    net.mark();
    net.run(Duration::from_secs(2));
    net.assert_flowing("bob", "ada", Duration::from_secs(2), STEP);
    assert_eq!(net.metric(|m| &m.participants), 2);
}

#[test]
fn a_participant_not_resumed_within_the_grace_period_leaves() {
    let mut net = Net::new();
    net.core = std::mem::replace(
        &mut net.core,
        Core::new(
            crate::room::LocalCandidates::default(),
            1,
            Arc::new(SfuMetrics::default()),
            broadcast::channel(1).0,
            net.now,
        ),
    )
    .with_resume_grace(Duration::from_secs(5));
    net.join("ada", None);
    net.join("bob", None);
    net.run(Duration::from_secs(2));
    let bob = net.client("bob").id;
    net.core.detach(bob, 1, net.now);
    net.run(Duration::from_secs(4));
    assert!(
        !saw(net.client("ada"), |e| matches!(
            e,
            SfuEvent::ParticipantLeft(_)
        )),
        "still within the grace"
    );
    net.run(Duration::from_secs(2));
    assert!(saw(
        net.client("ada"),
        |e| matches!(e, SfuEvent::ParticipantLeft(p) if *p == bob)
    ));
    assert_eq!(
        net.client("bob").closed,
        Some(crate::api::CloseReason::GraceExpired)
    );
    let token = net.client("bob").resume_token.clone();
    let (tx, _rx) = crate::mailbox::mailbox();
    assert!(
        net.core
            .resume(bob, &token, "user-bob", tx, net.now)
            .is_err(),
        "too late to resume"
    );
}

#[test]
fn a_backed_up_subscriber_connection_drops_video_to_the_next_keyframe_without_a_sequence_gap() {
    let mut net = Net::ada_and_bob();
    let bob_sub = udp_tuple(SERVER.parse().unwrap(), net.client("bob").sub_addr);
    // Bob's connection backs up: no video to him, counted, while Ada still gets his.
    net.core.set_congested(bob_sub, true, net.now);
    net.run(Duration::from_millis(200));
    net.mark();
    net.run(Duration::from_secs(2));
    let r = net.received("bob", "ada");
    assert_eq!(r.packets - r.marked, 0, "no video while backed up: {r:?}");
    assert!(net.metric(|m| &m.drops_congested) >= 150);
    net.assert_flowing("ada", "bob", Duration::from_secs(2), STEP);
    // Drained: video restarts on a keyframe asked for at once, and the receiver sees no gap in
    // the sequence numbers (the dropped packets were never numbered for it).
    let plis = net.metric(|m| &m.plis_sent);
    net.core.set_congested(bob_sub, false, net.now);
    assert!(
        net.metric(|m| &m.plis_sent) > plis,
        "a keyframe is requested when it drains"
    );
    net.run(Duration::from_millis(1100));
    net.mark();
    net.run(Duration::from_secs(2));
    net.assert_flowing("bob", "ada", Duration::from_secs(2), STEP);
}

#[test]
fn a_forced_keyframe_request_is_repeated_until_the_keyframe_arrives_and_then_stops() {
    let mut net = Net::ada_and_bob();
    let bob_sub = udp_tuple(SERVER.parse().unwrap(), net.client("bob").sub_addr);
    net.core.set_congested(bob_sub, true, net.now);
    net.run(Duration::from_millis(100));
    let before = net.metric(|m| &m.plis_sent);
    // Drained: a forced request to Ada. Her client sends a keyframe only every second (it does
    // not answer PLIs), so the core asks again every 500 ms until one passes, then stops.
    net.core.set_congested(bob_sub, false, net.now);
    net.run(Duration::from_millis(1_600));
    let asked = net.metric(|m| &m.plis_sent) - before;
    assert!(
        (2..=u64::from(crate::room::KEYFRAME_RETRIES)).contains(&asked),
        "{asked} requests: the first, then again while no keyframe came"
    );
    let settled = net.metric(|m| &m.plis_sent);
    net.run(Duration::from_secs(2));
    assert_eq!(
        net.metric(|m| &m.plis_sent),
        settled,
        "no more requests once a keyframe came"
    );
    net.mark();
    net.run(Duration::from_secs(1));
    net.assert_flowing("bob", "ada", Duration::from_secs(1), STEP);
}

#[test]
fn a_new_subscriber_gets_the_held_keyframe_the_moment_it_connects_not_at_the_next_one() {
    let mut net = Net::new();
    net.join("ada", None);
    // Bob's subscribe offer (Ada's camera) stays unanswered while Ada's keyframes pass.
    net.join_with("bob", None, true);
    net.run(Duration::from_millis(1_500));
    // Answer just after one of Ada's keyframes (her client sends one every 100 packets and
    // ignores PLIs): without holding, Bob's video would start ~0.9 s later, at the next one.
    while net.client("ada").sent % 100 != 10 {
        net.run(STEP);
    }
    let answered = net.now;
    net.release_answer("bob");
    net.run(Duration::from_millis(300));
    let r = net.received("bob", "ada");
    let first = r.first.expect("Bob receives Ada's video");
    assert!(
        first - answered <= Duration::from_millis(200),
        "first packet {:?} after the answer: {r:?}",
        first - answered
    );
    assert!(
        net.metric(|m| &m.rtp_early_sent) >= 10,
        "the held group of pictures went out at the connection"
    );
    assert_eq!(
        r.seq_jumps, 0,
        "held and live packets in one sequence: {r:?}"
    );
    net.mark();
    net.run(Duration::from_secs(2));
    net.assert_flowing("bob", "ada", Duration::from_secs(2), STEP);
}

#[test]
fn a_resume_while_a_subscribe_offer_awaits_its_answer_sends_that_same_offer_again() {
    let mut net = Net::new();
    net.join("ada", None);
    // Bob's subscribe offer (Ada's track) is never answered on his first socket, which drops.
    net.join_with("bob", None, true);
    net.run(Duration::from_millis(300));
    let bob = net.client("bob").id;
    let first = net.client("bob").offer_sdps.clone();
    assert_eq!(first.len(), 1, "one offer in flight");
    net.core.detach(bob, 1, net.now);
    net.pump();
    let c = net.client_mut("bob");
    c.hold_answers = false;
    c.held = None;
    let token = c.resume_token.clone();
    let (tx, rx) = crate::mailbox::mailbox();
    net.core
        .resume(bob, &token, "user-bob", tx, net.now)
        .expect("resumed");
    net.client_mut("bob").events = rx;
    net.pump();
    let sdps = &net.client("bob").offer_sdps;
    assert_eq!(sdps.len(), 2, "the offer is sent again on the new socket");
    assert_eq!(
        sdps[1], first[0],
        "unchanged: the client's answer to either copy fits the server's pending offer"
    );
    net.run(Duration::from_secs(2));
    net.mark();
    net.run(Duration::from_secs(3));
    net.assert_flowing("bob", "ada", Duration::from_secs(3), STEP);
    assert_eq!(
        net.client("bob").offer_sdps.len(),
        2,
        "answered: no further offer (no rollback, no renegotiation)"
    );
}

fn ufrag(sdp: &str) -> &str {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("an ice-ufrag")
}

#[test]
fn an_ice_restart_asked_while_an_offer_awaits_its_answer_follows_that_answer() {
    let mut net = Net::new();
    net.join("ada", None);
    net.join_with("bob", None, true);
    net.run(Duration::from_millis(300));
    let bob = net.client("bob").id;
    net.core.restart_ice(bob, net.now).expect("restart");
    net.pump();
    assert_eq!(
        net.client("bob").offer_sdps.len(),
        1,
        "no rollback, no second offer while one is in flight"
    );
    // Bob answers; his answer to the restart offer is held back.
    let answer = net.client_mut("bob").held.take().expect("held answer");
    let now = net.now;
    net.core
        .subscribe_answer(bob, answer.clone(), now)
        .expect("answer");
    net.pump();
    let sdps = net.client("bob").offer_sdps.clone();
    assert_eq!(sdps.len(), 2, "the restart offer follows the answer");
    assert_ne!(ufrag(&sdps[1]), ufrag(&sdps[0]), "with new ICE credentials");
    // The first answer arriving again (a client that got its offer twice) is not taken for the
    // answer to the restart offer.
    net.core
        .subscribe_answer(bob, answer, now)
        .expect("a repeated answer is ignored");
    net.release_answer("bob");
    net.run(Duration::from_secs(2));
    net.mark();
    net.run(Duration::from_secs(3));
    net.assert_flowing("bob", "ada", Duration::from_secs(3), STEP);
}

#[test]
fn a_lost_packet_is_sent_again_from_the_tracks_cache_once_per_holdoff_and_never_when_stale() {
    use crate::retransmit::{MAX_RETRANSMIT_AGE, RETRANSMIT_HOLDOFF};
    let mut net = Net::ada_and_bob();
    net.run(Duration::from_secs(1));
    let r = net.received("bob", "ada");
    let (ssrc, last) = (r.ssrc, r.last_seq.expect("bob receives ada"));
    let bob = net.client("bob").sub_addr;
    // The third packet from now is lost on its way to Bob.
    let lost = last.wrapping_add(3);
    net.lose.push((bob, ssrc, lost));
    net.run(Duration::from_millis(100));
    assert!(net.lose.is_empty(), "the packet was dropped");
    assert_eq!(net.received("bob", "ada").seq_jumps, 1, "Bob misses it");
    let resent = |net: &Net| net.metric(|m| &m.rtp_retransmitted);
    net.nack("bob", "ada", &[lost]);
    let r = net.received("bob", "ada");
    assert_eq!(
        r.behind, 1,
        "Bob decrypted the very packet he missed: {r:?}"
    );
    assert_eq!(resent(&net), 1);
    assert_eq!(net.metric(|m| &m.rtp_nacked), 1);
    // NACKed again before the retransmission could have arrived: not answered.
    net.nack("bob", "ada", &[lost]);
    assert_eq!(resent(&net), 1);
    // Say the retransmission was lost too: after the holdoff it is sent once more.
    net.run(RETRANSMIT_HOLDOFF);
    net.nack("bob", "ada", &[lost]);
    assert_eq!(resent(&net), 2);
    assert_eq!(net.metric(|m| &m.rtp_nacked), 1, "one packet NACKed");
    // Too old to be of use, or never sent: nothing.
    net.run(MAX_RETRANSMIT_AGE);
    let newest = net.received("bob", "ada").last_seq.unwrap();
    net.nack("bob", "ada", &[lost, newest.wrapping_add(100)]);
    assert_eq!(resent(&net), 2);
    // Three lost in a row, asked for in one NACK: each arrives once.
    let next = newest.wrapping_add(1);
    for k in 0..3 {
        net.lose.push((bob, ssrc, next.wrapping_add(k)));
    }
    net.run(Duration::from_millis(100));
    net.nack(
        "bob",
        "ada",
        &[next, next.wrapping_add(1), next.wrapping_add(2)],
    );
    assert_eq!(resent(&net), 5);
    assert_eq!(net.received("bob", "ada").behind, 4);
    // Ada, who lost nothing, was sent nothing twice.
    assert_eq!(net.received("ada", "bob").behind, 0);
}

/// A deterministic xorshift64 generator for junk datagrams.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// One hostile datagram that looks like what a transport demultiplexes (RFC 7983): a STUN
    /// message, a DTLS record (handshake, application data carrying SCTP), SRTP or SRTCP, each
    /// with a length field that lies; or plain noise.
    fn datagram(&mut self) -> Vec<u8> {
        let len = (self.next() % 1400) as usize + 1;
        let mut d = self.bytes(len);
        let lie = (self.next() as u16).to_be_bytes();
        match self.next() % 6 {
            // STUN: type, a length beyond the datagram, the magic cookie, attributes of any size.
            0 if d.len() >= 20 => {
                d[0] = 0x00;
                d[1] = 0x01;
                d[2..4].copy_from_slice(&lie);
                d[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            }
            // DTLS 1.2 record: content type 20–23, version, epoch and sequence, a lying length.
            1 if d.len() >= 13 => {
                d[0] = 20 + (self.next() % 4) as u8;
                d[1] = 0xfe;
                d[2] = 0xfd;
                d[11..13].copy_from_slice(&lie);
            }
            // SRTP: version 2, the extension bit with a lying extension length.
            2 if d.len() >= 16 => {
                d[0] = 0x90 | (d[0] & 0x0f);
                d[1] &= 0x7f;
                d[14..16].copy_from_slice(&lie);
            }
            // SRTCP: version 2, a payload type 200–206, a lying length in words.
            3 if d.len() >= 8 => {
                d[0] = 0x80 | (d[0] & 0x1f);
                d[1] = 200 + (self.next() % 7) as u8;
                d[2..4].copy_from_slice(&lie);
            }
            _ => {}
        }
        d
    }
}

#[test]
fn hostile_datagrams_on_a_participants_valid_route_hurt_nobody_else() {
    let mut net = Net::new();
    net.join("ada", None);
    net.join("bob", None);
    net.join("cy", None);
    net.run(Duration::from_secs(2));
    // Cy's own routes (learnt from his real ICE checks) now carry 10 s of junk, 20 datagrams
    // each 10 ms step on each transport.
    let server: SocketAddr = SERVER.parse().unwrap();
    let routes = [net.client("cy").pub_addr, net.client("cy").sub_addr];
    let mut junk = Junk(0x9e37_79b9_7f4a_7c15);
    net.mark();
    let window = Duration::from_secs(10);
    let end = net.now + window;
    let mut sent = 0u64;
    while net.now < end {
        for from in routes {
            for _ in 0..20 {
                let d = junk.datagram();
                net.core.handle_datagram(
                    udp_tuple(server, from),
                    bytes::BytesMut::from(&d[..]),
                    net.now,
                );
                sent += 1;
            }
        }
        net.run(STEP);
    }
    println!(
        "{sent} junk datagrams; cy closed: {:?}; cy still receives: {}",
        net.client("cy").closed,
        net.received("cy", "ada").packets - net.received("cy", "ada").marked
    );
    assert!(sent >= 39_000, "{sent} junk datagrams");
    assert_eq!(
        net.metric(|m| &m.participant_panics),
        0,
        "no junk made the core panic"
    );
    for (to, from) in [("ada", "bob"), ("bob", "ada")] {
        net.assert_flowing(to, from, window, Duration::from_millis(50));
    }
}

#[test]
fn a_data_channel_that_stops_acknowledging_removes_its_participant_and_nobody_else() {
    let mut net = Net::new();
    net.join("ada", None);
    net.join("bob", None);
    // Cy opens a `chat` DataChannel on his publisher transport (a renegotiation).
    net.join("cy", None);
    let cy = net.client("cy").id;
    let now = net.now;
    let c = net.client_mut("cy");
    c.publisher
        .create_data_channel("chat", None)
        .expect("data channel");
    let offer = c.publisher.create_offer(None).expect("offer");
    c.publisher
        .set_local_description(now, offer.clone())
        .expect("set local offer");
    let answer = net
        .core
        .publish_offer(cy, offer.sdp, vec![], now)
        .expect("answer");
    net.client_mut("cy")
        .publisher
        .set_remote_description(now, RTCSessionDescription::answer(answer).unwrap())
        .expect("set remote answer");
    net.run(Duration::from_secs(2));
    assert!(
        saw(
            net.client("cy"),
            |e| matches!(e, SfuEvent::DataChannelOpen { label } if label == "chat")
        ),
        "the channel opened"
    );
    // Cy opens more: a second `chat` and then as many labels as he likes. One per label and
    // four in all are kept; the rest are closed as they open (a second `chat` would have the
    // history replayed again).
    for label in ["chat", "a", "b", "c", "d", "e", "chat"] {
        net.client_mut("cy")
            .publisher
            .create_data_channel(label, None)
            .expect("data channel");
        net.run(Duration::from_millis(200));
    }
    let opened: Vec<String> = net
        .client("cy")
        .seen
        .iter()
        .filter_map(|e| match e {
            SfuEvent::DataChannelOpen { label } => Some(label.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        opened,
        ["chat", "a", "b", "c"],
        "one per label, four in all"
    );
    // A light chat flows while Cy acknowledges.
    for i in 0..50 {
        net.core
            .send_data(cy, "chat", format!("hello {i}"), net.now);
    }
    net.run(Duration::from_secs(1));
    // As long as Cy acknowledges, even 2 MB at 400 kB/s is no backlog.
    let big = "x".repeat(4000);
    for _ in 0..50 {
        for _ in 0..10 {
            net.core.send_data(cy, "chat", big.clone(), net.now);
        }
        net.run(STEP * 10);
    }
    assert_eq!(net.client("cy").closed, None, "a draining channel stays");
    // Then Cy's acknowledgements stop reaching the server while messages keep coming.
    let pub_addr = net.client("cy").pub_addr;
    net.mute_sctp.push(pub_addr);
    let mut sent = 0;
    while net.client("cy").closed.is_none() && sent < 2000 {
        for _ in 0..10 {
            net.core.send_data(cy, "chat", big.clone(), net.now);
            sent += 1;
        }
        net.run(STEP * 10);
    }
    println!("Cy removed after {sent} messages of 4000 bytes");
    assert_eq!(
        net.client("cy").closed,
        Some(crate::api::CloseReason::DataChannelBacklog),
        "removed once {} bytes waited",
        crate::room::DATA_CHANNEL_MAX_BUFFERED
    );
    assert!(
        sent as u32 * 4000 <= 2 * crate::room::DATA_CHANNEL_MAX_BUFFERED,
        "{sent} messages sent before"
    );
    let cy = net.clients.iter().position(|c| c.name == "cy").unwrap();
    net.clients.remove(cy);
    net.run(Duration::from_secs(1));
    net.mark();
    net.run(Duration::from_secs(2));
    net.assert_flowing("ada", "bob", Duration::from_secs(2), STEP);
    net.assert_flowing("bob", "ada", Duration::from_secs(2), STEP);
}

#[test]
fn candidates_a_client_names_are_never_sent_to_before_that_address_is_heard_from() {
    let mut net = Net::ada_and_bob();
    // Cy's subscribe answer says he is ICE-lite too, which makes the server's agent the
    // controlling one (RFC 8445 section 6.1.1: both lite, the offerer controls), and `rtc`'s
    // then checks every candidate he names. He names addresses that are not his (a victim the
    // server would be aimed at); nothing may reach them.
    net.join_with("cy", None, true);
    net.run(Duration::from_secs(1));
    let (cy, answer) = {
        let c = net.client_mut("cy");
        (c.id, c.held.take().expect("Cy's held answer"))
    };
    let lite = answer.replacen("\r\nt=0 0\r\n", "\r\nt=0 0\r\na=ice-lite\r\n", 1);
    assert_ne!(lite, answer, "the answer has a session section to mark");
    let now = net.now;
    net.core.subscribe_answer(cy, lite, now).expect("answer");
    let victims: Vec<SocketAddr> = (1..=4)
        .map(|i| format!("203.0.113.{i}:9{i}00").parse().unwrap())
        .collect();
    for (i, v) in victims.iter().enumerate() {
        for role in [TransportRole::Publisher, TransportRole::Subscriber] {
            let cand = format!(
                "candidate:{i} 1 udp {} {} {} typ host",
                2_130_706_431 - i as u32,
                v.ip(),
                v.port()
            );
            let now = net.now;
            net.core
                .add_candidate(cy, role, cand, Some("0".into()), Some(0), now)
                .unwrap();
        }
    }
    net.mark();
    net.run(Duration::from_secs(10));
    let to_victims = net.strays.iter().filter(|a| victims.contains(a)).count();
    println!(
        "datagrams to named-only addresses: {to_victims}; dropped as unheard: {}",
        net.metric(|m| &m.drops_unheard_destination)
    );
    assert_eq!(
        to_victims, 0,
        "the core sent datagrams to addresses Cy only named"
    );
    for (to, from) in [("ada", "bob"), ("bob", "ada")] {
        net.assert_flowing(to, from, Duration::from_secs(10), Duration::from_millis(50));
    }
}

#[test]
fn a_publish_only_participant_is_seen_and_received_by_everyone_and_receives_nothing() {
    let mut net = Net::new();
    net.join("ada", None);
    net.publish_only = true;
    net.join("obs", None);
    net.join("bob", None);
    net.run(Duration::from_secs(2));
    net.mark();
    net.run(Duration::from_secs(10));
    net.assert_flowing("ada", "obs", Duration::from_secs(10), STEP);
    net.assert_flowing("bob", "obs", Duration::from_secs(10), STEP);
    net.assert_flowing("ada", "bob", Duration::from_secs(10), STEP);
    let obs = net.client("obs");
    assert!(
        obs.offers.is_empty(),
        "no subscribe offer: {:?}",
        obs.offers
    );
    assert!(obs.received.is_empty(), "nothing forwarded to it");
    assert!(
        saw(
            net.client("ada"),
            |e| matches!(e, SfuEvent::ParticipantJoined(p) if p.name == "obs")
        ),
        "the others see it join"
    );
}
