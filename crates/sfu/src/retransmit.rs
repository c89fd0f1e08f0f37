//! Loss repair towards subscribers: one packet cache per published track, and NACKs answered
//! from it (RFC 4585 section 6.2.1 generic NACK).
//!
//! Every published track keeps the packets it received in a [`PacketCache`] (about 1 s of
//! video at the bitrates a browser sends, audio too), once, whatever the number of
//! subscribers. Every downtrack keeps a [`SentLog`]: for each sequence number it sent, which
//! source packet it was and how it was rewritten (timestamp, payload type, VP8 picture id).
//! A subscriber's NACK is answered by rebuilding the packet from the two: the same sequence
//! number, timestamp and payload the subscriber would have got, sent again on the media SSRC.
//!
//! Why the media SSRC and not RTX (RFC 4588): `rtc` 0.21's `RTCRtpSender::write_rtp` refuses
//! any SSRC that is not one of the sender's encodings' primary SSRCs, so an RTX stream cannot
//! be sent through its public API. A retransmission on the media SSRC is what RFC 4585 itself
//! describes; Chromium, Firefox, webrtc-rs, aiortc and werift all accept it. Its costs: the
//! receiver counts it in `packetsReceived`, and the sender report's packet count includes it.
//!
//! Rules (each a guard against a retransmission storm, DEPENDENCY-NOTES):
//! - a packet first sent more than [`MAX_RETRANSMIT_AGE`] ago is not sent again (the receiver
//!   has given its frame up; a subscriber back from a dead path would otherwise NACK seconds of
//!   packets at once);
//! - one packet is sent again to one subscriber at most once per [`RETRANSMIT_HOLDOFF`];
//! - a downtrack retransmits at most half as many packets as it forwards, with a burst of
//!   [`RETRANSMIT_BURST`] ([`SentLog`]'s credit);
//! - a simulcast downtrack sends again only packets of the layer it forwards now: after a layer
//!   switch, or while it sheds a layer its link cannot carry, the old layer's packets are
//!   useless (the decoder starts over at the new layer's keyframe) and, NACKed by the hundred
//!   after a link fills, would keep the bottleneck queue full in front of that keyframe.
//!
//! Per forwarded packet the cost is two stores (the cache slot, the log slot) and no
//! allocation; each cache and log allocates its ring once, at its first packet.

use crate::api::SfuMetrics;
use crate::codec::{vp8_ids, vp8_write_ids};
use crate::ids::MediaKind;
use bytes::{Bytes, BytesMut};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::header::Header;
use std::time::{Duration, Instant};

/// Oldest packet the server retransmits, ms since it was first sent. Chromium's own sender keeps
/// packets max(1 s, 3 × RTT) for the same reason (`RtpPacketHistory`): a retransmission older
/// than that arrives after the receiver has given the frame up.
pub const MAX_RETRANSMIT_AGE: Duration = Duration::from_millis(1_000);

/// Least time between two retransmissions of one packet to one subscriber. A receiver NACKs a
/// missing packet again after about one round trip when the retransmission has not arrived
/// (Chromium's `NackRequester`); on a short path that is a few ms, so without this every NACK
/// repeated before the first retransmission lands would be answered again (DEPENDENCY-NOTES: up
/// to 60 retransmissions per lost packet). A retransmission that is itself lost is repaired
/// after this long. 80 ms: below the 100 ms Chromium waits before NACKing a packet again when it
/// knows no round-trip time (a receive-only connection never measures one), so each of its
/// repeated NACKs for a retransmission that was lost too is answered; at 200 ms every second one
/// was refused and such a packet froze the subscriber's video for a further 100 ms or more.
pub const RETRANSMIT_HOLDOFF: Duration = Duration::from_millis(80);

/// Retransmissions a downtrack may send in one burst before its credit (half a packet per
/// packet forwarded) runs out.
pub const RETRANSMIT_BURST: u16 = 100;

/// Packets cached per video stream: 2.5 s of 100 packets/s video, 1 s of a 2.5 Mbit/s screen
/// share; older slots are overwritten (each holds its payload's buffer, about 1.2 KiB).
const VIDEO_CACHE_PACKETS: usize = 256;
/// Packets cached per audio stream: 1.3 s of 20 ms Opus frames.
const AUDIO_CACHE_PACKETS: usize = 64;
/// Streams (SSRCs) a track's cache holds: three simulcast layers and one left from before a
/// renegotiation; a new SSRC takes the slot of the stream written least recently.
const CACHE_STREAMS: usize = 4;

