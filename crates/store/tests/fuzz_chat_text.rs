//! Fuzz targets for the chat input a client sends on its `chat` DataChannel, as the server
//! validates it before anything reaches the database (`ChatService::on_message` in
//! `src/chat.rs`): the JSON (`ChatClientMessage`), then `ClientMsgId::parse`,
//! `ChatText::parse` and the message ids (`Uuid::parse_str`). No database is used. Stable Rust,
//! run by `cargo test` for `FUZZ_SECONDS` each (see `crates/fuzz`); seeds shared with
//! `crates/protocol/tests/fuzz/chat`.

use confab_fuzz::proptest::collection::vec;
use confab_fuzz::proptest::prelude::*;
use confab_fuzz::{fuzz, fuzz_bytes, hit, text};
use confab_protocol::chat::ChatClientMessage;
use confab_store::{ChatText, ClientMsgId, InvalidInput, Uuid};

/// What `ChatText::parse` must answer, from its documentation: `Empty` when blank, `TooLong`
/// over 4096 bytes, `ControlCharacter` (the first one) for a control character other than
/// `\n` and `\t`.
fn expected_text(t: &str) -> Result<(), InvalidInput> {
    if t.trim().is_empty() {
        return Err(InvalidInput::Empty);
    }
    if t.len() > ChatText::MAX_BYTES {
        return Err(InvalidInput::TooLong {
            len: t.len(),
            max: ChatText::MAX_BYTES,
        });
    }
    match t
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        Some(c) => Err(InvalidInput::ControlCharacter(u32::from(c))),
        None => Ok(()),
    }
}

fn check_text(t: &str) {
    let got = ChatText::parse(t);
    hit(match &got {
        Ok(_) => "text_ok",
        Err(InvalidInput::Empty) => "text_empty",
        Err(InvalidInput::TooLong { .. }) => "text_too_long",
        Err(InvalidInput::ControlCharacter(_)) => "text_control",
        Err(_) => "text_other",
    });
    assert_eq!(
        got.as_ref().map(|_| ()),
        expected_text(t).as_ref().map(|_| ())
    );
    assert_eq!(got.as_ref().err(), expected_text(t).err().as_ref(), "{t:?}");
    if let Ok(ok) = got {
        // Stored as given, and accepted again as stored.
        assert_eq!(ok.as_str(), t);
        assert_eq!(
            ChatText::parse(ok.as_str()).map(|c| c.into_string()),
            Ok(t.to_owned())
        );
    }
}

fn check_client_msg_id(id: &str) {
    let n = id.chars().count();
    match ClientMsgId::parse(id) {
        Ok(c) => {
            hit("id_ok");
            assert!((1..=ClientMsgId::MAX_CHARS).contains(&n));
            assert!(!id.chars().any(|c| c.is_control()));
            assert_eq!(c.as_str(), id);
        }
        Err(e) => {
            hit("id_bad");
            match id.chars().find(|c| c.is_control()) {
                Some(c) if (1..=ClientMsgId::MAX_CHARS).contains(&n) => {
                    assert_eq!(e, InvalidInput::ControlCharacter(u32::from(c)))
                }
                _ => assert_eq!(e, InvalidInput::BadClientMsgId { len: n }),
            }
        }
    }
}

fn chars_near(limit: usize) -> impl Strategy<Value = String> {
    // Texts around a limit, of 1- to 4-byte characters, so byte and character counts differ.
    (
        limit.saturating_sub(8)..limit + 8,
        prop_oneof![Just('a'), Just('é'), Just('€'), Just('👋'), Just(' ')],
    )
        .prop_map(|(n, c)| std::iter::repeat_n(c, n / c.len_utf8().max(1)).collect())
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(any::<char>(), 0..40).prop_map(String::from_iter),
        2 => vec(
            prop_oneof![
                Just(' '), Just('\t'), Just('\n'), Just('\r'), Just('\u{0}'), Just('\u{1b}'),
                Just('\u{7f}'), Just('\u{85}'), Just('\u{a0}'), Just('\u{2028}'), Just('\u{3000}'),
                Just('\u{feff}'), Just('\u{200b}'), Just('x'),
            ],
            0..12
        )
        .prop_map(String::from_iter),
        1 => chars_near(ChatText::MAX_BYTES),
        1 => chars_near(ClientMsgId::MAX_CHARS),
    ]
}

/// `ChatText::parse` and `ClientMsgId::parse` on any string: never panic, and accept and refuse
/// exactly what their documentation says, with the documented error.
#[test]
fn fuzz_chat_text() {
    fuzz("chat_text", any_string(), |s| {
        check_text(&s);
        check_client_msg_id(&s);
    });
}

/// A chat DataChannel message as `ChatService::on_message` validates it: JSON, then the
/// client message id, the text and the message ids. Never panics; every refusal is one of the
/// documented ones.
#[test]
fn fuzz_chat_message() {
    const DICT: &[&[u8]] = &[
        b"\"type\":",
        b"\"send\"",
        b"\"edit\"",
        b"\"text\":",
        b"\"client_msg_id\":",
        b"\\u0000",
        b"\\u001b",
        b"\\t",
        b"\\n",
        b"\\ud83d\\udc4b",
        b"null",
        b"4294967296",
        b"\"\"",
    ];
    fuzz_bytes(
        "chat_message",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../protocol/tests/fuzz/chat"),
        DICT,
        64 * 1024,
        |b| {
            let Ok(msg) = serde_json::from_str::<ChatClientMessage>(&text(b)) else {
                hit("bad_json");
                return;
            };
            match msg {
                ChatClientMessage::Send {
                    client_msg_id,
                    text,
                } => {
                    check_client_msg_id(&client_msg_id);
                    check_text(&text);
                }
                ChatClientMessage::Edit { id, text } => {
                    hit(if Uuid::parse_str(&id).is_ok() {
                        "edit_id_ok"
                    } else {
                        "edit_id_bad"
                    });
                    check_text(&text);
                }
                ChatClientMessage::Delete { id } => {
                    hit(if Uuid::parse_str(&id).is_ok() {
                        "delete_id_ok"
                    } else {
                        "delete_id_bad"
                    });
                }
                ChatClientMessage::History { before, limit } => {
                    if let Some(b) = before {
                        let _ = Uuid::parse_str(&b);
                    }
                    // As `on_message` bounds it.
                    let l = limit.unwrap_or(50).clamp(1, 200);
                    assert!((1..=200).contains(&l));
                    hit("history");
                }
            }
        },
    );
}
