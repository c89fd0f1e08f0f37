//! Building the server side of a transport: an `rtc` peer connection configured as an SFU needs
//! it (ICE-lite, DTLS server, AEAD-GCM SRTP first, the codecs and header extensions we forward,
//! NACK/RTCP-report/TWCC interceptors, and a tap that lets keyframe requests reach us).

use crate::api::SfuMetrics;
use crate::ids::{ParticipantId, TransportRole};
use rtc::interceptor::{
    Attribute, Interceptor, Packet as InterceptorPacket, Registry, Slot, StreamInfo, TaggedPacket,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_twcc,
};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, TransportLayerNack,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Header extensions negotiated besides `transport-cc` (which each leg stamps itself) — the ones
/// an SFU forwards, translated by URI per subscriber (RFC 8285).
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// RTP stream id (RFC 8852 section 3.1): names a simulcast layer.
pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// Repaired RTP stream id (RFC 8852 section 3.2).
pub const REPAIRED_RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
/// RFC 8843 section 15: the m-line a packet belongs to.
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// 3GPP TS 26.114 coordination of video orientation.
pub const VIDEO_ORIENTATION_URI: &str = "urn:3gpp:video-orientation";
/// Absolute send time, used by receivers' REMB estimators.
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

/// Packets each outgoing track keeps for retransmission (2.5 s of 100 pkt/s video): far more
/// than any NACK that can still arrive in time, at a quarter of `rtc`'s default memory
/// (docs/performance.md: 10-person rooms 3.0 → 1.45 MiB per participant).
const NACK_HISTORY_PACKETS: u16 = 256;

/// Most NACKs the server sends for one missing packet (DEPENDENCY-NOTES: `rtc`'s generator
/// re-requests without limit otherwise, ≈60× excess retransmissions at 3 % loss).
const MAX_NACKS_PER_PACKET: u16 = 3;

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

/// The media engine both transports use: Opus; VP8, VP9 profile 0 and H.264 constrained
/// baseline (packetization-mode 1); no RTX (retransmissions travel on the media SSRC), with
/// NACK, PLI, FIR and transport-cc feedback.
fn media_engine(role: TransportRole) -> Result<MediaEngine, Error> {
    let mut me = MediaEngine::default();
    me.register_codec(
        codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 111),
        RtpCodecKind::Audio,
    )?;
    for c in [
        codec(MIME_TYPE_VP8, 90_000, 0, "", 96),
        codec(MIME_TYPE_VP9, 90_000, 0, "profile-id=0", 98),
        codec(
            MIME_TYPE_H264,
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            102,
        ),
    ] {
        me.register_codec(c, RtpCodecKind::Video)?;
    }
    // Subscriber legs: the browser's receive-side bandwidth estimate comes back as REMB
    // (draft-alvestrand-rmcat-remb), read by `crate::bwe` to size that subscriber's layers.
    let remb: &[(&str, &str)] = match role {
        TransportRole::Subscriber => &[("goog-remb", "")],
        TransportRole::Publisher => &[],
    };
    for &(typ, parameter) in [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .iter()
        .chain(remb)
    {
        me.register_feedback(
            RTCPFeedback {
                typ: typ.to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    for (uri, kind) in [
        (MID_URI, RtpCodecKind::Audio),
        (MID_URI, RtpCodecKind::Video),
        (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
        (VIDEO_ORIENTATION_URI, RtpCodecKind::Video),
        (ABS_SEND_TIME_URI, RtpCodecKind::Video),
        // Simulcast (RFC 8852, RFC 8853): the publisher names each layer's stream by RID.
        (RID_URI, RtpCodecKind::Video),
        (REPAIRED_RID_URI, RtpCodecKind::Video),
    ] {
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            kind,
            None,
        )?;
    }
    Ok(me)
}

/// A transport's local ICE credentials (RFC 8445 section 5.3): `rtc` draws them at random for
/// every transport, and again at every ICE restart (section 9); they are read back from the
/// local description. The password keys MESSAGE-INTEGRITY of every binding request; it is never
/// logged.
#[derive(Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// Local ufrag (`a=ice-ufrag`).
    pub ufrag: String,
    /// Local password (`a=ice-pwd`).
    pub pwd: String,
}

impl std::fmt::Debug for IceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceCredentials")
            .field("ufrag", &self.ufrag)
            .field("pwd", &"[redacted]")
            .finish()
    }
}

