//! Per-subscriber bandwidth: how much video one subscriber's link takes, from the receiver's own
//! estimate, and how far its simulcast layers must come down.
//!
//! Subscriber legs negotiate `goog-remb` (and no transport-wide congestion control), so the
//! browser runs its receive-side estimator (delay-based, over the `abs-send-time` extension; see
//! draft-alvestrand-rmcat-remb and draft-ietf-rmcat-gcc section 4) and reports its estimate in
//! REMB messages, at least once a second and at once when it falls. That estimate follows what
//! arrives (it grows to about 1.5 times the incoming rate, and falls to about 0.85 times it when
//! the path's queues grow), so it is read as a congestion *signal*, not as a capacity:
//!
//! - **Congestion**: the estimate fell below [`CONGESTED`] of its peak since the last change of
//!   plan, or more than [`LOSS_CONGESTED`] of the packets are lost, as the receiver reports it
//!   (RTCP receiver reports, RFC 3550 section 6.4.2) or as its NACKs show it
//!   ([`SubscriberBandwidth::on_nacks`]: retransmissions hide loss from the reports),
//!   whichever is more. A delay-based estimator stops falling once a bottleneck's queue is
//!   full and drops, so loss is the second signal, as in draft-ietf-rmcat-gcc section 6.
//!   Then the subscriber's cap comes down to the highest layer rank whose cost fits in [`HEADROOM`] of the estimate (and, under loss, in what is sent now
//!   times one minus half the loss); when the receiver still loses more than [`LOSS_PAUSE`] of
//!   the packets with the cap at the bottom for [`PAUSE_AFTER`] already, its video pauses.
//!   Audio is never touched.
//! - **Probing**: while the cap holds layers back and nothing is congested, the cap goes up one
//!   rank (or video resumes) every `backoff`; a probe followed by congestion within
//!   [`PROBE_WINDOW`] doubles the backoff (from [`PROBE_BACKOFF_MIN`] up to
//!   [`PROBE_BACKOFF_MAX`]), a probe that holds resets it. With no cap left, nothing limits.
//! - No estimate for [`ESTIMATE_STALE`] (a client without REMB): no limit.
//!
//! The caller measures what each choice costs (the layers' measured bitrates); this module only
//! decides. No I/O; time is passed in.

use std::time::{Duration, Instant};

/// The estimate counts as congested below this share of its peak since the last change.
pub const CONGESTED: f64 = 0.85;
/// Share of the estimate the planned video may use (the rest: audio, RTCP, retransmissions).
pub const HEADROOM: f64 = 0.85;
/// Congestion this soon after a probe means the probe failed.
pub const PROBE_WINDOW: Duration = Duration::from_secs(4);
/// Shortest wait between probes.
pub const PROBE_BACKOFF_MIN: Duration = Duration::from_secs(5);
/// Longest wait between probes (after repeated failures).
pub const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An estimate older than this is ignored (the cap is lifted).
pub const ESTIMATE_STALE: Duration = Duration::from_secs(5);
/// Fraction of packets lost (smoothed) above which the link counts as congested.
pub const LOSS_CONGESTED: f64 = 0.1;
/// Video pauses only when the lowest layers have not fitted for this long (the first fall of an
/// estimate overshoots while the bottleneck's queue drains).
pub const PAUSE_AFTER: Duration = Duration::from_secs(5);
/// Loss (smoothed) that, with the cap at the bottom for [`PAUSE_AFTER`], pauses video.
pub const LOSS_PAUSE: f64 = 0.2;
/// An estimate under this fraction of the video being sent means a full link: the layer above a
/// forced downswitch stops at once ([`SubscriberBandwidth::sheds`]).
pub const SHED_BELOW: f64 = 0.5;
/// After the subscriber's media moved to another ICE path (a network change, an ICE restart),
/// loss reports are ignored and congestion is not judged for this long: the first receiver
/// reports on the new path still count the packets that went into the dead one (RFC 3550
/// section 6.4.1, fraction lost since the previous report), and the estimate's peak belongs to
/// the old path.
pub const PATH_SETTLE: Duration = Duration::from_secs(3);

