//! What a run measures: toma at one `--concurrency`, or external-secrets in one configuration.
//! Each is started, known ready, read for metrics and given its objects its own way; the phases
//! that measure them (operator.rs) are the same for both.

use std::time::Instant;

use fake_cloudflare::FakeCloudflare;
use kube::api::PostParams;
use kube::{Api, Client};
use toma::api::TurnCredential;

use crate::apiserver::{self, Resources};
use crate::cluster::{self, Outcome};
use crate::process::{Metrics, Readiness, Spawn};
use crate::progress::{self, Tracker};
use crate::{Bench, Result, eso, prom};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// toma with `--concurrency` and `--mint-rate-per-key` (0: no limit).
    Toma {
        concurrency: u16,
        mint_rate: u32,
    },
    Eso(eso::Config),
}

impl Subject {
    /// `toma` or `eso`, as `--operator` spells it.
    pub fn operator(&self) -> &'static str {
        match self {
            Subject::Toma { .. } => "toma",
            Subject::Eso(_) => "eso",
        }
    }

    /// How many reconciles may run at once.
    pub fn concurrency(&self) -> u16 {
        match self {
            Subject::Toma { concurrency, .. } => *concurrency,
            Subject::Eso(config) => config.concurrent,
        }
    }

    /// toma's per-key mint rate (0: no limit); None for ESO, which has none.
    pub fn mint_rate(&self) -> Option<u32> {
        match self {
            Subject::Toma { mint_rate, .. } => Some(*mint_rate),
            Subject::Eso(_) => None,
        }
    }

    /// The column header.
    pub fn name(&self) -> String {
        match self {
            Subject::Toma {
                concurrency,
                mint_rate,
            } => format!("toma c={concurrency}{}", rate_suffix(*mint_rate)),
            Subject::Eso(config) => config.name(),
        }
    }

    /// How it was started, for the report.
    pub fn command_line(&self, bench: &Bench) -> String {
        match self {
            Subject::Toma {
                concurrency,
                mint_rate,
            } => {
                format!("toma run --concurrency {concurrency} --mint-rate-per-key {mint_rate}")
            }
            Subject::Eso(config) => config.command_line(&bench.eso_args),
        }
    }

    pub fn namespace_prefix(&self, n: usize) -> String {
        match self {
            Subject::Toma {
                concurrency,
                mint_rate,
            } => format!("bench-toma-{n}-c{concurrency}-r{mint_rate}"),
            Subject::Eso(config) => format!("bench-eso-{n}-c{}-qps{}", config.concurrent, config.qps),
        }
    }

    /// What it reads and writes on the API server.
    pub fn resources(&self) -> &'static Resources {
        match self {
            Subject::Toma { .. } => &apiserver::TOMA,
            Subject::Eso(_) => &apiserver::ESO,
        }
    }

    /// How to start it on `namespace`, logging to `logs/<namespace>.log`.
    pub fn spawn(&self, bench: &Bench, namespace: &str) -> Result<Spawn> {
        let log = bench.out_dir.join("logs").join(format!("{namespace}.log"));
        let pid_file = bench.out_dir.join(format!("{}.pids", self.operator()));
        Ok(match self {
            Subject::Toma {
                concurrency,
                mint_rate,
            } => Spawn {
                binary: bench.toma.clone(),
                args: [
                    "run",
                    "--namespace",
                    namespace,
                    "--concurrency",
                    &concurrency.to_string(),
                    "--mint-rate-per-key",
                    &mint_rate.to_string(),
                ]
                .map(String::from)
                .to_vec(),
                addr_flag: "--http-addr",
                // The default level, whatever the caller's environment says: logging is part of
                // the cost.
                env: vec![("RUST_LOG", "info")],
                readiness: Readiness::Readyz,
                metrics: toma_metrics,
                log,
                pid_file,
            },
            Subject::Eso(config) => Spawn {
                binary: bench
                    .eso
                    .clone()
                    .ok_or("--operator eso needs --eso, the external-secrets binary")?,
                args: eso::args(config, namespace, &bench.eso_args),
                addr_flag: "--metrics-addr",
                env: Vec::new(),
                readiness: Readiness::LogLine(eso::READY_LOG_LINE),
                metrics: eso::metrics,
                log,
                pid_file,
            },
        })
    }

    /// What tells it how to mint: a ClusterTurnKey, or a Webhook generator; both with the token
    /// in a Secret of `namespace`.
    pub async fn create_key(&self, client: &Client, namespace: &str, base_url: &str) -> Result<()> {
        match self {
            Subject::Toma { .. } => cluster::create_key(client, namespace, base_url).await,
            Subject::Eso(_) => eso::create_key(client, namespace, base_url).await,
        }
    }

    pub async fn track(&self, client: &Client, namespace: &str, n: usize) -> Result<Tracker> {
        match self {
            Subject::Toma { .. } => progress::track_credentials(client, namespace, n).await,
            Subject::Eso(_) => eso::track(client, namespace, n).await,
        }
    }

    /// Creates the N objects; returns when the last create was answered.
    pub async fn create_all(
        &self,
        client: &Client,
        namespace: &str,
        n: usize,
        parallelism: usize,
    ) -> Result<Instant> {
        match self {
            Subject::Toma { .. } => create_credentials(client, namespace, n, parallelism).await,
            Subject::Eso(_) => eso::create_all(client, namespace, n, parallelism).await,
        }
    }

    pub async fn outcome(&self, client: &Client, namespace: &str, fake: &FakeCloudflare) -> Result<Outcome> {
        match self {
            Subject::Toma { .. } => cluster::outcome(client, namespace, fake).await,
            Subject::Eso(_) => eso::outcome(client, namespace, fake).await,
        }
    }
}

