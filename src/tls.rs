//! TLS for the one-port listener: the certificate and key from PEM files, or a self-signed
//! certificate generated once under the data dir (so a LAN address is a secure origin, which
//! `getUserMedia` needs, after the user accepts it once). rustls with the ring provider.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the TLS certificate comes from (`--tls`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain HTTP (the zero-setup default on localhost).
    Off,
    /// A self-signed certificate, generated on first start under `<data dir>/tls/` and reused.
    SelfSigned,
    /// `--tls-cert` and `--tls-key` (default `certs/cert.pem`, `certs/key.pem`).
    Files,
}

/// The certificate's files when `--tls-cert`/`--tls-key` are not given.
pub const DEFAULT_CERT: &str = "certs/cert.pem";
/// See [`DEFAULT_CERT`].
pub const DEFAULT_KEY: &str = "certs/key.pem";

/// The rustls server configuration for `mode` (`None` when off). `names` go into a generated
/// certificate's subject alternative names (host names and IP addresses). Errors: unreadable or
/// invalid PEM, a key that does not match, a data dir that cannot be written.
pub fn server_config(
    mode: TlsMode,
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    names: &[String],
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (cert_path, key_path) = match mode {
        TlsMode::Off => return Ok(None),
        TlsMode::Files => (
            cert.map_or_else(|| PathBuf::from(DEFAULT_CERT), Path::to_path_buf),
            key.map_or_else(|| PathBuf::from(DEFAULT_KEY), Path::to_path_buf),
        ),
        TlsMode::SelfSigned => self_signed(data_dir, names)?,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("TLS certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("TLS certificate {}", cert_path.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "TLS certificate {}: no certificate in it",
        cert_path.display()
    );
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("TLS key {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The self-signed certificate's files under `data_dir/tls/`, generated (key mode 0600) if
/// they are not there yet.
fn self_signed(data_dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let cert = dir.join("self-signed.pem");
    let key = dir.join("self-signed.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut sans: Vec<String> = vec!["localhost".into()];
    sans.extend(names.iter().filter(|n| !n.is_empty()).cloned());
    sans.dedup();
    let generated = rcgen::generate_simple_self_signed(sans).context("generating a certificate")?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_generated_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("confab-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names = vec!["10.0.0.7".to_owned()];
        assert!(server_config(TlsMode::SelfSigned, None, None, &dir, &names)
            .unwrap()
            .is_some());
        let first = std::fs::read(dir.join("tls/self-signed.pem")).unwrap();
        assert!(server_config(TlsMode::SelfSigned, None, None, &dir, &names)
            .unwrap()
            .is_some());
        assert_eq!(
            std::fs::read(dir.join("tls/self-signed.pem")).unwrap(),
            first,
            "reused"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("tls/self-signed.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
        // Files mode with the generated pair works; a missing file is a clear error.
        let cert = dir.join("tls/self-signed.pem");
        let key = dir.join("tls/self-signed.key");
        assert!(
            server_config(TlsMode::Files, Some(&cert), Some(&key), &dir, &[])
                .unwrap()
                .is_some()
        );
        let err = server_config(
            TlsMode::Files,
            Some(&dir.join("nope.pem")),
            Some(&key),
            &dir,
            &[],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("nope.pem"), "{err:#}");
        assert!(server_config(TlsMode::Off, None, None, &dir, &[])
            .unwrap()
            .is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