/// What the subscriber may receive now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allowance {
    /// The highest simulcast rank it may get (`None`: any).
    pub cap: Option<u8>,
    /// Its video is paused (not even the lowest layers fit).
    pub video_paused: bool,
}

/// One subscriber's bandwidth state.
#[derive(Debug, Clone)]
pub struct SubscriberBandwidth {
    estimate: Option<(u64, Instant)>,
    peak: u64,
    allowance: Allowance,
    last_probe: Option<Instant>,
    next_probe: Option<Instant>,
    backoff: Duration,
    /// Smoothed fraction of packets the receiver reports lost (0..1).
    loss: f64,
    /// Smoothed fraction of the video packets sent to it that it NACKed (0..1), per layer tick.
    nack_loss: f64,
    /// When the allowance last changed.
    changed: Option<Instant>,
    /// The latest downswitch was forced by a full bottleneck (see [`Self::sheds`]).
    shed: bool,
    /// Peak of the estimate since [`Self::link_congested`] last saw congestion (kept apart from
    /// `peak`, which [`Self::plan`] resets when it acts).
    link_peak: u64,
    /// Until then the link is settling on a new path ([`Self::path_changed`]).
    settling_until: Option<Instant>,
}

impl Default for SubscriberBandwidth {
    fn default() -> Self {
        Self {
            estimate: None,
            peak: 0,
            allowance: Allowance::default(),
            last_probe: None,
            next_probe: None,
            backoff: PROBE_BACKOFF_MIN,
            loss: 0.0,
            nack_loss: 0.0,
            changed: None,
            shed: false,
            link_peak: 0,
            settling_until: None,
        }
    }
}

impl SubscriberBandwidth {
    /// A REMB arrived: the receiver's estimate, bits per second.
    pub fn on_estimate(&mut self, bps: u64, now: Instant) {
        self.estimate = Some((bps, now));
        self.peak = self.peak.max(bps);
    }

    /// A receiver report's fraction lost for one of the streams sent to this subscriber
    /// (RFC 3550 section 6.4.1: `fraction_lost / 256`), smoothed. Ignored for [`PATH_SETTLE`]
    /// after [`Self::path_changed`].
    pub fn on_loss(&mut self, fraction: f64, now: Instant) {
        if self.settling(now) {
            return;
        }
        if fraction.is_finite() {
            self.loss = 0.5 * self.loss + 0.5 * fraction.clamp(0.0, 1.0);
        }
    }

    /// Video packets sent to this subscriber since the last call (`sent`), and how many of them
    /// it NACKed for the first time (`nacked`; [`crate::retransmit::SentLog::take_counts`]).
    /// Call once per layer tick. This is the loss the server sees itself: retransmissions on
    /// the media SSRC count as received in the receiver's reports (RFC 3550 appendix A.3
    /// counts every packet that arrives), so a receiver whose losses are repaired reports
    /// almost none while its link drops most of what is sent (measured: receiver reports
    /// said 0 % for 3.6 s after a link fell to 300 kbit/s under 1.5 Mbit/s of video).
    /// Ignored below 10 packets, and for [`PATH_SETTLE`] after [`Self::path_changed`].
    pub fn on_nacks(&mut self, sent: u32, nacked: u32, now: Instant) {
        if self.settling(now) || sent < 10 {
            return;
        }
        let fraction = (f64::from(nacked) / f64::from(sent)).min(1.0);
        self.nack_loss = 0.5 * self.nack_loss + 0.5 * fraction;
    }

    /// The loss the link shows: the larger of what the receiver reports and what it NACKs.
    fn loss(&self) -> f64 {
        self.loss.max(self.nack_loss)
    }

    /// The subscriber's media moved to another ICE path at `now` (a path switch, a reconnect
    /// after an ICE restart): what was measured on the old path no longer says anything about
    /// the new one. Loss and peaks are forgotten; for [`PATH_SETTLE`] loss reports are ignored
    /// and [`Self::link_congested`] answers `false`.
    pub fn path_changed(&mut self, now: Instant) {
        self.loss = 0.0;
        self.nack_loss = 0.0;
        self.peak = 0;
        self.link_peak = 0;
        self.settling_until = Some(now + PATH_SETTLE);
    }

