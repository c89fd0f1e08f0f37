//! The server's secrets: where each is found, the floor on its length, and the token secret's
//! generated file. Secrets never sit in the configuration file or in `ServeArgs`: each comes from
//! its environment variable or from a file that a variable (or `turn_secret_file`) names. A
//! secret shorter than [`MIN_SECRET_BYTES`] is refused at start from every source, an empty file
//! or variable included; a message names the setting, never the value. A secret file that group
//! or others may read gets a warning (its path only).

use super::{ConfigError, ServeArgs};
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use std::path::Path;

/// Fewest bytes any secret may have: 256 bits of key material if it is random.
pub const MIN_SECRET_BYTES: usize = 32;

/// The token secret's variable (the value itself).
pub const JWT_ENV: &str = "CONFAB_JWT_SECRET";
/// The variable naming a file that holds the token secret.
pub const JWT_FILE_ENV: &str = "CONFAB_JWT_SECRET_FILE";
/// The API secret's variable.
pub const API_ENV: &str = "CONFAB_API_SECRET";
/// The variable naming the API secret's file.
pub const API_FILE_ENV: &str = "CONFAB_API_SECRET_FILE";
/// The TURN secret's variable (`turn_secret_file` names a file instead).
pub const TURN_ENV: &str = "CONFAB_TURN_SECRET";
/// The generated token secret's file name under the data dir.
pub const GENERATED_TOKEN_FILE: &str = "jwt-secret";

/// How a secret's length is judged.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// The bytes as given (trimmed).
    Raw,
    /// A hex private key (optional `0x`), judged by its decoded bytes; exactly 32.
    HexKey,
    /// Standard Webhooks `whsec_<base64>`, judged by its decoded bytes.
    Webhook,
}

/// One secret of the server, as `confab config check` reports it: never the value.
#[derive(Debug, Clone)]
pub struct SecretSummary {
    /// The key it is shown under (`token_secret`, `api_secret`, …).
    pub name: &'static str,
    /// Where it comes from: a variable, a file, or why it is absent.
    pub origin: String,
    /// Its length in bytes as judged (decoded for the wallet key and the webhook secret); `None`
    /// when unset.
    pub bytes: Option<usize>,
}

/// A secret found in its source.
struct Found {
    /// The setting it came from, as an operator would write it (`CONFAB_API_SECRET_FILE`).
    setting: String,
    value: SecretString,
}

/// A secret looked up: absent, found, or unreadable.
type Source = Result<Option<Found>, ConfigError>;

/// Reads a variable: `None` when unset, an error when set but not UTF-8.
fn var(name: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::SecretValue {
            setting: name.to_owned(),
            why: "is not UTF-8".into(),
        }),
    }
}

/// Reads a secret file (trimmed), warning when group or others may read it.
fn read_file(setting: &str, path: &Path) -> Result<Found, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretFile {
        setting: setting.to_owned(),
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    warn_if_shared(path);
    Ok(Found {
        setting: format!("{setting} ({})", path.display()),
        value: SecretString::from(text.trim().to_owned()),
    })
}

/// Logs a warning when `path` is readable by group or others (the path, never the content),
/// once per path and process (start-up reads each secret twice: to check, then to use it).
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        static WARNED: std::sync::Mutex<Vec<std::path::PathBuf>> =
            std::sync::Mutex::new(Vec::new());
        if let Ok(meta) = std::fs::metadata(path) {
            let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
            if meta.permissions().mode() & 0o077 != 0 && !warned.iter().any(|p| p == path) {
                warned.push(path.to_owned());
                tracing::warn!(
                    path = %path.display(),
                    "secret file is readable by group or others: chmod 600 it"
                );
            }
        }
    }
}

