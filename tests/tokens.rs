//! Every token failure with its code, over the WebSocket upgrade and over REST: missing, bad
//! signature, expired (`token_expired`), wrong audience or issuer, another room, and a viewer
//! publishing; and `confab token` minting a role and a lifetime.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use confab::auth::{Role, TokenAuthority, AUDIENCE, ISSUER};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn forge(secret: &str, claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The `code` of a refused WebSocket upgrade (its HTTP status must be 401).
async fn ws_refusal(url: &str) -> String {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401, "{url}");
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}"))
                .unwrap_or(Value::Null);
            body["code"].as_str().unwrap_or_default().to_owned()
        }
        other => panic!("expected HTTP 401, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_failure_has_its_code_on_websocket_and_rest() {
    let app = common::spawn_app(4).await;
    let secret = std::fs::read_to_string(app.data_dir.join("jwt-secret")).unwrap();
    let secret = secret.trim();
    let base = json!({"sub": "u", "name": "U", "iat": now(), "exp": now() + 60,
                      "iss": ISSUER, "aud": AUDIENCE});
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let cases = [
        ("missing", String::new(), "unauthorized"),
        (
            "bad signature",
            forge("another-secret-entirely-xxxxxxxxxx", base.clone()),
            "unauthorized",
        ),
        (
            "expired",
            forge(secret, with("exp", json!(now() - 60))),
            "token_expired",
        ),
        (
            "wrong audience",
            forge(secret, with("aud", json!("someone-else"))),
            "unauthorized",
        ),
        (
            "wrong issuer",
            forge(secret, with("iss", json!("someone-else"))),
            "unauthorized",
        ),
        (
            "no audience",
            forge(secret, {
                let mut c = base.clone();
                c.as_object_mut().unwrap().remove("aud");
                c
            }),
            "unauthorized",
        ),
        (
            "unknown role",
            forge(secret, with("role", json!("root"))),
            "unauthorized",
        ),
    ];
    for (what, token, code) in &cases {
        let url = format!("ws://{}/ws?token={token}", app.addr);
        assert_eq!(&ws_refusal(&url).await, code, "WebSocket, {what}");
        let r = common::http()
            .get(format!("http://{}/api/presence", app.addr))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "REST, {what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], *code, "REST, {what}: {body}");
    }
    // The same claims, well formed, pass.
    let ok = forge(secret, base.clone());
    let r = common::http()
        .get(format!("http://{}/api/presence", app.addr))
        .bearer_auth(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A token for room A: refused in room B, on the socket and over REST.
    let for_a = app.tokens.mint("u", "U", 60, Some("room-a".into()));
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={for_a}", app.addr))
            .await
            .unwrap();
    ws.send(Message::text(
        json!({"type": "join", "room": "room-b", "name": "U"}).to_string(),
    ))
    .await
    .unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    let r = common::http()
        .get(format!("http://{}/api/rooms/room-b/messages", app.addr))
        .bearer_auth(&for_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A viewer joins and subscribes, but may not publish.
    let viewer = app.tokens.mint_role("v", "V", 60, None, Role::Viewer);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={viewer}", app.addr))
            .await
            .unwrap();
    ws.send(Message::text(
        json!({"type": "join", "room": "room-v", "name": "V"}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "joined" {
            break;
        }
    }
    let track = json!({"mid": "0", "kind": "audio", "source": "microphone"});
    let reply = error_reply(
        &mut ws,
        json!({"type": "publish_offer", "sdp": "v=0", "tracks": [track]}),
    )
    .await;
    assert_eq!(reply["code"], "not_allowed", "{reply}");
    // An offer declaring no track (the chat DataChannel only) passes the role check: this one
    // then fails on its SDP.
    let reply = error_reply(
        &mut ws,
        json!({"type": "publish_offer", "sdp": "v=0", "tracks": []}),
    )
    .await;
    assert_eq!(reply["code"], "invalid_sdp", "{reply}");
}

/// Sends `m` and returns the next `error` the server answers.
async fn error_reply<S>(ws: &mut S, m: Value) -> Value
where
    S: SinkExt<Message>
        + StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
    <S as futures_util::Sink<Message>>::Error: std::fmt::Debug,
{
    ws.send(Message::text(m.to_string())).await.unwrap();
    loop {
        let m = next_json(ws).await;
        if m["type"] == "error" {
            return m;
        }
    }
}

async fn next_json<S>(ws: &mut S) -> Value
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("a frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[test]
fn confab_token_mints_a_role_and_a_lifetime() {
    let secret = "a-test-secret-of-more-than-32-bytes-xx";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args([
            "token",
            "--identity",
            "u1",
            "--name",
            "Host",
            "--role",
            "host",
        ])
        .args(["--ttl", "2h", "--room", "r1"])
        .env("CONFAB_JWT_SECRET", secret)
        .output()
        .expect("confab token runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let c = TokenAuthority::new(secret.to_owned().into())
        .verify(token.trim())
        .expect("a valid token");
    assert_eq!(
        (c.sub.as_str(), c.role, c.room.as_deref()),
        ("u1", Role::Host, Some("r1"))
    );
    assert_eq!(c.exp - c.iat, 7200);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["token", "--identity", "u1", "--name", "N", "--role", "root"])
        .env("CONFAB_JWT_SECRET", secret)
        .output()
        .unwrap();
    assert!(!bad.status.success(), "an unknown role is refused");
}
