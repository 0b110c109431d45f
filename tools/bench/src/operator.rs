//! toma's side: N TurnCredentials created at once and brought to Ready by the real binary, then
//! a restart, then a quiet spell.

use std::time::{Duration, Instant};

use fake_cloudflare::FakeCloudflare;
use futures::{StreamExt, TryStreamExt};
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Serialize;
use toma::api::TurnCredential;

use crate::apiserver::{self, Counts};
use crate::cluster::{self, Outcome};
use crate::process::{Spawn, Toma};
use crate::{Bench, Result, mib, progress};

/// Phase 1: from the first create until all N are Ready with their Secrets.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub concurrency: u16,
    pub seconds_to_ready: f64,
    /// How long the bench client took to create the N TurnCredentials.
    pub seconds_creating: f64,
    /// From the first create until the API server had taken N Event writes (toma writes its
    /// Events in the background); None if that did not happen within the settle period.
    pub seconds_to_events: Option<f64>,
    pub mints: usize,
    pub mints_per_credential: f64,
    /// API server requests from the first create until the end of the settle period, the
    /// bench's own creates taken out.
    pub api: Counts,
    pub api_writes_per_credential: f64,
    /// GETs of Secrets and keys (what toma reads) per credential.
    pub api_gets_per_credential: f64,
    /// Mean of toma_reconcile_duration_seconds after the settle period.
    pub mean_reconcile_ms: f64,
    pub peak_rss_mib: f64,
    /// VmRSS after the settle period.
    pub steady_rss_mib: f64,
    /// toma's CPU from the first create until all were Ready.
    pub cpu_seconds: f64,
    /// toma's CPU from the first create until the end of the settle period.
    pub cpu_seconds_with_settle: f64,
    pub apiserver_cpu_seconds: Option<f64>,
    pub etcd_cpu_seconds: Option<f64>,
    /// toma_reconciles_total when all were Ready, and after the settle period.
    pub reconciles_at_ready: u64,
    pub reconciles: u64,
    pub reconcile_errors: u64,
    pub outcome: Outcome,
    pub restart: Restart,
    pub idle: Idle,
}

/// Phase 2: SIGTERM, start again, until reconciles stop.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// How long the SIGTERM took to end the old process.
    pub seconds_to_stop: f64,
    /// From spawning the new process until /readyz answers.
    pub seconds_to_ready: f64,
    /// From spawning until toma_reconciles_total reached N (None if it never did).
    pub seconds_to_all_reconciled: Option<f64>,
    /// From spawning until the last change of toma_reconciles_total (then flat for 3 s).
    pub seconds_to_steady: f64,
    pub reconciles: u64,
    pub reconcile_errors: u64,
    pub mints: usize,
    pub api: Counts,
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
}

/// Phase 3: nothing changes for a while.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub reconciles: u64,
    pub mints: usize,
    pub api: Counts,
    pub rss_mib: f64,
}

/// How long phases may take before the bench gives up: generous, as the machine may be busy.
pub fn limit_for(n: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(200) * n as u32
}

pub async fn run(bench: &Bench, n: usize, concurrency: u16) -> Result<Run> {
    let client = &bench.client;
    let namespace = bench
        .created
        .namespace(client, &format!("bench-toma-{n}-c{concurrency}"))
        .await?;
    let outcome = measure(bench, &namespace, n, concurrency).await;
    let removed = bench.created.remove(client, &namespace, limit_for(n)).await;
    let run = outcome?;
    removed?;
    Ok(run)
}

async fn measure(bench: &Bench, namespace: &str, n: usize, concurrency: u16) -> Result<Run> {
    let client = &bench.client;
    let fake = FakeCloudflare::start(fake_cloudflare::Config::default()).await?;
    fake.add_key(cluster::KEY_ID, cluster::TOKEN);
    cluster::create_key(client, namespace, &fake.base_url()).await?;

    let spawn = Spawn {
        binary: &bench.toma,
        namespace,
        concurrency,
        log: bench.out_dir.join("logs").join(format!("{namespace}.log")),
        pid_file: bench.pid_file(),
    };
    let mut toma = Toma::spawn(&spawn, bench.http.clone())?;
    toma.wait_ready(Duration::from_secs(60)).await?;
    let mut tracker = progress::track(client, namespace, n).await?;

    // Phase 1.
    let api_before = apiserver::scrape(client).await?;
    let cpu_before = toma.cpu_seconds()?;
    let control_plane_before = bench.control_plane_cpu();
    let started = Instant::now();
    let created = create_all(client, namespace, n, bench.parallelism).await?;
    let done = tracker.done(limit_for(n)).await?;
    let cpu_seconds = toma.cpu_seconds()? - cpu_before;
    let control_plane = bench.control_plane_cpu().since(control_plane_before);
    let reconciles_at_ready = toma.metrics().await?.reconciles;
    drop(tracker);

    let events = events_written(client, &api_before, n, done + bench.settle).await?;
    tokio::time::sleep_until((done + bench.settle).into()).await;
    let memory = toma.memory()?;
    let cpu_with_settle = toma.cpu_seconds()? - cpu_before;
    let api = apiserver::scrape(client).await?.since(&api_before, n as u64);
    let metrics = toma.metrics().await?;
    let mints = fake.mints().len();
    let outcome = cluster::outcome(client, namespace).await?;

    let restart = restart(bench, &mut toma, &spawn, &fake, n).await?;
    let idle = idle(bench, &toma, &fake).await?;
    toma.terminate(Duration::from_secs(30)).await?;

    Ok(Run {
        concurrency,
        seconds_to_ready: (done - started).as_secs_f64(),
        seconds_creating: (created - started).as_secs_f64(),
        seconds_to_events: events.map(|t| (t - started).as_secs_f64()),
        mints,
        mints_per_credential: mints as f64 / n as f64,
        api_writes_per_credential: api.writes() as f64 / n as f64,
        api_gets_per_credential: api.operator_gets() as f64 / n as f64,
        mean_reconcile_ms: metrics.mean_reconcile_ms(),
        api,
        peak_rss_mib: mib(memory.peak_kib),
        steady_rss_mib: mib(memory.rss_kib),
        cpu_seconds,
        cpu_seconds_with_settle: cpu_with_settle,
        apiserver_cpu_seconds: control_plane.apiserver,
        etcd_cpu_seconds: control_plane.etcd,
        reconciles_at_ready,
        reconciles: metrics.reconciles,
        reconcile_errors: metrics.errors,
        outcome,
        restart,
        idle,
    })
}