/// The secret from variable `env`, else from the file named by `file_env`; `None` when neither
/// is set.
fn from_env_or_file(env: &str, file_env: &str) -> Result<Option<Found>, ConfigError> {
    if let Some(v) = var(env)? {
        return Ok(Some(Found {
            setting: env.to_owned(),
            value: SecretString::from(v.trim().to_owned()),
        }));
    }
    match var(file_env)? {
        Some(p) => read_file(file_env, Path::new(&p)).map(Some),
        None => Ok(None),
    }
}

/// The length of `found` as judged by `form`. Errors: too short, or not in its form; the
/// messages name the setting only.
fn judge(found: &Found, form: Form) -> Result<usize, ConfigError> {
    let value = found.value.expose_secret();
    let bad = |why: String| ConfigError::SecretValue {
        setting: found.setting.clone(),
        why,
    };
    if value.is_empty() {
        return Err(bad("is empty".into()));
    }
    let bytes = match form {
        Form::Raw => value.len(),
        Form::HexKey => {
            let digits = value.strip_prefix("0x").unwrap_or(value);
            let key = hex::decode(digits)
                .map_err(|_| bad("is not a hex private key (64 hex digits)".into()))?;
            if key.len() != 32 {
                return Err(bad(format!(
                    "is a {}-byte key; a wallet key has exactly 32 bytes (64 hex digits)",
                    key.len()
                )));
            }
            key.len()
        }
        Form::Webhook => {
            let b64 = value
                .strip_prefix("whsec_")
                .ok_or_else(|| bad("must be whsec_ followed by base64".into()))?;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| bad("must be whsec_ followed by base64".into()))?
                .len()
        }
    };
    if bytes < MIN_SECRET_BYTES {
        return Err(bad(format!(
            "is too short ({bytes} bytes); a secret needs at least {MIN_SECRET_BYTES}"
        )));
    }
    Ok(bytes)
}

/// The token secret's source: `CONFAB_JWT_SECRET`, else `CONFAB_JWT_SECRET_FILE`, else the
/// generated file when it exists (`None`: it will be generated).
fn token_source(data_dir: &Path) -> Result<Option<Found>, ConfigError> {
    if let Some(found) = from_env_or_file(JWT_ENV, JWT_FILE_ENV)? {
        return Ok(Some(found));
    }
    let path = data_dir.join(GENERATED_TOKEN_FILE);
    if path.exists() {
        return read_file("the generated token secret", &path).map(Some);
    }
    Ok(None)
}

/// The TURN secret's source: `turn_secret_file`, else `CONFAB_TURN_SECRET`.
fn turn_source(args: &ServeArgs) -> Result<Option<Found>, ConfigError> {
    match &args.turn_secret_file {
        Some(path) => read_file("turn_secret_file (--turn-secret-file)", path).map(Some),
        None => Ok(var(TURN_ENV)?.map(|v| Found {
            setting: TURN_ENV.to_owned(),
            value: SecretString::from(v.trim().to_owned()),
        })),
    }
}

