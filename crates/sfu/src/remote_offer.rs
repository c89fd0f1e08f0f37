//! What the server hands `rtc` of a publisher's renegotiation offer, so that simulcast layers
//! survive it.
//!
//! A simulcasting publisher names its layers by RID (RFC 8851), not by SSRC: its offer carries
//! `a=rid:` and `a=simulcast:` lines and no `a=ssrc` for the layers. The receiver learns each
//! layer's SSRC from the first packets, which carry the MID and RID header extensions (RFC 8852
//! section 3.3). A sender stops writing those extensions once a receiver report acknowledges
//! the SSRC: libwebrtc (Chromium) does, as RFC 8852 section 4.3 allows.
//!
//! `rtc` 0.21.1 rebuilds every receiving transceiver's track from the remote description at the
//! end of each offer/answer (`start_rtp`). For a RID-named track that drops the SSRCs it had
//! learnt, so after any renegotiation of the publisher transport (an ICE restart on resume, a
//! screen share added) the layers' packets, which no longer carry the RID, match nothing and are
//! dropped ("drop rtp packet ssrc"): that camera never reached anyone again.
//!
//! [`keep_learnt_layers`] works around it: in an m-section that was already negotiated with the
//! same track (same `a=msid`) and the same RIDs, it removes the lines `rtc` builds a track from
//! (`a=msid`, `a=ssrc`, `a=ssrc-group`). `rtc` then finds no track in that section and leaves the
//! receiver, with the SSRCs it learnt, as it was. The answer is unchanged: it is built from the
//! transceivers and the RID and simulcast lines, which stay. A section whose track or RIDs changed
//! is passed through whole, so a replaced track is learnt afresh.

use std::borrow::Cow;

/// The parts of one m-section that decide whether its receiver may be kept.
#[derive(Debug, PartialEq, Eq)]
struct Section<'a> {
    mid: Option<&'a str>,
    msid: Option<&'a str>,
    rids: Vec<&'a str>,
}

impl<'a> Section<'a> {
    fn read(lines: &[&'a str]) -> Self {
        let mut s = Section {
            mid: None,
            msid: None,
            rids: Vec::new(),
        };
        for line in lines {
            if let Some(v) = line.strip_prefix("a=mid:") {
                s.mid = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("a=msid:") {
                s.msid = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("a=rid:") {
                // `a=rid:<id> <direction> [params]` (RFC 8851 section 10).
                if let Some(id) = v.split_whitespace().next() {
                    s.rids.push(id);
                }
            }
        }
        s.rids.sort_unstable();
        s
    }
}

/// Splits an SDP into its session part and its m-sections, each as a list of lines (without
/// line endings).
fn sections(sdp: &str) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.lines() {
        if line.starts_with("m=") {
            out.push(Vec::new());
        }
        if let Some(last) = out.last_mut() {
            last.push(line);
        }
    }
    out
}

/// Returns the offer to give `rtc`: `offer` itself unless one of its m-sections repeats a
/// RID-named track already negotiated in `previous` (the publisher transport's current remote
/// description), in which case that section loses its `a=msid`, `a=ssrc` and `a=ssrc-group`
/// lines (see the module docs for why). Line endings are written as CRLF (RFC 8866 section 5).
pub fn keep_learnt_layers<'a>(previous: Option<&str>, offer: &'a str) -> Cow<'a, str> {
    let Some(previous) = previous else {
        return Cow::Borrowed(offer);
    };
    let before: Vec<Section<'_>> = sections(previous)
        .iter()
        .skip(1)
        .map(|l| Section::read(l))
        .collect();
    let now = sections(offer);
    let keep: Vec<bool> = now
        .iter()
        .enumerate()
        .map(|(i, lines)| {
            if i == 0 {
                return false;
            }
            let s = Section::read(lines);
            s.mid.is_some() && s.msid.is_some() && !s.rids.is_empty() && before.contains(&s)
        })
        .collect();
    if !keep.contains(&true) {
        return Cow::Borrowed(offer);
    }
    let mut out = String::with_capacity(offer.len());
    for (lines, keep) in now.iter().zip(keep) {
        for line in lines {
            if keep
                && (line.starts_with("a=msid:")
                    || line.starts_with("a=ssrc:")
                    || line.starts_with("a=ssrc-group:"))
            {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(camera_msid: &str, rids: &[&str], with_screen: bool) -> String {
        let mut s = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        s.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s a1\r\n");
        s.push_str("a=ssrc:11 cname:x\r\na=sendonly\r\n");
        s.push_str("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n");
        s.push_str(&format!("a=msid:{camera_msid}\r\na=sendonly\r\n"));
        for r in rids {
            s.push_str(&format!("a=rid:{r} send\r\n"));
        }
        if !rids.is_empty() {
            s.push_str(&format!("a=simulcast:send {}\r\n", rids.join(";")));
        } else {
            s.push_str("a=ssrc-group:FID 21 22\r\na=ssrc:21 cname:x\r\na=ssrc:22 cname:x\r\n");
        }
        if with_screen {
            s.push_str("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=msid:s v2\r\n");
            for r in rids {
                s.push_str(&format!("a=rid:{r} send\r\n"));
            }
        }
        s
    }

    #[test]
    fn a_first_offer_is_passed_whole() {
        let o = offer("s v1", &["l", "m", "h"], false);
        assert!(matches!(keep_learnt_layers(None, &o), Cow::Borrowed(_)));
    }

    #[test]
    fn a_repeated_simulcast_section_loses_only_its_track_lines() {
        let first = offer("s v1", &["l", "m", "h"], false);
        let again = offer("s v1", &["h", "m", "l"], true);
        let out = keep_learnt_layers(Some(&first), &again);
        let sections = sections(&out);
        assert_eq!(sections.len(), 4);
        // Audio (not RID-named) keeps everything.
        assert!(sections[1].contains(&"a=msid:s a1"));
        assert!(sections[1].contains(&"a=ssrc:11 cname:x"));
        // The camera, same track and RIDs: no msid, RIDs and simulcast kept.
        assert!(!sections[2].iter().any(|l| l.starts_with("a=msid:")));
        assert!(sections[2].contains(&"a=rid:l send"));
        assert!(sections[2].contains(&"a=simulcast:send h;m;l"));
        // The new screen share is learnt afresh.
        assert!(sections[3].contains(&"a=msid:s v2"));
        assert!(out.ends_with("\r\n"));
    }

    #[test]
    fn a_replaced_track_or_changed_rids_is_learnt_afresh() {
        let first = offer("s v1", &["l", "m", "h"], false);
        let replaced = offer("s v9", &["l", "m", "h"], false);
        assert!(matches!(
            keep_learnt_layers(Some(&first), &replaced),
            Cow::Borrowed(_)
        ));
        let fewer = offer("s v1", &["l", "h"], false);
        assert!(matches!(
            keep_learnt_layers(Some(&first), &fewer),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn single_stream_sections_are_never_touched() {
        let first = offer("s v1", &[], false);
        let again = offer("s v1", &[], false);
        assert!(matches!(
            keep_learnt_layers(Some(&first), &again),
            Cow::Borrowed(_)
        ));
    }
}
