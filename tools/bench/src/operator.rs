//! An operator's run, toma's or external-secrets': N objects (TurnCredentials or
//! ExternalSecrets) created at once and brought to Ready by the real binary, then a restart,
//! then a quiet spell. What differs between the two is in subject.rs.

use std::time::{Duration, Instant};

use fake_cloudflare::FakeCloudflare;
use kube::Client;
use serde::Serialize;

use crate::apiserver::{self, Counts, Resources};
use crate::cluster::{self, Outcome};
use crate::process::{Process, Spawn};
use crate::subject::Subject;
use crate::{Bench, Result, mib};

/// Phase 1: from the first create until all N are Ready with their Secrets.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// `toma` or `eso`.
    pub operator: &'static str,
    /// The column header, e.g. `toma c=16`.
    pub name: String,
    /// How the operator was started.
    pub command_line: String,
    /// Where it ran; its log is logs/<namespace>.log.
    pub namespace: String,
    pub concurrency: u16,
    /// toma's --mint-rate-per-key (0: no limit); None for ESO.
    pub mint_rate: Option<u32>,
    pub seconds_to_ready: f64,
    /// How long the bench client took to create the N objects.
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
    /// GETs of Secrets and keys (what the operator reads) per credential.
    pub api_gets_per_credential: f64,
    /// Requests to the fake Cloudflare, by the operator's own count, per credential.
    pub provider_calls_per_credential: f64,
    /// Mean of the reconcile duration histogram after the settle period.
    pub mean_reconcile_ms: f64,
    pub peak_rss_mib: f64,
    /// VmRSS after the settle period.
    pub steady_rss_mib: f64,
    /// The operator's CPU from the first create until all were Ready.
    pub cpu_seconds: f64,
    /// The operator's CPU from the first create until the end of the settle period.
    pub cpu_seconds_with_settle: f64,
    pub apiserver_cpu_seconds: Option<f64>,
    pub etcd_cpu_seconds: Option<f64>,
    /// The API server's CPU from the first create until all Events were written (toma writes
    /// them in the background, so they may come after the last Ready); None if they were not.
    pub apiserver_cpu_seconds_to_events: Option<f64>,
    /// Reconciles when all were Ready, and after the settle period.
    pub reconciles_at_ready: u64,
    pub reconciles: u64,
    pub reconcile_errors: u64,
    /// Reconciles that asked to be queued again (ESO counts them; toma does not).
    pub reconcile_requeues: Option<u64>,
    pub outcome: Outcome,
    pub restart: Restart,
    pub idle: Idle,
}

/// Phase 2: SIGTERM, start again, until reconciles stop.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// How long the SIGTERM took to end the old process.
    pub seconds_to_stop: f64,
    /// From spawning the new process until it is ready (toma: /readyz answers; ESO: it logs
    /// that its ExternalSecret workers started).
    pub seconds_to_ready: f64,
    /// From spawning until the reconcile counter reached N (None if it never did).
    pub seconds_to_all_reconciled: Option<f64>,
    /// From spawning until the last change of the reconcile counter (then flat for 3 s).
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

pub async fn run(bench: &Bench, n: usize, subject: &Subject) -> Result<Run> {
    let client = &bench.client;
    let namespace = bench
        .created
        .namespace(client, &subject.namespace_prefix(n))
        .await?;
    let outcome = measure(bench, &namespace, n, subject).await;
    let removed = bench.created.remove(client, &namespace, limit_for(n)).await;
    let run = outcome?;
    removed?;
    Ok(run)
}

