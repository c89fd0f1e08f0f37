//! Fuzz targets for the SDP a client sends and what the media plane reads from it before `rtc`
//! applies it: `remote_offer::keep_learnt_layers`, `rtc`'s own SDP parser as confab calls it
//! (`RTCSessionDescription::offer`/`answer`), `IceCredentials::from_sdp`, the subscriber
//! transport's offer/answer state machine (`negotiation.rs`) and the ids clients name
//! (`ids.rs`). Stable Rust, run by `cargo test` for `FUZZ_SECONDS` each (see `crates/fuzz`);
//! seeds in `tests/fuzz/sdp` (Chromium 156's offers and answer).

use confab_fuzz::proptest;
use confab_fuzz::proptest::collection::vec;
use confab_fuzz::proptest::prelude::*;
use confab_fuzz::{corpus_files, fuzz, hit, mutated, text};
use confab_sfu::negotiation::{NegotiationState, NoOfferPending, ANSWER_TIMEOUT};
use confab_sfu::peer::IceCredentials;
use confab_sfu::remote_offer::keep_learnt_layers;
use confab_sfu::{ParticipantId, RoomId, RoomIdError, TrackId};
use rtc::peer_connection::sdp::RTCSessionDescription;
use std::borrow::Cow;
use std::time::{Duration, Instant};

const SDP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/sdp");

/// SDP lines and fragments worth inserting.
const SDP_DICT: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"m=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    b"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
    b"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
    b"a=mid:",
    b"a=msid:",
    b"a=rid:",
    b"a=rid:h send\r\n",
    b"a=simulcast:send l;m;h\r\n",
    b"a=ssrc:",
    b"a=ssrc-group:FID 1 2\r\n",
    b"a=ice-ufrag:",
    b"a=ice-pwd:",
    b"a=extmap:",
    b"a=rtpmap:",
    b"a=fmtp:",
    b"a=setup:",
    b"a=fingerprint:sha-256 ",
    b"a=group:BUNDLE ",
    b"c=IN IP4 0.0.0.0\r\n",
    b"4294967296",
    b"65536",
    b" ",
    b":",
];

fn sdp_files() -> Vec<Vec<u8>> {
    corpus_files(SDP).into_iter().map(|(_, b)| b).collect()
}

/// Checks `keep_learnt_layers(previous, offer)`: no panic; without a previous description
/// the offer itself; otherwise the offer's lines, in order, less some `a=msid`, `a=ssrc` and
/// `a=ssrc-group` lines; and applying it again changes nothing.
fn check_keep(previous: Option<&str>, offer: &str) {
    let out = keep_learnt_layers(previous, offer);
    if previous.is_none() {
        assert!(matches!(out, Cow::Borrowed(o) if o == offer));
        return;
    }
    if let Cow::Borrowed(o) = out {
        hit("unchanged");
        assert_eq!(o, offer);
        return;
    }
    hit("layers_kept");
    let got: Vec<&str> = out.lines().collect();
    let mut got_iter = got.iter().peekable();
    let mut removed = 0;
    for line in offer.lines() {
        if got_iter.peek() == Some(&&line) {
            got_iter.next();
        } else {
            assert!(
                line.starts_with("a=msid:")
                    || line.starts_with("a=ssrc:")
                    || line.starts_with("a=ssrc-group:"),
                "removed a line it must keep: {line:?}"
            );
            removed += 1;
        }
    }
    assert!(got_iter.next().is_none(), "added lines");
    assert!(removed > 0, "an owned result removes something");
    assert!(out.ends_with("\r\n"));
    let again = keep_learnt_layers(previous, &out);
    assert_eq!(again.as_ref(), out.as_ref(), "idempotent");
}

/// Checks `rtc`'s parser as confab calls it on client SDP (publish offers, subscribe
/// answers), and `IceCredentials::from_sdp`.
fn check_rtc_parse(sdp: &str) {
    let offer = RTCSessionDescription::offer(sdp.to_owned());
    let answer = RTCSessionDescription::answer(sdp.to_owned());
    assert_eq!(
        offer.is_ok(),
        answer.is_ok(),
        "offer and answer parse alike"
    );
    hit(if offer.is_ok() {
        "rtc_parsed"
    } else {
        "rtc_refused"
    });
    if let Ok(o) = offer {
        let parsed = o.unmarshal().expect("parsed once, parses again");
        if !parsed.media_descriptions.is_empty() {
            hit("rtc_media");
        }
    }
    if let Some(c) = IceCredentials::from_sdp(sdp) {
        hit("ice_credentials");
        assert!(sdp.contains(&format!("a=ice-ufrag:{}", c.ufrag)));
        assert!(sdp.contains(&format!("a=ice-pwd:{}", c.pwd)));
        assert_eq!(c.ufrag.trim_end(), c.ufrag);
    }
}

/// The Chromium seeds, each against each: what the real renegotiations look like.
#[test]
fn sdp_seeds_keep_their_layers_on_a_repeated_offer() {
    let files = sdp_files();
    for a in &files {
        let a = text(a);
        check_rtc_parse(&a);
        assert!(
            RTCSessionDescription::offer(a.clone()).is_ok(),
            "a seed parses"
        );
        check_keep(None, &a);
        for b in &files {
            check_keep(Some(&a), &text(b));
        }
    }
    let simulcast = text(&std::fs::read(format!("{SDP}/chromium156-offer-simulcast.sdp")).unwrap());
    let kept = keep_learnt_layers(Some(&simulcast), &simulcast);
    assert!(
        matches!(kept, Cow::Owned(_)),
        "the same simulcast offer again keeps the learnt layers"
    );
    assert_eq!(
        kept.matches("a=msid:").count(),
        1,
        "only the camera's msid goes"
    );
}