impl IceCredentials {
    /// The first `a=ice-ufrag` / `a=ice-pwd` pair of an SDP (every m-line of a BUNDLE group carries
    /// the same); `None` when either is missing.
    pub fn from_sdp(sdp: &str) -> Option<Self> {
        let attr = |name: &str| {
            sdp.lines()
                .find_map(|l| l.trim_end().strip_prefix(name).map(str::to_owned))
        };
        Some(Self {
            ufrag: attr("a=ice-ufrag:")?,
            pwd: attr("a=ice-pwd:")?,
        })
    }
}

/// Builds the server's peer connection for one transport of `participant` (its ICE credentials
/// are random; [`IceCredentials::from_sdp`] reads them from the local description).
///
/// `rtc`'s own ICE liveness is switched off (disconnected and failed timeouts of zero): its
/// lite agent judges liveness by the first nominated pair only, so a browser that switches
/// pairs would read as disconnected after 5 s and failed after 30 s while media flows. Consent
/// and path selection live in [`crate::routing::IcePaths`] instead.
pub fn build_peer_connection(
    _participant: ParticipantId,
    role: TransportRole,
    metrics: Arc<SfuMetrics>,
    now: Instant,
) -> Result<RTCPeerConnection, Error> {
    let setting_engine = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_timeouts(Some(Duration::ZERO), Some(Duration::ZERO), None)
        // The server is the DTLS server on both transports: `a=setup:passive` in answers.
        .with_answering_dtls_role(RTCDtlsRole::Server)
        // AEAD-GCM first: several times cheaper per packet than AES-CM + HMAC-SHA1.
        .with_srtp_protection_profiles(vec![
            rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ])
        .build();
    let mut me = media_engine(role)?;
    let registry = Registry::new()
        .with(
            Slot::NackResponder,
            rtc::interceptor::NackResponderBuilder::new()
                .with_size(NACK_HISTORY_PACKETS)
                .build(),
        )
        .with(
            Slot::NackGenerator,
            rtc::interceptor::NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build(),
        );
    let registry = configure_rtcp_reports(registry);
    // Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc) only on
    // the publisher leg, where the browser's send-side estimator needs it. On subscriber legs
    // nothing would read the browsers' feedback (no server-side estimator yet), and stamping
    // the extension costs 11 % of the per-packet work (docs/performance.md).
    let registry = match role {
        TransportRole::Publisher => configure_twcc(registry, &mut me)?,
        TransportRole::Subscriber => registry,
    };
    let registry = registry
        .with(Slot::Custom(14_000), KeyframeRequestTap::default())
        .with(
            Slot::Custom(NACK_AGE_FILTER_SLOT),
            NackAgeFilter::new(metrics),
        );
    RTCPeerConnectionBuilder::new()
        .with_setting_engine(setting_engine)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(now)
}

/// The associated types and `poll_read`/`poll_write`/`close` of an interceptor that queues what
/// its `handle_*` pass on in `reads`/`writes` (every interceptor here passes each packet
/// through, possibly changed).
macro_rules! queued_io {
    () => {
        type Rout = TaggedPacket;
        type Wout = TaggedPacket;
        type Eout = ();
        type Error = Error;
        type Time = Instant;

        fn poll_read(&mut self) -> Option<TaggedPacket> {
            self.reads.pop_front()
        }
        fn poll_write(&mut self) -> Option<TaggedPacket> {
            self.writes.pop_front()
        }
        fn close(&mut self) -> Result<(), Error> {
            self.reads.clear();
            self.writes.clear();
            Ok(())
        }
    };
}