async fn measure(bench: &Bench, namespace: &str, n: usize, subject: &Subject) -> Result<Run> {
    let client = &bench.client;
    let resources = subject.resources();
    let fake = FakeCloudflare::start(fake_cloudflare::Config::default()).await?;
    fake.add_key(cluster::KEY_ID, cluster::TOKEN);
    subject.create_key(client, namespace, &fake.base_url()).await?;

    let spawn = subject.spawn(bench, namespace)?;
    let mut operator = Process::spawn(&spawn, bench.http.clone())?;
    operator.wait_ready(Duration::from_secs(60)).await?;
    // What an operator does as it starts (listing, creating its leases) is not the work measured.
    apiserver::quiesce(client, Duration::from_secs(60)).await?;
    let mut tracker = subject.track(client, namespace, n).await?;

    // Phase 1.
    let api_before = apiserver::scrape(client).await?;
    let cpu_before = operator.cpu_seconds()?;
    let control_plane_before = bench.control_plane_cpu();
    let started = Instant::now();
    let created = subject
        .create_all(client, namespace, n, bench.parallelism)
        .await?;
    let done = tracker.done(limit_for(n)).await?;
    let cpu_seconds = operator.cpu_seconds()? - cpu_before;
    let control_plane = bench.control_plane_cpu().since(control_plane_before);
    let reconciles_at_ready = operator.metrics().await?.reconciles;
    drop(tracker);

    let events = events_written(client, &api_before, resources, n, done + bench.settle).await?;
    let control_plane_to_events = events.map(|_| bench.control_plane_cpu().since(control_plane_before));
    tokio::time::sleep_until((done + bench.settle).into()).await;
    let memory = operator.memory()?;
    let cpu_with_settle = operator.cpu_seconds()? - cpu_before;
    let api = apiserver::scrape(client)
        .await?
        .since(&api_before, resources, n as u64);
    let metrics = operator.metrics().await?;
    let mints = fake.mints().len();
    let outcome = subject.outcome(client, namespace, &fake).await?;

    let restart = restart(bench, &mut operator, &spawn, resources, &fake, n).await?;
    let idle = idle(bench, &operator, resources, &fake).await?;
    operator.terminate(Duration::from_secs(30)).await?;

    let per_credential = |x: u64| x as f64 / n as f64;
    Ok(Run {
        operator: subject.operator(),
        name: subject.name(),
        command_line: subject.command_line(bench),
        namespace: namespace.into(),
        concurrency: subject.concurrency(),
        mint_rate: subject.mint_rate(),
        seconds_to_ready: (done - started).as_secs_f64(),
        seconds_creating: (created - started).as_secs_f64(),
        seconds_to_events: events.map(|t| (t - started).as_secs_f64()),
        mints,
        mints_per_credential: per_credential(mints as u64),
        api_writes_per_credential: per_credential(api.writes()),
        api_gets_per_credential: per_credential(api.operator_gets()),
        provider_calls_per_credential: per_credential(metrics.provider_calls),
        mean_reconcile_ms: metrics.mean_reconcile_ms(),
        api,
        peak_rss_mib: mib(memory.peak_kib),
        steady_rss_mib: mib(memory.rss_kib),
        cpu_seconds,
        cpu_seconds_with_settle: cpu_with_settle,
        apiserver_cpu_seconds: control_plane.apiserver,
        etcd_cpu_seconds: control_plane.etcd,
        apiserver_cpu_seconds_to_events: control_plane_to_events.and_then(|c| c.apiserver),
        reconciles_at_ready,
        reconciles: metrics.reconciles,
        reconcile_errors: metrics.errors,
        reconcile_requeues: metrics.requeues,
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
    resources: &Resources,
    n: usize,
    deadline: Instant,
) -> Result<Option<Instant>> {
    loop {
        if apiserver::scrape(client)
            .await?
            .since(before, resources, 0)
            .event_writes
            >= n as u64
        {
            return Ok(Some(Instant::now()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Phase 2: stop the operator as Kubernetes would and start it again on the same N valid
/// credentials.
async fn restart(
    bench: &Bench,
    operator: &mut Process,
    spawn: &Spawn,
    resources: &Resources,
    fake: &FakeCloudflare,
    n: usize,
) -> Result<Restart> {
    let client = &bench.client;
    let mints_before = fake.mints().len();
    let api_before = apiserver::scrape(client).await?;
    let stopping = Instant::now();
    operator.terminate(Duration::from_secs(30)).await?;
    let seconds_to_stop = stopping.elapsed().as_secs_f64();

    *operator = Process::spawn(spawn, bench.http.clone())?;
    let started = operator.started;
    let ready = operator.wait_ready(Duration::from_secs(60)).await?;

    // Steady: at least N reconciles, and the counter flat for 3 s.
    const FLAT: Duration = Duration::from_secs(3);
    let deadline = Instant::now() + limit_for(n);
    let mut last = operator.metrics().await?;
    let mut last_change = Instant::now();
    let mut all_reconciled = (last.reconciles >= n as u64).then_some(last_change);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = operator.metrics().await?;
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
        // An operator may legitimately skip objects that need nothing; a long flat spell ends it too.
        if last_change.elapsed() >= Duration::from_secs(15) {
            break;
        }
    }
    let memory = operator.memory()?;
    let cpu_seconds = operator.cpu_seconds()?;
    let api = apiserver::scrape(client).await?.since(&api_before, resources, 0);
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
async fn idle(
    bench: &Bench,
    operator: &Process,
    resources: &Resources,
    fake: &FakeCloudflare,
) -> Result<Idle> {
    let client = &bench.client;
    let mints_before = fake.mints().len();
    let api_before = apiserver::scrape(client).await?;
    let metrics_before = operator.metrics().await?;
    let cpu_before = operator.cpu_seconds()?;
    let started = Instant::now();
    tokio::time::sleep(bench.idle).await;
    let cpu_seconds = operator.cpu_seconds()? - cpu_before;
    let seconds = started.elapsed().as_secs_f64();
    let metrics = operator.metrics().await?;
    let api = apiserver::scrape(client).await?.since(&api_before, resources, 0);
    Ok(Idle {
        seconds,
        cpu_seconds,
        reconciles: metrics.reconciles - metrics_before.reconciles,
        mints: fake.mints().len() - mints_before,
        api,
        rss_mib: mib(operator.memory()?.rss_kib),
    })
}
