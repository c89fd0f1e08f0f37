//! The one-port front door: with TLS on, one TCP listener (`--listen`, e.g. `0.0.0.0:443`)
//! carries the page, the REST API, WSS signaling and ICE-TCP media, so a participant whose
//! network lets only TCP 443 out still gets everything.
//!
//! Each accepted connection's first bytes decide where it goes (they are peeked, not read):
//! - a TLS record header (`0x16 0x03`, a ClientHello; RFC 8446 section 5.1) is terminated here
//!   with rustls and the plaintext spliced to the HTTP server on an internal loopback listener;
//! - an RFC 4571 frame holding a STUN message (2-byte length, then a STUN header whose first two
//!   bits are zero and whose magic cookie is `0x2112A442`, RFC 8489 section 5) is an ICE-TCP
//!   connection (RFC 6544) and is handed to the media worker
//!   ([`confab_sfu::SfuHandle::adopt_ice_tcp`]);
//! - anything else is closed.
//!
//! Limits: [`MAX_CONNECTIONS`] open front connections (past it new ones are closed at once),
//! [`SNIFF_TIMEOUT`] for the first bytes, [`HANDSHAKE_TIMEOUT`] for the TLS handshake.

use confab_sfu::SfuHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// Most connections the front door holds open at once (HTTPS and those not yet classified;
/// ICE-TCP connections count against the media worker's own limit once handed over).
pub const MAX_CONNECTIONS: usize = 8192;
/// A connection must send its first bytes within this.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake must complete within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest first ICE-TCP frame read to find its transport (a binding request is ~100 bytes).
const MAX_FIRST_FRAME: usize = 1024;
/// Bytes needed to tell framed STUN from anything else.
const SNIFF_BYTES: usize = 10;
/// STUN magic cookie (RFC 8489 section 5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// What a connection's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TLS ClientHello: HTTPS or WSS.
    Tls,
    /// RFC 4571-framed STUN: ICE-TCP.
    IceTcp,
    /// Neither: closed.
    Other,
}

/// Classifies a connection by its first bytes; `None` while they are too few to tell.
pub fn classify(b: &[u8]) -> Option<Kind> {
    match b {
        [] => None,
        // TLS handshake record, legacy version 3.x.
        [0x16] => None,
        [0x16, 0x03, ..] => Some(Kind::Tls),
        _ if b.len() < SNIFF_BYTES => {
            // A STUN frame starts with a length below 0x4000 and a type with the top two bits
            // clear; printable text (plain HTTP) can be turned away at once.
            if b[0].is_ascii_alphabetic() {
                Some(Kind::Other)
            } else {
                None
            }
        }
        _ => {
            let len = usize::from(u16::from_be_bytes([b[0], b[1]]));
            let stun = b[2] & 0xC0 == 0 && b[6..10] == MAGIC_COOKIE && len >= 20;
            Some(if stun { Kind::IceTcp } else { Kind::Other })
        }
    }
}

/// Where the front door sends what it accepts.
pub struct Front {
    /// TLS with the server's certificate.
    pub tls: TlsAcceptor,
    /// The HTTP server's internal (loopback, plain) listener.
    pub backend: SocketAddr,
    /// The media worker, for ICE-TCP.
    pub sfu: SfuHandle,
    /// Where each spliced connection's client is recorded for the HTTP server's limits.
    pub client_addrs: Arc<crate::limits::ClientAddrs>,
}

/// Accepts on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, front: Arc<Front>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                warn!("front door accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("front door full: closing a connection");
            continue;
        };
        let front = Arc::clone(&front);
        tokio::spawn(async move {
            handle(stream, remote, &front).await;
            drop(permit);
        });
    }
}

async fn handle(stream: TcpStream, remote: SocketAddr, front: &Front) {
    let kind = match tokio::time::timeout(SNIFF_TIMEOUT, sniff(&stream)).await {
        Ok(Ok(kind)) => kind,
        _ => return,
    };
    match kind {
        Kind::Tls => {
            let _ = stream.set_nodelay(true);
            let mut tls =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, front.tls.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        debug!(%remote, "TLS handshake: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let Ok(mut backend) = TcpStream::connect(front.backend).await else {
                warn!("front door: the HTTP server is not answering");
                return;
            };
            let _ = backend.set_nodelay(true);
            let _client = backend
                .local_addr()
                .map(|internal| front.client_addrs.register(internal, remote.ip()));
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut backend).await;
        }
        Kind::IceTcp => {
            let Ok(local) = stream.local_addr() else {
                return;
            };
            // The whole first frame names the transport (and so the media worker) it is for.
            let first = match tokio::time::timeout(SNIFF_TIMEOUT, first_frame(&stream)).await {
                Ok(Ok(Some(frame))) => frame,
                _ => return,
            };
            match stream.into_std() {
                Ok(std) => {
                    front
                        .sfu
                        .adopt_ice_tcp(std, local.ip(), remote, &first[2..])
                        .await
                }
                Err(e) => debug!("front door: {e}"),
            }
        }
        Kind::Other => debug!(%remote, "front door: neither TLS nor ICE-TCP; closed"),
    }
}

/// Peeks until the connection's first RFC 4571 frame (2-byte length, then a STUN message of
/// at most [`MAX_FIRST_FRAME`] bytes) is all queued, and returns it with its length prefix;
/// `None` at EOF or for a longer frame.
async fn first_frame(stream: &TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 2 + MAX_FIRST_FRAME];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if n >= 2 {
            let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            if len > MAX_FIRST_FRAME {
                return Ok(None);
            }
            if n >= 2 + len {
                buf.truncate(2 + len);
                return Ok(Some(buf));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Peeks until the first bytes classify the connection (EOF: `Other`).
async fn sniff(stream: &TcpStream) -> std::io::Result<Kind> {
    let mut buf = [0u8; SNIFF_BYTES];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Kind::Other);
        }
        if let Some(kind) = classify(&buf[..n]) {
            return Ok(kind);
        }
        // Fewer bytes than needed are queued: wait for more (peek would return at once).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_tls_from_framed_stun_from_anything_else() {
        // A ClientHello record header.
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Some(Kind::Tls));
        assert_eq!(classify(&[0x16]), None);
        // RFC 4571 frame of a 100-byte binding request (type 0x0001, length 80, cookie).
        let stun = [
            0x00, 0x64, 0x00, 0x01, 0x00, 0x50, 0x21, 0x12, 0xA4, 0x42, 0xde, 0xad,
        ];
        assert_eq!(classify(&stun), Some(Kind::IceTcp));
        assert_eq!(classify(&stun[..6]), None, "too few bytes yet");
        // Wrong cookie, a too-short frame, plain HTTP, SSH.
        let mut bad = stun;
        bad[9] = 0x43;
        assert_eq!(classify(&bad), Some(Kind::Other));
        assert_eq!(
            classify(&[0x00, 0x04, 0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42]),
            Some(Kind::Other)
        );
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Kind::Other));
        assert_eq!(classify(b"G"), Some(Kind::Other));
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(Kind::Other));
    }
}
