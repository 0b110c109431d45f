//! The floor: the same outcome with no operator. A bare client creates each TurnCredential,
//! asks the fake Cloudflare for ICE servers once (with toma's Cloudflare client), server-side
//! applies the Secret and the Ready status, with the same parallelism as the creates in the
//! operator run. The Secret and status are built by toma's own pure functions, so the objects are
//! the same as toma's, byte for byte apart from the credential; only the I/O is done by hand,
//! and none of it is avoidable.
//!
//! The floor with Events also writes the `Issued` Event toma writes for each new credential
//! (with kube's Recorder, as toma does), so that its ratio compares the same work.

use std::time::{Duration, Instant};

use fake_cloudflare::FakeCloudflare;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use toma::api::TurnCredential;
use toma::cloudflare::CloudflareClient;
use toma::credential::{Credential, filter_urls};
use toma::secret_value::SecretValue;

use crate::apiserver::{self, Counts};
use crate::cluster::{self, Outcome};
use crate::operator::limit_for;
use crate::{Bench, Result, progress};

const FIELD_MANAGER: &str = "toma-bench";

#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// Whether it wrote one Event per credential, as toma does.
    pub events: bool,
    pub seconds_to_ready: f64,
    pub mints: usize,
    pub mints_per_credential: f64,
    /// API server requests of the floor, its N TurnCredential creates taken out.
    pub api: Counts,
    pub api_writes_per_credential: f64,
    pub apiserver_cpu_seconds: Option<f64>,
    pub etcd_cpu_seconds: Option<f64>,
    pub outcome: Outcome,
}

pub async fn run(bench: &Bench, n: usize, events: bool) -> Result<Floor> {
    let prefix = if events {
        format!("bench-floor-events-{n}")
    } else {
        format!("bench-floor-{n}")
    };
    let namespace = bench.created.namespace(&bench.client, &prefix).await?;
    let outcome = measure(bench, &namespace, n, events).await;
    let removed = bench
        .created
        .remove(&bench.client, &namespace, limit_for(n))
        .await;
    let floor = outcome?;
    removed?;
    Ok(floor)
}

async fn measure(bench: &Bench, namespace: &str, n: usize, events: bool) -> Result<Floor> {
    let client = &bench.client;
    let fake = FakeCloudflare::start(fake_cloudflare::Config::default()).await?;
    fake.add_key(cluster::KEY_ID, cluster::TOKEN);
    // The same key objects as toma's run, though the floor knows the key and token already.
    cluster::create_key(client, namespace, &fake.base_url()).await?;
    let cloudflare = Cloudflare {
        client: CloudflareClient::new(Duration::from_secs(10)),
        base_url: fake.base_url(),
        token: SecretValue::new(cluster::TOKEN.into()),
    };
    let recorder = events.then(|| {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: None,
        };
        Recorder::new(client.clone(), reporter)
    });
    let mut tracker = progress::track_credentials(client, namespace, n).await?;

    let api_before = apiserver::scrape(client).await?;
    let control_plane_before = bench.control_plane_cpu();
    let started = Instant::now();
    let credentials: Api<TurnCredential> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    cluster::create_each(n, bench.parallelism, |i| {
        let (credentials, secrets, cloudflare, recorder) = (&credentials, &secrets, &cloudflare, &recorder);
        async move {
            let tc = credentials
                .create(&PostParams::default(), &cluster::credential(namespace, i))
                .await?;
            issue(&tc, credentials, secrets, cloudflare).await?;
            if let Some(recorder) = recorder {
                announce(recorder, &tc).await?;
            }
            Ok::<(), crate::Error>(())
        }
    })
    .await?;
    let done = tracker.done(limit_for(n)).await?;
    let control_plane = bench.control_plane_cpu().since(control_plane_before);
    let api = apiserver::scrape(client)
        .await?
        .since(&api_before, &apiserver::TOMA, n as u64);
    let mints = fake.mints().len();
    Ok(Floor {
        events,
        seconds_to_ready: (done - started).as_secs_f64(),
        mints,
        mints_per_credential: mints as f64 / n as f64,
        api_writes_per_credential: api.writes() as f64 / n as f64,
        api,
        apiserver_cpu_seconds: control_plane.apiserver,
        etcd_cpu_seconds: control_plane.etcd,
        outcome: cluster::outcome(client, namespace, &fake).await?,
    })
}

/// The fake Cloudflare and what it takes to call it.
struct Cloudflare {
    client: CloudflareClient,
    base_url: String,
    token: SecretValue,
}

/// One credential: one provider call, one Secret apply, one status apply.
async fn issue(
    tc: &TurnCredential,
    credentials: &Api<TurnCredential>,
    secrets: &Api<Secret>,
    cloudflare: &Cloudflare,
) -> Result<()> {
    let now = Timestamp::from_second(Timestamp::now().as_second())?;
    let generated = cloudflare
        .client
        .generate_ice_servers(
            &cloudflare.base_url,
            cluster::KEY_ID,
            &cloudflare.token,
            tc.spec.ttl_seconds,
            None,
        )
        .await?;
    let credential = Credential {
        ice_servers: filter_urls(generated.ice_servers, &tc.url_filter()),
        issued_at: now,
        expires_at: now + SignedDuration::from_secs(tc.spec.ttl_seconds),
    };
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let secret = toma::secret::desired_secret(tc, &credential, 1);
    secrets
        .patch(&tc.secret_name(), &apply, &Patch::Apply(&secret))
        .await?;
    let renewal = toma::schedule::renewal_time(
        credential.issued_at,
        credential.expires_at,
        tc.renew_before_seconds(),
        &tc.uid().unwrap_or_default(),
    );
    let status = toma::status::issued(tc, &credential, renewal, 1, now);
    let patch = json!({
        "apiVersion": TurnCredential::api_version(&()),
        "kind": TurnCredential::kind(&()),
        "status": status,
    });
    credentials
        .patch_status(&tc.name_any(), &apply, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// The Event toma writes for a new credential.
async fn announce(recorder: &Recorder, tc: &TurnCredential) -> Result<()> {
    let event = Event {
        type_: EventType::Normal,
        reason: "Issued".into(),
        note: Some(format!("Secret {}: credential issued", tc.secret_name())),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&event, &tc.object_ref(&())).await?;
    Ok(())
}
