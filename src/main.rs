use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tracing::{error, info};

use toma::controller::{self, Settings};
use toma::http::{self, Health};
use toma::metrics::Metrics;

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
    /// Log format.
    #[arg(long, env = "TOMA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Name of this instance, shown in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Crds => {
            print!("{}", toma::crds_yaml());
            std::process::ExitCode::SUCCESS
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> std::process::ExitCode {
    init_logging(args.log_format);
    toma::install_crypto_provider();
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            error!(%error, "cannot build a Kubernetes client; is KUBECONFIG or the in-cluster config there?");
            return std::process::ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let server = tokio::spawn(http::serve(args.http_addr, health, stopped()));
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down: finishing reconciles in flight");
        let _ = stop_tx.send(true);
    });

    let settings = Settings {
        namespace: args.namespace,
        concurrency: args.concurrency,
        provider_timeout: Duration::from_secs(args.provider_timeout_seconds),
        instance: args.instance,
    };
    let outcome = controller::run(client, settings, metrics, ready, stopped()).await;
    let _ = server.await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "cannot start");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler works on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