/// An interceptor that marks inbound RTCP carrying PLI or FIR (RFC 4585 section 6.3.1,
/// RFC 5104 section 4.3.1), REMB (draft-alvestrand-rmcat-remb) or receiver reports (RFC 3550
/// section 6.4.2) for delivery to the application, so the SFU can relay a subscriber's keyframe
/// request to the publisher and read its bandwidth estimate and loss. Everything else passes
/// untouched.
#[derive(Default)]
pub struct KeyframeRequestTap {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestTap {
    queued_io!();

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let InterceptorPacket::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>()
                    || any.is::<FullIntraRequest>()
                    || any.is::<ReceiverEstimatedMaximumBitrate>()
                    || any.is::<rtc::rtcp::receiver_report::ReceiverReport>()
            }) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }
}

impl Interceptor for KeyframeRequestTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Wire-ward of the NACK responder (4 000): the filter reads a NACK before the responder does,
/// and sees every departing packet, after the responder has buffered it.
const NACK_AGE_FILTER_SLOT: usize = 3_500;

/// Oldest packet the server retransmits, ms since it was first sent. Chromium's own sender keeps
/// packets max(1 s, 3 × RTT) for the same reason (`RtpPacketHistory`): a retransmission older
/// than that arrives after the receiver has given the frame up.
pub const MAX_RETRANSMIT_AGE: Duration = Duration::from_millis(1_000);

/// Least time between two retransmissions of one packet to one subscriber. A receiver NACKs a
/// missing packet again after about one round trip when the retransmission has not arrived
/// (Chromium's `NackRequester`); on a short path that is a few ms, so without this every NACK
/// repeated before the first retransmission lands would be answered again (DEPENDENCY-NOTES: up to
/// 60 retransmissions per lost packet). A retransmission that is itself lost is repaired after
/// this long.
pub const RETRANSMIT_HOLDOFF: Duration = Duration::from_millis(200);

/// Departure times remembered per outgoing stream (a power of two above
/// [`NACK_HISTORY_PACKETS`]: a sequence number not found here is not in the responder's buffer
/// either).
const SENT_RING: usize = 512;

/// An interceptor that strips from inbound NACKs (RFC 4585 section 6.2.1) every sequence number
/// first sent more than [`MAX_RETRANSMIT_AGE`] ago, before the NACK responder sees them. Without
/// it, a subscriber whose path died for a few seconds (a network change, then an ICE restart)
/// NACKs the whole gap on its return and gets the responder's entire history (256 stale packets)
/// in one burst; Chromium then holds the fresh frames behind them for seconds (measured: the
/// first keyframe decoded at once, the next frames 3 s later, all at once). Per departing packet:
/// one lookup in a short list of streams and one store, no allocation; a NACK is rebuilt only
/// when it names stale packets.
///
/// It also answers each lost packet once per [`RETRANSMIT_HOLDOFF`] at most (a NACK repeated
/// before the retransmission could arrive is not answered again), and counts the
/// retransmissions that leave (`confab_rtp_retransmitted_packets_total`).
#[derive(Default)]
pub struct NackAgeFilter {
    /// Per local SSRC, at `seq % SENT_RING`: the sequence number, its first departure and its
    /// latest retransmission.
    streams: Vec<(u32, Box<[SentPacket]>)>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
    /// Where retransmissions are counted (`None` in unit tests).
    metrics: Option<Arc<SfuMetrics>>,
}

/// What [`NackAgeFilter`] remembers of one departed packet.
#[derive(Debug, Clone, Copy, Default)]
struct SentPacket {
    seq: u16,
    first: Option<Instant>,
    resent: Option<Instant>,
    /// A NACK named it (counted once in `confab_rtp_nacked_packets_total`).
    nacked: bool,
}

impl NackAgeFilter {
    /// A filter counting its retransmissions in `metrics`.
    pub fn new(metrics: Arc<SfuMetrics>) -> Self {
        Self {
            metrics: Some(metrics),
            ..Self::default()
        }
    }

    fn sent(&self, ssrc: u32, seq: u16) -> Option<SentPacket> {
        let (_, ring) = self.streams.iter().find(|(s, _)| *s == ssrc)?;
        let p = ring[usize::from(seq) % SENT_RING];
        (p.seq == seq && p.first.is_some()).then_some(p)
    }