    fn settling(&self, now: Instant) -> bool {
        self.settling_until.is_some_and(|t| now < t)
    }

    /// The latest estimate, bits per second, if fresh.
    pub fn estimate(&self, now: Instant) -> Option<u64> {
        self.estimate
            .filter(|(_, at)| now.saturating_duration_since(*at) < ESTIMATE_STALE)
            .map(|(b, _)| b)
    }

    /// Whether this subscriber's link is full now, for [`UplinkCap`]: it loses more than
    /// [`LOSS_CONGESTED`], or its fresh estimate fell below [`SHED_BELOW`] of its peak since
    /// this was last seen. Stricter than the simulcast plan's signal (a dip of 15 %): capping a
    /// publisher lowers its track for every subscriber, and on a busy machine the browser's
    /// delay-based estimate dips by that much with no bottleneck at all. Call once per tick; it
    /// does not disturb [`Self::plan`].
    pub fn link_congested(&mut self, now: Instant) -> bool {
        let Some(est) = self.estimate(now).filter(|_| !self.settling(now)) else {
            self.link_peak = 0;
            return false;
        };
        self.link_peak = self.link_peak.max(est);
        let congested =
            (est as f64) < SHED_BELOW * self.link_peak as f64 || self.loss() > LOSS_CONGESTED;
        if congested {
            self.link_peak = est;
        }
        congested
    }

    /// What the subscriber may receive now.
    pub fn allowance(&self) -> Allowance {
        self.allowance
    }

    /// Whether a downswitch must stop the layer above the cap at once instead of at the lower
    /// layer's keyframe: the link is full (the receiver loses more than [`LOSS_CONGESTED`], or
    /// the estimate is under [`SHED_BELOW`] of what is being sent), so the lower layer's
    /// keyframe would queue behind the higher layer's packets. A dip of the estimate on a link
    /// that loses nothing (a delay-based estimator also reads a busy receiver's CPU as queuing)
    /// switches seamlessly, at the keyframe, without a freeze.
    pub fn sheds(&self) -> bool {
        self.shed
    }