/// Any offer after any previous description (a seed, a mutated seed, or none):
/// `keep_learnt_layers` never panics and only ever removes track lines, idempotently; `rtc`'s
/// parser never panics on it.
#[test]
fn fuzz_sdp_offer() {
    let seeds = sdp_files();
    let previous = prop_oneof![
        1 => Just(None),
        2 => proptest::sample::select(seeds.clone()).prop_map(Some),
        2 => mutated(seeds.clone(), SDP_DICT, 16 * 1024).prop_map(Some),
    ];
    fuzz(
        "sdp_offer",
        (
            mutated(seeds.clone(), SDP_DICT, 64 * 1024),
            previous,
            any::<bool>(),
        ),
        |(offer, previous, same)| {
            let offer = text(&offer);
            // Sometimes the previous description is the offer itself (a repeated offer).
            let previous = if same {
                Some(offer.clone())
            } else {
                previous.map(|p| text(&p))
            };
            check_keep(previous.as_deref(), &offer);
            check_rtc_parse(&offer);
        },
    );
}

#[derive(Debug, Clone)]
enum NegOp {
    TracksChanged(u32),
    Answer(u32),
    Tick(u32),
}

/// The subscriber transport's offer/answer machine against any order of track changes,
/// answers (also unsolicited ones) and time: one offer in flight at most, an answer without
/// one is refused, every change is followed by an offer, a timed-out offer is sent again after
/// `ANSWER_TIMEOUT` and not before.
#[test]
fn fuzz_negotiation() {
    let ms = || prop_oneof![0u32..2000, 0u32..30_000];
    let op = prop_oneof![
        3 => ms().prop_map(NegOp::TracksChanged),
        3 => ms().prop_map(NegOp::Answer),
        2 => ms().prop_map(NegOp::Tick),
    ];
    fuzz("negotiation", vec(op, 1..100), |ops| {
        let mut st = NegotiationState::Stable;
        let mut now = Instant::now();
        let mut in_flight: Option<Instant> = None;
        let mut pending_change = false;
        for op in ops {
            match op {
                NegOp::TracksChanged(t) => {
                    now += Duration::from_millis(u64::from(t));
                    let send = st.request_offer(now);
                    assert_eq!(
                        send,
                        in_flight.is_none(),
                        "an offer only when none is in flight"
                    );
                    if send {
                        hit("offer");
                        in_flight = Some(now);
                    } else {
                        pending_change = true;
                    }
                }
                NegOp::Answer(t) => {
                    now += Duration::from_millis(u64::from(t));
                    match st.answer_received(now) {
                        Err(NoOfferPending) => {
                            hit("unsolicited");
                            assert!(in_flight.is_none());
                        }
                        Ok(again) => {
                            assert!(in_flight.is_some());
                            assert_eq!(again, pending_change, "a change meanwhile: another offer");
                            if again {
                                hit("again");
                            }
                            in_flight = again.then_some(now);
                            pending_change = false;
                        }
                    }
                }
                NegOp::Tick(t) => {
                    now += Duration::from_millis(u64::from(t));
                    let due = in_flight.is_some_and(|at| now >= at + ANSWER_TIMEOUT);
                    assert_eq!(st.deadline(), in_flight.map(|at| at + ANSWER_TIMEOUT));
                    let resend = st.timed_out(now);
                    assert_eq!(resend, due);
                    if resend {
                        hit("resent");
                        in_flight = Some(now);
                    }
                }
            }
            assert_eq!(st == NegotiationState::Stable, in_flight.is_none());
        }
    });
}

/// The ids a client names (room, participant, track): parsing never panics, accepts what the
/// documentation says, and what it accepts prints back to an id that parses to the same value.
#[test]
fn fuzz_ids() {
    let s = prop_oneof![
        3 => "[A-Za-z0-9_-]{0,70}",
        2 => "p[0-9+]{0,22}(-[0-9a-z]{0,34})?",
        2 => vec(any::<char>(), 0..70).prop_map(String::from_iter),
    ];
    fuzz("ids", s, |s| {
        match RoomId::parse(&s) {
            Ok(r) => {
                hit("room_ok");
                assert!((1..=RoomId::MAX_LEN).contains(&s.len()));
                assert_eq!(r.as_str(), s);
                assert_eq!(RoomId::parse(&r.to_string()), Ok(r));
            }
            Err(RoomIdError::Length) => {
                assert!(s.is_empty() || s.len() > RoomId::MAX_LEN)
            }
            Err(RoomIdError::Charset) => {
                assert!(s
                    .bytes()
                    .any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_')))
            }
        }
        if let Some(p) = ParticipantId::parse(&s) {
            hit("participant_ok");
            assert_eq!(ParticipantId::parse(&p.to_string()), Some(p));
        }
        if let Some(t) = TrackId::parse(&s) {
            hit("track_ok");
            assert!((1..=32).contains(&t.mid.len()));
            assert_eq!(TrackId::parse(&t.to_string()), Some(t));
        }
    });
}
