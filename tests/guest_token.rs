//! `POST /api/guest-token` is rate-limited per client IP address with its own budget: past it the
//! answer is 429 `rate_limited` (the REST error shape) with `Retry-After`, and wallet sign-in keeps
//! its separate budget.

mod common;

use confab::http::GUEST_TOKEN_BURST;

#[tokio::test]
async fn guest_tokens_past_the_per_ip_budget_are_refused_with_rate_limited() {
    let app = common::spawn_app(16).await;
    let http = common::http();
    let url = format!("http://{}/api/guest-token", app.addr);
    let ask = || {
        http.post(&url)
            .json(&serde_json::json!({"name": "Ada"}))
            .send()
    };
    for i in 0..GUEST_TOKEN_BURST {
        let r = ask().await.unwrap();
        assert_eq!(r.status(), 200, "request {i} of the burst");
    }
    // The budget refills at one every 2 s: the next request, right away, is over it.
    let r = ask().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(
        r.headers().get("retry-after").is_some(),
        "Retry-After is set"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    // Wallet sign-in counts apart.
    let r = http
        .get(format!("http://{}/api/auth/siwe/nonce", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the sign-in budget is its own");
}
