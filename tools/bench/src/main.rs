//! toma-bench: how fast, and at what cost, the real toma binary brings N TurnCredentials to
//! Ready on a real control plane, next to the floor a bare client sets doing the same work, and
//! (with `--operator eso`) next to external-secrets doing it with N ExternalSecrets. It prints
//! figures; it passes or fails nothing. `hack/bench.sh` and `hack/bench-eso.sh` build
//! everything and run it.

mod apiserver;
mod cluster;
mod eso;
mod floor;
mod operator;
mod process;
mod progress;
mod prom;
mod report;
mod rounds;
mod subject;
mod table;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kube::Client;

use cluster::Created;
use process::ControlPlaneCpu;
use report::{Machine, Results, Versions};
use subject::Subject;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Benchmarks toma against the control plane of KUBECONFIG. For each N, in fresh namespaces:
/// toma brings N new TurnCredentials to Ready (once per --concurrency), is restarted, idles;
/// with --operator eso, external-secrets does the same with N ExternalSecrets (once per
/// --eso-config); then a bare client does the same work with no operator (the floor).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Numbers of credentials, one benchmark each.
    #[arg(default_values_t = [100, 1000])]
    counts: Vec<usize>,
    /// The operators to measure, in the order of the table's columns; repeat for both.
    #[arg(long = "operator", value_enum, default_values_t = [Operator::Toma])]
    operators: Vec<Operator>,
    /// The toma binary (a release build).
    #[arg(long, default_value = "target/release/toma")]
    toma: PathBuf,
    /// toma's --concurrency; repeat to measure several.
    #[arg(long = "concurrency", default_values_t = [16])]
    concurrencies: Vec<u16>,
    /// toma's --mint-rate-per-key (0: no limit); repeat to measure several, each with every
    /// --concurrency.
    #[arg(long = "mint-rate", default_values_t = [subject::DEFAULT_MINT_RATE])]
    mint_rates: Vec<u32>,
    /// The external-secrets controller binary, for --operator eso.
    #[arg(long)]
    eso: Option<PathBuf>,
    /// An ESO configuration, CONCURRENT:QPS: its --concurrent, and its client QPS (50, with a
    /// burst of 100, is ESO's default; another QPS gets a burst of twice the QPS). Repeat to
    /// measure several.
    #[arg(long = "eso-config", default_values = ["16:50"], value_parser = eso::Config::parse)]
    eso_configs: Vec<eso::Config>,
    /// One more flag for every ESO run, e.g. --eso-arg=--enable-flood-gate=false.
    #[arg(long = "eso-arg", allow_hyphen_values = true)]
    eso_args: Vec<String>,
    /// external-secrets' version, for the report.
    #[arg(long)]
    eso_version: Option<String>,
    /// Requests the bench client keeps in flight: the creates, and every step of the floor.
    #[arg(long, default_value_t = 32)]
    parallelism: usize,
    /// Wait after all are Ready before reading steady memory and the API write count.
    #[arg(long, default_value_t = 10)]
    settle_seconds: u64,
    /// Length of the idle measurement.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Where results-<N>.json, the operators' logs and the PID lists (toma.pids, eso.pids) go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// PID of the kube-apiserver, to report its CPU time.
    #[arg(long)]
    apiserver_pid: Option<u32>,
    /// PID of etcd, to report its CPU time.
    #[arg(long)]
    etcd_pid: Option<u32>,
    /// etcd's version, for the report.
    #[arg(long)]
    etcd_version: Option<String>,
    /// Run everything of one N this many times, interleaved (floor with Events, each operator
    /// run, floor; then again), and print the median and spread of each figure across rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// A remark printed with the figures and kept in the JSON (e.g. what else loads the machine).
    #[arg(long)]
    note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Operator {
    Toma,
    Eso,
}

