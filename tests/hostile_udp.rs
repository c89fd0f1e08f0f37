//! Hostile datagrams at the server process, over real UDP: while two participants exchange
//! audio and video, four sockets that never joined send the media port 40 000 datagrams in 20 s
//! (random bytes, STUN binding requests with made-up credentials, DTLS records and RTP headers
//! with lying lengths). The server drops every one as unroutable, keeps both participants' media
//! at the rate it is sent, and keeps answering `ping`. (The core test
//! `hostile_datagrams_on_a_participants_valid_route_hurt_nobody_else` covers junk on a
//! participant's own, authenticated route.)

mod common;

use common::{call_of, received_av, slowest_pong, spawn_app_with};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the junk flows (and the window media rates are measured over).
const ATTACK: Duration = Duration::from_secs(20);
/// Junk datagrams per 50 ms tick, per attacking socket (4 sockets: 2000 a second in all, what a
/// debug build on a busy 2-core machine reads beside two calls without its socket buffer
/// overflowing; at 5000 a second the kernel dropped a fifth of the junk, and some media with it).
const PER_TICK: usize = 25;

/// xorshift64: reproducible junk without a dependency.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// One datagram: noise, a STUN binding request with a made-up USERNAME and
    /// MESSAGE-INTEGRITY (RFC 8489 section 14), a DTLS record header (RFC 6347 section 4.1) or an
    /// RTP header (RFC 3550 section 5.1), each with a length field that may lie.
    fn datagram(&mut self) -> Vec<u8> {
        let len = 1 + (self.next() % 1200) as usize;
        match self.next() % 4 {
            0 => self.bytes(len),
            1 => {
                let user = format!("{:08x}:{:08x}", self.next() as u32, self.next() as u32);
                let mut attrs = Vec::new();
                attrs.extend_from_slice(&[0x00, 0x06, 0x00, user.len() as u8]);
                attrs.extend_from_slice(user.as_bytes());
                while attrs.len() % 4 != 0 {
                    attrs.push(0);
                }
                attrs.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
                attrs.extend(self.bytes(20));
                let mut d = vec![0x00, 0x01];
                let claimed = if self.next() % 4 == 0 {
                    self.next() as u16
                } else {
                    attrs.len() as u16
                };
                d.extend_from_slice(&claimed.to_be_bytes());
                d.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
                d.extend(self.bytes(12));
                d.extend(attrs);
                d
            }
            2 => {
                let mut d = vec![20 + (self.next() % 4) as u8, 0xfe, 0xfd];
                d.extend(self.bytes(8));
                d.extend_from_slice(&(self.next() as u16).to_be_bytes());
                d.extend(self.bytes(len));
                d
            }
            _ => {
                let mut d = vec![0x80, 96 + (self.next() % 32) as u8];
                d.extend(self.bytes(len.max(12)));
                d
            }
        }
    }
}

/// The series of `confab_drops_total` that counts datagrams nobody's route matches.
const UNROUTABLE: &str = "confab_drops_total{cause=\"unroutable\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_from_strangers_at_the_media_port_is_dropped_and_hurts_no_call() {
    // The media port, chosen here so the attackers know where to aim.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // One media worker: the junk and the call share its socket (with several, the call's room
    // might sit on another worker's port, out of the junk's way).
    let app = spawn_app_with(|a| {
        a.media_port = port;
        a.media_workers = Some(1);
    })
    .await;
    let room = format!("hostile-{}", uuid::Uuid::new_v4().simple());
    let (mut calls, ids) = call_of(&app, &room, &["ada", "bob"]).await;

    let unroutable0 = app.metric(UNROUTABLE).await as u64;
    let before = [
        received_av(&calls[0], &ids[1]),
        received_av(&calls[1], &ids[0]),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..4u64)
        .map(|i| {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            tokio::spawn(async move {
                let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let target = format!("127.0.0.1:{port}");
                let mut junk = Junk(0x9e37_79b9_7f4a_7c15 ^ (i + 1));
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    for _ in 0..PER_TICK {
                        if socket.send_to(&junk.datagram(), &target).await.is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    // Meanwhile both keep answering ping.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < ATTACK {
        slowest = slowest.max(slowest_pong(&mut calls).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.await.expect("attacker task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = [
        received_av(&calls[0], &ids[1]),
        received_av(&calls[1], &ids[0]),
    ];
    let sent = sent.load(Ordering::Relaxed);
    // The last datagrams may still be in the socket's queue.
    let mut dropped = 0;
    for _ in 0..50 {
        dropped = app.metric(UNROUTABLE).await as u64 - unroutable0;
        if dropped >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{elapsed:.1} s: {sent} junk datagrams sent, {dropped} dropped as unroutable; slowest pong {slowest:?}; packets (audio, video) before {before:?} after {after:?}"
    );
    assert!(
        sent as f64 >= 0.8 * 2000.0 * ATTACK.as_secs_f64(),
        "the junk was sent: {sent}"
    );
    assert!(
        dropped as f64 >= 0.5 * sent as f64,
        "the server read and dropped the junk (the kernel may drop some first): {dropped} of {sent}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "pong within 1 s: {slowest:?}"
    );
    for (who, (b, a)) in ["ada <- bob", "bob <- ada"]
        .iter()
        .zip(before.iter().zip(&after))
    {
        let audio = (a.0 - b.0) as f64 / (50.0 * elapsed);
        let video = (a.1 - b.1) as f64 / (100.0 * elapsed);
        assert!(
            audio >= 0.95 && video >= 0.95,
            "{who}: {:.1} % of the audio and {:.1} % of the video sent arrived",
            audio * 100.0,
            video * 100.0
        );
    }
}
