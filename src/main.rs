//! The `confab` binary: `confab serve` (default), `confab token` and `confab config check`.
//!
//! The settings are resolved here, once (flags over environment over the `--config` file over
//! defaults, see `confab::config::file`), before logging starts, so `--log-format` applies to the
//! first line.

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use confab::config::{load_token_secret, Cli, Command, ConfigCommand, LogFormat, ServeArgs};
use confab::Application;
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The HTTP clients (webhooks, chain JSON-RPC) use rustls on ring.
    confab_store::ensure_crypto_provider();
    match cli.command {
        Some(Command::Token(t)) => {
            init_logging(LogFormat::Human);
            let secret = load_token_secret(&t.data_dir)?;
            let authority = confab::auth::TokenAuthority::new(secret);
            println!(
                "{}",
                authority.mint_role(&t.user, &t.name, t.ttl, t.room, t.role)
            );
            Ok(())
        }
        Some(Command::Config(ConfigCommand::Check(_))) => {
            let m = sub(&matches, &["config", "check"]);
            std::process::exit(config_check(m))
        }
        Some(Command::Serve(_)) => serve(resolve(sub(&matches, &["serve"]))?).await,
        None => serve(resolve(&matches)?).await,
    }
}

/// The matches of the subcommand at `path`.
fn sub<'a>(mut m: &'a ArgMatches, path: &[&str]) -> &'a ArgMatches {
    for name in path {
        m = m.subcommand_matches(name).expect("the parsed subcommand");
    }
    m
}

/// The settings `serve` runs with, logging started with their format. Errors: every wrong value
/// of the file, one per line.
fn resolve(matches: &ArgMatches) -> anyhow::Result<ServeArgs> {
    match confab::config::resolve(matches) {
        Ok(r) => {
            init_logging(r.args.log_format);
            Ok(r.args)
        }
        Err(e) => {
            init_logging(LogFormat::Human);
            Err(anyhow::anyhow!("invalid configuration:\n{e}"))
        }
    }
}

/// Logs to stdout, filtered by `RUST_LOG` (default: info, the WebRTC crates quieter), as readable
/// lines or one JSON object per line.
fn init_logging(format: LogFormat) {
    init_logging_to(format, false)
}

/// [`init_logging`], to stderr when `to_stderr` (`config check` keeps stdout for the settings).
fn init_logging_to(format: LogFormat, to_stderr: bool) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,rtc=warn,rtc_dtls=error,rtc_ice=error,webrtc=warn")
    });
    let json = match format {
        LogFormat::Human => false,
        LogFormat::Json => true,
        LogFormat::Auto if to_stderr => !std::io::stderr().is_terminal(),
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `confab config check`: the effective configuration on stdout (secrets redacted), the wrong
/// values on stderr; the exit status (0: valid, 2: not).
fn config_check(matches: &ArgMatches) -> i32 {
    let resolved = match confab::config::resolve(matches) {
        Ok(r) => r,
        Err(e) => {
            init_logging_to(LogFormat::Human, true);
            for one in e.into_list() {
                eprintln!("error: {one}");
            }
            return 2;
        }
    };
    init_logging_to(resolved.args.log_format, true);
    let (secrets, _) = confab::config::secrets::check(&resolved.args);
    print!("{}", confab::config::show::render(&resolved, &secrets));
    let problems = resolved.args.problems();
    if problems.is_empty() {
        eprintln!("configuration is valid");
        0
    } else {
        for one in problems {
            eprintln!("error: {one}");
        }
        2
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let app = Application::build(args).await?;
    let addr = app.http_addr();
    let media: Vec<String> = app
        .sfu()
        .udp_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    tracing::info!(media = ?media, "media on UDP");
    println!(
        "confab is running: open http://{addr}/ (media on UDP {})",
        media.join(", ")
    );
    app.run_until_stopped().await?;
    Ok(())
}