/// How a column names its mint rate: nothing for toma's default, "no limit" for none.
fn rate_suffix(mint_rate: u32) -> String {
    match mint_rate {
        DEFAULT_MINT_RATE => String::new(),
        0 => " no limit".into(),
        rate => format!(" rate={rate}"),
    }
}

/// toma's default `--mint-rate-per-key`.
pub const DEFAULT_MINT_RATE: u32 = 100;

/// Creates `tc-00000` … with `parallelism` requests in flight.
async fn create_credentials(
    client: &Client,
    namespace: &str,
    n: usize,
    parallelism: usize,
) -> Result<Instant> {
    let api: Api<TurnCredential> = Api::namespaced(client.clone(), namespace);
    cluster::create_each(n, parallelism, |i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &cluster::credential(namespace, i))
                .await
        }
    })
    .await
}

/// What toma's own /metrics says.
fn toma_metrics(text: &str) -> Metrics {
    Metrics {
        reconciles: prom::sum(text, "toma_reconciles_total") as u64,
        errors: prom::sum(text, "toma_reconcile_errors_total") as u64,
        requeues: None,
        reconcile_seconds: prom::sum(text, "toma_reconcile_duration_seconds_sum"),
        reconcile_count: prom::sum(text, "toma_reconcile_duration_seconds_count") as u64,
        provider_calls: prom::sum(text, "toma_provider_requests_total") as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toma_and_each_eso_configuration_get_their_own_column_and_namespace() {
        let toma = Subject::Toma {
            concurrency: 16,
            mint_rate: DEFAULT_MINT_RATE,
        };
        let unlimited = Subject::Toma {
            concurrency: 16,
            mint_rate: 0,
        };
        assert_eq!(unlimited.name(), "toma c=16 no limit");
        assert_eq!(unlimited.namespace_prefix(100), "bench-toma-100-c16-r0");
        let eso = Subject::Eso(eso::Config {
            concurrent: 1,
            qps: 1000,
        });
        assert_eq!((toma.name(), toma.operator()), ("toma c=16".to_string(), "toma"));
        assert_eq!(
            (eso.name(), eso.operator()),
            ("ESO c=1 qps=1000".to_string(), "eso")
        );
        assert_eq!(toma.namespace_prefix(100), "bench-toma-100-c16-r100");
        assert_eq!(eso.namespace_prefix(100), "bench-eso-100-c1-qps1000");
        assert_eq!(eso.resources().objects, "externalsecrets");
        assert_eq!(eso.concurrency(), 1);
    }

    #[test]
    fn toma_metrics_are_read_from_its_counters() {
        let text = "toma_reconciles_total 12\ntoma_reconcile_errors_total{reason=\"RateLimited\"} 2\n\
                    toma_reconcile_duration_seconds_sum 0.06\ntoma_reconcile_duration_seconds_count 12\n\
                    toma_provider_requests_total{provider=\"cloudflare\",outcome=\"ok\"} 10\n";
        let m = toma_metrics(text);
        assert_eq!(
            (m.reconciles, m.errors, m.requeues, m.provider_calls),
            (12, 2, None, 10)
        );
        assert!((m.mean_reconcile_ms() - 5.0).abs() < 1e-9);
    }
}
