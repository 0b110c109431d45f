//! The custom resources: `TurnCredential`, `TurnKey` and `ClusterTurnKey` in `toma.dev/v1alpha1`.
//!
//! Doc comments on fields become `kubectl explain` text; validation lives in the CRD schema
//! (ranges, enums) and in CEL rules where a rule spans fields, so the API server rejects bad
//! manifests with a readable message before toma ever sees them.

mod turn_credential;
mod turn_key;

pub use turn_credential::*;
pub use turn_key::*;

pub const GROUP: &str = "toma.dev";
/// Changing this annotation's value forces a new credential at once.
pub const ROTATE_ANNOTATION: &str = "toma.dev/rotate";
/// Cloudflare refuses longer lifetimes.
pub const MAX_TTL_SECONDS: i64 = 172_800;
pub const MIN_TTL_SECONDS: i64 = 60;
/// A DNS subdomain name (RFC 1123), as Kubernetes requires of most object names.
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
