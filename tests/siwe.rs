//! Wallet sign-in (EIP-4361) against the real server: messages signed with real keys (anvil's
//! well-known development keys, used as plain keys, no chain), each refusal with its code, and a
//! signed-in wallet's token opening the WebSocket and joining a room.

mod common;

use alloy::signers::{local::PrivateKeySigner, Signer};
use common::{spawn_app, spawn_app_with, TestApp};
use confab_client::Client;
use serde_json::{json, Value};
use std::time::Duration;

const KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const ADDR_0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const KEY_1: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const WAIT: Duration = Duration::from_secs(10);

fn signer(key: &str) -> PrivateKeySigner {
    key.parse().expect("a valid private key")
}

/// An EIP-4361 message, as a wallet page builds it; fields the tests vary are public.
struct Msg {
    domain: String,
    address: String,
    uri: String,
    nonce: String,
    issued_at: String,
    /// Optional lines after `Issued At` (each starting with `\n`).
    tail: String,
}

impl Msg {
    /// A message for `app` (the domain and URI the test's requests are addressed to).
    fn for_app(app: &TestApp, nonce: &str) -> Msg {
        Msg {
            domain: app.addr.to_string(),
            address: ADDR_0.into(),
            uri: format!("http://{}/rooms/siwe", app.addr),
            nonce: nonce.into(),
            issued_at: rfc3339(chrono::Utc::now()),
            tail: String::new(),
        }
    }

    fn text(&self) -> String {
        format!(
            "{} wants you to sign in with your Ethereum account:\n{}\n\nSign in to confab.\n\n\
             URI: {}\nVersion: 1\nChain ID: 31337\nNonce: {}\nIssued At: {}{}",
            self.domain, self.address, self.uri, self.nonce, self.issued_at, self.tail
        )
    }
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn sign(key: &str, text: &str) -> String {
    let sig = signer(key)
        .sign_message(text.as_bytes())
        .await
        .expect("signing");
    format!("0x{}", hex::encode(sig.as_bytes()))
}

async fn nonce(app: &TestApp) -> String {
    let r = common::http()
        .get(format!("http://{}/api/auth/siwe/nonce", app.addr))
        .send()
        .await
        .expect("GET nonce");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["expires_in"], 300);
    body["nonce"].as_str().expect("a nonce").to_owned()
}

async fn post_raw(app: &TestApp, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = common::http()
        .post(format!("http://{}/api/auth/siwe", app.addr))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST sign-in");
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON body"))
}

async fn post(app: &TestApp, message: &str, signature: &str) -> (u16, Value) {
    post_raw(
        app,
        json!({"message": message, "signature": signature}).to_string(),
    )
    .await
}

