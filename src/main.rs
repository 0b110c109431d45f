use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tracing::{error, info};

use toma::cli;
use toma::controller::{self, Settings};
use toma::leader;
use toma::metrics::Metrics;
use toma::provider::rate_limit::Rate;
use toma::server::{self, Health};

/// toma keeps short-lived TURN credentials fresh in Kubernetes Secrets.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (in a cluster, or outside one with a kubeconfig).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Show a TurnCredential: Ready and why, its Secret, expiry, renewal, key, Events, what comes next.
    Status(cli::StatusArgs),
    /// Ask for a new credential now (sets the toma.dev/rotate annotation).
    Rotate(cli::Target),
    /// Mint one credential with a key from the cluster and print its iceServers JSON.
    Mint(cli::MintArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: the whole cluster).
    #[arg(long, env = "TOMA_NAMESPACE")]
    namespace: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "TOMA_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// How many TurnCredentials are reconciled at once.
    #[arg(long, env = "TOMA_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Timeout of one request to the provider API, in seconds.
    #[arg(long, env = "TOMA_PROVIDER_TIMEOUT_SECONDS", default_value_t = 10)]
    provider_timeout_seconds: u64,
    /// Requests a second that one key may send to Cloudflare (mints and revokes); those over it
    /// wait their turn. 0 turns the limit off.
    #[arg(long, env = "TOMA_MINT_RATE_PER_KEY", default_value_t = Rate::DEFAULT.per_second)]
    mint_rate_per_key: f64,
    /// How many requests one key may send at once after a quiet spell.
    #[arg(long, env = "TOMA_MINT_BURST_PER_KEY", default_value_t = Rate::DEFAULT.burst, value_parser = clap::value_parser!(u32).range(1..))]
    mint_burst_per_key: u32,
    /// Log format.
    #[arg(long, env = "TOMA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Name of this instance, shown in Events and used as the leader-election identity
    /// (the pod name in a cluster). Default: the host name and process ID.
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Run only while holding a Lease, so several replicas can run and only one writes.
    #[arg(long, env = "TOMA_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the Lease for leader election.
    #[arg(long, env = "TOMA_LEASE_NAME", default_value = "toma")]
    lease_name: String,
    /// Namespace of the Lease (toma's own namespace in a cluster); required with --leader-elect.
    #[arg(long, env = "POD_NAMESPACE", required_if_eq("leader_elect", "true"))]
    lease_namespace: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => {
            print!("{}", toma::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => run(args).await,
        Command::Status(args) => on_call(|client| cli::status(client, args)).await,
        Command::Rotate(target) => on_call(|client| cli::rotate(client, target)).await,
        Command::Mint(args) => on_call(|client| cli::mint(client, args)).await,
    }
}

/// Runs a command for people on call against the kubeconfig's cluster; errors go to stderr.
async fn on_call<F, Fut>(command: F) -> ExitCode
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: Future<Output = cli::Outcome>,
{
    toma::install_crypto_provider();
    let outcome = match kube_client().await {
        Ok(client) => command(client).await,
        Err(error) => Err(format!("cannot reach the cluster: {error}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("toma: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    init_logging(args.log_format);
    toma::install_crypto_provider();
    let client = match kube_client().await {
        Ok(client) => client,
        Err(error) => {
            error!(%error, "cannot build a Kubernetes client; is KUBECONFIG or the in-cluster config there?");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::default());
    let health = Health::new(metrics.clone(), args.leader_elect);

    // One stop signal for everything: SIGTERM/SIGINT, or a lost lease.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let server = tokio::spawn(server::serve(args.http_addr, health.clone(), stopped()));
    let signal_stop = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down: finishing reconciles in flight");
        let _ = signal_stop.send(true);
    });

    let identity = args.instance.clone().unwrap_or_else(default_identity);
    let mut leadership = None;
    if args.leader_elect {
        let namespace = args.lease_namespace.clone().unwrap_or_default();
        info!(lease = %args.lease_name, %namespace, %identity, "waiting to lead");
        let mut campaign = tokio::select! {
            campaign = leader::lead(client.clone(), &args.lease_name, &namespace, &identity) => match campaign {
                Ok(campaign) => campaign,
                Err(error) => {
                    error!(%error, "cannot take part in leader election");
                    return ExitCode::FAILURE;
                }
            },
            _ = stopped() => {
                let _ = server.await;
                return ExitCode::SUCCESS;
            }
        };
        let lost_stop = stop_tx.clone();
        campaign.on_loss(move || {
            let _ = lost_stop.send(true);
        });
        leadership = Some(campaign);
    }
    metrics.leader.set(1);

    let settings = Settings {
        namespace: args.namespace,
        concurrency: args.concurrency,
        provider_timeout: Duration::from_secs(args.provider_timeout_seconds),
        mint_rate: (args.mint_rate_per_key > 0.0).then_some(Rate {
            per_second: args.mint_rate_per_key,
            burst: args.mint_burst_per_key,
        }),
        instance: Some(identity),
    };
    let outcome = controller::run(
        client,
        settings,
        metrics.clone(),
        health.synced.clone(),
        stopped(),
    )
    .await;
    metrics.leader.set(0);
    let lost_lease = leadership.as_ref().is_some_and(|l| !l.is_leading());
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    match outcome {
        Err(error) => {
            error!(%error, "cannot start");
            ExitCode::FAILURE
        }
        Ok(()) if lost_lease => {
            // Exiting lets the restart campaign afresh, with nothing left over from leading.
            error!("lost the lease; exiting");
            ExitCode::FAILURE
        }
        Ok(()) => ExitCode::SUCCESS,
    }
}

/// A client from KUBECONFIG or the in-cluster config that names toma in the API server's logs
/// and audit records (kube sends no User-Agent of its own).
async fn kube_client() -> Result<kube::Client, Box<dyn std::error::Error>> {
    let mut config = kube::Config::infer().await?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(toma::USER_AGENT),
    ));
    Ok(kube::Client::try_from(config)?)
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "toma".into());
    format!("{}-{}", host.trim(), std::process::id())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler works on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
