//! Building the server side of a transport: an `rtc` peer connection configured as an SFU needs
//! it (ICE-lite, DTLS server, AEAD-GCM SRTP first, the codecs and header extensions we forward,
//! NACK/RTCP-report/TWCC interceptors, and a tap that lets keyframe requests reach us).

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
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
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
    // NACKs from subscribers are answered by the core from each published track's packet cache
    // (`crate::retransmit`), not by `rtc`'s per-leg NACK responder; NACKs towards publishers
    // come from `rtc`'s generator, capped.
    let registry = match role {
        TransportRole::Publisher => Registry::new().with(
            Slot::NackGenerator,
            rtc::interceptor::NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build(),
        ),
        TransportRole::Subscriber => Registry::new(),
    };
    let registry = configure_rtcp_reports(registry);
    // Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc) only on
    // the publisher leg, where the browser's send-side estimator needs it. On subscriber legs
    // nothing would read the browsers' feedback (no server-side estimator yet), and stamping
    // the extension costs 11 % of the per-packet work (docs/performance.md).
    let registry = match role {
        TransportRole::Publisher => configure_twcc(registry, &mut me)?,
        TransportRole::Subscriber => registry,
    };
    let registry = registry.with(Slot::Custom(14_000), KeyframeRequestTap::default());
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
/// RFC 5104 section 4.3.1), generic NACK (RFC 4585 section 6.2.1), REMB
/// (draft-alvestrand-rmcat-remb) or receiver reports (RFC 3550 section 6.4.2) for delivery to
/// the application, so the SFU can relay a subscriber's keyframe request to the publisher,
/// answer its NACKs from the packet cache and read its bandwidth estimate and loss. Everything
/// else passes untouched.
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
                    || any.is::<TransportLayerNack>()
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

    #[test]
    fn a_peer_connection_builds_with_the_sfu_configuration() {
        build_peer_connection(ParticipantId(1), TransportRole::Publisher, Instant::now())
            .expect("builds");
    }
}
