//! `TurnKey` and `ClusterTurnKey`: which provider mints credentials, and where its secret lives.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{KeyKind, TurnCredential};

/// A TURN key in one namespace, usable by TurnCredentials in that namespace.
// Each printcolumn names its own type_; clippy takes them for one repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "toma.dev",
    version = "v1alpha1",
    kind = "TurnKey",
    namespaced,
    category = "toma",
    doc = "A TURN provider key. TurnCredentials in the same namespace mint credentials with it.",
    printcolumn(name = "Key ID", type_ = "string", json_path = ".spec.cloudflare.keyId"),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.sharedSecret.secretRef.name"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.cloudflare) != has(self.sharedSecret)")
        .message("exactly one provider block is required: cloudflare or sharedSecret"),
    validation = Rule::new("(!has(self.cloudflare) || !has(self.cloudflare.apiTokenSecretRef.namespace)) && (!has(self.sharedSecret) || !has(self.sharedSecret.secretRef.namespace))")
        .message("a TurnKey reads Secrets from its own namespace: remove secretRef namespace, or use a ClusterTurnKey")
)]
pub struct TurnKeySpec {
    /// Mint credentials from Cloudflare's TURN service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudflare: Option<CloudflareProvider>,
    /// Compute credentials locally with the TURN REST shared-secret scheme (coturn
    /// use-auth-secret, eturnal, STUNner, pion/turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<SharedSecretProvider>,
}

/// A TURN key for the whole cluster, usable by TurnCredentials in any namespace.
// Each printcolumn names its own type_; clippy takes them for one repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "toma.dev",
    version = "v1alpha1",
    kind = "ClusterTurnKey",
    category = "toma",
    doc = "A cluster-wide TURN provider key. TurnCredentials in any namespace mint credentials with it.",
    printcolumn(name = "Key ID", type_ = "string", json_path = ".spec.cloudflare.keyId"),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.sharedSecret.secretRef.name"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.cloudflare) != has(self.sharedSecret)")
        .message("exactly one provider block is required: cloudflare or sharedSecret"),
    validation = Rule::new("(!has(self.cloudflare) || has(self.cloudflare.apiTokenSecretRef.namespace)) && (!has(self.sharedSecret) || has(self.sharedSecret.secretRef.namespace))")
        .message("a ClusterTurnKey must name the namespace of its Secret in secretRef namespace")
)]
pub struct ClusterTurnKeySpec {
    /// Mint credentials from Cloudflare's TURN service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudflare: Option<CloudflareProvider>,
    /// Compute credentials locally with the TURN REST shared-secret scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<SharedSecretProvider>,
    /// Which namespaces may use this key: TurnCredentials in namespaces whose labels match it
    /// mint with it, others get Ready=False with reason KeyNotAllowed. Default: every namespace.
    /// A credential refused after a change keeps its Secret until it expires, but is not renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn'] && has(e.values) && size(e.values) > 0) || (e.operator in ['Exists', 'DoesNotExist'] && (!has(e.values) || size(e.values) == 0)))").message("namespaceSelector matchExpressions: operator must be In or NotIn with values, or Exists or DoesNotExist without"))]
    pub namespace_selector: Option<LabelSelector>,
}

/// A Cloudflare TURN key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudflareProvider {
    /// The TURN key ID (public; it goes in the request URL).
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub key_id: String,
    /// The Secret key holding the TURN key's API token.
    pub api_token_secret_ref: SecretKeyRef,
    /// Base URL of the TURN credential API. Default https://rtc.live.cloudflare.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("baseUrl must be an http(s) URL"))]
    pub base_url: Option<String>,
}

/// A self-hosted TURN server that accepts TURN REST API (HMAC) credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedSecretProvider {
    /// The Secret key holding the shared secret configured on the TURN server.
    pub secret_ref: SecretKeyRef,
    /// The TURN/STUN URLs to hand to clients, e.g. turn:turn.example.com:3478?transport=udp.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(u, u.startsWith('turn:') || u.startsWith('turns:') || u.startsWith('stun:'))").message("urls must start with turn:, turns: or stun:"))]
    pub urls: Vec<String>,
    /// Suffix of the username after the expiry time (`<expiry>:<suffix>`). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub username_suffix: Option<String>,
}

/// A key in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Namespace of the Secret: required for a ClusterTurnKey, not allowed for a TurnKey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A TurnKey in its namespace, or a ClusterTurnKey: the key a TurnCredential names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyName {
    pub kind: KeyKind,
    /// The TurnKey's namespace; None for a ClusterTurnKey.
    pub namespace: Option<String>,
    pub name: String,
}

impl KeyName {
    /// The key `tc` names: a TurnKey is looked up in `tc`'s own namespace.
    pub fn of(tc: &TurnCredential) -> KeyName {
        let key_ref = &tc.spec.key_ref;
        KeyName {
            kind: key_ref.kind,
            namespace: match key_ref.kind {
                KeyKind::TurnKey => Some(tc.metadata.namespace.clone().unwrap_or_default()),
                KeyKind::ClusterTurnKey => None,
            },
            name: key_ref.name.clone(),
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            KeyKind::TurnKey => "TurnKey",
            KeyKind::ClusterTurnKey => "ClusterTurnKey",
        }
    }
}

/// `TurnKey app/cloudflare` or `ClusterTurnKey cloudflare`.
impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind_name(), self.name),
            None => write!(f, "{} {}", self.kind_name(), self.name),
        }
    }
}