/// Slots of a cache stream or a sent log for a track of `kind`.
fn ring_packets(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => AUDIO_CACHE_PACKETS,
        MediaKind::Video => VIDEO_CACHE_PACKETS,
    }
}

/// One received packet as the cache keeps it: the fields a retransmission needs (header
/// extensions are not kept: the retransmission carries the leg's `sdes:mid` only).
#[derive(Debug, Clone)]
pub struct CachedPacket {
    /// The publisher's sequence number.
    pub seq: u16,
    /// RTP marker bit.
    pub marker: bool,
    /// The payload, shared with the packet as forwarded (reference-counted, not copied).
    pub payload: Bytes,
}

struct CacheStream {
    ssrc: u32,
    last_write: Instant,
    slots: Box<[Option<CachedPacket>]>,
}

/// The packets of one published track, by SSRC and sequence number (see the module docs).
pub struct PacketCache {
    capacity: usize,
    streams: Vec<CacheStream>,
}

impl PacketCache {
    /// An empty cache for a track of `kind` (rings are allocated at each SSRC's first packet).
    pub fn new(kind: MediaKind) -> Self {
        Self {
            capacity: ring_packets(kind),
            streams: Vec::new(),
        }
    }

    /// Keeps the packet `header`/`payload` as received from the publisher.
    pub fn insert(&mut self, header: &Header, payload: &Bytes, now: Instant) {
        let i = match self.streams.iter().position(|s| s.ssrc == header.ssrc) {
            Some(i) => i,
            None => self.add_stream(header.ssrc, now),
        };
        let s = &mut self.streams[i];
        s.last_write = now;
        let slot = usize::from(header.sequence_number) % s.slots.len();
        s.slots[slot] = Some(CachedPacket {
            seq: header.sequence_number,
            marker: header.marker,
            payload: payload.clone(),
        });
    }

    fn add_stream(&mut self, ssrc: u32, now: Instant) -> usize {
        let slots = vec![None; self.capacity].into_boxed_slice();
        let stream = CacheStream {
            ssrc,
            last_write: now,
            slots,
        };
        if self.streams.len() < CACHE_STREAMS {
            self.streams.push(stream);
            return self.streams.len() - 1;
        }
        let oldest = self
            .streams
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.last_write)
            .map_or(0, |(i, _)| i);
        self.streams[oldest] = stream;
        oldest
    }

    /// The cached packet `seq` of stream `ssrc`, if still held.
    pub fn get(&self, ssrc: u32, seq: u16) -> Option<&CachedPacket> {
        let s = self.streams.iter().find(|s| s.ssrc == ssrc)?;
        s.slots[usize::from(seq) % s.slots.len()]
            .as_ref()
            .filter(|p| p.seq == seq)
    }
}

/// What a downtrack remembers of one packet it sent: where it came from and how it was
/// rewritten, so a retransmission is the same packet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SentPacket {
    /// The sequence number the subscriber saw.
    pub out_seq: u16,
    /// The source stream (the [`PacketCache`] key, with `src_seq`).
    pub src_ssrc: u32,
    /// The publisher's sequence number.
    pub src_seq: u16,
    /// The timestamp the subscriber saw.
    pub out_ts: u32,
    /// The payload type on the subscriber leg.
    pub out_pt: u8,
    /// VP8 picture id and TL0PICIDX written into the payload (after a simulcast layer switch);
    /// `None`: the payload went out as received.
    pub vp8: Option<(u16, u8)>,
    first: Option<Instant>,
    resent: Option<Instant>,
    nacked: bool,
}

/// What [`SentLog::on_nack`] decided for one NACKed sequence number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NackAnswer {
    /// Send it again (then [`SentLog::resent`]).
    Resend(SentPacket),
    /// Not sent by this downtrack, or overwritten since.
    Unknown,
    /// First sent more than [`MAX_RETRANSMIT_AGE`] ago.
    Stale,
    /// Sent again less than [`RETRANSMIT_HOLDOFF`] ago.
    Resting,
    /// The downtrack's retransmission credit is spent.
    OverBudget,
    /// A packet of a simulcast layer the downtrack no longer forwards (it switched layers, or
    /// shed the layer on a full link): the subscriber's decoder starts over at the new layer's
    /// keyframe, so sending it again only takes link time that keyframe needs.
    Superseded,
}

