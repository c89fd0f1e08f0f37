//! The configuration as an operator meets it, through the real binary: the file layer under the
//! environment under the flags, one message per wrong value, `confab config check` with its
//! secrets redacted, secrets refused at start when short or empty, the generated token secret's
//! mode, and JSON log lines. Every child runs with a cleared environment (no stray `CONFAB_*` or
//! `DATABASE_URL` from the shell) and every wait has a timeout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A 40-byte secret: long enough everywhere.
const GOOD: &str = "good-secret-0123456789abcdef0123456789ab";
/// anvil's first default account: public knowledge, never a real key.
const WALLET: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// `whsec_` and 32 random bytes.
const WEBHOOK: &str = "whsec_CQxIJgKrMKe1QbSvzTVBEZckXI9Um0cdCjd4LuZ2jHs=";

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("confab-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `name` with `content` (mode 0600) and returns its path.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        set_mode(&path, 0o600);
        path
    }

    fn data_dir(&self) -> PathBuf {
        self.0.join("data")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `confab <args>` with only `env` in its environment.
fn confab(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
    cmd.env_clear().args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `cmd` to its end (at most 60 s, else it is killed and the test fails).
fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("confab starts");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("confab's output"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("confab did not exit within 60 s (it should have refused to start)");
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `confab config check` with `args` and `env`, its data dir in `scratch`.
fn check(scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Output {
    let data_dir = scratch.data_dir();
    let mut all = vec!["config", "check", "--data-dir", data_dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run(confab(&all, env))
}

/// The effective value and origin of `key` in `config check`'s output.
fn effective(out: &Output, key: &str) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.split('=').next().map(str::trim) == Some(key))
        .unwrap_or_else(|| panic!("{key} in\n{stdout}"));
    let (_, rest) = line.split_once('=').unwrap();
    let (value, origin) = rest.rsplit_once('#').unwrap();
    (value.trim().to_owned(), origin.trim().to_owned())
}

#[test]
fn each_wrong_value_is_reported_with_its_own_message() {
    let s = Scratch::new();
    let out = check(
        &s,
        &[
            "--max-participants",
            "1",
            "--resume-grace-s",
            "0",
            "--settlement-lease-s",
            "1",
            "--settlement-overdue-after-s",
            "0",
            "--db-max-connections",
            "0",
            "--public-origin",
            "ftp://example.org",
            "--static-dir",
            "/nonexistent/confab-static",
            "--ice-server",
            "http://example.org",
        ],
        &[],
    );
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    for message in [
        "max_participants (--max-participants) must be between 2 and 100, got 1",
        "resume_grace_s (--resume-grace-s) must be between 1 and 240, got 0",
        "settlement_lease_s (--settlement-lease-s) must be between 5 and 86400, got 1",
        "settlement_overdue_after_s (--settlement-overdue-after-s) must be at least 1",
        "db_max_connections (--db-max-connections) must be at least 1",
        "public_origin (--public-origin):",
        "static_dir (--static-dir): browser client directory not found: /nonexistent/confab-static",
        "ice_servers (--ice-server): --ice-server \"http://example.org\": not a stun:, turn: or turns: URL",
    ] {
        assert!(all.contains(message), "{message:?} missing from\n{all}");
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("error: "))
            .count(),
        8,
        "one line per wrong value:\n{all}"
    );
}

#[test]
fn media_workers_out_of_range_or_past_the_last_port_are_refused() {
    let s = Scratch::new();
    let out = check(&s, &["--media-workers", "0"], &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("media_workers (--media-workers) must be between 1 and 256, got 0"),
        "{all}"
    );
    // Worker i listens on the media port + i: 65535 leaves no room for a second worker.
    let out = check(
        &s,
        &["--media-port", "65535"],
        &[("CONFAB_MEDIA_WORKERS", "2")],
    );
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains(
            "media_port (--media-port) 65535 with 2 media workers needs ports up to 65536, past 65535"
        ),
        "{all}"
    );
    let out = check(&s, &["--media-workers", "3"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(effective(&out, "media_workers").0, "3");
}

#[test]
fn a_value_of_the_wrong_type_in_the_file_names_its_key() {
    let s = Scratch::new();
    let file = s.file("confab.toml", "media_port = 70000\nlisten = \"nowhere\"\n");
    let out = check(&s, &["--config", file.to_str().unwrap()], &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("media_port: invalid value"), "{all}");
    assert!(all.contains("listen: "), "{all}");
}

#[test]
fn the_file_is_overridden_by_the_environment_and_the_environment_by_flags() {
    let s = Scratch::new();
    let file = s.file(
        "confab.toml",
        "media_port = 1111\nmax_participants = 5\nresume_grace_s = 30\n",
    );
    let out = check(
        &s,
        &["--resume-grace-s", "50"],
        &[
            ("CONFAB_CONFIG", file.to_str().unwrap()),
            ("CONFAB_MAX_PARTICIPANTS", "6"),
            ("CONFAB_RESUME_GRACE_S", "40"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        effective(&out, "media_port"),
        ("1111".into(), "file".into())
    );
    assert_eq!(
        effective(&out, "max_participants"),
        ("6".into(), "env".into())
    );
    assert_eq!(
        effective(&out, "resume_grace_s"),
        ("50".into(), "flag".into())
    );
    assert_eq!(
        effective(&out, "turn_ttl_s"),
        ("86400".into(), "default".into())
    );
}

#[test]
fn an_unknown_key_in_the_file_is_refused_by_name_at_start_and_in_check() {
    let s = Scratch::new();
    let file = s.file("confab.toml", "max_participant = 5\n");
    let out = check(&s, &["--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown key `max_participant`"),
        "{}",
        text(&out)
    );
    let data_dir = s.data_dir();
    let out = run(confab(
        &[
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown key `max_participant`"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_example_file_documents_every_setting_and_checks_clean() {
    let s = Scratch::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/confab.example.toml");
    let out = check(&s, &["--config", example], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let documented = std::fs::read_to_string(example).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().filter(|l| l.contains(" = ")) {
        let key = line.trim_start_matches("# ").split(' ').next().unwrap();
        if line.contains("<redacted") || line.contains("unset") && !line.contains("(unset)") {
            continue; // a secret, not a setting
        }
        assert!(
            documented.contains(&format!("\n{key} = "))
                || documented.contains(&format!("\n# {key} = ")),
            "{key} is not in confab.example.toml"
        );
    }
}

#[test]
fn config_check_prints_secrets_redacted_and_never_their_values() {
    let s = Scratch::new();
    let wallet_file = s.file("wallet", WALLET);
    let turn_file = s.file("turn", GOOD);
    let file = s.file(
        "confab.toml",
        &format!(
            "database_url = \"postgres://confab:db-password-1234@localhost/confab\"\n\
             turn_secret_file = \"{}\"\n\
             webhook_urls = [\"https://hooks.example.org/in\"]\n",
            turn_file.display()
        ),
    );
    let jwt = "jwt-secret-value-0123456789abcdef0123456789";
    let api = "api-secret-value-0123456789abcdef0123456789";
    let out = check(
        &s,
        &["--config", file.to_str().unwrap()],
        &[
            ("CONFAB_JWT_SECRET", jwt),
            ("CONFAB_API_SECRET", api),
            ("CONFAB_WALLET_KEY_FILE", wallet_file.to_str().unwrap()),
            ("CONFAB_WEBHOOK_SECRET", WEBHOOK),
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for secret in [
        jwt,
        api,
        &WALLET[2..],
        &WEBHOOK[6..],
        GOOD,
        "db-password-1234",
    ] {
        assert!(!all.contains(secret), "a secret leaked:\n{all}");
    }
    assert!(
        all.contains("token_secret   = <redacted, 43 bytes>  # CONFAB_JWT_SECRET"),
        "{all}"
    );
    assert!(
        all.contains("wallet_key     = <redacted, 32 bytes>"),
        "{all}"
    );
    assert!(
        all.contains("webhook_secret = <redacted, 32 bytes>"),
        "{all}"
    );
    assert!(
        all.contains("postgres://confab:<redacted>@localhost/confab"),
        "{all}"
    );
}

/// Starts `confab serve` (free ports, a scratch data dir) and expects it to refuse to start with
/// a message naming `setting` and never quoting `value`.
fn assert_refused_at_start(
    s: &Scratch,
    extra: &[&str],
    env: &[(&str, &str)],
    setting: &str,
    value: &str,
) {
    let data_dir = s.data_dir();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--media-port",
        "0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run(confab(&args, env));
    let all = text(&out);
    assert!(
        !out.status.success(),
        "started with a bad {setting}:\n{all}"
    );
    assert!(all.contains(setting), "{setting} not named:\n{all}");
    if !value.is_empty() {
        assert!(
            !all.contains(value),
            "the value of {setting} leaked:\n{all}"
        );
    }
}

#[test]
fn a_short_or_empty_secret_is_refused_at_start_from_the_environment_and_from_files() {
    let s = Scratch::new();
    let short = "short-secret-31-bytes-000000000";
    assert_eq!(short.len(), 31);
    assert_refused_at_start(
        &s,
        &[],
        &[("CONFAB_JWT_SECRET", short)],
        "CONFAB_JWT_SECRET",
        short,
    );
    assert_refused_at_start(
        &s,
        &[],
        &[("CONFAB_API_SECRET", short)],
        "CONFAB_API_SECRET",
        short,
    );
    assert_refused_at_start(
        &s,
        &[],
        &[("CONFAB_API_SECRET", "")],
        "CONFAB_API_SECRET is empty",
        "",
    );
    let empty = s.file("empty", "");
    assert_refused_at_start(
        &s,
        &[],
        &[("CONFAB_JWT_SECRET_FILE", empty.to_str().unwrap())],
        "CONFAB_JWT_SECRET_FILE",
        "",
    );
    let short_file = s.file("short", &format!("{short}\n"));
    assert_refused_at_start(
        &s,
        &[],
        &[("CONFAB_API_SECRET_FILE", short_file.to_str().unwrap())],
        "CONFAB_API_SECRET_FILE",
        short,
    );
    // A wallet key is judged decoded: 31 bytes of hex (62 digits) is short.
    let short_key = &WALLET[..WALLET.len() - 2];
    assert_refused_at_start(
        &s,
        &[],
        &[("CONFAB_WALLET_KEY", short_key)],
        "CONFAB_WALLET_KEY",
        &short_key[2..],
    );
    // Standard Webhooks allows 24 bytes; confab wants 32.
    let webhook24 = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    assert_refused_at_start(
        &s,
        &[],
        &[("CONFAB_WEBHOOK_SECRET", webhook24)],
        "CONFAB_WEBHOOK_SECRET",
        &webhook24[6..],
    );
    let turn = s.file("turn", short);
    let config = s.file(
        "confab.toml",
        &format!("turn_secret_file = \"{}\"\n", turn.display()),
    );
    assert_refused_at_start(
        &s,
        &["--config", config.to_str().unwrap()],
        &[],
        "turn_secret_file",
        short,
    );
    assert_refused_at_start(
        &s,
        &[],
        &[("CONFAB_TURN_SECRET", short)],
        "CONFAB_TURN_SECRET",
        short,
    );
}

#[test]
fn the_generated_token_secret_is_private_and_a_shared_secret_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let data_dir = s.data_dir();
    let token = |env: &[(&str, &str)]| {
        run(confab(
            &[
                "token",
                "--user",
                "u",
                "--name",
                "U",
                "--data-dir",
                data_dir.to_str().unwrap(),
            ],
            env,
        ))
    };
    let out = token(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let path = data_dir.join("jwt-secret");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the generated secret's mode");
    assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 64);
    assert_eq!(
        std::fs::read_dir(&data_dir).unwrap().count(),
        1,
        "no temporary file left"
    );
    // Opened up to others: still used, with a warning naming the path only.
    set_mode(&path, 0o644);
    let secret = std::fs::read_to_string(&path).unwrap();
    let out = check(&s, &[], &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert_eq!(
        all.matches("readable by group or others").count(),
        1,
        "warned once: {all}"
    );
    assert!(all.contains(path.to_str().unwrap()), "{all}");
    assert!(!all.contains(&secret), "{all}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let s = Scratch::new();
    let data_dir = s.data_dir();
    let mut child = confab(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--media-port",
            "0",
            "--media-tcp-port",
            "0",
            "--public-ip",
            "127.0.0.1",
            "--log-format",
            "json",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("confab starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut json_lines = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("no start-up line within 60 s");
            }
        };
        if line.starts_with("confab is running") {
            break;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        json_lines += 1;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(json_lines >= 1, "at least the start-up log line");
}
