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
    let r = http()
        .delete(url("/whip/lecture/0123"))
        .bearer_auth(token(None, Role::Participant))
        .send()
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
    let r = http()
        .delete(url(&location))
        .bearer_auth(app.tokens.mint("mallory", "Mallory", 60, None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http()
        .delete(url(&location))
        .bearer_auth(token(None, Role::Participant))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let left = ada
        .wait_event(std::time::Duration::from_secs(5), |m| {
            matches!(m, confab_protocol::ServerMessage::ParticipantLeft { .. })
        })
        .await;
    assert!(left.is_some(), "Ada sees the encoder leave");
    let r = http()
        .delete(url(&location))
        .bearer_auth(token(None, Role::Participant))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "gone");
}