/// Which of a downtrack's sent packets a NACK may still bring again ([`SentLog::on_nack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resendable {
    /// A track sent as one stream: any of them.
    All,
    /// A simulcast downtrack: only those of the layer with this source SSRC, the one it
    /// forwards now.
    Layer(u32),
    /// A simulcast downtrack that forwards no layer now (it sheds one, or has not started).
    None,
}

/// The packets one downtrack sent, by outgoing sequence number (see the module docs), and its
/// retransmission credit.
pub struct SentLog {
    slots: Box<[SentPacket]>,
    /// Half-packets of retransmission allowed now: +1 per packet forwarded, −2 per packet sent
    /// again, at most 2 × [`RETRANSMIT_BURST`].
    credit: u16,
    capacity: usize,
    /// Video: packets recorded and packets NACKed for the first time since
    /// [`Self::take_counts`] (audio logs count nothing: browsers do not NACK Opus).
    counts: Option<(u32, u32)>,
}

impl SentLog {
    /// An empty log for a downtrack of `kind` (its ring is allocated at the first packet).
    pub fn new(kind: MediaKind) -> Self {
        Self {
            slots: Box::new([]),
            credit: 2 * RETRANSMIT_BURST,
            capacity: ring_packets(kind),
            counts: (kind == MediaKind::Video).then_some((0, 0)),
        }
    }

    /// Records a packet sent for the first time: `src` is `(ssrc, sequence number)` as the
    /// publisher sent it, `out` `(sequence number, timestamp, payload type)` as it left, `vp8`
    /// the picture id and TL0PICIDX written into its payload, if any.
    pub fn record(
        &mut self,
        src: (u32, u16),
        out: (u16, u32, u8),
        vp8: Option<(u16, u8)>,
        now: Instant,
    ) {
        let (out_seq, out_ts, out_pt) = out;
        if self.slots.is_empty() {
            self.slots = vec![SentPacket::default(); self.capacity].into_boxed_slice();
        }
        self.credit = (self.credit + 1).min(2 * RETRANSMIT_BURST);
        if let Some((sent, _)) = &mut self.counts {
            *sent = sent.saturating_add(1);
        }
        let n = self.slots.len();
        self.slots[usize::from(out_seq) % n] = SentPacket {
            out_seq,
            src_ssrc: src.0,
            src_seq: src.1,
            out_ts,
            out_pt,
            vp8,
            first: Some(now),
            resent: None,
            nacked: false,
        };
    }

    fn slot(&mut self, seq: u16) -> Option<&mut SentPacket> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let p = &mut self.slots[usize::from(seq) % n];
        (p.out_seq == seq && p.first.is_some()).then_some(p)
    }

    /// The subscriber NACKed `seq` at `now`. `first_nack` is set when this is the first NACK
    /// naming it (for `confab_rtp_nacked_packets_total`). `resendable`: which packets the
    /// downtrack may still send again (a packet outside it is [`NackAnswer::Superseded`]).
    pub fn on_nack(
        &mut self,
        seq: u16,
        now: Instant,
        resendable: Resendable,
        first_nack: &mut bool,
    ) -> NackAnswer {
        let credit = self.credit;
        let Some(p) = self.slot(seq) else {
            return NackAnswer::Unknown;
        };
        *first_nack = !p.nacked;
        p.nacked = true;
        let p = *p;
        if let (true, Some((_, nacked))) = (*first_nack, &mut self.counts) {
            *nacked = nacked.saturating_add(1);
        }
        let superseded = match resendable {
            Resendable::All => false,
            Resendable::Layer(ssrc) => ssrc != p.src_ssrc,
            Resendable::None => true,
        };
        if superseded {
            return NackAnswer::Superseded;
        }
        if p.first
            .is_some_and(|at| now.saturating_duration_since(at) > MAX_RETRANSMIT_AGE)
        {
            return NackAnswer::Stale;
        }
        if p.resent
            .is_some_and(|at| now.saturating_duration_since(at) < RETRANSMIT_HOLDOFF)
        {
            return NackAnswer::Resting;
        }
        if credit < 2 {
            return NackAnswer::OverBudget;
        }
        NackAnswer::Resend(p)
    }

    /// Video packets recorded, and packets NACKed for the first time, since the last call
    /// (`(0, 0)` for audio): the subscriber's loss as its NACKs show it
    /// ([`crate::bwe::SubscriberBandwidth::on_nacks`]).
    pub fn take_counts(&mut self) -> (u32, u32) {
        self.counts.as_mut().map_or((0, 0), std::mem::take)
    }

    /// `seq` was sent again at `now`.
    pub fn resent(&mut self, seq: u16, now: Instant) {
        self.credit = self.credit.saturating_sub(2);
        if let Some(p) = self.slot(seq) {
            p.resent = Some(now);
        }
    }
}

