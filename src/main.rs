//! The `confab` binary: `confab serve` (default) and `confab token`.

use clap::Parser;
use confab::config::{load_token_secret, Cli, Command};
use confab::Application;
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new("info,rtc=warn,rtc_dtls=error,rtc_ice=error,webrtc=warn")
        }))
        .init();
    let cli = Cli::parse();
    // The HTTP clients (webhooks, chain JSON-RPC) use rustls on ring.
    confab_store::ensure_crypto_provider();
    match cli.command {
        Some(Command::Token(t)) => {
            let secret = load_token_secret(&t.data_dir)?;
            let authority = confab::auth::TokenAuthority::new(secret);
            println!(
                "{}",
                authority.mint_role(&t.user, &t.name, t.ttl, t.room, t.role)
            );
            Ok(())
        }
        Some(Command::Serve(args)) => serve(args).await,
        None => serve(cli.serve).await,
    }
}

async fn serve(args: confab::config::ServeArgs) -> anyhow::Result<()> {
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
