//! The admin views and the room directory against the real server with real webrtc-rs peers:
//! who may read them (anonymous 401, participant 403, admin 200), what they show (participants,
//! tracks, mute state, transport states, the selected pair; never a token), and a host listing
//! a room that the directory then shows with its participant count, until it closes.

mod common;

use std::time::Duration;

use confab::auth::Role;
use confab_client::{Client, SyntheticTrack};
use confab_protocol::Source;
use serde_json::{json, Value};

async fn get(app: &common::TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = common::http().get(format!("http://{}{path}", app.addr));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(app: &common::TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = common::http()
        .post(format!("http://{}{path}", app.addr))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_views_show_the_room_to_admins_only_and_the_directory_lists_what_a_host_listed() {
    let app = common::spawn_app(4).await;
    let admin = app.tokens.mint_role("ops", "Ops", 60, None, Role::Admin);
    let participant = app.tokens.mint("p", "P", 60, None);
    let host = app
        .tokens
        .mint_role("h", "H", 60, Some("study-1".into()), Role::Host);

    for path in ["/api/rooms", "/api/rooms/study-1"] {
        assert_eq!(get(&app, path, None).await.0, 401, "{path} anonymous");
        assert_eq!(
            get(&app, path, Some(&participant)).await.0,
            403,
            "{path} participant"
        );
    }
    assert_eq!(get(&app, "/api/rooms/study-1", Some(&admin)).await.0, 404);

    let a_token = app.ws_url("ada");
    let mut ada = Client::join(&a_token, "study-1", "Ada")
        .await
        .expect("ada joins");
    ada.publish(&[
        (Source::Camera, SyntheticTrack::video()),
        (Source::Microphone, SyntheticTrack::audio()),
    ])
    .await
    .expect("ada publishes");
    let mut bob = Client::join(&app.ws_url("bob"), "study-1", "Bob")
        .await
        .expect("bob joins");
    bob.publish(&[(Source::Microphone, SyntheticTrack::audio())])
        .await
        .expect("bob publishes");

    let (status, list) = get(&app, "/api/rooms", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(list["rooms"], json!([{"id": "study-1", "participants": 2}]));

    // Transports connect and a pair is selected: wait until the view says so.
    let mut room = Value::Null;
    for _ in 0..100 {
        room = get(&app, "/api/rooms/study-1", Some(&admin)).await.1;
        let ready = room["participants"].as_array().is_some_and(|ps| {
            ps.iter().all(|p| {
                p["publisher"]["state"] == "connected"
                    && p["subscriber"]["state"] == "connected"
                    && p["publisher"]["selected_pair"]["protocol"] == "udp"
            })
        });
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ps = room["participants"].as_array().expect("participants");
    assert_eq!(ps.len(), 2, "{room}");
    assert_eq!(
        (ps[0]["name"].as_str(), ps[0]["user_id"].as_str()),
        (Some("Ada"), Some("ada"))
    );
    let kinds: Vec<&str> = ps[0]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{room}");
    assert!(kinds.contains(&"video") && kinds.contains(&"audio"));
    assert!(ps[0]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["muted"] == false));
    for p in ps {
        for t in ["publisher", "subscriber"] {
            assert_eq!(p[t]["state"], "connected", "{room}");
            assert_eq!(p[t]["consent"], "connected", "{room}");
            assert_eq!(p[t]["selected_pair"]["protocol"], "udp", "{room}");
            assert!(p[t]["selected_pair"]["remote"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"));
        }
    }
    let text = room.to_string();
    for secret in [
        "token",
        "ufrag",
        "pwd",
        a_token.split("token=").nth(1).unwrap(),
    ] {
        assert!(
            !text.contains(secret),
            "the admin view exposes {secret:?}: {text}"
        );
    }

    // The directory: only the room's host may list it; any token may read it.
    let listing = json!({"listed": true, "title": "Spanish B1 study group"});
    assert_eq!(
        post(
            &app,
            "/api/rooms/study-1/listing",
            &participant,
            listing.clone()
        )
        .await
        .0,
        403
    );
    let other_host = app
        .tokens
        .mint_role("h2", "H2", 60, Some("elsewhere".into()), Role::Host);
    assert_eq!(
        post(
            &app,
            "/api/rooms/study-1/listing",
            &other_host,
            listing.clone()
        )
        .await
        .0,
        403
    );
    assert_eq!(
        post(
            &app,
            "/api/rooms/study-1/listing",
            &host,
            json!({"listed": true, "title": " "})
        )
        .await
        .0,
        400
    );
    let (status, body) = post(&app, "/api/rooms/study-1/listing", &host, listing).await;
    assert_eq!((status, body["listed"].as_bool()), (200, Some(true)));
    assert_eq!(get(&app, "/api/rooms/public", None).await.0, 401);
    let (status, public) = get(&app, "/api/rooms/public", Some(&participant)).await;
    assert_eq!(status, 200);
    assert_eq!(
        public["rooms"],
        json!([{"id": "study-1", "title": "Spanish B1 study group", "participants": 2}])
    );
    let detail = get(&app, "/api/rooms/study-1", Some(&admin)).await.1;
    assert_eq!(detail["listed"], true);

    // When everyone has left, the room is gone from both views.
    ada.leave().await;
    bob.leave().await;
    let mut gone = false;
    for _ in 0..50 {
        let (_, public) = get(&app, "/api/rooms/public", Some(&participant)).await;
        let (_, list) = get(&app, "/api/rooms", Some(&admin)).await;
        if public["rooms"] == json!([]) && list["rooms"] == json!([]) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the closed room left the directory and the admin view"
    );
}