/// Asserts a refusal with `status` and `code`, a human message, and no secret echoed back.
fn assert_refused(got: (u16, Value), status: u16, code: &str, secrets: &[&str]) {
    let (s, body) = got;
    assert_eq!(body["code"], code, "body: {body}");
    assert_eq!(s, status, "status for {code}");
    let text = body["message"].as_str().expect("a message");
    assert!(!text.is_empty());
    for secret in secrets {
        assert!(
            !body.to_string().contains(secret),
            "the reply echoes {secret}"
        );
    }
    assert!(body.get("token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_wallet_gets_a_token_for_its_checksummed_address_that_joins_a_room() {
    let app = spawn_app(4).await;
    let n = nonce(&app).await;
    assert!(n.len() >= 16 && n.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(n, nonce(&app).await, "every nonce is new");
    let text = Msg::for_app(&app, &n).text();
    let (status, body) = post(&app, &text, &sign(KEY_0, &text).await).await;
    assert_eq!(status, 200, "body: {body}");
    assert_eq!(body["address"], ADDR_0);
    assert_eq!(body["expires_in"], 7200);
    let token = body["token"].as_str().expect("a token");
    let claims = app.tokens.verify(token).expect("a token of this server");
    assert_eq!(claims.sub, ADDR_0, "the subject is the EIP-55 address");
    assert_eq!(claims.name, "0xf39F…2266");
    assert!(claims.room.is_none());

    // The token opens the signaling socket and joins a room.
    let room = format!("siwe-{}", uuid::Uuid::new_v4().simple());
    let url = format!("ws://{}/ws?token={token}", app.addr);
    let client = tokio::time::timeout(WAIT, Client::join(&url, &room, "wallet"))
        .await
        .expect("join in time")
        .expect("joined with the wallet token");
    drop(client);

    // A name given with the sign-in becomes the token's name.
    let n = nonce(&app).await;
    let text = Msg::for_app(&app, &n).text();
    let body = json!({"message": text, "signature": sign(KEY_0, &text).await, "name": "Ada"});
    let (status, body) = post_raw(&app, body.to_string()).await;
    assert_eq!(status, 200, "body: {body}");
    let claims = app.tokens.verify(body["token"].as_str().unwrap()).unwrap();
    assert_eq!((claims.sub.as_str(), claims.name.as_str()), (ADDR_0, "Ada"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_signed_by_another_key_is_refused_as_bad_signature() {
    let app = spawn_app(4).await;
    let text = Msg::for_app(&app, &nonce(&app).await).text();
    let sig = sign(KEY_1, &text).await;
    assert_refused(post(&app, &text, &sig).await, 401, "bad_signature", &[&sig]);
    let text = Msg::for_app(&app, &nonce(&app).await).text();
    assert_refused(
        post(&app, &text, "0xdeadbeef").await,
        401,
        "bad_signature",
        &[],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_another_domain_or_uri_is_refused() {
    let app = spawn_app(4).await;
    let mut m = Msg::for_app(&app, &nonce(&app).await);
    m.domain = "evil.example".into();
    m.uri = "https://evil.example/".into();
    let text = m.text();
    let got = post(&app, &text, &sign(KEY_0, &text).await).await;
    assert_refused(got, 401, "wrong_domain", &[&m.nonce]);

    let mut m = Msg::for_app(&app, &nonce(&app).await);
    m.uri = "https://evil.example/rooms/siwe".into();
    let text = m.text();
    let got = post(&app, &text, &sign(KEY_0, &text).await).await;
    assert_refused(got, 401, "wrong_uri", &[&m.nonce]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_public_origin_only_messages_naming_it_are_accepted() {
    let app = spawn_app_with(|a| a.public_origin = Some("https://meet.example.com".into())).await;
    // A message naming the address the request went to is not enough any more.
    let text = Msg::for_app(&app, &nonce(&app).await).text();
    let got = post(&app, &text, &sign(KEY_0, &text).await).await;
    assert_refused(got, 401, "wrong_domain", &[]);
    let mut m = Msg::for_app(&app, &nonce(&app).await);
    m.domain = "meet.example.com".into();
    m.uri = "https://meet.example.com/rooms/x".into();
    let text = m.text();
    let (status, body) = post(&app, &text, &sign(KEY_0, &text).await).await;
    assert_eq!(status, 200, "body: {body}");
    assert_eq!(body["address"], ADDR_0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_not_issued_here_is_refused() {
    let app = spawn_app(4).await;
    let text = Msg::for_app(&app, "madeUpNonce12345678").text();
    let got = post(&app, &text, &sign(KEY_0, &text).await).await;
    assert_refused(got, 401, "unknown_nonce", &["madeUpNonce12345678"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_is_good_for_one_attempt_only() {
    let app = spawn_app(4).await;
    let text = Msg::for_app(&app, &nonce(&app).await).text();
    let sig = sign(KEY_0, &text).await;
    let (status, body) = post(&app, &text, &sig).await;
    assert_eq!(status, 200, "body: {body}");
    // The same good message again: a replay.
    assert_refused(post(&app, &text, &sig).await, 401, "reused_nonce", &[&sig]);

    // A failed attempt burns the nonce too: the right signature afterwards is refused.
    let text = Msg::for_app(&app, &nonce(&app).await).text();
    let got = post(&app, &text, &sign(KEY_1, &text).await).await;
    assert_refused(got, 401, "bad_signature", &[]);
    let got = post(&app, &text, &sign(KEY_0, &text).await).await;
    assert_refused(got, 401, "reused_nonce", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_messages_are_refused() {
    let app = spawn_app(4).await;
    let now = chrono::Utc::now();
    let mut m = Msg::for_app(&app, &nonce(&app).await);
    m.issued_at = rfc3339(now - chrono::Duration::minutes(2));
    m.tail = format!(
        "\nExpiration Time: {}",
        rfc3339(now - chrono::Duration::minutes(1))
    );
    let text = m.text();
    assert_refused(
        post(&app, &text, &sign(KEY_0, &text).await).await,
        401,
        "expired",
        &[],
    );

    let mut m = Msg::for_app(&app, &nonce(&app).await);
    m.tail = format!(
        "\nNot Before: {}",
        rfc3339(now + chrono::Duration::minutes(10))
    );
    let text = m.text();
    let got = post(&app, &text, &sign(KEY_0, &text).await).await;
    assert_refused(got, 401, "not_yet_valid", &[]);

    let mut m = Msg::for_app(&app, &nonce(&app).await);
    m.issued_at = rfc3339(now + chrono::Duration::minutes(10));
    let text = m.text();
    let got = post(&app, &text, &sign(KEY_0, &text).await).await;
    assert_refused(got, 401, "not_yet_valid", &[]);

    // Within its window, the same shape passes.
    let mut m = Msg::for_app(&app, &nonce(&app).await);
    m.tail = format!(
        "\nExpiration Time: {}\nNot Before: {}",
        rfc3339(now + chrono::Duration::minutes(5)),
        rfc3339(now - chrono::Duration::seconds(5))
    );
    let text = m.text();
    let (status, body) = post(&app, &text, &sign(KEY_0, &text).await).await;
    assert_eq!(status, 200, "body: {body}");
    // The token does not outlive the message it was minted from.
    let left = body["expires_in"].as_u64().unwrap();
    assert!((295..=300).contains(&left), "expires_in {left}");
    let claims = app
        .tokens
        .verify(body["token"].as_str().unwrap())
        .expect("a valid token");
    let exp_in = claims.exp as i64 - chrono::Utc::now().timestamp();
    assert!((290..=300).contains(&exp_in), "token exp in {exp_in} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_messages_get_their_codes() {
    let app = spawn_app(4).await;
    let good = Msg::for_app(&app, &nonce(&app).await);
    let text = good.text();
    let sig = sign(KEY_0, &text).await;
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "malformed_message"),
        (json!({"message": text}).to_string(), 400, "malformed_message"),
        (json!({"signature": sig}).to_string(), 400, "malformed_message"),
        (json!({"message": 5, "signature": sig}).to_string(), 400, "malformed_message"),
        (json!({"message": "hello", "signature": sig}).to_string(), 400, "malformed_message"),
        (
            json!({"message": text.replace(&format!("Nonce: {}\n", good.nonce), ""), "signature": sig})
                .to_string(),
            400,
            "malformed_message",
        ),
        (
            json!({"message": text.replace(ADDR_0, &ADDR_0.to_lowercase()), "signature": sig})
                .to_string(),
            400,
            "malformed_message",
        ),
        (
            json!({"message": text.replace('\n', "\r\n"), "signature": sig}).to_string(),
            400,
            "malformed_message",
        ),
        (
            json!({"message": text, "signature": sig, "name": "  "}).to_string(),
            400,
            "invalid_name",
        ),
        (
            json!({"message": "x".repeat(20_000), "signature": sig}).to_string(),
            413,
            "body_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let got = post_raw(&app, body.clone()).await;
        assert_refused(got, status, code, &[&sig]);
    }
    // A message that does not parse names no nonce, and a refused name stops before the message
    // is read: none of those spent the nonce, so the good message still signs in.
    let (status, body) = post(&app, &text, &sig).await;
    assert_eq!(status, 200, "body: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_past_the_rate_limit_is_refused_on_both_routes() {
    let app = spawn_app(4).await;
    let url = format!("http://{}/api/auth/siwe/nonce", app.addr);
    let client = common::http();
    // Both routes draw on one bucket per address: 30 at once, then one a second.
    let (mut gets, mut posts) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let r = client.get(&url).send().await.unwrap();
        let limited = r.status() == 429;
        if limited {
            assert!(r.headers().contains_key("retry-after"));
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "rate_limited");
        }
        gets.push(limited);
        let (status, body) = post(&app, "not a message", "0x00").await;
        if status == 429 {
            assert_refused((status, body), 429, "rate_limited", &[]);
        } else {
            assert_refused((status, body), 400, "malformed_message", &[]);
        }
        posts.push(status == 429);
    }
    assert!(
        !gets[..10].iter().any(|l| *l),
        "the burst is allowed: {gets:?}"
    );
    assert!(
        gets.iter().any(|l| *l),
        "nonce requests get limited: {gets:?}"
    );
    assert!(posts.iter().any(|l| *l), "sign-ins get limited: {posts:?}");
}
