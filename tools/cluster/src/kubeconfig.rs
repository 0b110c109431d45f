//! Kubeconfig files: token users for people, tests and the control plane; a client certificate
//! for the kubelet.

use std::path::Path;

use crate::Result;
use crate::layout::{self, Layout};

pub enum Credential<'a> {
    Token(&'a str),
    Certificate { cert: &'a Path, key: &'a Path },
}

pub fn write(layout: &Layout, file: &Path, api_port: u16, user: &str, credential: Credential) -> Result<()> {
    let user_fields = match credential {
        Credential::Token(token) => format!("    token: {token}\n"),
        Credential::Certificate { cert, key } => format!(
            "    client-certificate: {}\n    client-key: {}\n",
            cert.display(),
            key.display()
        ),
    };
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: toma
  cluster:
    server: https://127.0.0.1:{api_port}
    certificate-authority: {ca}
users:
- name: {user}
  user:
{user_fields}contexts:
- name: toma
  context:
    cluster: toma
    user: {user}
    namespace: default
current-context: toma
",
        ca = layout.pki("ca.crt").display()
    );
    layout::write_private(file, &text)
}