impl Cli {
    /// One run per toma concurrency and ESO configuration, operator by operator.
    fn subjects(&self) -> Vec<Subject> {
        let of = |operator: &Operator| -> Vec<Subject> {
            match operator {
                Operator::Toma => self
                    .concurrencies
                    .iter()
                    .flat_map(|&concurrency| {
                        self.mint_rates.iter().map(move |&mint_rate| Subject::Toma {
                            concurrency,
                            mint_rate,
                        })
                    })
                    .collect(),
                Operator::Eso => self.eso_configs.iter().copied().map(Subject::Eso).collect(),
            }
        };
        let mut operators: Vec<&Operator> = Vec::new();
        for operator in &self.operators {
            if !operators.contains(&operator) {
                operators.push(operator);
            }
        }
        operators.into_iter().flat_map(of).collect()
    }
}

/// What every measurement shares.
pub struct Bench {
    pub client: Client,
    pub http: reqwest::Client,
    pub toma: PathBuf,
    pub eso: Option<PathBuf>,
    pub eso_args: Vec<String>,
    pub parallelism: usize,
    pub settle: Duration,
    pub idle: Duration,
    pub out_dir: PathBuf,
    pub apiserver_pid: Option<u32>,
    pub etcd_pid: Option<u32>,
    pub created: Created,
}

