//! Parsed chat input: a value of these types is valid by construction ("parse, don't validate").
//! The signaling layer parses client input into them; the repository takes only these.

use std::fmt;

/// Why a client's chat input was refused. The message is for the client (safe to show).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// The chat text is empty or only whitespace.
    #[error("message is empty")]
    Empty,
    /// The chat text is longer than [`ChatText::MAX_BYTES`] bytes of UTF-8.
    #[error("message is {len} bytes, the limit is {max}")]
    TooLong {
        /// Length of the refused text, in bytes of UTF-8.
        len: usize,
        /// The limit, in bytes of UTF-8.
        max: usize,
    },
    /// The chat text holds a control character other than newline and tab (NUL, escape, …):
    /// PostgreSQL refuses NUL in text, and none of them belongs in a chat line.
    #[error("message contains a control character (U+{0:04X})")]
    ControlCharacter(u32),
    /// The message type is not one of `text`, `system`, `file`.
    #[error("unknown message type {0:?}")]
    UnknownMessageType(String),
    /// The client message id is empty or longer than [`ClientMsgId::MAX_CHARS`] characters.
    #[error("client message id must be 1 to {max} characters, got {len}", max = ClientMsgId::MAX_CHARS)]
    BadClientMsgId {
        /// Length of the refused id, in characters.
        len: usize,
    },
}

/// The text of a chat message: not empty after trimming whitespace, at most
/// [`ChatText::MAX_BYTES`] bytes of UTF-8. Stored as given (inner whitespace and indentation kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatText(String);

impl ChatText {
    /// Longest accepted text, in bytes of UTF-8.
    pub const MAX_BYTES: usize = 4096;

    /// Parses a client's text.
    ///
    /// # Errors
    /// [`InvalidInput::Empty`] if blank, [`InvalidInput::TooLong`] if over [`Self::MAX_BYTES`],
    /// [`InvalidInput::ControlCharacter`] for a control character other than `\n` and `\t`.
    pub fn parse(text: impl Into<String>) -> Result<ChatText, InvalidInput> {
        let text = text.into();
        if text.trim().is_empty() {
            return Err(InvalidInput::Empty);
        }
        if text.len() > Self::MAX_BYTES {
            return Err(InvalidInput::TooLong {
                len: text.len(),
                max: Self::MAX_BYTES,
            });
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() && *c != '\n' && *c != '\t')
        {
            return Err(InvalidInput::ControlCharacter(u32::from(c)));
        }
        Ok(ChatText(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, by value.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for ChatText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChatText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of message a row is; stored as `text`, `system` or `file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Typed by a participant.
    Text,
    /// Written by the server (joins, leaves, call events); `user_id` is the server's choice.
    System,
    /// A file shared in the chat; the text carries its reference (name/URL).
    File,
}

impl MessageType {
    /// The stored (and wire) name: `text`, `system` or `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Text => "text",
            MessageType::System => "system",
            MessageType::File => "file",
        }
    }

    /// Parses a stored or wire name.
    ///
    /// # Errors
    /// [`InvalidInput::UnknownMessageType`] for anything but `text`, `system`, `file`.
    pub fn parse(s: &str) -> Result<MessageType, InvalidInput> {
        match s {
            "text" => Ok(MessageType::Text),
            "system" => Ok(MessageType::System),
            "file" => Ok(MessageType::File),
            other => Err(InvalidInput::UnknownMessageType(other.to_owned())),
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sender's own id for a message, unique per room: a resend under the same id is the same
/// message (stored once). 1 to [`ClientMsgId::MAX_CHARS`] characters, otherwise opaque.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    /// Longest accepted id, in characters.
    pub const MAX_CHARS: usize = 64;

    /// Parses a client's message id.
    ///
    /// # Errors
    /// [`InvalidInput::BadClientMsgId`] if empty or longer than [`Self::MAX_CHARS`] characters;
    /// [`InvalidInput::ControlCharacter`] for any control character (PostgreSQL refuses NUL in
    /// text, and an id needs none).
    pub fn parse(id: impl Into<String>) -> Result<ClientMsgId, InvalidInput> {
        let id = id.into();
        let len = id.chars().count();
        if len == 0 || len > Self::MAX_CHARS {
            return Err(InvalidInput::BadClientMsgId { len });
        }
        if let Some(c) = id.chars().find(|c| c.is_control()) {
            return Err(InvalidInput::ControlCharacter(u32::from(c)));
        }
        Ok(ClientMsgId(id))
    }

    /// A fresh random id, for messages the server writes itself (e.g. system messages).
    pub fn generate() -> ClientMsgId {
        ClientMsgId(uuid::Uuid::new_v4().to_string())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientMsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_text_refuses_control_characters_but_keeps_newlines_and_tabs() {
        assert_eq!(
            ChatText::parse("nul\0here"),
            Err(InvalidInput::ControlCharacter(0))
        );
        assert_eq!(
            ChatText::parse("esc\u{1b}[31m"),
            Err(InvalidInput::ControlCharacter(0x1b))
        );
        assert_eq!(
            ChatText::parse("c1\u{85}"),
            Err(InvalidInput::ControlCharacter(0x85))
        );
        assert_eq!(
            ClientMsgId::parse("id\u{0}1"),
            Err(InvalidInput::ControlCharacter(0))
        );
        assert!(ChatText::parse("two\nlines\tand a tab").is_ok());
    }

    #[test]
    fn chat_text_refuses_blank_text() {
        assert_eq!(ChatText::parse(""), Err(InvalidInput::Empty));
        assert_eq!(ChatText::parse(" \n\t "), Err(InvalidInput::Empty));
    }

    #[test]
    fn chat_text_accepts_exactly_the_limit_and_refuses_one_byte_more() {
        assert!(ChatText::parse("a".repeat(ChatText::MAX_BYTES)).is_ok());
        assert_eq!(
            ChatText::parse("a".repeat(ChatText::MAX_BYTES + 1)),
            Err(InvalidInput::TooLong {
                len: 4097,
                max: 4096
            })
        );
    }

    #[test]
    fn chat_text_counts_bytes_not_characters() {
        // 'é' is 2 bytes: 2049 of them are 4098 bytes.
        assert_eq!(
            ChatText::parse("é".repeat(2049)),
            Err(InvalidInput::TooLong {
                len: 4098,
                max: 4096
            })
        );
    }

    #[test]
    fn chat_text_keeps_inner_whitespace() {
        assert_eq!(
            ChatText::parse("  code\n  block ").unwrap().as_str(),
            "  code\n  block "
        );
    }

    #[test]
    fn message_type_round_trips_through_its_name() {
        for t in [MessageType::Text, MessageType::System, MessageType::File] {
            assert_eq!(MessageType::parse(t.as_str()), Ok(t));
        }
        assert!(MessageType::parse("video").is_err());
    }

    #[test]
    fn client_msg_id_is_one_to_sixty_four_characters() {
        assert!(ClientMsgId::parse("").is_err());
        assert!(ClientMsgId::parse("x".repeat(64)).is_ok());
        assert_eq!(
            ClientMsgId::parse("ü".repeat(65)),
            Err(InvalidInput::BadClientMsgId { len: 65 })
        );
        assert!(ClientMsgId::parse("ü".repeat(64)).is_ok());
    }
}