/// When the API server had taken `n` Event writes since `before`, looked at every 100 ms
/// until `deadline`.
async fn events_written(
    client: &Client,
    before: &apiserver::Requests,
    n: usize,
    deadline: Instant,
) -> Result<Option<Instant>> {
    loop {
        if apiserver::scrape(client).await?.since(before, 0).event_writes >= n as u64 {
            return Ok(Some(Instant::now()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `tc-00000` … with `parallelism` requests in flight; returns when the last create
/// was answered.
pub async fn create_all(client: &Client, namespace: &str, n: usize, parallelism: usize) -> Result<Instant> {
    let api: Api<TurnCredential> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &cluster::credential(namespace, i))
                    .await
            }
        })
        .buffer_unordered(parallelism)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(Instant::now())
}

/// Phase 2: stop toma as Kubernetes would and start it again on the same N valid credentials.
async fn restart(
    bench: &Bench,
    toma: &mut Toma,
    spawn: &Spawn<'_>,
    fake: &FakeCloudflare,
    n: usize,
) -> Result<Restart> {
    let client = &bench.client;
    let mints_before = fake.mints().len();
    let api_before = apiserver::scrape(client).await?;
    let stopping = Instant::now();
    toma.terminate(Duration::from_secs(30)).await?;
    let seconds_to_stop = stopping.elapsed().as_secs_f64();

    *toma = Toma::spawn(spawn, bench.http.clone())?;
    let started = toma.started;
    let ready = toma.wait_ready(Duration::from_secs(60)).await?;

    // Steady: at least N reconciles, and the counter flat for 3 s.
    const FLAT: Duration = Duration::from_secs(3);
    let deadline = Instant::now() + limit_for(n);
    let mut last = toma.metrics().await?;
    let mut last_change = Instant::now();
    let mut all_reconciled = (last.reconciles >= n as u64).then_some(last_change);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = toma.metrics().await?;
        if now.reconciles != last.reconciles {
            last_change = Instant::now();
        }
        if all_reconciled.is_none() && now.reconciles >= n as u64 {
            all_reconciled = Some(Instant::now());
        }
        last = now;
        let flat = last_change.elapsed() >= FLAT;
        if (all_reconciled.is_some() && flat) || Instant::now() > deadline {
            break;
        }
        // toma may legitimately skip credentials that need nothing; a long flat spell ends it too.
        if last_change.elapsed() >= Duration::from_secs(15) {
            break;
        }
    }
    let memory = toma.memory()?;
    let cpu_seconds = toma.cpu_seconds()?;
    let api = apiserver::scrape(client).await?.since(&api_before, 0);
    Ok(Restart {
        seconds_to_stop,
        seconds_to_ready: (ready - started).as_secs_f64(),
        seconds_to_all_reconciled: all_reconciled.map(|t| (t - started).as_secs_f64()),
        seconds_to_steady: (last_change.max(ready) - started).as_secs_f64(),
        reconciles: last.reconciles,
        reconcile_errors: last.errors,
        mints: fake.mints().len() - mints_before,
        api,
        peak_rss_mib: mib(memory.peak_kib),
        cpu_seconds,
    })
}

/// Phase 3: N valid credentials and nothing to do.
async fn idle(bench: &Bench, toma: &Toma, fake: &FakeCloudflare) -> Result<Idle> {
    let client = &bench.client;
    let mints_before = fake.mints().len();
    let api_before = apiserver::scrape(client).await?;
    let metrics_before = toma.metrics().await?;
    let cpu_before = toma.cpu_seconds()?;
    let started = Instant::now();
    tokio::time::sleep(bench.idle).await;
    let cpu_seconds = toma.cpu_seconds()? - cpu_before;
    let seconds = started.elapsed().as_secs_f64();
    let metrics = toma.metrics().await?;
    let api = apiserver::scrape(client).await?.since(&api_before, 0);
    Ok(Idle {
        seconds,
        cpu_seconds,
        reconciles: metrics.reconciles - metrics_before.reconciles,
        mints: fake.mints().len() - mints_before,
        api,
        rss_mib: mib(toma.memory()?.rss_kib),
    })
}