/// The packet to send again for `sent`, from the source packet `cached`, on the leg's
/// `out_ssrc`, with the leg's `sdes:mid` extension `(id, value)` when it has one.
pub fn rebuild(
    sent: &SentPacket,
    cached: &CachedPacket,
    out_ssrc: u32,
    mid: Option<(u8, &Bytes)>,
) -> rtc::rtp::Packet {
    let payload = match sent.vp8 {
        Some((pic, tl0)) => {
            let mut b = BytesMut::from(&cached.payload[..]);
            let ids = vp8_ids(&cached.payload);
            vp8_write_ids(&mut b, &ids, pic, tl0);
            b.freeze()
        }
        None => cached.payload.clone(),
    };
    let mut header = Header {
        version: 2,
        marker: cached.marker,
        payload_type: sent.out_pt,
        sequence_number: sent.out_seq,
        timestamp: sent.out_ts,
        ssrc: out_ssrc,
        ..Default::default()
    };
    if let Some((id, value)) = mid {
        let _ = header.set_extension(id, value.clone());
        // Marshalling pads the extension block itself (as `RtpRewriter` leaves it).
        header.extensions_padding = 0;
    }
    rtc::rtp::Packet { header, payload }
}

impl crate::room::Room {
    /// Answers the generic NACKs (RFC 4585 section 6.2.1) in one RTCP compound packet that
    /// participant `idx` sent on its subscriber transport: each NACKed packet still worth
    /// sending ([`SentLog::on_nack`]) is rebuilt from its publisher's [`PacketCache`] and sent
    /// again. Returns the packets sent again. Allocates per NACK, never per forwarded packet.
    pub(crate) fn answer_nacks(
        &mut self,
        idx: usize,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
        metrics: &SfuMetrics,
    ) -> u64 {
        let mut resent = 0;
        for nack in packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
        {
            resent += self.answer_nack(idx, nack, now, metrics);
        }
        resent
    }

