//! `TurnCredential`: what an application team asks for, and the status toma reports.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DNS_SUBDOMAIN, ROTATE_ANNOTATION};

/// A TURN credential that toma keeps fresh in a Secret.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "toma.dev",
    version = "v1alpha1",
    kind = "TurnCredential",
    namespaced,
    status = "TurnCredentialStatus",
    shortname = "tc",
    category = "toma",
    doc = "A TURN credential that toma mints from a TurnKey or ClusterTurnKey, writes into a Secret and rotates before it expires.",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#, priority = 1),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName", priority = 1),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Renewal", type_ = "string", json_path = ".status.renewalTime", priority = 1),
    printcolumn(name = "MountSafe", type_ = "string", json_path = r#".status.conditions[?(@.type=="MountSafe")].status"#, priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.renewBeforeSeconds) || self.spec.renewBeforeSeconds < self.spec.ttlSeconds")
        .message("spec.renewBeforeSeconds must be less than spec.ttlSeconds"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)")
        .message("spec.secretName is immutable; create a new TurnCredential to write another Secret")
)]
pub struct TurnCredentialSpec {
    /// The TurnKey (same namespace) or ClusterTurnKey that mints this credential.
    pub key_ref: KeyRef,

    /// Lifetime of each credential in seconds, from 60 to 172800 (48 hours, Cloudflare's maximum).
    #[serde(default = "default_ttl_seconds")]
    #[schemars(range(min = 60, max = 172800))]
    pub ttl_seconds: i64,

    /// How long before expiry a new credential is minted. Must be less than ttlSeconds. Defaults
    /// to a third of the ttl (renewal at two thirds of the life), raised to 120 where that is at
    /// most half of the ttl: a kubelet at its default settings updates a mounted Secret up to 90 s
    /// after it changes, so pods that mount the Secret never read an expired credential when this
    /// is 120 or more (when unset, for every ttlSeconds of 240 or more). Shorter values work for
    /// consumers that read the Secret through the API; the MountSafe condition flags them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub renew_before_seconds: Option<i64>,

    /// Name of the Secret to write, in the TurnCredential's namespace (a DNS subdomain name).
    /// Defaults to the TurnCredential's name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub secret_name: Option<String>,

    /// Extra labels and annotations for the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// Which of the provider's URLs to keep. By default port-53 URLs are dropped, since browsers
    /// block that port and a browser would wait for it to time out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_filter: Option<UrlFilter>,

    /// Workloads to restart when the Secret's content changes (a rotation, a recreated Secret),
    /// for consumers that read the Secret into environment variables at start-up. Restarts of
    /// one workload within a few seconds are one rollout. A mounted Secret needs no restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rollout_restart_targets: Vec<RolloutTarget>,

    /// Revoke the live credential at the provider when this TurnCredential is deleted
    /// (Cloudflare only; shared-secret credentials cannot be revoked and simply expire).
    #[serde(default)]
    pub revoke_on_delete: bool,

    /// Cloudflare `customIdentifier`: a tag for the credential in Cloudflare's TURN analytics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub custom_identifier: Option<String>,
}

fn default_ttl_seconds() -> i64 {
    86_400
}

/// How long before expiry a credential must reach its Secret for pods that mount the Secret never
/// to read an expired one. A kubelet rewrites mounted Secrets when it syncs the pod, every
/// `syncFrequency` (default 1 minute) plus up to 50 % jitter: up to 90 s after the write (60 to
/// 90 s measured on a real node). The rest is margin for a slow mint (the provider timeout is
/// 10 s) and a busy kubelet.
pub const MOUNT_DELAY_SECONDS: i64 = 120;

/// renewBeforeSeconds when the spec leaves it out: a third of the ttl, as cert-manager renews at
/// two thirds of the life, raised to [`MOUNT_DELAY_SECONDS`] as far as half of the ttl, so that
/// each credential still serves at least half of its life. From a ttl of 240 s up, the default is
/// mount-safe.
pub fn default_renew_before_seconds(ttl_seconds: i64) -> i64 {
    (ttl_seconds / 3).max(MOUNT_DELAY_SECONDS.min(ttl_seconds / 2))
}

/// A reference to the key that mints a credential.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// TurnKey (in the TurnCredential's namespace) or ClusterTurnKey.
    #[serde(default)]
    pub kind: KeyKind,
    /// Name of the TurnKey or ClusterTurnKey (a DNS subdomain name).
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum KeyKind {
    #[default]
    TurnKey,
    ClusterTurnKey,
}

/// Labels and annotations added to the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    /// Labels added to the Secret, next to toma's `app.kubernetes.io/managed-by: toma`.
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    /// Annotations added to the Secret, next to toma's `toma.dev/*` ones.
    pub annotations: BTreeMap<String, String>,
}