    /// Decides the allowance at `now`. `ranks`: the simulcast ranks on offer, ascending (empty:
    /// no simulcast video, nothing to cap but the pause). `wanted`: the highest rank its tile
    /// sizes ask for (`None`: none). `cost(cap)`: the video bitrate (bps) this subscriber would
    /// receive with `cap` (`None`: as its tile sizes ask).
    ///
    /// Whether a cap still holds layers back is decided by rank against `wanted`, never by
    /// cost: costs are measured bitrates, and a layer the publisher paused keeps its last one,
    /// so a middle layer can read dearer than a top layer whose encoder is starved (seen in CI:
    /// a probe from the bottom layer judged "no cap" and sent the top layer into a 300 kbit/s
    /// link for 5 s).
    pub fn plan(
        &mut self,
        now: Instant,
        ranks: &[u8],
        wanted: Option<u8>,
        cost: impl Fn(Option<u8>) -> u64,
    ) -> Allowance {
        let Some(est) = self.estimate(now) else {
            self.allowance = Allowance::default();
            self.peak = 0;
            return self.allowance;
        };
        let was = self.allowance;
        let loss = self.loss();
        let lossy = loss > LOSS_CONGESTED;
        let congested = (est as f64) < CONGESTED * self.peak as f64 || lossy;
        let planned = if was.video_paused { 0 } else { cost(was.cap) };
        let mut budget = HEADROOM * est as f64;
        if lossy {
            budget = budget.min(planned as f64 * (1.0 - 0.5 * loss));
        }
        if congested && planned as f64 > budget {
            self.shed = lossy || (est as f64) < SHED_BELOW * planned as f64;
            let budget = budget as u64;
            let fits = ranks
                .iter()
                .rev()
                .copied()
                .find(|&r| cost(Some(r)) <= budget)
                .map(Some);
            let bottom = ranks.first().copied();
            let at_bottom_long = was.cap.is_some()
                && was.cap == bottom
                && self
                    .changed
                    .is_some_and(|t| now.saturating_duration_since(t) >= PAUSE_AFTER);
            let next = match fits {
                Some(cap) => Allowance {
                    cap,
                    video_paused: false,
                },
                // A delay-based estimate that fell below the lowest layers only follows what is
                // sent (it settles near 0.85 times the video that arrives); loss at the bottom,
                // for a while, is what says even that does not fit.
                None => Allowance {
                    cap: bottom,
                    video_paused: at_bottom_long && loss > LOSS_PAUSE,
                },
            };
            if next != was {
                self.changed = Some(now);
            }
            self.allowance = next;
            // The loss that led here is acted on; what comes next is measured afresh.
            self.loss = 0.0;
            self.nack_loss = 0.0;
            // The probe that led here failed: wait longer before the next one.
            if self
                .last_probe
                .is_some_and(|p| now.saturating_duration_since(p) < PROBE_WINDOW)
            {
                self.backoff = (self.backoff * 2).min(PROBE_BACKOFF_MAX);
            }
            self.last_probe = None;
            self.next_probe = Some(now + self.backoff);
            self.peak = est;
            return self.allowance;
        }
        // A probe that held through its window: the next may come sooner.
        if self
            .last_probe
            .is_some_and(|p| now.saturating_duration_since(p) >= PROBE_WINDOW)
        {
            self.backoff = PROBE_BACKOFF_MIN;
            self.last_probe = None;
        }
        let below = |c: u8| wanted.is_some_and(|w| c < w);
        let limited = was.video_paused || was.cap.is_some_and(below);
        if !limited {
            if was != Allowance::default() {
                self.changed = Some(now);
            }
            self.allowance = Allowance::default();
            return self.allowance;
        }
        if self.next_probe.is_none_or(|t| now >= t) {
            self.allowance = if was.video_paused {
                Allowance {
                    cap: ranks.first().copied(),
                    video_paused: false,
                }
            } else {
                let next = was.cap.and_then(|c| ranks.iter().copied().find(|&r| r > c));
                Allowance {
                    cap: next,
                    video_paused: false,
                }
            };
            // A cap at or above what the tiles ask for is no cap.
            if self
                .allowance
                .cap
                .is_some_and(|c| !self.allowance.video_paused && !below(c))
            {
                self.allowance.cap = None;
            }
            self.last_probe = Some(now);
            self.next_probe = Some(now + self.backoff);
            self.peak = est;
            self.changed = Some(now);
        }
        self.allowance
    }
}

/// The REMB value that lifts an [`UplinkCap`]: far above anything a camera or screen sends, so
/// the publisher's own estimator decides again.
pub const UPLINK_UNCAPPED_BPS: u64 = 100_000_000;
/// REMBs of [`UPLINK_UNCAPPED_BPS`] sent when a cap is lifted (one lost must not leave it on).
const UPLINK_LIFTS: u8 = 3;
/// Each probe raises the cap by this factor.
pub const UPLINK_PROBE_STEP: f64 = 1.5;
/// A cap raised past this (bps) is lifted: more than a browser sends for a 720p camera.
pub const UPLINK_LIFT_ABOVE: u64 = 2_500_000;

