//! The commands for people on call, as `toma <command>` or `kubectl toma <command>` (kubectl
//! runs `kubectl-toma` from the PATH, a link to this binary): `status`, `rotate` and `mint`.
//! They talk to the cluster of the current kubeconfig context, as kubectl does.

mod mint;
mod status;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

pub use mint::{MintArgs, mint};
pub use status::{StatusArgs, status};

use crate::api::{ROTATE_ANNOTATION, TurnCredential};

/// Which TurnCredential a command is about.
#[derive(clap::Args)]
pub struct Target {
    /// Name of the TurnCredential.
    pub name: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

impl Target {
    fn api(&self, client: &Client) -> Api<TurnCredential> {
        match &self.namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::default_namespaced(client.clone()),
        }
    }

    fn namespace(&self, client: &Client) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string())
    }
}

/// What a command failed on, in words for the terminal.
pub type Outcome = Result<(), String>;

/// `toma rotate`: asks for a new credential now, as `kubectl annotate … toma.dev/rotate=<now>`.
pub async fn rotate(client: Client, target: Target) -> Outcome {
    let value = Timestamp::now().as_second().to_string();
    let patch = json!({"metadata": {"annotations": {ROTATE_ANNOTATION: value}}});
    target
        .api(&client)
        .patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|error| not_found_or(&target, &client, error))?;
    println!(
        "TurnCredential {}/{}: new credential requested ({ROTATE_ANNOTATION}={value})",
        target.namespace(&client),
        target.name
    );
    Ok(())
}

fn not_found_or(target: &Target, client: &Client, error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 404 => format!(
            "TurnCredential {}/{} not found",
            target.namespace(client),
            target.name
        ),
        other => describe(other),
    }
}

/// The API server's own words for a refused call (kube's text for it embeds a Debug dump).
fn describe(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    }
}