    /// The NACK with only the sequence numbers still worth resending at `now` (first sent at
    /// most [`MAX_RETRANSMIT_AGE`] ago, not resent in the last [`RETRANSMIT_HOLDOFF`]), or
    /// `None` when it names none. Streams this filter does not know pass untouched.
    fn fresh(&mut self, nack: &TransportLayerNack, now: Instant) -> Option<TransportLayerNack> {
        let Some(i) = self.streams.iter().position(|(s, _)| *s == nack.media_ssrc) else {
            return Some(nack.clone());
        };
        let mut keep = Vec::new();
        for pair in &nack.nacks {
            for seq in pair.packet_list() {
                let Some(p) = self.sent(nack.media_ssrc, seq) else {
                    continue;
                };
                if !p.nacked {
                    self.streams[i].1[usize::from(seq) % SENT_RING].nacked = true;
                    if let Some(m) = &self.metrics {
                        SfuMetrics::inc(&m.rtp_nacked);
                    }
                }
                let young = p
                    .first
                    .is_some_and(|at| now.saturating_duration_since(at) <= MAX_RETRANSMIT_AGE);
                let rested = p
                    .resent
                    .is_none_or(|at| now.saturating_duration_since(at) >= RETRANSMIT_HOLDOFF);
                if young && rested {
                    keep.push(seq);
                }
            }
        }
        (!keep.is_empty()).then(|| TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(&keep),
        })
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackAgeFilter {
    queued_io!();

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let InterceptorPacket::Rtcp(packets) = &mut msg.message.packet {
            if packets
                .iter()
                .any(|p| p.as_any().is::<TransportLayerNack>())
            {
                let now = msg.now;
                let mut out: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::with_capacity(packets.len());
                for p in packets.drain(..) {
                    match p.as_any().downcast_ref::<TransportLayerNack>() {
                        Some(nack) => {
                            if let Some(fresh) = self.fresh(nack, now) {
                                out.push(Box::new(fresh));
                            }
                        }
                        None => out.push(p),
                    }
                }
                if out.is_empty() {
                    return Ok(()); // nothing left worth reading
                }
                *packets = out;
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let InterceptorPacket::Rtp(rtp) = &msg.message.packet {
            let (ssrc, seq) = (rtp.header.ssrc, rtp.header.sequence_number);
            if let Some((_, ring)) = self.streams.iter_mut().find(|(s, _)| *s == ssrc) {
                let slot = &mut ring[usize::from(seq) % SENT_RING];
                if !msg.message.has(&Attribute::Retransmission) {
                    *slot = SentPacket {
                        seq,
                        first: Some(msg.now),
                        resent: None,
                        nacked: false,
                    };
                } else {
                    if slot.seq == seq {
                        slot.resent = Some(msg.now);
                    }
                    if let Some(m) = &self.metrics {
                        SfuMetrics::inc(&m.rtp_retransmitted);
                    }
                }
            }
        }
        self.writes.push_back(msg);
        Ok(())
    }
}

impl Interceptor for NackAgeFilter {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if !self.streams.iter().any(|(s, _)| *s == info.ssrc) {
            self.streams.push((
                info.ssrc,
                vec![SentPacket::default(); SENT_RING].into_boxed_slice(),
            ));
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.retain(|(s, _)| *s != info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_the_sdp() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123\r\n";
        let c = IceCredentials::from_sdp(sdp).expect("both attributes");
        assert_eq!(c.ufrag, "abcd");
        assert_eq!(c.pwd, "0123456789abcdef0123");
        assert!(
            !format!("{c:?}").contains("0123456789"),
            "the password is never printed"
        );
        assert!(IceCredentials::from_sdp("v=0\r\na=ice-ufrag:x\r\n").is_none());
    }

    fn tagged(now: Instant, packet: InterceptorPacket) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: Default::default(),
            message: rtc::interceptor::AttributedPacket::new(packet),
        }
    }

    fn rtp(ssrc: u32, seq: u16) -> InterceptorPacket {
        let mut p = rtc::rtp::Packet::default();
        p.header.version = 2;
        p.header.ssrc = ssrc;
        p.header.sequence_number = seq;
        InterceptorPacket::Rtp(p)
    }

    fn nack(ssrc: u32, seqs: &[u16]) -> InterceptorPacket {
        InterceptorPacket::Rtcp(vec![Box::new(TransportLayerNack {
            sender_ssrc: 9,
            media_ssrc: ssrc,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        })])
    }

    fn nacked(msg: Option<TaggedPacket>) -> Vec<u16> {
        let Some(msg) = msg else { return vec![] };
        let InterceptorPacket::Rtcp(ps) = msg.message.packet else {
            panic!("rtcp")
        };
        ps.iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
            .flat_map(|n| n.nacks.iter().flat_map(|pair| pair.packet_list()))
            .collect()
    }

    #[test]
    fn a_lost_packet_is_resent_once_per_holdoff_however_often_it_is_nacked() {
        let t0 = Instant::now();
        let metrics = Arc::new(SfuMetrics::default());
        let mut f = NackAgeFilter::new(metrics.clone());
        f.bind_local_stream(&StreamInfo {
            ssrc: 1,
            ..Default::default()
        });
        for seq in 1..=10 {
            f.handle_write(tagged(t0, rtp(1, seq))).unwrap();
        }
        // The receiver NACKs 5; the responder resends it.
        let t1 = t0 + Duration::from_millis(20);
        f.handle_read(tagged(t1, nack(1, &[5]))).unwrap();
        assert_eq!(nacked(f.poll_read()), vec![5]);
        let mut resent = tagged(t1, rtp(1, 5));
        resent.message.add(Attribute::Retransmission);
        f.handle_write(resent).unwrap();
        assert_eq!(
            metrics
                .rtp_retransmitted
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            metrics
                .rtp_nacked
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // NACKed again a round trip later (the retransmission is on its way): not resent; 6 is.
        f.handle_read(tagged(t1 + Duration::from_millis(5), nack(1, &[5, 6])))
            .unwrap();
        assert_eq!(nacked(f.poll_read()), vec![6]);
        f.handle_read(tagged(t1 + RETRANSMIT_HOLDOFF / 2, nack(1, &[5])))
            .unwrap();
        assert!(f.poll_read().is_none(), "still within the holdoff");
        // The retransmission was lost too: after the holdoff it is resent once more.
        f.handle_read(tagged(t1 + RETRANSMIT_HOLDOFF, nack(1, &[5])))
            .unwrap();
        assert_eq!(nacked(f.poll_read()), vec![5]);
    }

    #[test]
    fn nacks_for_packets_older_than_the_retransmit_age_never_reach_the_responder() {
        let t0 = Instant::now();
        let mut f = NackAgeFilter::default();
        f.bind_local_stream(&StreamInfo {
            ssrc: 1,
            ..Default::default()
        });
        for seq in 1..=10 {
            f.handle_write(tagged(t0, rtp(1, seq))).unwrap();
        }
        let later = t0 + Duration::from_secs(2);
        for seq in 11..=20 {
            f.handle_write(tagged(later, rtp(1, seq))).unwrap();
        }
        while f.poll_write().is_some() {}
        let now = later + Duration::from_millis(200);
        // Mixed: only the fresh ones remain.
        f.handle_read(tagged(now, nack(1, &[5, 6, 15, 16])))
            .unwrap();
        assert_eq!(nacked(f.poll_read()), vec![15, 16]);
        // Only stale ones: the NACK is gone.
        f.handle_read(tagged(now, nack(1, &[3]))).unwrap();
        assert!(f.poll_read().is_none());
        // Never sent (or overwritten in the ring): not resent either.
        f.handle_read(tagged(now, nack(1, &[200]))).unwrap();
        assert!(f.poll_read().is_none());
        // A stream the filter does not track passes untouched.
        f.handle_read(tagged(now, nack(7, &[1, 2]))).unwrap();
        assert_eq!(nacked(f.poll_read()), vec![1, 2]);
        // Other RTCP passes untouched.
        f.handle_read(tagged(
            now,
            InterceptorPacket::Rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 9,
                media_ssrc: 1,
            })]),
        ))
        .unwrap();
        assert!(f.poll_read().is_some());
    }

    #[test]
    fn a_peer_connection_builds_with_the_sfu_configuration() {
        build_peer_connection(
            ParticipantId(1),
            TransportRole::Publisher,
            Arc::default(),
            Instant::now(),
        )
        .expect("builds");
    }
}
