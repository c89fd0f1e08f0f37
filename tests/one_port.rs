//! One port (`--tls self-signed`): HTTPS, WSS signaling and ICE-TCP all through `--listen`, the
//! front door telling them apart by their first bytes; anything else is closed without harming
//! the others. (The browser test `tests/browser/one-port.test.mjs` runs a whole call this way.)

mod common;

use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A TLS client that trusts exactly the server's generated certificate.
fn connector(app: &common::TestApp) -> TlsConnector {
    let pem = app.data_dir.join("tls/self-signed.pem");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(&pem).expect("generated certificate")
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls(app: &common::TestApp) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector(app)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the front door")
}

/// `GET path` over HTTPS; the whole response.
async fn https_get(app: &common::TestApp, path: &str) -> String {
    let mut s = tls(app).await;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn metric(app: &common::TestApp, name: &str) -> f64 {
    let text = https_get(app, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

/// An RFC 4571 frame holding a STUN binding request with USERNAME `ufrag` (no integrity: the
/// server cannot verify it and must drop it, counted).
fn framed_binding_request(ufrag: &str) -> Vec<u8> {
    let mut attr = Vec::new();
    attr.extend_from_slice(&0x0006u16.to_be_bytes()); // USERNAME
    attr.extend_from_slice(&(ufrag.len() as u16).to_be_bytes());
    attr.extend_from_slice(ufrag.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut msg = Vec::new();
    msg.extend_from_slice(&0x0001u16.to_be_bytes());
    msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    msg.extend_from_slice(&[7u8; 12]);
    msg.extend_from_slice(&attr);
    let mut frame = (msg.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&msg);
    frame
}

#[tokio::test]
async fn https_wss_and_ice_tcp_share_one_port_and_anything_else_is_turned_away() {
    let app = common::spawn_app_with(|a| {
        a.tls = confab::tls::TlsMode::SelfSigned;
        a.media_tcp_port = None;
    })
    .await;

    // The page over HTTPS.
    let health = https_get(&app, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let page = https_get(&app, "/").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("<html"),
        "the page: {}",
        &page[..page.len().min(200)]
    );

    // Signaling over WSS, through the same port.
    let url = app.ws_url("ada").replacen("ws://", "wss://", 1);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls(&app).await)
        .await
        .expect("WebSocket upgrade over TLS");
    ws.send(Message::text(
        r#"{"type":"join","room":"one-port","name":"Ada"}"#,
    ))
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if t.contains(r#""type":"joined""#) {
                    return;
                }
            }
        }
        panic!("socket closed before joined")
    })
    .await
    .expect("joined in time");
    // ICE-TCP: a framed binding request reaches the media worker (it counts the connection and
    // drops the request, whose ufrag names no transport).
    let conns = metric(&app, "confab_tcp_connections_total").await;
    let auth = metric(&app, "confab_stun_auth_failures_total").await;
    let mut ice = TcpStream::connect(app.addr).await.unwrap();
    ice.write_all(&framed_binding_request("nobody:nothing"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if metric(&app, "confab_tcp_connections_total").await > conns
            && metric(&app, "confab_stun_auth_failures_total").await > auth
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ICE-TCP connection reached the media worker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Plain HTTP and garbage are closed; the signaling socket is untouched.
    for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0xff; 32][..]] {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0, "no answer to {junk:?}");
    }
    ws.send(Message::text(r#"{"type":"ping","ts":1}"#))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if t.contains("pong") {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(pong, "signaling still answers");
}
