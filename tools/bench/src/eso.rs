//! external-secrets (ESO), what a user would most likely pick without toma: an ExternalSecret
//! per credential whose data a Webhook generator fetches from Cloudflare's
//! `generate-ice-servers`. The objects are bench/eso/manifests, as a user writes them; ESO runs
//! out of cluster on one namespace, with the flags of one [`Config`].

use std::time::Instant;

use fake_cloudflare::FakeCloudflare;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::cluster::{self, Outcome};
use crate::process::Metrics;
use crate::progress::{self, Secrets, Tracker};
use crate::{Result, prom};

/// ESO's client QPS when not told otherwise (with a burst of 100).
pub const DEFAULT_QPS: u32 = 50;

/// The Secret with the API token and the Webhook generator, once per namespace.
const KEY_YAML: &str = include_str!("../../../bench/eso/manifests/key.yaml");
/// One ExternalSecret, copied N times.
const EXTERNAL_SECRET_YAML: &str = include_str!("../../../bench/eso/manifests/externalsecret.yaml");

/// The ExternalSecrets are `es-00000` …, each writing a Secret of the same name.
const NAME_PREFIX: &str = "es-";

/// The log line of ESO v0.16 that says its ExternalSecret workers run (its caches are synced):
/// it has no readiness endpoint.
pub const READY_LOG_LINE: &[&str] = &[r#""msg":"Starting workers""#, r#""controller":"externalsecret""#];

/// One way of running ESO: `--concurrent` and the client's QPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub concurrent: u16,
    pub qps: u32,
}

impl Config {
    /// Reads `CONCURRENT:QPS`, e.g. `16:50`.
    pub fn parse(text: &str) -> std::result::Result<Config, String> {
        let wrong =
            || format!("an ESO configuration is CONCURRENT:QPS, both positive, e.g. 16:50; got '{text}'");
        let (concurrent, qps) = text.split_once(':').ok_or_else(wrong)?;
        let concurrent: u16 = concurrent.parse().map_err(|_| wrong())?;
        let qps: u32 = qps.parse().map_err(|_| wrong())?;
        if concurrent == 0 || qps == 0 {
            return Err(wrong());
        }
        Ok(Config { concurrent, qps })
    }

    /// ESO's flags for this configuration. Another QPS than the default gets a burst of twice
    /// the QPS, as the default burst is twice the default QPS.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["--concurrent".to_string(), self.concurrent.to_string()];
        if self.qps != DEFAULT_QPS {
            args.extend([
                format!("--client-qps={}", self.qps),
                format!("--client-burst={}", 2 * self.qps),
            ]);
        }
        args
    }

    /// The column header: the QPS only where it is not ESO's default.
    pub fn name(&self) -> String {
        match self.qps {
            DEFAULT_QPS => format!("ESO c={}", self.concurrent),
            qps => format!("ESO c={} qps={qps}", self.concurrent),
        }
    }

    /// How it was run, for the report: `extra` are the flags given for every ESO run.
    pub fn command_line(&self, extra: &[String]) -> String {
        let mut line = format!("external-secrets {}", self.args().join(" "));
        for arg in extra {
            line += &format!(" {arg}");
        }
        if self.qps == DEFAULT_QPS && !extra.iter().any(|a| a.starts_with("--client-")) {
            line += " (client QPS 50, burst 100: ESO's defaults)";
        }
        line
    }
}

/// ESO's flags on `namespace`, but the metrics address.
pub fn args(config: &Config, namespace: &str, extra: &[String]) -> Vec<String> {
    let fixed = [
        "--enable-leader-election=false",
        "--namespace",
        namespace,
        "--loglevel",
        "info",
    ];
    let mut args: Vec<String> = fixed.into_iter().map(String::from).collect();
    args.extend(config.args());
    args.extend(extra.iter().cloned());
    args
}

/// What ESO's /metrics says about its ExternalSecret controller and the Webhook provider.
pub fn metrics(text: &str) -> Metrics {
    let of_controller = |name: &str| {
        prom::samples(text, &[name])
            .into_iter()
            .filter(|s| s.labels.get("controller").is_some_and(|c| c == "externalsecret"))
    };
    let reconciles = |result: Option<&str>| -> u64 {
        of_controller("controller_runtime_reconcile_total")
            .filter(|s| result.is_none_or(|r| s.labels.get("result").is_some_and(|l| l == r)))
            .map(|s| s.value as u64)
            .sum()
    };
    let webhook = prom::samples(text, &["externalsecret_provider_api_calls_count"])
        .into_iter()
        .filter(|s| s.labels.get("provider").is_some_and(|p| p == "Webhook"));
    Metrics {
        reconciles: reconciles(None),
        errors: reconciles(Some("error")),
        requeues: Some(reconciles(Some("requeue"))),
        reconcile_seconds: of_controller("controller_runtime_reconcile_time_seconds_sum")
            .map(|s| s.value)
            .sum(),
        reconcile_count: of_controller("controller_runtime_reconcile_time_seconds_count")
            .map(|s| s.value as u64)
            .sum(),
        provider_calls: webhook.map(|s| s.value as u64).sum(),
    }
}