/// A cap on what the publisher of a single-stream video track (no simulcast layers to choose
/// from: a screen share, a client that does not simulcast) sends, so that a subscriber whose
/// link cannot take it still gets the track instead of a queue that drowns its audio.
///
/// It engages when the link of a subscriber of the track is full
/// ([`SubscriberBandwidth::link_congested`]): the cap is then [`HEADROOM`] of the lowest
/// estimate among the track's subscribers, sent to the publisher every tick as a REMB
/// (draft-alvestrand-rmcat-remb), which browsers apply as an upper limit of their send-side
/// estimate. It follows that estimate up as it grows, and after `backoff` without congestion a
/// probe raises it by [`UPLINK_PROBE_STEP`] (gently: lifting it at once made the publisher jump
/// to its own estimate and flood the weak link); congestion within [`PROBE_WINDOW`] of a probe
/// doubles the next wait (from [`PROBE_BACKOFF_MIN`] to [`PROBE_BACKOFF_MAX`]). Past
/// [`UPLINK_LIFT_ABOVE`], or with no fresh estimate from any subscriber, it is lifted (REMBs of
/// [`UPLINK_UNCAPPED_BPS`]). One subscriber's weak link therefore lowers that track for every
/// subscriber: the trade-off Galène makes too, where simulcast is not available.
#[derive(Debug, Clone)]
pub struct UplinkCap {
    /// The cap now, bps (`None`: not engaged).
    cap: Option<u64>,
    calm_since: Option<Instant>,
    last_probe: Option<Instant>,
    backoff: Duration,
    lifts_left: u8,
}

impl Default for UplinkCap {
    fn default() -> Self {
        Self {
            cap: None,
            calm_since: None,
            last_probe: None,
            backoff: PROBE_BACKOFF_MIN,
            lifts_left: 0,
        }
    }
}

