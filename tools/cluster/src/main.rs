//! `toma-cluster`: the local cluster's command line. `hack/cluster.sh` runs it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use toma_cluster::{Cluster, Status};

/// The local Kubernetes cluster for toma's tests and demo: a control plane and a node on
/// 127.0.0.1. State in TOMA_CLUSTER_DIR (default /tmp/toma-cluster).
#[derive(Parser)]
#[command(name = "toma-cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start it (a no-op when it is up). TOMA_NODE=0 (or --no-node) starts the control plane alone.
    Up {
        #[arg(long)]
        no_node: bool,
    },
    /// Stop it, leaving no process, container, mount, network namespace, cgroup or port behind.
    Down,
    /// Print `export` lines for eval "$(hack/cluster.sh env)".
    Env,
    /// Say whether it is up and where; exit 0 only when it is.
    Status,
    /// Stop the apiserver for SECONDS, then start it again.
    RestartApiserver {
        #[arg(default_value_t = 10.0)]
        seconds: f64,
    },
    /// Restart the kubelet and wait for the node to be Ready again.
    RestartKubelet,
    /// Import an image archive (docker-save or OCI) into the node, optionally as REFERENCE.
    ImportImage {
        archive: PathBuf,
        reference: Option<String>,
    },
    /// The pod relay that `up` starts: listens in the pod gateway's network namespace (that of
    /// the process NAMESPACE_OF) and connects pods from the host's to 127.0.0.1.
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        namespace_of: u32,
        #[arg(long)]
        apiserver_port: u16,
        /// Written once the relay listens.
        #[arg(long)]
        ready_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Relay {
        namespace_of,
        apiserver_port,
        ready_file,
    } = &cli.command
    {
        return match toma_cluster::relay::run(*namespace_of, *apiserver_port, ready_file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(error),
        };
    }
    let mut settings = match toma_cluster::Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => return fail(error),
    };
    if let Command::Up { no_node: true } = cli.command {
        settings.node = false;
    }
    let cluster = Cluster::new(settings);
    let result = match cli.command {
        Command::Up { .. } => cluster.up(),
        Command::Down => cluster.down(),
        Command::Env => {
            if cluster.status() == Status::Absent {
                eprintln!(
                    "cluster: not up; KUBECONFIG points at {} once `hack/cluster.sh up` ran",
                    cluster.layout().kubeconfig().display()
                );
            }
            print!("{}", cluster.env_lines());
            Ok(())
        }
        Command::Status => {
            print!("{}", cluster.summary());
            return if cluster.status() == Status::Up {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Command::RestartApiserver { seconds } => {
            if !(0.0..=3600.0).contains(&seconds) {
                eprintln!("cluster: error: SECONDS must be between 0 and 3600, got {seconds}");
                return ExitCode::from(2);
            }
            cluster.restart_apiserver(Duration::from_secs_f64(seconds))
        }
        Command::RestartKubelet => cluster.restart_kubelet(),
        Command::ImportImage { archive, reference } => cluster.import_image(&archive, reference.as_deref()),
        Command::Relay { .. } => unreachable!("the relay runs before the settings are read"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(error),
    }
}

fn fail(error: toma_cluster::Error) -> ExitCode {
    eprintln!("cluster: error: {error}");
    ExitCode::FAILURE
}