/// The objects of manifests/key.yaml, pointing at the fake Cloudflare at `base_url`.
pub fn key_objects(base_url: &str) -> Result<Vec<DynamicObject>> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(&key_yaml(base_url))?;
    Ok(documents
        .into_iter()
        .map(serde_json::from_value)
        .collect::<serde_json::Result<_>>()?)
}

/// manifests/key.yaml with its placeholders filled in.
fn key_yaml(base_url: &str) -> String {
    KEY_YAML
        .replace("${FAKE_URL}", base_url)
        .replace("${KEY_ID}", cluster::KEY_ID)
        .replace("${TOKEN}", cluster::TOKEN)
}

/// The `i`-th ExternalSecret of a run, `es-00000` …, and its Secret's name.
pub fn external_secret(template: &DynamicObject, namespace: &str, i: usize) -> DynamicObject {
    let name = format!("{NAME_PREFIX}{i:05}");
    let mut es = template.clone();
    es.metadata.name = Some(name.clone());
    es.metadata.namespace = Some(namespace.into());
    es.data["spec"]["target"]["name"] = Value::String(name);
    es
}

/// Ready=True among the ExternalSecret's status conditions.
pub fn is_ready(es: &DynamicObject) -> bool {
    let conditions = es.data["status"]["conditions"].as_array();
    conditions
        .and_then(|all| all.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

fn is_external_secrets_secret(name: &str) -> bool {
    name.starts_with(NAME_PREFIX)
}

/// The API of an object's kind in `namespace`; the plural is the kind's lower case plus "s",
/// which holds for the kinds of the manifests.
fn api_for(client: &Client, namespace: &str, object: &DynamicObject) -> Result<Api<DynamicObject>> {
    let types = object
        .types
        .as_ref()
        .ok_or("a manifest without apiVersion and kind")?;
    let gvk = GroupVersionKind::try_from(types)?;
    let plural = format!("{}s", gvk.kind.to_lowercase());
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    Ok(Api::namespaced_with(client.clone(), namespace, &resource))
}

fn template() -> Result<DynamicObject> {
    Ok(serde_saphyr::from_str(EXTERNAL_SECRET_YAML)?)
}

/// The token Secret and the Webhook generator in `namespace`.
pub async fn create_key(client: &Client, namespace: &str, base_url: &str) -> Result<()> {
    for object in key_objects(base_url)? {
        api_for(client, namespace, &object)?
            .create(&PostParams::default(), &object)
            .await?;
    }
    Ok(())
}

pub async fn create_all(client: &Client, namespace: &str, n: usize, parallelism: usize) -> Result<Instant> {
    let template = template()?;
    let api = api_for(client, namespace, &template)?;
    cluster::create_each(n, parallelism, |i| {
        let (api, es) = (api.clone(), external_secret(&template, namespace, i));
        async move { api.create(&PostParams::default(), &es).await }
    })
    .await
}

pub async fn track(client: &Client, namespace: &str, n: usize) -> Result<Tracker> {
    let secrets = Secrets {
        labels: None,
        counts: is_external_secrets_secret,
    };
    let external_secrets = api_for(client, namespace, &template()?)?;
    progress::track(external_secrets, is_ready, client, namespace, secrets, n).await
}

pub async fn outcome(client: &Client, namespace: &str, fake: &FakeCloudflare) -> Result<Outcome> {
    let external_secrets = cluster::list_all(&api_for(client, namespace, &template()?)?).await?;
    let mut secrets = cluster::list_all(&Api::<Secret>::namespaced(client.clone(), namespace)).await?;
    secrets.retain(|s| is_external_secrets_secret(&s.name_any()));
    let outcome = Outcome {
        objects: external_secrets.len(),
        ready: external_secrets.iter().filter(|es| is_ready(es)).count(),
        ..Outcome::default()
    };
    Ok(outcome.with_secrets(&secrets, fake))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_reads_concurrent_and_qps_and_refuses_anything_else() {
        assert_eq!(
            Config::parse("16:50"),
            Ok(Config {
                concurrent: 16,
                qps: 50
            })
        );
        assert_eq!(
            Config::parse("1:1000"),
            Ok(Config {
                concurrent: 1,
                qps: 1000
            })
        );
        for wrong in ["16", "0:50", "16:0", "16:fifty", ":50", "16:50:1", ""] {
            assert!(Config::parse(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn only_a_qps_other_than_the_default_adds_flags_and_shows_in_the_header() {
        let default = Config {
            concurrent: 16,
            qps: 50,
        };
        assert_eq!(default.args(), ["--concurrent", "16"]);
        assert_eq!(default.name(), "ESO c=16");
        assert_eq!(
            default.command_line(&[]),
            "external-secrets --concurrent 16 (client QPS 50, burst 100: ESO's defaults)"
        );
        let fast = Config {
            concurrent: 1,
            qps: 1000,
        };
        assert_eq!(
            fast.args(),
            ["--concurrent", "1", "--client-qps=1000", "--client-burst=2000"]
        );
        assert_eq!(fast.name(), "ESO c=1 qps=1000");
        assert_eq!(
            fast.command_line(&["--enable-flood-gate=false".into()]),
            "external-secrets --concurrent 1 --client-qps=1000 --client-burst=2000 --enable-flood-gate=false"
        );
        let all = args(&fast, "ns", &[]);
        assert_eq!(all[..3], ["--enable-leader-election=false", "--namespace", "ns"]);
    }

    #[test]
    fn the_key_manifests_point_at_the_fake_with_the_bench_key() {
        let objects = key_objects("http://127.0.0.1:4321").unwrap();
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o.types.as_ref().unwrap().kind.as_str())
            .collect();
        assert_eq!(kinds, ["Secret", "Webhook"]);
        assert_eq!(objects[0].data["stringData"]["keyId"], cluster::KEY_ID);
        assert_eq!(objects[0].data["stringData"]["apiToken"], cluster::TOKEN);
        let url = objects[1].data["spec"]["url"].as_str().unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:4321/v1/turn/keys/{{ .cf.keyId }}/"),
            "{url}"
        );
        assert!(
            !key_yaml("http://x").contains("${"),
            "every placeholder is filled in"
        );
    }

    #[test]
    fn each_external_secret_is_named_and_writes_the_secret_of_its_name() {
        let es = external_secret(&template().unwrap(), "ns", 42);
        assert_eq!(es.name_any(), "es-00042");
        assert_eq!(es.namespace().as_deref(), Some("ns"));
        assert_eq!(es.data["spec"]["target"]["name"], "es-00042");
        assert_eq!(es.data["spec"]["refreshInterval"], "16h");
        assert!(is_external_secrets_secret("es-00042") && !is_external_secrets_secret("cloudflare-turn"));
    }

    #[test]
    fn ready_means_a_ready_condition_that_is_true() {
        let with = |conditions: Value| -> DynamicObject {
            let mut es = template().unwrap();
            es.data["status"] = serde_json::json!({ "conditions": conditions });
            es
        };
        assert!(is_ready(&with(
            serde_json::json!([{"type": "Ready", "status": "True"}])
        )));
        assert!(!is_ready(&with(
            serde_json::json!([{"type": "Ready", "status": "False"}])
        )));
        assert!(!is_ready(&with(serde_json::json!([]))));
        assert!(!is_ready(&template().unwrap()));
    }

    #[test]
    fn metrics_count_the_external_secret_controller_and_the_webhook_only() {
        let text = r#"controller_runtime_reconcile_total{controller="externalsecret",result="success"} 90
controller_runtime_reconcile_total{controller="externalsecret",result="error"} 4
controller_runtime_reconcile_total{controller="externalsecret",result="requeue"} 6
controller_runtime_reconcile_total{controller="secretstore",result="success"} 50
controller_runtime_reconcile_time_seconds_sum{controller="externalsecret"} 2.5
controller_runtime_reconcile_time_seconds_count{controller="externalsecret"} 100
controller_runtime_reconcile_time_seconds_count{controller="secretstore"} 50
externalsecret_provider_api_calls_count{call="GetSecret",provider="Webhook",status="success"} 97
externalsecret_provider_api_calls_count{call="GetSecret",provider="Vault",status="success"} 3
"#;
        let m = metrics(text);
        assert_eq!(
            m,
            Metrics {
                reconciles: 100,
                errors: 4,
                requeues: Some(6),
                reconcile_seconds: 2.5,
                reconcile_count: 100,
                provider_calls: 97,
            }
        );
        assert_eq!(m.mean_reconcile_ms(), 25.0);
    }
}
