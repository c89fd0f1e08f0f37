//! Holding a single-stream video publisher under its weakest subscriber's link
//! ([`crate::bwe::UplinkCap`]): the REMB it is sent, once per layer tick.

use crate::api::SfuMetrics;
use crate::ids::MediaKind;
use crate::room::Room;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use std::time::Instant;
use tracing::debug;

impl Room {
    /// For every published video track sent as one stream (no simulcast layers), decides its
    /// [`crate::bwe::UplinkCap`] from the links of the participants that receive it (an open,
    /// enabled downtrack) and sends the publisher the resulting REMB, if any. Subscribers' link
    /// states are read once per tick. Allocates per tick, never per packet.
    pub(crate) fn cap_uplinks(&mut self, now: Instant) {
        // Per participant: its link shows congestion now, and its fresh estimate.
        let links: Vec<(bool, Option<u64>)> = self
            .participants
            .iter_mut()
            .map(|p| (p.bandwidth.link_congested(now), p.bandwidth.estimate(now)))
            .collect();
        for pi in 0..self.participants.len() {
            let publisher = self.participants[pi].id;
            for ti in 0..self.participants[pi].published.len() {
                let t = &self.participants[pi].published[ti];
                if t.source.kind() != MediaKind::Video || !t.layers.is_empty() {
                    continue;
                }
                let mut congested = false;
                let mut lowest: Option<u64> = None;
                for (si, s) in self.participants.iter().enumerate() {
                    let receives = si != pi
                        && s.downtracks.iter().any(|d| {
                            d.track.participant == publisher
                                && d.track.mid == t.mid
                                && d.is_open()
                                && d.settings.enabled
                        });
                    if !receives {
                        continue;
                    }
                    let (c, est) = links[si];
                    congested |= c;
                    if let Some(e) = est {
                        lowest = Some(lowest.map_or(e, |l| l.min(e)));
                    }
                }
                let p = &mut self.participants[pi];
                let t = &mut p.published[ti];
                let Some(bps) = t.uplink.tick(now, congested, lowest) else {
                    continue;
                };
                let (Some(receiver), false) = (t.receiver, t.ssrcs.is_empty()) else {
                    continue;
                };
                let remb = ReceiverEstimatedMaximumBitrate {
                    sender_ssrc: 0,
                    bitrate: bps as f32,
                    ssrcs: t.ssrcs.clone(),
                };
                debug!(participant = %p.id, mid = %t.mid, bps, "publisher bitrate cap (REMB)");
                if let Some(mut r) = p.publisher.pc.rtp_receiver(receiver) {
                    match r.write_rtcp(now, vec![Box::new(remb)]) {
                        Ok(()) => {
                            SfuMetrics::inc(&self.metrics.uplink_caps_sent);
                            p.publisher.dirty = true;
                        }
                        Err(e) => debug!(participant = %p.id, "REMB write failed: {e}"),
                    }
                }
            }
        }
    }
}
