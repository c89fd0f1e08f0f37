//! WHIP ingest (RFC 9725) through the real server: each refusal with its status, and a
//! publish-only participant the room sees. A whole encoder → browser call runs in
//! `tests/browser/whip.test.mjs` (headless Chromium publishing with plain WHIP).

mod common;

use common::{http, spawn_app_with};
use confab::auth::Role;
use reqwest::StatusCode;

/// A minimal offer with one sending audio m-line: enough to pass the endpoint's own checks and
/// reach the room (it never connects).
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
    a=group:BUNDLE 0\r\n\
    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
    a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n\
    a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
    a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
    a=msid:encoder microphone\r\na=ssrc:1234 cname:encoder\r\na=ssrc:1234 msid:encoder microphone\r\n";

#[tokio::test]
async fn each_refusal_has_its_status_and_nothing_reaches_the_room() {
    let app = spawn_app_with(|a| a.max_participants = 2).await;
    let url = |path: &str| format!("http://{}{path}", app.addr);
    let token = |room: Option<&str>, role: Role| {
        app.tokens
            .mint_role("obs", "Encoder", 600, room.map(str::to_owned), role)
    };
    let post = |room: &str, content_type: &str, token: Option<String>, body: &str| {
        let mut r = http()
            .post(url(&format!("/whip/{room}")))
            .header("content-type", content_type)
            .body(body.to_owned());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let good = || Some(token(None, Role::Participant));
    let delete = |path: &str, token: String| http().delete(url(path)).bearer_auth(token).send();

    // 401: no token, a forged one.
    let r = post("lecture", "application/sdp", None, OFFER)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = post("lecture", "application/sdp", Some("x.y.z".into()), OFFER)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // 415: not an SDP.
    let r = post("lecture", "application/json", good(), "{}")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // 403: a token for another room, a viewer token.
    let other = Some(token(Some("elsewhere"), Role::Participant));
    let r = post("lecture", "application/sdp", other, OFFER)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let viewer = Some(token(None, Role::Viewer));
    let r = post("lecture", "application/sdp", viewer, OFFER)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // 400: a bad room id, nothing to publish, an offer the server cannot answer.
    let r = post("no%20spaces", "application/sdp", good(), OFFER)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post("lecture", "application/sdp", good(), "v=0\r\n")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let broken = OFFER.replace("a=fingerprint", "a=nofingerprint");
    let r = post("lecture", "application/sdp", good(), &broken)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{:?}", r.text().await);
    // 413: an oversized offer.
    let huge = format!("{OFFER}{}", "a=x\r\n".repeat(20_000));
    let r = post("lecture", "application/sdp", good(), &huge)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let health = app.get_json("/healthz", "probe").await;
    assert_eq!(
        health["participants"], 0,
        "no refused encoder joined: {health}"
    );

    // 405: other methods, with Allow; PATCH (trickle ICE) is not supported.
    let r = http().get(url("/whip/lecture")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST, OPTIONS");
    let r = http()
        .patch(url("/whip/lecture/0123"))
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=end-of-candidates\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // 404: no such session.
    let r = delete("/whip/lecture/0123", token(None, Role::Participant))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // OPTIONS: CORS preflight.
    let r = http()
        .request(reqwest::Method::OPTIONS, url("/whip/lecture"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["accept-post"], "application/sdp");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    // 201 for a well-formed offer: a publish-only participant the room sees; DELETE by another
    // subject is refused, by its own ends it.
    let mut ada = confab_client::Client::join(&app.ws_url("ada"), "lecture", "Ada")
        .await
        .unwrap();
    let r = post("lecture", "application/sdp", good(), OFFER)
        .await
        .unwrap();
    if r.status() != StatusCode::CREATED {
        panic!("{}: {}", r.status(), r.text().await.unwrap());
    }
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/whip/lecture/"), "{location}");
    let answer = r.text().await.unwrap();
    assert!(
        answer.contains("a=candidate:"),
        "the answer carries the server's candidates"
    );
    assert!(answer.contains("a=ice-lite"), "{answer}");
    let joined = ada
        .wait_event(std::time::Duration::from_secs(5), |m| {
            matches!(m, confab_protocol::ServerMessage::ParticipantJoined { participant } if participant.name == "Encoder")
        })
        .await;
    assert!(joined.is_some(), "Ada sees the encoder join");
    // The room (capacity 2) is now full: 503 with Retry-After.
    let r = post("lecture", "application/sdp", good(), OFFER)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "10");
    let r = delete(&location, app.tokens.mint("mallory", "Mallory", 60, None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = delete(&location, token(None, Role::Participant))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let left = ada
        .wait_event(std::time::Duration::from_secs(5), |m| {
            matches!(m, confab_protocol::ServerMessage::ParticipantLeft { .. })
        })
        .await;
    assert!(left.is_some(), "Ada sees the encoder leave");
    let r = delete(&location, token(None, Role::Participant))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "gone");
}

/// A second WebRTC stack: a webrtc-rs encoder publishes a camera and a microphone through WHIP
/// (all candidates in its offer, no DataChannel, no trickle), and a participant in the room
/// receives both at the rate sent over 20 s; `DELETE` takes the encoder out of the room.
#[tokio::test]
async fn a_webrtc_rs_encoder_publishes_through_whip_at_the_rate_sent() {
    use confab_client::{Client, ClientError};
    use std::time::{Duration, Instant};
    const WINDOW: Duration = Duration::from_secs(20);
    // Ada only watches: her publisher transport never connects, so the connect timeout (20 s
    // by default) would remove her mid-window.
    let app = spawn_app_with(|a| a.connect_timeout_s = 120).await;
    let room = "whip-webrtc-rs";
    let mut ada = Client::join(&app.ws_url("ada"), room, "Ada").await.unwrap();
    let token = app
        .tokens
        .mint("encoder", "Encoder", 600, Some(room.to_owned()));
    let location = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (url, bearer, loc) = (
        format!("http://{}/whip/{room}", app.addr),
        token.clone(),
        location.clone(),
    );
    let _encoder = Client::publish_whip(&common::av(), move |offer| async move {
        let fail = |e: String| ClientError::WebRtc(e);
        let r = http()
            .post(url)
            .header("content-type", "application/sdp")
            .bearer_auth(bearer)
            .body(offer)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if r.status() != StatusCode::CREATED {
            return Err(fail(format!("{}: {:?}", r.status(), r.text().await)));
        }
        *loc.lock().unwrap() = r.headers()["location"].to_str().unwrap().to_owned();
        r.text().await.map_err(|e| fail(e.to_string()))
    })
    .await
    .expect("published through WHIP");
    let location = location.lock().unwrap().clone();
    let Some(confab_protocol::ServerMessage::ParticipantJoined { participant }) = ada
        .wait_event(Duration::from_secs(5), |m| {
            matches!(m, confab_protocol::ServerMessage::ParticipantJoined { .. })
        })
        .await
    else {
        panic!("Ada sees the encoder join");
    };
    assert_eq!(participant.name, "Encoder");
    let flowing = common::eventually(Duration::from_secs(20), || {
        let (a, v) = common::received_av(&ada, &participant.id);
        a.min(v) >= 50
    })
    .await;
    assert!(flowing, "Ada receives the encoder");
    // Per track: (received, highest counter) now. The encoder numbers its packets, so the
    // counters say how many it sent; the window compares received with sent.
    let counts = || {
        let mut out = Vec::new();
        for t in common::received_from(&ada, &participant.id) {
            let st = t.stats.lock().unwrap().clone();
            out.push((t.video, st.received, st.last.unwrap_or(0), st.max_gap_us));
        }
        out.sort_by_key(|c| c.0);
        out
    };
    let before = counts();
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let after = counts();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        (before.len(), after.len()),
        (2, 2),
        "audio and video: {after:?}"
    );
    for ((video, r0, c0, _), (_, r1, c1, gap)) in before.iter().zip(&after) {
        let (received, sent) = (r1 - r0, u64::from(c1 - c0));
        let nominal = if *video { 100.0 } else { 50.0 } * elapsed;
        println!(
            "{}: {received} received of {sent} sent over {elapsed:.1} s ({:.0} % of the nominal rate sent), longest gap {} ms",
            if *video { "video" } else { "audio" },
            sent as f64 * 100.0 / nominal,
            gap / 1000
        );
        assert!(
            received as f64 >= 0.99 * sent as f64,
            "{received} of {sent} packets arrived"
        );
        assert!(
            sent as f64 >= 0.85 * nominal,
            "the encoder kept sending: {sent} packets in {elapsed:.1} s"
        );
        assert!(*gap < 500_000, "no stall over 500 ms: {gap} µs");
    }

    let r = http()
        .delete(format!("http://{}{location}", app.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let left = ada
        .wait_event(Duration::from_secs(5), |m| {
            matches!(m, confab_protocol::ServerMessage::ParticipantLeft { participant_id } if *participant_id == participant.id)
        })
        .await;
    assert!(left.is_some(), "the encoder left the room");
}
