//! Fuzz target for the one-port front door's sniffer (`front::classify`): the first bytes of
//! every TCP connection on the TLS port decide whether it is HTTPS, ICE-TCP (RFC 4571-framed
//! STUN) or closed. Stable Rust, run by `cargo test` for `FUZZ_SECONDS` (see `crates/fuzz`);
//! seeds in `tests/fuzz/front` (an OpenSSL TLS 1.3 ClientHello, Chromium 156's binding request
//! framed as on ICE-TCP, an HTTP request).

use confab::front::{classify, Kind};
use confab_fuzz::{fuzz_bytes, hit};

/// Bytes the sniffer waits for before it decides (when the first ones do not decide at once).
const SNIFF_BYTES: usize = 10;

/// Any first bytes: never panics; undecided only while fewer than 10 bytes came; TLS exactly
/// for a handshake record (`16 03`); ICE-TCP only for a framed STUN header (length of at least
/// a STUN header, top two bits of the type clear, magic cookie); every prefix of a decided
/// input is undecided or decided the same way once it holds 10 bytes.
#[test]
fn fuzz_front_classify() {
    const DICT: &[&[u8]] = &[
        &[0x16, 0x03, 0x01],
        &[0x21, 0x12, 0xa4, 0x42],
        &[0x00, 0x64, 0x00, 0x01],
        b"GET ",
        &[0x00, 0x00],
        &[0xff, 0xff],
    ];
    fuzz_bytes(
        "front_classify",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/front"),
        DICT,
        64,
        |b| {
            let kind = classify(b);
            match kind {
                None => {
                    hit("undecided");
                    assert!(b.len() < SNIFF_BYTES, "undecided after {} bytes", b.len());
                }
                Some(Kind::Tls) => {
                    hit("tls");
                    assert!(b.starts_with(&[0x16, 0x03]));
                }
                Some(Kind::IceTcp) => {
                    hit("ice_tcp");
                    assert!(b.len() >= SNIFF_BYTES);
                    assert!(u16::from_be_bytes([b[0], b[1]]) >= 20);
                    assert_eq!(b[2] & 0xc0, 0);
                    assert_eq!(b[6..10], [0x21, 0x12, 0xa4, 0x42]);
                }
                Some(Kind::Other) => {
                    hit("other");
                    assert!(!b.starts_with(&[0x16, 0x03]));
                }
            }
            if b.starts_with(&[0x16, 0x03]) {
                assert_eq!(kind, Some(Kind::Tls));
            }
            // Once 10 bytes are there the decision is made on them: more bytes change nothing.
            if b.len() > SNIFF_BYTES {
                assert_eq!(kind, classify(&b[..SNIFF_BYTES]));
            }
        },
    );
}