impl UplinkCap {
    /// One tick: `congested`, some subscriber of the track shows congestion; `lowest`, the
    /// lowest fresh estimate among them (bps). Returns the REMB bitrate (bps) to send the
    /// publisher now, if any.
    pub fn tick(&mut self, now: Instant, congested: bool, lowest: Option<u64>) -> Option<u64> {
        let fits = lowest.map(|e| (HEADROOM * e as f64) as u64);
        match (congested, fits) {
            (true, Some(fits)) => {
                if self
                    .last_probe
                    .is_some_and(|t| now.saturating_duration_since(t) < PROBE_WINDOW)
                {
                    self.backoff = (self.backoff * 2).min(PROBE_BACKOFF_MAX);
                }
                self.last_probe = None;
                self.cap = Some(fits);
                self.calm_since = Some(now);
                self.lifts_left = 0;
            }
            (_, None) => {
                if self.cap.take().is_some() {
                    self.lifts_left = UPLINK_LIFTS;
                }
            }
            (false, Some(fits)) => {
                if let Some(cap) = self.cap {
                    let mut cap = cap.max(fits);
                    if self
                        .last_probe
                        .is_some_and(|t| now.saturating_duration_since(t) >= PROBE_WINDOW)
                    {
                        // The last probe held: the next may come sooner.
                        self.backoff = PROBE_BACKOFF_MIN;
                        self.last_probe = None;
                    }
                    let calm = *self.calm_since.get_or_insert(now);
                    if now.saturating_duration_since(calm) >= self.backoff {
                        cap = (cap as f64 * UPLINK_PROBE_STEP) as u64;
                        self.last_probe = Some(now);
                        self.calm_since = Some(now);
                    }
                    if cap > UPLINK_LIFT_ABOVE {
                        self.cap = None;
                        self.lifts_left = UPLINK_LIFTS;
                    } else {
                        self.cap = Some(cap);
                    }
                }
            }
        }
        if let Some(cap) = self.cap {
            return Some(cap);
        }
        if self.lifts_left > 0 {
            self.lifts_left -= 1;
            return Some(UPLINK_UNCAPPED_BPS);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANKS: [u8; 3] = [0, 1, 2];

    /// Layer costs 150 / 500 / 1 500 kbit/s; one downtrack that asks for the top layer.
    fn cost(cap: Option<u8>) -> u64 {
        match cap.unwrap_or(2) {
            0 => 150_000,
            1 => 500_000,
            _ => 1_500_000,
        }
    }

    fn step(b: &mut SubscriberBandwidth, now: &mut Instant, est: u64, secs: f64) -> Allowance {
        *now += Duration::from_secs_f64(secs);
        b.on_estimate(est, *now);
        b.plan(*now, &RANKS, Some(2), cost)
    }

    #[test]
    fn a_dip_without_loss_switches_at_the_keyframe_and_a_collapse_sheds_at_once() {
        let mut now = Instant::now();
        let mut b = SubscriberBandwidth::default();
        assert_eq!(step(&mut b, &mut now, 2_500_000, 1.0), Allowance::default());
        // 1.5 Mbit/s sent, the estimate dips to 1.2 Mbit/s: down to 500 kbit/s, seamlessly.
        let a = step(&mut b, &mut now, 1_200_000, 1.0);
        assert_eq!(a.cap, Some(1));
        assert!(!b.sheds(), "a dip with no loss waits for the keyframe");
        // Later the link collapses to 200 kbit/s under 500 kbit/s sent: shed at once.
        let a = step(&mut b, &mut now, 200_000, 1.0);
        assert_eq!(a.cap, Some(0));
        assert!(b.sheds(), "a full link sheds the layer above at once");
        // Loss alone also means a full link.
        let mut b = SubscriberBandwidth::default();
        step(&mut b, &mut now, 2_500_000, 1.0);
        b.on_loss(0.3, now);
        b.on_loss(0.3, now);
        step(&mut b, &mut now, 2_500_000, 1.0);
        assert!(b.sheds(), "loss sheds");
    }

    #[test]
    fn loss_is_congestion_even_when_the_estimate_holds() {
        let mut now = Instant::now();
        let mut b = SubscriberBandwidth::default();
        step(&mut b, &mut now, 600_000, 0.5);
        // A full bottleneck queue: the delay-based estimate no longer falls, but 30 % is lost.
        for _ in 0..3 {
            b.on_loss(0.3, now);
        }
        let a = step(&mut b, &mut now, 600_000, 0.5);
        assert_eq!(
            a.cap,
            Some(1),
            "1.5 M does not fit 85 % of 600 k; 500 k does"
        );
        // 2 % loss is no congestion: nothing changes.
        b.on_loss(0.02, now);
        assert_eq!(step(&mut b, &mut now, 600_000, 0.5).cap, Some(1));
    }

    #[test]
    fn loss_its_nacks_show_is_congestion_when_receiver_reports_say_none() {
        let mut now = Instant::now();
        let mut b = SubscriberBandwidth::default();
        // As seen in CI: the first REMB after a link fell to 300 kbit/s is already low, so it
        // is its own peak and no dip shows; the receiver reports 0 % lost (retransmissions
        // count as received), but it NACKs 80 of every 100 packets sent.
        assert_eq!(step(&mut b, &mut now, 250_000, 0.5), Allowance::default());
        b.on_loss(0.0, now);
        b.on_nacks(100, 80, now);
        let a = step(&mut b, &mut now, 250_000, 0.5);
        assert_eq!(a.cap, Some(0), "150 k is all that fits");
        assert!(b.sheds(), "a link that drops sheds at once");
        // A clean link NACKs nothing, and too few packets say nothing either way.
        let mut c = SubscriberBandwidth::default();
        step(&mut c, &mut now, 250_000, 0.5);
        c.on_nacks(100, 0, now);
        c.on_nacks(9, 9, now);
        assert_eq!(step(&mut c, &mut now, 250_000, 0.5), Allowance::default());
        // Just after a path change nothing counts (the old path's losses).
        let mut d = SubscriberBandwidth::default();
        step(&mut d, &mut now, 250_000, 0.5);
        d.path_changed(now);
        d.on_nacks(100, 80, now);
        assert_eq!(step(&mut d, &mut now, 250_000, 0.5), Allowance::default());
    }

    #[test]
    fn a_probe_from_the_bottom_goes_one_rank_up_even_when_a_middle_layer_reads_dearer_than_the_top()
    {
        // The middle layer was paused at 600 kbit/s; the top one's encoder is starved to 500.
        let stale = |cap: Option<u8>| match cap.unwrap_or(2) {
            0 => 150_000,
            1 => 600_000,
            _ => 500_000,
        };
        let mut now = Instant::now();
        let mut b = SubscriberBandwidth::default();
        let mut step = |est: u64, secs: f64| {
            now += Duration::from_secs_f64(secs);
            b.on_estimate(est, now);
            b.plan(now, &RANKS, Some(2), stale)
        };
        assert_eq!(step(2_000_000, 1.0), Allowance::default());
        assert_eq!(step(300_000, 1.0).cap, Some(0), "the link collapsed");
        let mut probe = None;
        for _ in 0..20 {
            let a = step(300_000, 0.5);
            if a.cap != Some(0) {
                probe = Some(a);
                break;
            }
        }
        assert_eq!(
            probe.map(|a| a.cap),
            Some(Some(1)),
            "one rank up, not the top"
        );
    }

    #[test]
    fn no_estimate_no_limit_and_a_rising_estimate_is_no_congestion() {
        let mut now = Instant::now();
        let mut b = SubscriberBandwidth::default();
        assert_eq!(b.plan(now, &RANKS, Some(2), cost), Allowance::default());
        // The estimate ramps up from 300 kbit/s below what is sent: not a reason to cut.
        for est in [300_000, 350_000, 420_000, 600_000] {
            assert_eq!(step(&mut b, &mut now, est, 0.5), Allowance::default());
        }
        // Gone stale: no limit either.
        now += ESTIMATE_STALE;
        assert_eq!(b.plan(now, &RANKS, Some(2), cost), Allowance::default());
    }

    #[test]
    fn a_falling_estimate_brings_layers_down_then_pauses_video_and_probes_climb_back() {
        let mut now = Instant::now();
        let mut b = SubscriberBandwidth::default();
        step(&mut b, &mut now, 2_000_000, 0.5);
        // The link shrinks to ~300 kbit/s: the estimate falls to 255 k -> the 150 k layer fits.
        let a = step(&mut b, &mut now, 255_000, 0.5);
        assert_eq!(
            a,
            Allowance {
                cap: Some(0),
                video_paused: false
            }
        );
        // Steady at the bottom: no change before the backoff.
        assert_eq!(step(&mut b, &mut now, 230_000, 1.0).cap, Some(0));
        // The probe after 5 s tries the middle layer; the link cannot take it: back down, and
        // the next probe waits twice as long.
        let a = step(&mut b, &mut now, 235_000, 4.0);
        assert_eq!(a.cap, Some(1), "probe");
        let a = step(&mut b, &mut now, 190_000, 1.0);
        assert_eq!(a.cap, Some(0), "the probe failed");
        assert_eq!(
            step(&mut b, &mut now, 200_000, 8.0).cap,
            Some(0),
            "backoff now 10 s"
        );
        assert_eq!(
            step(&mut b, &mut now, 200_000, 2.5).cap,
            Some(1),
            "the next probe"
        );
        // Worse: not even 150 k fits: back to the bottom at once, and once that has not
        // fitted for 5 s with heavy loss, video pauses (audio is not this module's business).
        let a = step(&mut b, &mut now, 100_000, 0.5);
        assert_eq!(a.cap, Some(0));
        assert!(!a.video_paused, "not at once");
        let a = step(&mut b, &mut now, 80_000, 5.0);
        assert!(
            !a.video_paused,
            "a low estimate alone follows what is sent: no pause"
        );
        for _ in 0..3 {
            b.on_loss(0.25, now);
        }
        let a = step(&mut b, &mut now, 80_000, 0.5);
        assert_eq!(
            a,
            Allowance {
                cap: Some(0),
                video_paused: true
            }
        );
        // The link recovers: probes resume video, then climb a rank per probe that holds.
        let mut seen = vec![];
        for _ in 0..160 {
            let a = step(&mut b, &mut now, 3_000_000, 0.5);
            if seen.last() != Some(&a) {
                seen.push(a);
            }
        }
        assert_eq!(
            seen,
            vec![
                Allowance {
                    cap: Some(0),
                    video_paused: true
                },
                Allowance {
                    cap: Some(0),
                    video_paused: false
                },
                Allowance {
                    cap: Some(1),
                    video_paused: false
                },
                Allowance {
                    cap: None,
                    video_paused: false
                },
            ]
        );
    }

    #[test]
    fn an_uplink_cap_follows_the_weakest_subscriber_and_probes_its_way_up() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut cap = UplinkCap::default();
        assert_eq!(cap.tick(t0, false, Some(2_000_000)), None, "nothing to do");
        // A subscriber's link congests: the publisher is held under its estimate.
        assert_eq!(cap.tick(at(500), true, Some(300_000)), Some(255_000));
        // The estimate grows: the cap follows; it never falls without congestion.
        assert_eq!(cap.tick(at(1_000), false, Some(320_000)), Some(272_000));
        assert_eq!(cap.tick(at(1_500), false, Some(200_000)), Some(272_000));
        // Calm for the backoff: a probe, one step up.
        let probe = at(500) + PROBE_BACKOFF_MIN;
        assert_eq!(cap.tick(probe, false, Some(320_000)), Some(408_000));
        // Congested right after it: the probe failed, the next waits twice as long.
        let failed = probe + Duration::from_secs(1);
        assert_eq!(cap.tick(failed, true, Some(300_000)), Some(255_000));
        let early = failed + PROBE_BACKOFF_MIN;
        assert_eq!(
            cap.tick(early, false, Some(300_000)),
            Some(255_000),
            "still held"
        );
        let mut t = failed + 2 * PROBE_BACKOFF_MIN;
        assert_eq!(cap.tick(t, false, Some(300_000)), Some(382_500));
        // Probes that hold go on, sooner, until the cap is past any camera: lifted, three times.
        let mut remb = Vec::new();
        for _ in 0..80 {
            t += Duration::from_millis(500);
            remb.push(cap.tick(t, false, Some(300_000)));
        }
        let lifts = remb
            .iter()
            .filter(|r| **r == Some(UPLINK_UNCAPPED_BPS))
            .count();
        assert_eq!(lifts, UPLINK_LIFTS as usize, "{remb:?}");
        assert_eq!(remb.last(), Some(&None));
        // Estimates stop (the subscriber left): lifted at once.
        let mut cap = UplinkCap::default();
        cap.tick(t0, true, Some(300_000));
        assert_eq!(cap.tick(at(500), false, None), Some(UPLINK_UNCAPPED_BPS));
    }

    #[test]
    fn a_link_counts_as_congested_when_its_estimate_falls_or_it_loses() {
        let t0 = Instant::now();
        let mut b = SubscriberBandwidth::default();
        assert!(!b.link_congested(t0), "no estimate, no congestion");
        b.on_estimate(2_000_000, t0);
        assert!(!b.link_congested(t0));
        b.on_estimate(1_500_000, t0);
        assert!(
            !b.link_congested(t0),
            "a dip of a quarter is not a full link"
        );
        b.on_estimate(900_000, t0);
        assert!(b.link_congested(t0), "more than half down");
        assert!(
            !b.link_congested(t0),
            "seen: the new level is the reference"
        );
        b.on_loss(0.5, t0);
        assert!(b.link_congested(t0), "loss");
    }

    #[test]
    fn after_a_path_change_the_old_paths_loss_and_peak_do_not_count() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = SubscriberBandwidth::default();
        b.on_estimate(2_000_000, t0);
        assert!(!b.link_congested(t0));
        // The network changes: the path moves at 1 s. The first reports on the new path count
        // what went into the dead one (40 % lost), and the estimate restarts lower.
        b.path_changed(at(1_000));
        b.on_loss(0.4, at(1_200));
        b.on_estimate(700_000, at(1_200));
        assert!(!b.link_congested(at(1_500)), "settling on the new path");
        b.on_estimate(800_000, at(4_100));
        assert!(
            !b.link_congested(at(4_100)),
            "the old path's loss and 2 Mbit/s peak are forgotten"
        );
        // The new path's own collapse still counts.
        b.on_estimate(300_000, at(5_000));
        assert!(b.link_congested(at(5_000)));
        // And so does its own loss, once settled.
        b.on_loss(0.5, at(5_500));
        assert!(b.link_congested(at(5_500)));
    }
}
