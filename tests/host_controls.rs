//! Host controls, enforced by the server, with real webrtc-rs peers: a host mutes a participant's
//! microphone (the server stops forwarding it, measured as packets per second at a subscriber,
//! until the participant unmutes itself), locks the room (a new join is refused, a later one after
//! the unlock is not), and removes a participant (who cannot come back with the same token).
//! Only a `host` token may do any of it.

mod common;

use std::time::Duration;

use confab::auth::Role;
use confab_client::{Client, ClientError, SyntheticTrack};
use confab_protocol::{ClientMessage, ErrorCode, ServerMessage, Source};

const WAIT: Duration = Duration::from_secs(5);

/// Packets `sub` received so far from `publisher`'s audio.
fn audio_from(sub: &Client, publisher: &str) -> u64 {
    sub.remote_tracks()
        .iter()
        .filter(|t| t.participant == publisher && !t.video)
        .map(|t| t.stats.lock().unwrap().received)
        .sum()
}

/// Audio packets per second `sub` gets from `publisher` over `window`.
async fn audio_rate(sub: &Client, publisher: &str, window: Duration) -> f64 {
    let before = audio_from(sub, publisher);
    tokio::time::sleep(window).await;
    (audio_from(sub, publisher) - before) as f64 / window.as_secs_f64()
}

fn host_url(app: &common::TestApp, user: &str) -> String {
    format!(
        "ws://{}/ws?token={}",
        app.addr,
        app.tokens.mint_role(user, user, 600, None, Role::Host)
    )
}

async fn error_code(c: &mut Client) -> Option<ErrorCode> {
    match c
        .wait_event(WAIT, |e| matches!(e, ServerMessage::Error { .. }))
        .await
    {
        Some(ServerMessage::Error { code, .. }) => Some(code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_mutes_locks_and_removes_and_nobody_else_can() {
    let app = common::spawn_app(8).await;
    let room = "hosted";
    let mut host = Client::join(&host_url(&app, "hana"), room, "Hana")
        .await
        .expect("the host joins");
    let mut ada = Client::join(&app.ws_url("ada"), room, "Ada")
        .await
        .expect("ada joins");
    ada.publish(&[(Source::Microphone, SyntheticTrack::audio())])
        .await
        .expect("ada publishes");
    let bob_url = app.ws_url("bob");
    let mut bob = Client::join(&bob_url, room, "Bob")
        .await
        .expect("bob joins");
    bob.publish(&[]).await.expect("bob's transports");
    let ada_id = match host
        .wait_event(WAIT, |e| {
            matches!(e, ServerMessage::ParticipantJoined { participant } if participant.name == "Ada")
        })
        .await
    {
        Some(ServerMessage::ParticipantJoined { participant }) => participant.id,
        other => panic!("the host never saw ada join: {other:?}"),
    };
    assert!(
        common::eventually(Duration::from_secs(10), || audio_from(&bob, &ada_id) > 50).await,
        "bob hears ada"
    );
    let flowing = audio_rate(&bob, &ada_id, Duration::from_secs(2)).await;
    assert!(
        flowing >= 40.0,
        "ada's audio at {flowing} pkt/s before the mute"
    );

    // Only a host may: bob's attempt is refused and changes nothing.
    bob.send(&ClientMessage::HostMute {
        participant_id: ada_id.clone(),
        source: Source::Microphone,
    })
    .await
    .unwrap();
    assert_eq!(error_code(&mut bob).await, Some(ErrorCode::NotAllowed));

    // The host mutes ada: ada is told, bob sees it muted, and the server forwards nothing more.
    host.send(&ClientMessage::HostMute {
        participant_id: ada_id.clone(),
        source: Source::Microphone,
    })
    .await
    .unwrap();
    let told = ada
        .wait_event(WAIT, |e| matches!(e, ServerMessage::MutedByHost { .. }))
        .await;
    assert_eq!(
        told,
        Some(ServerMessage::MutedByHost {
            source: Source::Microphone
        })
    );
    let seen = bob
        .wait_event(WAIT, |e| {
            matches!(e, ServerMessage::TrackMuted { muted: true, .. })
        })
        .await;
    assert!(seen.is_some(), "bob sees ada muted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let muted = audio_rate(&bob, &ada_id, Duration::from_secs(2)).await;
    assert!(
        muted < 1.0,
        "{muted} pkt/s of ada's audio reach bob while a host muted it"
    );

    // Ada unmutes herself: her audio flows again.
    ada.send(&ClientMessage::Mute {
        source: Source::Microphone,
        muted: false,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = audio_rate(&bob, &ada_id, Duration::from_secs(2)).await;
    assert!(
        back >= 40.0,
        "ada's audio at {back} pkt/s after she unmuted"
    );

    // Lock: a new join is refused with room_locked; everyone is told; unlock lets one in.
    host.send(&ClientMessage::HostLock { locked: true })
        .await
        .unwrap();
    let locked = ada
        .wait_event(WAIT, |e| matches!(e, ServerMessage::RoomLocked { .. }))
        .await;
    assert_eq!(locked, Some(ServerMessage::RoomLocked { locked: true }));
    match Client::join(&app.ws_url("cy"), room, "Cy").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::RoomLocked),
        other => panic!("a join into a locked room: {:?}", other.map(|_| ())),
    }
    host.send(&ClientMessage::HostLock { locked: false })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cy = Client::join(&app.ws_url("cy"), room, "Cy")
        .await
        .expect("cy joins once unlocked");

    // Remove: bob is told and closed; the others see him leave; his token cannot bring him back.
    let bob_id = match host
        .wait_event(WAIT, |e| {
            matches!(e, ServerMessage::ParticipantJoined { participant } if participant.name == "Bob")
        })
        .await
    {
        Some(ServerMessage::ParticipantJoined { participant }) => participant.id,
        other => panic!("the host never saw bob join: {other:?}"),
    };
    host.send(&ClientMessage::HostRemove {
        participant_id: bob_id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(error_code(&mut bob).await, Some(ErrorCode::Removed));
    let left = ada
        .wait_event(WAIT, |e| matches!(e, ServerMessage::ParticipantLeft { participant_id } if *participant_id == bob_id))
        .await;
    assert!(left.is_some(), "ada sees bob leave");
    match Client::join(&bob_url, room, "Bob").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::Removed),
        other => panic!("a removed user rejoining: {:?}", other.map(|_| ())),
    }
    // Nor can a host act on someone who is not in its room.
    host.send(&ClientMessage::HostRemove {
        participant_id: "p999".into(),
    })
    .await
    .unwrap();
    assert_eq!(error_code(&mut host).await, Some(ErrorCode::NotJoined));
    drop((cy, bob));
    host.leave().await;
    ada.leave().await;
}
