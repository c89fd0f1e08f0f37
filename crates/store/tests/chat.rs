//! The chat repository against both backends (SQLite file and the shared PostgreSQL).

mod common;

use common::{msg, on_both_backends};
use confab_store::{
    ChatText, ClientMsgId, Db, DbOptions, InsertOutcome, MessageType, NewMessage, StoreError, Uuid,
    HISTORY_MAX_LIMIT,
};

/// Stores `n` messages from alternating users in `room`, returning their server ids in order.
async fn fill(db: &Db, room: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        let (m, _) = db
            .insert_message(msg(room, user, &format!("c{i}"), &format!("message {i}")))
            .await
            .unwrap();
        ids.push(m.id);
    }
    ids
}

fn texts(messages: &[confab_store::StoredMessage]) -> Vec<String> {
    messages.iter().map(|m| m.text.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_message_reads_back_with_every_field() {
    on_both_backends(|db| async move {
        let (stored, outcome) = db
            .insert_message(msg("r1", "alice", "c-1", "hello 👋"))
            .await
            .unwrap();
        assert_eq!(outcome, InsertOutcome::Inserted);
        assert_eq!(stored.id.get_version_num(), 7);
        assert_eq!(stored.room_id, "r1");
        assert_eq!(stored.user_id, "alice");
        assert_eq!(stored.user_name, "alice (name)");
        assert_eq!(stored.text, "hello 👋");
        assert_eq!(stored.message_type, MessageType::Text);
        assert_eq!(stored.client_msg_id, "c-1");
        assert_eq!(stored.updated_at, stored.created_at);
        assert!(!stored.is_deleted() && !stored.is_edited());

        let history = db.history("r1", None, 50).await.unwrap();
        assert_eq!(history, vec![stored.clone()]);
        assert_eq!(db.message("r1", stored.id).await.unwrap(), stored);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_of_exactly_the_limit_in_multibyte_characters_round_trips_byte_for_byte() {
    on_both_backends(|db| async move {
        let euros = ChatText::MAX_BYTES / 3; // '€' is 3 bytes of UTF-8
        let text = format!(
            "{}{}",
            "€".repeat(euros),
            "a".repeat(ChatText::MAX_BYTES - 3 * euros)
        );
        assert_eq!(text.len(), ChatText::MAX_BYTES);
        let mut m = msg("r1", "alice", "c-1", "x");
        m.text = ChatText::parse(text.clone()).unwrap();
        db.insert_message(m).await.unwrap();
        assert_eq!(db.history("r1", None, 1).await.unwrap()[0].text, text);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_oversized_texts_are_refused_before_reaching_the_database() {
    // Parsing is the only way to a `ChatText`, so the repository cannot be handed either.
    assert_eq!(
        ChatText::parse("   "),
        Err(confab_store::InvalidInput::Empty)
    );
    assert_eq!(
        ChatText::parse("x".repeat(5000)),
        Err(confab_store::InvalidInput::TooLong {
            len: 5000,
            max: 4096
        })
    );
    on_both_backends(|db| async move {
        for bad in ["", " \n ", &"x".repeat(ChatText::MAX_BYTES + 1)] {
            assert!(ChatText::parse(bad).is_err());
        }
        assert!(db.history("r1", None, 50).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_returns_the_first_row_and_stores_nothing_new() {
    on_both_backends(|db| async move {
        let (first, o1) = db
            .insert_message(msg("r1", "alice", "c-1", "hello"))
            .await
            .unwrap();
        let (again, o2) = db
            .insert_message(msg("r1", "alice", "c-1", "hello"))
            .await
            .unwrap();
        assert_eq!(
            (o1, o2),
            (InsertOutcome::Inserted, InsertOutcome::Duplicate)
        );
        assert_eq!(again.id, first.id);
        assert_eq!(again.created_at, first.created_at);
        assert_eq!(again, first);
        assert_eq!(db.history("r1", None, 50).await.unwrap().len(), 1);

        // The same client id in another room is another message.
        let (other_room, o3) = db
            .insert_message(msg("r2", "alice", "c-1", "hello"))
            .await
            .unwrap();
        assert_eq!(o3, InsertOutcome::Inserted);
        assert_ne!(other_room.id, first.id);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resends_of_one_message_store_exactly_one_row() {
    on_both_backends(|db| async move {
        let sends: Vec<_> = (0..8)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(
                    async move { db.insert_message(msg("r1", "alice", "c-1", "hi")).await },
                )
            })
            .collect();
        let mut inserted = 0;
        let mut ids = Vec::new();
        for send in sends {
            let (m, outcome) = send.await.unwrap().unwrap();
            inserted += usize::from(outcome == InsertOutcome::Inserted);
            ids.push(m.id);
        }
        assert_eq!(inserted, 1);
        assert!(ids.iter().all(|id| *id == ids[0]));
        assert_eq!(db.history("r1", None, 50).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_message_under_a_taken_client_id_is_refused_not_merged() {
    on_both_backends(|db| async move {
        db.insert_message(msg("r1", "alice", "c-1", "mine"))
            .await
            .unwrap();
        let err = db
            .insert_message(msg("r1", "bob", "c-1", "his"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ClientMsgIdTaken), "{err:?}");
        assert_eq!(texts(&db.history("r1", None, 50).await.unwrap()), ["mine"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_join_is_the_latest_fifty_oldest_first() {
    on_both_backends(|db| async move {
        let ids = fill(&db, "r1", 60).await;
        fill(&db, "elsewhere", 3).await;
        let history = db.history("r1", None, 50).await.unwrap();
        let got: Vec<Uuid> = history.iter().map(|m| m.id).collect();
        assert_eq!(got, ids[10..]);
        assert_eq!(history[0].text, "message 10");
        assert_eq!(history[49].text, "message 59");
        assert!(history
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at));
        assert!(history.iter().all(|m| m.room_id == "r1"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_with_before_walks_back_through_strictly_older_messages() {
    on_both_backends(|db| async move {
        let ids = fill(&db, "r1", 25).await;
        let page1 = db.history("r1", None, 10).await.unwrap();
        assert_eq!(page1.iter().map(|m| m.id).collect::<Vec<_>>(), ids[15..]);
        let page2 = db.history("r1", Some(page1[0].id), 10).await.unwrap();
        assert_eq!(page2.iter().map(|m| m.id).collect::<Vec<_>>(), ids[5..15]);
        let page3 = db.history("r1", Some(page2[0].id), 10).await.unwrap();
        assert_eq!(page3.iter().map(|m| m.id).collect::<Vec<_>>(), ids[..5]);
        assert!(db.history("r1", Some(ids[0]), 10).await.unwrap().is_empty());
        assert!(db.history("r1", None, 0).await.unwrap().is_empty());
        assert!(db
            .history("no-such-room", None, 10)
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_never_returns_more_than_the_cap() {
    on_both_backends(|db| async move {
        fill(&db, "r1", HISTORY_MAX_LIMIT as usize + 5).await;
        let history = db.history("r1", None, 10_000).await.unwrap();
        assert_eq!(history.len(), HISTORY_MAX_LIMIT as usize);
        assert_eq!(
            history.last().unwrap().text,
            format!("message {}", HISTORY_MAX_LIMIT + 4)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_author_edits_then_deletes_leaving_a_tombstone_in_place() {
    on_both_backends(|db| async move {
        let ids = fill(&db, "r1", 3).await; // alice, bob, alice
        let edited = db
            .edit_message(
                "r1",
                ids[0],
                "alice",
                ChatText::parse("message 0, fixed").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(edited.text, "message 0, fixed");
        assert!(edited.is_edited());
        assert!(edited.updated_at >= edited.created_at);

        let tombstone = db.delete_message("r1", ids[2], "alice").await.unwrap();
        assert!(tombstone.is_deleted());
        assert_eq!(tombstone.text, "");

        let history = db.history("r1", None, 50).await.unwrap();
        assert_eq!(history.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
        assert_eq!(texts(&history), ["message 0, fixed", "message 1", ""]);
        assert_eq!(history[0].created_at, edited.created_at);
        assert_eq!(history[2], tombstone);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_cannot_edit_or_delete_and_a_tombstone_stays_deleted() {
    on_both_backends(|db| async move {
        let ids = fill(&db, "r1", 1).await; // alice's
        let text = || ChatText::parse("hijacked").unwrap();
        assert!(matches!(
            db.edit_message("r1", ids[0], "bob", text()).await,
            Err(StoreError::NotAuthor)
        ));
        assert!(matches!(
            db.delete_message("r1", ids[0], "bob").await,
            Err(StoreError::NotAuthor)
        ));
        assert!(matches!(
            db.edit_message("r1", Uuid::now_v7(), "alice", text()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            db.delete_message("other-room", ids[0], "alice").await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            db.message("other-room", ids[0]).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            texts(&db.history("r1", None, 5).await.unwrap()),
            ["message 0"]
        );

        db.delete_message("r1", ids[0], "alice").await.unwrap();
        assert!(matches!(
            db.delete_message("r1", ids[0], "alice").await,
            Err(StoreError::Deleted)
        ));
        assert!(matches!(
            db.edit_message("r1", ids[0], "alice", text()).await,
            Err(StoreError::Deleted)
        ));
        // Refusals are answers, not outages.
        assert!(!StoreError::NotAuthor.is_retryable());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_of_a_deleted_message_returns_its_tombstone() {
    on_both_backends(|db| async move {
        let (m, _) = db
            .insert_message(msg("r1", "alice", "c-1", "oops"))
            .await
            .unwrap();
        db.delete_message("r1", m.id, "alice").await.unwrap();
        let (again, outcome) = db
            .insert_message(msg("r1", "alice", "c-1", "oops"))
            .await
            .unwrap();
        assert_eq!(outcome, InsertOutcome::Duplicate);
        assert!(again.is_deleted());
        assert_eq!(again.id, m.id);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_and_file_messages_keep_their_type() {
    on_both_backends(|db| async move {
        for (i, kind) in [MessageType::System, MessageType::File]
            .into_iter()
            .enumerate()
        {
            let m = NewMessage {
                message_type: kind,
                client_msg_id: ClientMsgId::generate(),
                ..msg("r1", "server", "unused", &format!("event {i}"))
            };
            db.insert_message(m).await.unwrap();
        }
        let kinds: Vec<_> = db
            .history("r1", None, 5)
            .await
            .unwrap()
            .iter()
            .map(|m| m.message_type)
            .collect();
        assert_eq!(kinds, [MessageType::System, MessageType::File]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_given_as_a_bare_path_is_created_and_kept_across_reconnects() {
    let dir = std::env::temp_dir().join(format!("confab-store-{}", Uuid::new_v4()));
    let path = dir.join("nested").join("chat.db");
    let url = path.to_str().unwrap().to_owned();
    let first = common::connect_with(&url, &DbOptions::default()).await;
    assert_eq!(first.backend(), confab_store::Backend::Sqlite);
    first
        .insert_message(msg("r1", "alice", "c-1", "persisted"))
        .await
        .unwrap();
    first.close().await;
    assert!(path.exists());

    // Connecting again re-runs the (already applied) migrations without harm.
    let second = common::connect_with(&format!("sqlite://{url}"), &DbOptions::default()).await;
    assert_eq!(
        texts(&second.history("r1", None, 5).await.unwrap()),
        ["persisted"]
    );
    second.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_unknown_url_scheme_is_a_configuration_error() {
    let err = Db::connect("mysql://localhost/x", &DbOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_in_memory_sqlite_database_keeps_its_data_for_the_life_of_the_pool() {
    let db = common::connect_with("sqlite::memory:", &DbOptions::default()).await;
    for i in 0..3 {
        db.insert_message(msg("r1", "alice", &format!("c{i}"), "kept"))
            .await
            .unwrap();
    }
    assert_eq!(db.history("r1", None, 10).await.unwrap().len(), 3);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reachable_database_passes_the_health_check() {
    on_both_backends(|db| async move {
        db.health_check().await.unwrap();
    })
    .await;
}