/// Which ICE server URLs reach the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlFilter {
    /// URLs on these ports are dropped. Default [53].
    #[serde(default = "default_excluded_ports")]
    // A plain integer schema: the generated `format: uint16` is not a format the API server knows.
    #[schemars(extend("items" = {"type": "integer", "minimum": 1, "maximum": 65535}))]
    pub exclude_ports: Vec<u16>,
    /// Keep only TURN URLs with these transports (udp, tcp, tls; `turns:` counts as tls).
    /// Empty keeps every transport. STUN URLs are kept either way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transports: Vec<Transport>,
    /// `all` (the default) keeps every URL the other filters keep. `minimal` keeps one STUN URL,
    /// one TURN URL over UDP and one over TLS (`turns:`), preferring ports 3478, 3478 and 443, or
    /// one over TCP where there is no `turns:` URL: fewer servers make ICE gathering quicker,
    /// while TLS on 443 still gets through restrictive networks.
    #[serde(default, skip_serializing_if = "UrlProfile::is_all")]
    pub profile: UrlProfile,
}

impl Default for UrlFilter {
    fn default() -> Self {
        Self {
            exclude_ports: default_excluded_ports(),
            transports: Vec::new(),
            profile: UrlProfile::All,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UrlProfile {
    #[default]
    All,
    Minimal,
}

impl UrlProfile {
    // Left out when it is the default, so that the fingerprint of older specs stays the same.
    fn is_all(&self) -> bool {
        *self == UrlProfile::All
    }
}

fn default_excluded_ports() -> Vec<u16> {
    vec![53]
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// A workload restarted when the Secret's content changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: RolloutKind,
    /// Name of the workload, in the TurnCredential's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RolloutKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// What toma observed and did, in a form `kubectl get` and alerts can read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnCredentialStatus {
    /// `Ready` tells whether the Secret holds a valid credential that toma keeps fresh.
    /// `MountSafe` tells whether pods that mount the Secret always read an unexpired credential
    /// with kubelets at their default settings: False (reason RenewBeforeTooShort) when
    /// renewBeforeSeconds is below 120.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret that holds the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the current credential was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,
    /// When the current credential stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When toma will mint the next credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// How many credentials have been minted for this TurnCredential.
    #[serde(default)]
    pub rotations: i64,
    /// Consecutive failed attempts since the last success; reset to 0 on success.
    #[serde(default)]
    pub failures: i64,
    /// When the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
}

impl TurnCredentialSpec {
    /// A spec with every optional field at its default, minting with `key_ref`.
    pub fn with_key(key_ref: KeyRef, ttl_seconds: i64) -> TurnCredentialSpec {
        TurnCredentialSpec {
            key_ref,
            ttl_seconds,
            renew_before_seconds: None,
            secret_name: None,
            secret_template: None,
            url_filter: None,
            rollout_restart_targets: Vec::new(),
            revoke_on_delete: false,
            custom_identifier: None,
        }
    }
}

impl TurnCredential {
    /// The Secret this credential is written to.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(self))
    }

    /// Seconds before expiry at which to renew: the spec's value, or
    /// [`default_renew_before_seconds`].
    pub fn renew_before_seconds(&self) -> i64 {
        self.spec
            .renew_before_seconds
            .unwrap_or_else(|| default_renew_before_seconds(self.spec.ttl_seconds))
    }

    /// Whether pods that mount the Secret always read an unexpired credential from it, with
    /// kubelets at their default settings: the next credential is written at least
    /// [`MOUNT_DELAY_SECONDS`] before the current one expires.
    pub fn is_mount_safe(&self) -> bool {
        self.renew_before_seconds() >= MOUNT_DELAY_SECONDS
    }

    pub fn url_filter(&self) -> UrlFilter {
        self.spec.url_filter.clone().unwrap_or_default()
    }

    pub fn rotate_request(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(ROTATE_ANNOTATION)
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::turn_credential;

    #[test]
    fn the_default_renew_before_is_a_third_of_the_ttl_but_at_least_120_s_within_half_of_it() {
        let defaults: Vec<i64> = [60, 120, 180, 240, 300, 360, 3600, 86_400]
            .into_iter()
            .map(default_renew_before_seconds)
            .collect();
        assert_eq!(defaults, [30, 60, 90, 120, 120, 120, 1200, 28_800]);
    }

    #[test]
    fn the_default_renew_before_is_always_less_than_the_ttl() {
        for ttl in crate::api::MIN_TTL_SECONDS..=crate::api::MAX_TTL_SECONDS {
            let renew_before = default_renew_before_seconds(ttl);
            assert!(
                renew_before > 0 && renew_before < ttl,
                "ttl {ttl}: {renew_before}"
            );
        }
    }

    #[test]
    fn a_credential_is_mount_safe_when_it_is_renewed_at_least_120_s_before_expiry() {
        let with = |ttl: i64, renew_before: Option<i64>| {
            let mut tc = turn_credential("web");
            tc.spec.ttl_seconds = ttl;
            tc.spec.renew_before_seconds = renew_before;
            tc.is_mount_safe()
        };
        assert!(with(86_400, None));
        assert!(with(240, None), "the shortest ttl whose default is mount-safe");
        assert!(!with(239, None));
        assert!(!with(60, Some(50)));
        assert!(with(150, Some(120)));
        assert!(!with(86_400, Some(119)));
    }
}
