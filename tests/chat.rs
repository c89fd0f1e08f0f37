//! Chat over the `chat` DataChannel through the real server, on SQLite (the embedded default)
//! and on a real PostgreSQL: relay, ack after commit, idempotent resend, history on join, REST
//! paging, edit/delete by the author only, validation, rate limit, and a database outage.

mod common;

use common::{drop_pg_database, fresh_pg_database, spawn_app_with_db, CuttableProxy, TestApp};
use confab_client::{Client, SyntheticTrack};
use confab_protocol::chat::{ChatClientMessage, ChatMessage, ChatServerMessage};
use confab_protocol::Source;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

async fn chatter(app: &TestApp, room: &str, name: &str) -> Client {
    let mut c = Client::join(&app.ws_url(name), room, name)
        .await
        .expect("join");
    c.publish(&[]).await.expect("publish (chat only)");
    c.chat_ready(WAIT).await.expect("chat channel opens");
    c
}

async fn history(c: &mut Client) -> Vec<ChatMessage> {
    let mut all = Vec::new();
    loop {
        match c
            .wait_chat(WAIT, |m| matches!(m, ChatServerMessage::History { .. }))
            .await
        {
            Some(ChatServerMessage::History { messages, done, .. }) => {
                all.extend(messages);
                if done {
                    return all;
                }
            }
            other => panic!("expected history, got {other:?}"),
        }
    }
}

fn send(cid: &str, text: &str) -> ChatClientMessage {
    ChatClientMessage::Send {
        client_msg_id: cid.into(),
        text: text.into(),
    }
}

async fn ack(c: &mut Client, cid: &str) -> ChatMessage {
    match c
        .wait_chat(WAIT, |m| {
            matches!(m, ChatServerMessage::Ack { client_msg_id, .. } if client_msg_id == cid)
                || matches!(m, ChatServerMessage::Error { .. })
        })
        .await
    {
        Some(ChatServerMessage::Ack { message, .. }) => message,
        other => panic!("expected ack for {cid}, got {other:?}"),
    }
}

async fn chat_error(c: &mut Client) -> String {
    match c
        .wait_chat(WAIT, |m| matches!(m, ChatServerMessage::Error { .. }))
        .await
    {
        Some(ChatServerMessage::Error { code, .. }) => code,
        other => panic!("expected a chat error, got {other:?}"),
    }
}

