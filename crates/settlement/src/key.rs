//! The backend wallet's private key: loaded once from the environment or a file, held in a [`SecretString`],
//! turned into a signer when the chain client is built, never printed (its `Debug` is redacted and no error
//! message quotes it).

use std::{fmt, path::PathBuf, str::FromStr};

use alloy::signers::local::PrivateKeySigner;
use secrecy::{ExposeSecret, SecretString};

/// Environment variable holding the hex private key (with or without `0x`).
pub const WALLET_KEY_ENV: &str = "CONFAB_WALLET_KEY";
/// Environment variable holding the path of a file that contains the hex private key.
pub const WALLET_KEY_FILE_ENV: &str = "CONFAB_WALLET_KEY_FILE";

/// Why the wallet key could not be loaded. Messages name variables and paths, never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Neither [`WALLET_KEY_ENV`] nor [`WALLET_KEY_FILE_ENV`] is set.
    #[error("no wallet key: set {WALLET_KEY_ENV} or {WALLET_KEY_FILE_ENV}")]
    Missing,
    /// Both variables are set: refuse to guess which key is meant.
    #[error("both {WALLET_KEY_ENV} and {WALLET_KEY_FILE_ENV} are set; set only one")]
    Ambiguous,
    /// The key file could not be read.
    #[error("cannot read the wallet key file {path}: {source}")]
    Unreadable {
        /// The file named by [`WALLET_KEY_FILE_ENV`].
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The value is not a valid secp256k1 private key in hex (32 bytes, optional `0x`).
    #[error("the wallet key is not a 32-byte hex secp256k1 private key")]
    Malformed,
}

/// The backend wallet's private key. `Debug` prints `WalletKey([REDACTED])`.
#[derive(Clone)]
pub struct WalletKey(SecretString);

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WalletKey([REDACTED])")
    }
}

impl WalletKey {
    /// Wrap a key held elsewhere (tests, a secrets manager). Validated by [`signer`](Self::signer).
    pub fn new(key: SecretString) -> Self {
        Self(key)
    }

    /// Load from [`WALLET_KEY_ENV`] or the file named by [`WALLET_KEY_FILE_ENV`] (exactly one must be set).
    pub fn from_env() -> Result<Self, KeyError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any variable lookup (tests pass a closure instead of mutating the
    /// process environment). Empty values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, KeyError> {
        let inline = var(WALLET_KEY_ENV)
            .filter(|v| !v.trim().is_empty())
            .map(SecretString::from);
        let file = var(WALLET_KEY_FILE_ENV).filter(|v| !v.trim().is_empty());
        match (inline, file) {
            (Some(_), Some(_)) => Err(KeyError::Ambiguous),
            (Some(key), None) => Ok(Self(key)),
            (None, Some(path)) => Self::from_file(path),
            (None, None) => Err(KeyError::Missing),
        }
    }

    /// Read the key from a file (surrounding whitespace ignored).
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, KeyError> {
        let path = path.into();
        let text = SecretString::from(
            std::fs::read_to_string(&path)
                .map_err(|source| KeyError::Unreadable { path, source })?,
        );
        Ok(Self(SecretString::from(text.expose_secret().trim())))
    }

    /// The local signer for this key; its address is the backend wallet.
    pub fn signer(&self) -> Result<PrivateKeySigner, KeyError> {
        PrivateKeySigner::from_str(self.0.expose_secret().trim()).map_err(|_| KeyError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// anvil's first default account: public knowledge, never a real key.
    const ANVIL_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn debug_output_never_contains_the_key() {
        let key = WalletKey::from_vars(vars(&[(WALLET_KEY_ENV, ANVIL_KEY_0)])).unwrap();
        let printed = format!("{key:?} {key:#?}");
        assert!(!printed.contains("ac0974bec39a17e3"), "{printed}");
        assert!(printed.contains("REDACTED"));
        let signer = key.signer().unwrap();
        let printed = format!("{signer:?}");
        assert!(!printed.contains("ac0974bec39a17e3"), "{printed}");
    }

    #[test]
    fn a_key_from_the_environment_gives_the_expected_address() {
        let key = WalletKey::from_vars(vars(&[(WALLET_KEY_ENV, ANVIL_KEY_0)])).unwrap();
        assert_eq!(
            key.signer().unwrap().address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
    }

    #[test]
    fn a_key_file_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!("confab-key-test-{}", std::process::id()));
        std::fs::write(&path, format!("  {}\n", &ANVIL_KEY_0[2..])).unwrap();
        let key = WalletKey::from_vars(|name| {
            (name == WALLET_KEY_FILE_ENV).then(|| path.to_string_lossy().into_owned())
        });
        std::fs::remove_file(&path).unwrap();
        assert!(key.unwrap().signer().is_ok());
    }

    #[test]
    fn missing_ambiguous_unreadable_and_malformed_keys_are_rejected_without_echoing_them() {
        assert!(matches!(
            WalletKey::from_vars(vars(&[])),
            Err(KeyError::Missing)
        ));
        assert!(matches!(
            WalletKey::from_vars(vars(&[(WALLET_KEY_ENV, "  ")])),
            Err(KeyError::Missing)
        ));
        assert!(matches!(
            WalletKey::from_vars(vars(&[
                (WALLET_KEY_ENV, ANVIL_KEY_0),
                (WALLET_KEY_FILE_ENV, "/x")
            ])),
            Err(KeyError::Ambiguous)
        ));
        assert!(matches!(
            WalletKey::from_vars(vars(&[(WALLET_KEY_FILE_ENV, "/nonexistent/confab-key")])),
            Err(KeyError::Unreadable { .. })
        ));
        let almost = "0xdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbee";
        let err = WalletKey::from_vars(vars(&[(WALLET_KEY_ENV, almost)]))
            .unwrap()
            .signer()
            .unwrap_err();
        assert!(matches!(err, KeyError::Malformed));
        assert!(!err.to_string().contains("deadbeef"));
    }
}