    fn answer_nack(
        &mut self,
        idx: usize,
        nack: &TransportLayerNack,
        now: Instant,
        metrics: &SfuMetrics,
    ) -> u64 {
        let Some(di) = self.participants[idx]
            .downtracks
            .iter()
            .position(|d| d.rewriter.out_ssrc() == nack.media_ssrc)
        else {
            return 0;
        };
        // What to send again, decided by the downtrack's log.
        let mut wanted: Vec<SentPacket> = Vec::new();
        {
            let dt = &mut self.participants[idx].downtracks[di];
            let resendable = dt.layer.resendable();
            for pair in &nack.nacks {
                for seq in pair.packet_list() {
                    let mut first = false;
                    let answer = dt.sent.on_nack(seq, now, resendable, &mut first);
                    if first {
                        SfuMetrics::inc(&metrics.rtp_nacked);
                    }
                    match answer {
                        NackAnswer::Resend(p) => {
                            // Counted against the credit now, so one NACK cannot overdraw it.
                            dt.sent.resent(seq, now);
                            wanted.push(p);
                        }
                        NackAnswer::Unknown
                        | NackAnswer::Stale
                        | NackAnswer::Resting
                        | NackAnswer::Superseded => {}
                        NackAnswer::OverBudget => SfuMetrics::inc(&metrics.nacks_over_budget),
                    }
                }
            }
        }
        if wanted.is_empty() {
            return 0;
        }
        // The source packets, from the publisher's cache.
        let track = self.participants[idx].downtracks[di].track.clone();
        let Some(pi) = self.index_of(track.participant) else {
            return 0;
        };
        let Some(published) = self.participants[pi]
            .published
            .iter()
            .find(|p| p.mid == track.mid)
        else {
            return 0;
        };
        let dt = &self.participants[idx].downtracks[di];
        let out: Vec<rtc::rtp::Packet> = wanted
            .iter()
            .filter_map(|w| {
                let cached = published.cache.get(w.src_ssrc, w.src_seq)?;
                Some(rebuild(
                    w,
                    cached,
                    dt.rewriter.out_ssrc(),
                    dt.rewriter.mid_extension(),
                ))
            })
            .collect();
        let p = &mut self.participants[idx];
        let sender = p.downtracks[di].sender;
        let Some(sub) = p.subscriber.as_mut() else {
            return 0;
        };
        if !sub.can_send() {
            return 0;
        }
        let mut sent = 0;
        for packet in out {
            let ok = sub
                .pc
                .rtp_sender(sender)
                .is_some_and(|mut s| s.write_rtp(now, packet).is_ok());
            if ok {
                sent += 1;
                SfuMetrics::inc(&metrics.rtp_retransmitted);
                sub.dirty = true;
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ssrc: u32, seq: u16) -> Header {
        Header {
            version: 2,
            ssrc,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            payload_type: 96,
            ..Default::default()
        }
    }

    /// What left for `seq`: `(seq, timestamp, payload type)`.
    fn out(seq: u16) -> (u16, u32, u8) {
        (seq, u32::from(seq) * 3000, 96)
    }

    fn log_with(seqs: std::ops::RangeInclusive<u16>, at: Instant) -> SentLog {
        let mut log = SentLog::new(MediaKind::Video);
        for seq in seqs {
            log.record((1, seq + 1000), out(seq), None, at);
        }
        log
    }

    #[test]
    fn the_cache_holds_each_stream_by_sequence_number_and_forgets_what_was_overwritten() {
        let t0 = Instant::now();
        let mut c = PacketCache::new(MediaKind::Video);
        for seq in 0..600u16 {
            c.insert(&header(1, seq), &Bytes::from(vec![seq as u8]), t0);
        }
        assert_eq!(c.get(1, 599).map(|p| p.payload[0]), Some(599u16 as u8));
        assert!(c.get(1, 50).is_none(), "overwritten by 306");
        assert!(c.get(2, 599).is_none(), "another stream");
        // A fifth stream replaces the one written least recently.
        for (i, ssrc) in [2, 3, 4, 5].into_iter().enumerate() {
            c.insert(
                &header(ssrc, 9),
                &Bytes::new(),
                t0 + Duration::from_millis(i as u64 + 1),
            );
        }
        assert!(c.get(1, 599).is_none());
        assert!(c.get(5, 9).is_some() && c.get(2, 9).is_some());
    }

    #[test]
    fn a_lost_packet_is_resent_once_per_holdoff_however_often_it_is_nacked() {
        let t0 = Instant::now();
        let mut log = log_with(1..=10, t0);
        let t1 = t0 + Duration::from_millis(20);
        let mut first = false;
        let NackAnswer::Resend(p) = log.on_nack(5, t1, Resendable::All, &mut first) else {
            panic!("resend")
        };
        assert!(first);
        assert_eq!(
            (p.out_seq, p.src_ssrc, p.src_seq, p.out_ts),
            (5, 1, 1005, 15_000)
        );
        log.resent(5, t1);
        // NACKed again a round trip later (the retransmission is on its way): not resent.
        assert_eq!(
            log.on_nack(
                5,
                t1 + Duration::from_millis(5),
                Resendable::All,
                &mut first
            ),
            NackAnswer::Resting
        );
        assert!(!first, "counted once");
        assert!(matches!(
            log.on_nack(6, t1, Resendable::All, &mut first),
            NackAnswer::Resend(_)
        ));
        assert_eq!(
            log.on_nack(5, t1 + RETRANSMIT_HOLDOFF / 2, Resendable::All, &mut first),
            NackAnswer::Resting
        );
        // The retransmission was lost too: after the holdoff it is resent once more.
        assert!(matches!(
            log.on_nack(5, t1 + RETRANSMIT_HOLDOFF, Resendable::All, &mut first),
            NackAnswer::Resend(_)
        ));
    }

    #[test]
    fn packets_of_a_layer_the_downtrack_left_or_shed_are_not_resent() {
        let t0 = Instant::now();
        // Sequence numbers 1..=10 came from layer SSRC 1 (see `log_with`).
        let mut log = log_with(1..=10, t0);
        let now = t0 + Duration::from_millis(20);
        let mut first = false;
        assert!(matches!(
            log.on_nack(5, now, Resendable::Layer(1), &mut first),
            NackAnswer::Resend(_)
        ));
        assert!(first);
        // Switched to layer 2: the old layer's packets are not wanted any more.
        assert_eq!(
            log.on_nack(6, now, Resendable::Layer(2), &mut first),
            NackAnswer::Superseded
        );
        assert!(first, "still counted as NACKed");
        // Shed on a full link, waiting for a lower layer's keyframe: nothing of it is resent.
        assert_eq!(
            log.on_nack(7, now, Resendable::None, &mut first),
            NackAnswer::Superseded
        );
        // Ten sent, three NACKed once each (a repeat NACK of 5 is not counted again).
        log.on_nack(5, now, Resendable::All, &mut first);
        assert_eq!(log.take_counts(), (10, 3));
        assert_eq!(log.take_counts(), (0, 0), "taken");
    }

    #[test]
    fn packets_older_than_the_retransmit_age_or_never_sent_are_not_resent() {
        let t0 = Instant::now();
        let mut log = log_with(1..=10, t0);
        let later = t0 + Duration::from_secs(2);
        for seq in 11..=20 {
            log.record((1, seq), out(seq), None, later);
        }
        let now = later + Duration::from_millis(200);
        let mut first = false;
        assert_eq!(
            log.on_nack(5, now, Resendable::All, &mut first),
            NackAnswer::Stale
        );
        assert!(matches!(
            log.on_nack(15, now, Resendable::All, &mut first),
            NackAnswer::Resend(_)
        ));
        assert_eq!(
            log.on_nack(300, now, Resendable::All, &mut first),
            NackAnswer::Unknown
        );
        assert_eq!(
            SentLog::new(MediaKind::Audio).on_nack(1, now, Resendable::All, &mut first),
            NackAnswer::Unknown
        );
    }

    #[test]
    fn retransmissions_stop_at_the_burst_and_come_back_with_forwarded_packets() {
        let t0 = Instant::now();
        let mut log = log_with(0..=499, t0);
        let mut first = false;
        let mut sent = 0;
        for seq in 0..=499 {
            if let NackAnswer::Resend(_) = log.on_nack(seq, t0, Resendable::All, &mut first) {
                log.resent(seq, t0);
                sent += 1;
            }
        }
        assert_eq!(sent, RETRANSMIT_BURST);
        assert_eq!(
            log.on_nack(499, t0, Resendable::All, &mut first),
            NackAnswer::OverBudget
        );
        // Two more forwarded packets buy one retransmission.
        log.record((1, 2000), out(500), None, t0);
        log.record((1, 2001), out(501), None, t0);
        assert!(matches!(
            log.on_nack(499, t0, Resendable::All, &mut first),
            NackAnswer::Resend(_)
        ));
    }

    #[test]
    fn a_rebuilt_packet_is_the_packet_the_subscriber_missed() {
        let cached = CachedPacket {
            seq: 1005,
            marker: true,
            // VP8 descriptor with a 15-bit picture id (X, I, M) and TL0PICIDX (L).
            payload: Bytes::from(vec![0x90, 0xc0, 0x80 | 0x01, 0x23, 0x07, 0xaa]),
        };
        let sent = SentPacket {
            out_seq: 5,
            src_ssrc: 1,
            src_seq: 1005,
            out_ts: 15_000,
            out_pt: 100,
            vp8: Some((0x0456, 9)),
            ..Default::default()
        };
        let mid = Bytes::from_static(b"3");
        let p = rebuild(&sent, &cached, 77, Some((4, &mid)));
        assert_eq!(
            (
                p.header.ssrc,
                p.header.sequence_number,
                p.header.timestamp,
                p.header.payload_type
            ),
            (77, 5, 15_000, 100)
        );
        assert!(p.header.marker);
        assert_eq!(p.header.get_extension(4).as_deref(), Some(&b"3"[..]));
        let ids = vp8_ids(&p.payload);
        assert_eq!(ids.picture_id.map(|(_, _, v)| v), Some(0x0456));
        assert_eq!(ids.tl0picidx.map(|(_, v)| v), Some(9));
        assert_eq!(&cached.payload[..2], &p.payload[..2]);
        // No picture-id rewrite: the very payload, shared.
        let plain = rebuild(&SentPacket { vp8: None, ..sent }, &cached, 77, None);
        assert_eq!(plain.payload.as_ptr(), cached.payload.as_ptr());
        assert!(!plain.header.extension);
    }
}
