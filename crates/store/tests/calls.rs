//! 1:1 call records against both backends.

mod common;

use common::on_both_backends;
use confab_store::{CallStatus, Db, NewCall, StoreError, Uuid};

async fn place(db: &Db, caller: &str, callee: &str) -> confab_store::CallRecord {
    let call = NewCall {
        room_id: "r1".into(),
        caller_id: caller.into(),
        callee_id: callee.into(),
    };
    db.create_call(call).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_records_when_it_started_ended_and_how_long_it_lasted() {
    on_both_backends(|db| async move {
        let call = place(&db, "tutor", "student").await;
        assert_eq!(call.status, CallStatus::Pending);
        assert_eq!((call.answered_at, call.ended_at), (None, None));

        db.transition_call(call.id, CallStatus::Ringing, None)
            .await
            .unwrap();
        let ongoing = db
            .transition_call(call.id, CallStatus::Ongoing, None)
            .await
            .unwrap();
        assert!(ongoing.answered_at.is_some());
        assert_eq!(ongoing.duration(), None);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let ended = db
            .transition_call(call.id, CallStatus::Ended, Some("hangup"))
            .await
            .unwrap();
        assert_eq!(ended.status, CallStatus::Ended);
        assert_eq!(ended.end_reason.as_deref(), Some("hangup"));
        assert_eq!(ended.answered_at, ongoing.answered_at);
        assert!(ended.duration().unwrap() >= std::time::Duration::from_millis(20));
        assert_eq!(db.call(call.id).await.unwrap(), ended);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_call_ends_as_missed_or_rejected_without_a_duration() {
    on_both_backends(|db| async move {
        let missed = place(&db, "a", "b").await;
        db.transition_call(missed.id, CallStatus::Ringing, None)
            .await
            .unwrap();
        let missed = db
            .transition_call(missed.id, CallStatus::Missed, Some("timeout"))
            .await
            .unwrap();
        assert!(missed.ended_at.is_some() && missed.answered_at.is_none());
        assert_eq!(missed.duration(), None);

        let rejected = place(&db, "a", "b").await;
        let rejected = db
            .transition_call(rejected.id, CallStatus::Rejected, None)
            .await
            .unwrap();
        assert_eq!(rejected.status, CallStatus::Rejected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_call_refuses_to_change_but_a_repeated_change_is_harmless() {
    on_both_backends(|db| async move {
        let call = place(&db, "a", "b").await;
        db.transition_call(call.id, CallStatus::Missed, Some("offline"))
            .await
            .unwrap();
        let err = db
            .transition_call(call.id, CallStatus::Ongoing, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidTransition {
                    from: CallStatus::Missed,
                    to: CallStatus::Ongoing
                }
            ),
            "{err:?}"
        );
        let again = db
            .transition_call(call.id, CallStatus::Missed, Some("other"))
            .await
            .unwrap();
        assert_eq!(again.end_reason.as_deref(), Some("offline"));
        assert!(matches!(
            db.transition_call(Uuid::now_v7(), CallStatus::Ringing, None)
                .await,
            Err(StoreError::NotFound)
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_an_answer_and_a_timeout_racing_exactly_one_wins() {
    on_both_backends(|db| async move {
        for _ in 0..5 {
            let call = place(&db, "a", "b").await;
            db.transition_call(call.id, CallStatus::Ringing, None)
                .await
                .unwrap();
            let (d1, d2) = (db.clone(), db.clone());
            let answer = tokio::spawn(async move {
                d1.transition_call(call.id, CallStatus::Ongoing, None).await
            });
            let timeout = tokio::spawn(async move {
                d2.transition_call(call.id, CallStatus::Missed, Some("timeout"))
                    .await
            });
            let (a, t) = (answer.await.unwrap(), timeout.await.unwrap());
            assert!(a.is_ok() != t.is_ok(), "answer {a:?}, timeout {t:?}");
            let stored = db.call(call.id).await.unwrap();
            let expected = if a.is_ok() {
                CallStatus::Ongoing
            } else {
                CallStatus::Missed
            };
            assert_eq!(stored.status, expected);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_call_history_lists_placed_and_received_calls_newest_first() {
    on_both_backends(|db| async move {
        let c1 = place(&db, "alice", "bob").await;
        let c2 = place(&db, "carol", "alice").await;
        place(&db, "bob", "carol").await;
        let ids: Vec<Uuid> = db
            .calls_of_user("alice", 10, None)
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, [c2.id, c1.id]);
        assert_eq!(db.calls_of_user("alice", 1, None).await.unwrap().len(), 1);
        // The next page starts after the last id of the previous one.
        let next: Vec<Uuid> = db
            .calls_of_user("alice", 10, Some(c2.id))
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(next, [c1.id]);
        assert!(db
            .calls_of_user("nobody", 10, None)
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}