async fn conversation(app: TestApp) {
    let room = format!("chat-{}", uuid::Uuid::new_v4().simple());
    let mut a = chatter(&app, &room, "ada").await;
    let mut b = chatter(&app, &room, "bob").await;
    history(&mut a).await;
    history(&mut b).await;

    // Send: acknowledged with the stored id, relayed to the other.
    a.chat_send(&send("m1", "hello bob")).await.unwrap();
    let m1 = ack(&mut a, "m1").await;
    assert_eq!(m1.text, "hello bob");
    let relayed = b.wait_chat(WAIT, |m| matches!(m, ChatServerMessage::Message { message } if message.message_type == "text")).await;
    assert!(
        matches!(relayed, Some(ChatServerMessage::Message { message }) if message.id == m1.id && message.user_name == "ada")
    );

    // A resend under the same client id is acknowledged again with the same id, stored once.
    a.chat_send(&send("m1", "hello bob")).await.unwrap();
    assert_eq!(ack(&mut a, "m1").await.id, m1.id);
    b.chat_send(&send("b1", "hi ada")).await.unwrap();
    let b1 = ack(&mut b, "b1").await;
    let next = b
        .wait_chat(
            Duration::from_millis(500),
            |m| matches!(m, ChatServerMessage::Message { message } if message.id == m1.id),
        )
        .await;
    assert!(next.is_none(), "a duplicate is never relayed twice");

    // Edit and delete: the author may, others may not; everyone sees the change.
    a.chat_send(&ChatClientMessage::Edit {
        id: m1.id.clone(),
        text: "hello, bob".into(),
    })
    .await
    .unwrap();
    let edited = b
        .wait_chat(WAIT, |m| matches!(m, ChatServerMessage::Edited { .. }))
        .await;
    assert!(
        matches!(edited, Some(ChatServerMessage::Edited { message }) if message.text == "hello, bob" && message.edited_at.is_some())
    );
    b.chat_send(&ChatClientMessage::Edit {
        id: m1.id.clone(),
        text: "forged".into(),
    })
    .await
    .unwrap();
    assert_eq!(chat_error(&mut b).await, "not_author");
    b.chat_send(&ChatClientMessage::Delete { id: m1.id.clone() })
        .await
        .unwrap();
    assert_eq!(chat_error(&mut b).await, "not_author");
    b.chat_send(&ChatClientMessage::Delete { id: b1.id.clone() })
        .await
        .unwrap();
    let deleted = a
        .wait_chat(WAIT, |m| matches!(m, ChatServerMessage::Deleted { .. }))
        .await;
    assert_eq!(
        deleted,
        Some(ChatServerMessage::Deleted { id: b1.id.clone() })
    );

    // Validation.
    a.chat_send(&send("e1", "   ")).await.unwrap();
    assert_eq!(chat_error(&mut a).await, "empty");
    a.chat_send(&send("e2", &"x".repeat(4097))).await.unwrap();
    assert_eq!(chat_error(&mut a).await, "too_long");
    a.chat_send_raw("{nope").await.unwrap();
    assert_eq!(chat_error(&mut a).await, "bad_json");
    // A NUL (PostgreSQL refuses it in text) or any other control character: refused before the
    // database, as the client's mistake (`bad_request`), never as an outage to retry.
    a.chat_send(&send("e3", "nul\0inside")).await.unwrap();
    match a
        .wait_chat(WAIT, |m| matches!(m, ChatServerMessage::Error { .. }))
        .await
    {
        Some(ChatServerMessage::Error {
            code,
            message,
            client_msg_id,
        }) => {
            assert_eq!(code, "bad_request");
            assert!(message.contains("control character"), "{message}");
            assert_eq!(client_msg_id.as_deref(), Some("e3"));
        }
        other => panic!("expected bad_request, got {other:?}"),
    }
    a.chat_send(&ChatClientMessage::Edit {
        id: m1.id.clone(),
        text: "esc\u{1b}[2J".into(),
    })
    .await
    .unwrap();
    assert_eq!(chat_error(&mut a).await, "bad_request");

    // A late joiner gets the history: joins (system), the edited message, the tombstone.
    let mut c = chatter(&app, &room, "cy").await;
    let h = history(&mut c).await;
    let ids: Vec<&str> = h.iter().map(|m| m.id.as_str()).collect();
    assert!(
        ids.contains(&m1.id.as_str()) && ids.contains(&b1.id.as_str()),
        "history has both messages: {h:?}"
    );
    assert!(h
        .iter()
        .any(|m| m.message_type == "system" && m.text.contains("ada")));
    assert!(h
        .iter()
        .find(|m| m.id == b1.id)
        .is_some_and(|m| m.deleted && m.text.is_empty()));
    assert!(h
        .iter()
        .find(|m| m.id == m1.id)
        .is_some_and(|m| m.text == "hello, bob"));
    assert!(h.windows(2).all(|w| w[0].id < w[1].id), "oldest first");

    // REST paging, authorized like the room.
    let http = common::http();
    let url = format!("http://{}/api/rooms/{room}/messages", app.addr);
    let token = app.tokens.mint("cy", "cy", 60, None);
    let page: serde_json::Value = http
        .get(format!("{url}?limit=2"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(page["has_more"], true);
    let oldest = msgs[0]["id"].as_str().unwrap();
    let older: serde_json::Value = http
        .get(format!("{url}?limit=200&before={oldest}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(older["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["id"].as_str().unwrap() < oldest));
    assert_eq!(older["has_more"], false);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let other_room = app.tokens.mint("cy", "cy", 60, Some("elsewhere".into()));
    assert_eq!(
        http.get(&url)
            .bearer_auth(other_room)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    // Rate limit: a burst past 10 messages is refused.
    let mut limited = 0;
    for i in 0..15 {
        c.chat_send(&send(&format!("r{i}"), "spam")).await.unwrap();
    }
    for _ in 0..15 {
        match c
            .wait_chat(WAIT, |m| {
                matches!(
                    m,
                    ChatServerMessage::Ack { .. } | ChatServerMessage::Error { .. }
                )
            })
            .await
        {
            Some(ChatServerMessage::Error { code, .. }) if code == "rate_limited" => limited += 1,
            Some(_) => {}
            None => panic!("every send is answered"),
        }
    }
    assert!(limited >= 4, "{limited} refused");
    // The budget is one for every chat operation: history, edit and delete floods are refused
    // the same way (before touching the database: the ids below do not exist).
    let other = uuid::Uuid::new_v4().to_string();
    let floods = [
        ChatClientMessage::History {
            before: None,
            limit: Some(5),
        },
        ChatClientMessage::Edit {
            id: other.clone(),
            text: "x".into(),
        },
        ChatClientMessage::Delete { id: other },
    ];
    for m in &floods {
        for _ in 0..5 {
            c.chat_send(m).await.unwrap();
        }
        let mut refused = 0;
        for _ in 0..5 {
            match c
                .wait_chat(WAIT, |m| {
                    matches!(
                        m,
                        ChatServerMessage::Error { .. } | ChatServerMessage::History { .. }
                    )
                })
                .await
            {
                Some(ChatServerMessage::Error { code, .. }) if code == "rate_limited" => {
                    refused += 1
                }
                Some(_) => {}
                None => panic!("every {m:?} is answered"),
            }
        }
        assert!(
            refused >= 3,
            "{m:?} past the budget: {refused} of 5 refused"
        );
    }
    for c in [a, b, c] {
        c.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_relayed_acknowledged_and_replayed_on_sqlite() {
    conversation(spawn_app_with_db(16, None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_relayed_acknowledged_and_replayed_on_postgresql() {
    let (url, name) = fresh_pg_database(None).await;
    conversation(spawn_app_with_db(16, Some(url)).await).await;
    drop_pg_database(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_fails_sends_visibly_keeps_media_flowing_and_loses_nothing_acknowledged()
{
    let pg: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = CuttableProxy::start(pg).await;
    let (url, name) = fresh_pg_database(Some(proxy.addr)).await;
    let app = spawn_app_with_db(16, Some(url)).await;
    let room = format!("outage-{}", uuid::Uuid::new_v4().simple());
    let mut a = Client::join(&app.ws_url("a"), &room, "a").await.unwrap();
    a.publish(&[(Source::Camera, SyntheticTrack::video())])
        .await
        .unwrap();
    a.chat_ready(WAIT).await.unwrap();
    let b = chatter(&app, &room, "b").await;
    let mut acked = Vec::new();
    for i in 0..3 {
        let cid = format!("before-{i}");
        a.chat_send(&send(&cid, "before the outage")).await.unwrap();
        acked.push(ack(&mut a, &cid).await.id);
    }

    let count = |c: &Client| {
        c.remote_tracks()
            .iter()
            .map(|t| t.stats.lock().unwrap().received)
            .sum::<u64>()
    };
    assert!(
        common::eventually(WAIT, || count(&b) > 10).await,
        "media flows before the outage"
    );
    proxy.cut().await;
    a.chat_send(&send("during", "while the database is down"))
        .await
        .unwrap();
    match a
        .wait_chat(WAIT, |m| {
            matches!(
                m,
                ChatServerMessage::Error { .. } | ChatServerMessage::Ack { .. }
            )
        })
        .await
    {
        Some(ChatServerMessage::Error {
            code,
            client_msg_id,
            message,
        }) => {
            assert_eq!(code, "chat_unavailable");
            assert_eq!(client_msg_id.as_deref(), Some("during"));
            // The database's own error text stays in the server's log.
            assert_eq!(
                message,
                "message not stored: the chat is unavailable right now"
            );
        }
        other => panic!("expected chat_unavailable, got {other:?}"),
    }
    // Media keeps flowing while the database is down.
    let before = count(&b);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(count(&b) > before, "media flows during the outage");

    proxy.restore();
    // The client retries with the same id until it is acknowledged.
    let mut stored = None;
    for _ in 0..50 {
        a.chat_send(&send("during", "while the database is down"))
            .await
            .unwrap();
        match a
            .wait_chat(WAIT, |m| {
                matches!(
                    m,
                    ChatServerMessage::Error { .. } | ChatServerMessage::Ack { .. }
                )
            })
            .await
        {
            Some(ChatServerMessage::Ack { message, .. }) => {
                stored = Some(message.id);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    acked.push(stored.expect("acknowledged after recovery"));
    // Nothing acknowledged is missing, nothing is doubled.
    let page = app
        .get_json(&format!("/api/rooms/{room}/messages?limit=200"), "a")
        .await;
    let texts: Vec<&serde_json::Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["message_type"] == "text")
        .collect();
    for id in &acked {
        assert_eq!(
            texts.iter().filter(|m| m["id"] == id.as_str()).count(),
            1,
            "acknowledged message {id} is stored once"
        );
    }
    assert_eq!(texts.len(), acked.len());
    a.leave().await;
    b.leave().await;
    drop(app);
    drop_pg_database(&name).await;
}
