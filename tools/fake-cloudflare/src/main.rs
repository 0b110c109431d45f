//! `fake-cloudflare`: serves the fake TURN credential API until SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use fake_cloudflare::{Config, FakeCloudflare, UrlSet};

/// A fake of Cloudflare's TURN credential API (rtc.live.cloudflare.com).
#[derive(Parser, Debug)]
#[command(name = "fake-cloudflare", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,

    /// A TURN key as KEYID=TOKEN; repeatable.
    #[arg(long = "key", value_name = "KEYID=TOKEN", value_parser = parse_key)]
    keys: Vec<(String, String)>,

    /// Mint TURN REST credentials (`<expiry>:<customIdentifier or toma>`,
    /// base64 HMAC-SHA1) valid on a coturn with this static-auth-secret.
    #[arg(long, value_name = "SECRET")]
    turn_secret: Option<String>,

    /// Answer with these turn:/turns: URLs (comma-separated) instead of
    /// Cloudflare's; each turn: host:port is also offered as a stun: URL.
    #[arg(
        long,
        value_name = "URL,URL",
        value_delimiter = ',',
        conflicts_with = "url_set"
    )]
    turn_urls: Option<Vec<String>>,

    /// Which historical Cloudflare URL set to answer with.
    #[arg(long, value_enum, default_value_t = UrlSetArg::Current)]
    url_set: UrlSetArg,

    /// Write each `urls` of generate-ice-servers as a plain string, one entry
    /// per URL.
    #[arg(long)]
    urls_as_string: bool,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// Also write the base URL (http://127.0.0.1:PORT) to this file.
    #[arg(long, value_name = "PATH")]
    addr_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum UrlSetArg {
    Current,
    #[value(name = "with-port-53")]
    WithPort53,
    SingleObject,
}

fn parse_key(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key_id, token)) if !key_id.is_empty() && !token.is_empty() => {
            Ok((key_id.to_owned(), token.to_owned()))
        }
        _ => Err("expected KEYID=TOKEN".to_owned()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fake-cloudflare: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let urls = match (args.turn_urls, args.url_set) {
        (Some(turn_urls), _) => UrlSet::Custom(turn_urls),
        (None, UrlSetArg::Current) => UrlSet::Current,
        (None, UrlSetArg::WithPort53) => UrlSet::WithPort53,
        (None, UrlSetArg::SingleObject) => UrlSet::SingleObject,
    };
    let config = Config {
        listen: Some(args.listen),
        keys: args.keys.into_iter().collect::<BTreeMap<_, _>>(),
        turn_secret: args.turn_secret,
        urls,
        urls_as_string: args.urls_as_string,
        log_requests: true,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(fake_cloudflare::Tls {
                cert_chain_pem: std::fs::read_to_string(cert)?,
                key_pem: std::fs::read_to_string(key)?,
            }),
            _ => None,
        },
    };
    let fake = FakeCloudflare::start(config).await?;
    let base_url = fake.base_url();
    if let Some(path) = &args.addr_file {
        // Written aside then renamed, so a script polling the file never
        // reads half an address.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, &base_url)?;
        std::fs::rename(&partial, path)?;
    }
    // Scripts wait for this line, so it must not sit in a buffer.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {base_url}")?;
    stdout.flush()?;

    wait_for_shutdown_signal().await
}

async fn wait_for_shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