/// Every secret of the server, checked: the summaries (for `config check`) and one error per
/// secret that is unreadable, empty, short or malformed.
pub fn check(args: &ServeArgs) -> (Vec<SecretSummary>, Vec<ConfigError>) {
    use confab_settlement::key::{WALLET_KEY_ENV, WALLET_KEY_FILE_ENV};
    use confab_webhooks::config::{SECRET_ENV, SECRET_FILE_ENV};
    let sources: [(&'static str, Form, Source, &str); 5] = [
        (
            "token_secret",
            Form::Raw,
            token_source(&args.data_dir),
            "unset: generated at first start under data_dir, mode 0600",
        ),
        (
            "api_secret",
            Form::Raw,
            from_env_or_file(API_ENV, API_FILE_ENV),
            "unset: POST /api/sessions and /api/webrtc-events answer 401",
        ),
        (
            "wallet_key",
            Form::HexKey,
            from_env_or_file(WALLET_KEY_ENV, WALLET_KEY_FILE_ENV),
            "unset: paid sessions are refused",
        ),
        (
            "webhook_secret",
            Form::Webhook,
            from_env_or_file(SECRET_ENV, SECRET_FILE_ENV),
            "unset",
        ),
        ("turn_secret", Form::Raw, turn_source(args), "unset"),
    ];
    let mut summaries = Vec::new();
    let mut errors = Vec::new();
    for (name, form, source, absent) in sources {
        let summary = match source {
            Ok(None) => SecretSummary {
                name,
                origin: absent.to_owned(),
                bytes: None,
            },
            Ok(Some(found)) => match judge(&found, form) {
                Ok(n) => SecretSummary {
                    name,
                    origin: found.setting,
                    bytes: Some(n),
                },
                Err(e) => {
                    errors.push(e);
                    SecretSummary {
                        name,
                        origin: format!("{} (refused)", found.setting),
                        bytes: Some(found.value.expose_secret().len()),
                    }
                }
            },
            Err(e) => {
                errors.push(e);
                SecretSummary {
                    name,
                    origin: "unreadable".into(),
                    bytes: None,
                }
            }
        };
        summaries.push(summary);
    }
    (summaries, errors)
}

/// The token secret: `CONFAB_JWT_SECRET`, else `CONFAB_JWT_SECRET_FILE`, else
/// `<data-dir>/jwt-secret`, created on first start with 32 random bytes (hex) through a temporary
/// file in the same directory, synced, renamed, mode 0600. Errors: a refused or unreadable secret,
/// a data dir that cannot be written.
pub fn load_token_secret(data_dir: &Path) -> Result<SecretString, ConfigError> {
    if let Some(found) = token_source(data_dir)? {
        judge(&found, Form::Raw)?;
        return Ok(found.value);
    }
    let path = data_dir.join(GENERATED_TOKEN_FILE);
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private_atomically(&path, secret.as_bytes())
        .map_err(|e| ConfigError::Secret(format!("{}: {e}", path.display())))?;
    Ok(SecretString::from(secret))
}

/// The API secret (`CONFAB_API_SECRET`, else `CONFAB_API_SECRET_FILE`); `None` when unset or
/// refused (start-up refuses it first, in `ServeArgs::validate`).
pub fn load_api_secret() -> Option<SecretString> {
    let found = from_env_or_file(API_ENV, API_FILE_ENV).ok()??;
    judge(&found, Form::Raw).ok()?;
    Some(found.value)
}

/// Writes `content` to `path` so that a crash leaves either no file or the whole one: a
/// temporary file beside it (mode 0600 from its creation), synced, renamed over `path`, and the
/// directory synced.
fn write_private_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("secret");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(v: &str) -> Found {
        Found {
            setting: "X".into(),
            value: SecretString::from(v.to_owned()),
        }
    }

    #[test]
    fn lengths_are_judged_in_the_secret_s_own_form() {
        let long = "a".repeat(32);
        assert_eq!(judge(&found(&long), Form::Raw).unwrap(), 32);
        assert!(judge(&found(&long[1..]), Form::Raw).is_err());
        assert!(judge(&found(""), Form::Raw).is_err());
        // 64 hex digits: 32 bytes, with or without 0x; 62 digits are short.
        let key = "ab".repeat(32);
        assert_eq!(judge(&found(&key), Form::HexKey).unwrap(), 32);
        assert_eq!(
            judge(&found(&format!("0x{key}")), Form::HexKey).unwrap(),
            32
        );
        assert!(judge(&found(&key[2..]), Form::HexKey).is_err());
        // A webhook secret of 24 decoded bytes (Standard Webhooks' floor) is below ours.
        let short = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 24])
        );
        let err = judge(&found(&short), Form::Webhook)
            .unwrap_err()
            .to_string();
        assert!(err.contains("24 bytes"), "{err}");
        assert!(!err.contains(&short[6..]), "{err}");
    }

    #[test]
    fn the_generated_secret_is_written_whole_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("confab-secret-{}", uuid::Uuid::new_v4()));
        let path = dir.join(GENERATED_TOKEN_FILE);
        write_private_atomically(&path, b"s3cret").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"s3cret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
