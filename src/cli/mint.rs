//! `toma mint`: what the curl of Cloudflare's documentation does, with a key from the cluster:
//! mint one credential with the key's token and print the `iceServers` JSON. For debugging a
//! key; the token itself is never printed.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::Client;

use super::Outcome;
use crate::api::{KeyKind, KeyName};
use crate::credential::IceConfig;
use crate::key_resolver;
use crate::metrics::Metrics;
use crate::provider::{Providers, Request};

#[derive(clap::Args)]
pub struct MintArgs {
    /// The key: `turnkey/NAME` (in --namespace), `clusterturnkey/NAME`, or a TurnKey's NAME.
    #[arg(long)]
    pub key: String,
    /// Namespace of a TurnKey (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Lifetime of the credential in seconds.
    #[arg(long, default_value_t = 300)]
    pub ttl: i64,
    /// Timeout of the provider request, in seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_seconds: u64,
}

pub async fn mint(client: Client, args: MintArgs) -> Outcome {
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let name = key_name(&args.key, &namespace)?;
    let key = key_resolver::resolve(&client, &name)
        .await
        .map_err(|failure| failure.to_string())?;
    let providers = Providers::new(
        Duration::from_secs(args.timeout_seconds),
        None,
        Arc::new(Metrics::default()),
    );
    let request = Request {
        ttl_seconds: args.ttl,
        expires_at: Timestamp::now() + SignedDuration::from_secs(args.ttl),
        custom_identifier: None,
    };
    let ice_servers = providers
        .mint(&key, &request)
        .await
        .map_err(|error| format!("{name}: {error}"))?;
    let config = IceConfig { ice_servers };
    println!(
        "{}",
        serde_json::to_string_pretty(&config).expect("ICE servers serialize to JSON")
    );
    Ok(())
}

/// `turnkey/web`, `clusterturnkey/cloudflare` (kinds as kubectl spells them, any case), or `web`.
fn key_name(key: &str, namespace: &str) -> Result<KeyName, String> {
    let (kind, name) = match key.split_once('/') {
        None => (KeyKind::TurnKey, key),
        Some((kind, name)) => match kind.to_ascii_lowercase().as_str() {
            "turnkey" | "turnkeys" => (KeyKind::TurnKey, name),
            "clusterturnkey" | "clusterturnkeys" => (KeyKind::ClusterTurnKey, name),
            other => {
                return Err(format!(
                    "--key {key}: {other} is neither turnkey nor clusterturnkey"
                ));
            }
        },
    };
    if name.is_empty() {
        return Err(format!("--key {key}: no name"));
    }
    Ok(KeyName {
        kind,
        namespace: (kind == KeyKind::TurnKey).then(|| namespace.to_string()),
        name: name.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_as_kubectl_names_them() {
        let named = |key| key_name(key, "app").map(|k| k.to_string());
        assert_eq!(named("web").unwrap(), "TurnKey app/web");
        assert_eq!(named("turnkey/web").unwrap(), "TurnKey app/web");
        assert_eq!(
            named("ClusterTurnKey/cloudflare").unwrap(),
            "ClusterTurnKey cloudflare"
        );
        assert!(
            named("secret/web")
                .unwrap_err()
                .contains("neither turnkey nor clusterturnkey")
        );
        assert!(named("turnkey/").is_err());
    }
}