impl Bench {
    pub fn control_plane_cpu(&self) -> ControlPlaneCpu {
        ControlPlaneCpu::read(self.apiserver_pid, self.etcd_pid)
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.counts.contains(&0) || cli.parallelism == 0 || cli.concurrencies.contains(&0) {
        eprintln!("N, --parallelism and --concurrency must be positive");
        return ExitCode::from(2);
    }
    toma::install_crypto_provider();
    let bench = match setup(&cli).await {
        Ok(bench) => bench,
        Err(error) => {
            eprintln!("toma-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    // On SIGINT/SIGTERM the benchmark future is dropped: its Process guards kill the operators.
    let outcome = tokio::select! {
        outcome = run_all(&cli, &bench) => outcome,
        signal = stop_signal() => Err(format!("stopped by {signal}").into()),
    };
    bench.created.remove_all(&bench.client).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("toma-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn setup(cli: &Cli) -> Result<Bench> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no client for the control plane (is KUBECONFIG set?): {e}"))?;
    let needs = |operator| cli.operators.contains(&operator);
    if needs(Operator::Toma) && !cli.toma.is_file() {
        return Err(format!(
            "{} is not a file: build toma first (cargo build --release)",
            cli.toma.display()
        )
        .into());
    }
    if needs(Operator::Eso) && !cli.eso.as_ref().is_some_and(|eso| eso.is_file()) {
        return Err(
            "--operator eso needs --eso, the external-secrets binary (hack/build-external-secrets.sh)".into(),
        );
    }
    let logs = cli.out_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    Ok(Bench {
        client,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        toma: cli.toma.clone(),
        eso: cli.eso.clone(),
        eso_args: cli.eso_args.clone(),
        parallelism: cli.parallelism,
        settle: Duration::from_secs(cli.settle_seconds),
        idle: Duration::from_secs(cli.idle_seconds),
        out_dir: cli.out_dir.clone(),
        apiserver_pid: cli.apiserver_pid,
        etcd_pid: cli.etcd_pid,
        created: Created::default(),
    })
}

async fn run_all(cli: &Cli, bench: &Bench) -> Result<()> {
    let versions = Versions {
        toma: command_output(&bench.toma, &["--version"]).unwrap_or_else(|| "unknown".into()),
        kubernetes: bench.client.apiserver_version().await?.git_version,
        etcd: cli.etcd_version.clone(),
        rustc: command_output("rustc".as_ref(), &["--version"]),
        external_secrets: cli.operators.contains(&Operator::Eso).then(|| {
            format!(
                "external-secrets {}",
                cli.eso_version.as_deref().unwrap_or("(version unknown)")
            )
        }),
    };
    let mut machine = Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpu_model(),
        load_average: String::new(),
        note: cli.note.clone(),
    };
    for &n in &cli.counts {
        let mut rounds = Vec::new();
        for round in 1..=cli.rounds {
            machine.load_average = load_average();
            let started_at = jiff::Timestamp::now().to_string();
            let of = if cli.rounds > 1 {
                format!(" (round {round} of {})", cli.rounds)
            } else {
                String::new()
            };
            eprintln!("N={n}{of}: floor with Events (no operator) ...");
            let floor_with_events = floor::run(bench, n, true).await?;
            eprintln!(
                "N={n}: floor with Events: all Ready in {:.2} s",
                floor_with_events.seconds_to_ready
            );
            let mut runs = Vec::new();
            for subject in cli.subjects() {
                eprintln!(
                    "N={n}{of}: {} ({}) ...",
                    subject.name(),
                    subject.command_line(bench)
                );
                let run = operator::run(bench, n, &subject).await?;
                eprintln!("N={n}: {}: all Ready in {:.2} s", run.name, run.seconds_to_ready);
                runs.push(run);
            }
            eprintln!("N={n}{of}: floor (no operator) ...");
            let floor = floor::run(bench, n, false).await?;
            eprintln!("N={n}: floor: all Ready in {:.2} s", floor.seconds_to_ready);
            let ratios = report::ratios(&runs, &floor, &floor_with_events);
            let results = Results {
                n,
                started_at,
                machine: machine.clone(),
                versions: versions.clone(),
                parallelism: bench.parallelism,
                settle_seconds: cli.settle_seconds,
                runs,
                floor,
                floor_with_events,
                ratios,
            };
            println!("\n{}{of}", results.table());
            let findings = results.findings();
            if findings.is_empty() {
                println!("nothing unexpected");
            } else {
                println!("worth a look:");
                for finding in findings {
                    println!("  - {finding}");
                }
            }
            let path = results.write_json(&bench.out_dir, (cli.rounds > 1).then_some(round as usize))?;
            println!("written: {}\n", path.display());
            rounds.push(results);
        }
        if rounds.len() > 1 {
            println!("{}", rounds::summary(&rounds));
        }
    }
    Ok(())
}

fn command_output(program: &std::path::Path, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn stop_signal() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(args: &[&str]) -> Vec<Subject> {
        Cli::try_parse_from([&["toma-bench"], args].concat())
            .unwrap()
            .subjects()
    }

    #[test]
    fn toma_alone_is_measured_unless_eso_is_asked_for() {
        let toma = |concurrency, mint_rate| Subject::Toma {
            concurrency,
            mint_rate,
        };
        assert_eq!(subjects(&["100"]), [toma(16, 100)]);
        assert_eq!(
            subjects(&["--concurrency", "16", "--concurrency", "64"]),
            [toma(16, 100), toma(64, 100)]
        );
        assert_eq!(
            subjects(&["--mint-rate", "100", "--mint-rate", "0"]),
            [toma(16, 100), toma(16, 0)]
        );
    }

    #[test]
    fn each_operator_runs_once_per_configuration_in_the_order_asked() {
        let eso = |concurrent, qps| Subject::Eso(eso::Config { concurrent, qps });
        assert_eq!(subjects(&["--operator", "eso"]), [eso(16, 50)]);
        let both = subjects(&[
            "--operator=eso",
            "--operator=toma",
            "--operator=eso",
            "--eso-config=16:1000",
            "--eso-config=1:50",
            "--eso-arg=--enable-flood-gate=false",
        ]);
        assert_eq!(
            both,
            [
                eso(16, 1000),
                eso(1, 50),
                Subject::Toma {
                    concurrency: 16,
                    mint_rate: 100
                }
            ]
        );
    }

    #[test]
    fn a_wrong_eso_configuration_is_refused_before_anything_runs() {
        let parsed = Cli::try_parse_from(["toma-bench", "--operator", "eso", "--eso-config", "16"]);
        assert!(parsed.is_err());
    }
}
