//! The cluster's keys and certificates, made with openssl, and its static tokens.
//!
//! - One CA. The apiserver's serving certificate has SANs IP:127.0.0.1, DNS:localhost,
//!   DNS:kubernetes.default.svc(.cluster.local), DNS:kubernetes and IP:10.0.0.1 (the first IP of
//!   the service range), with explicit v3 extensions (CA:TRUE/keyCertSign on the CA; CA:FALSE,
//!   serverAuth and key identifiers on the leaf), since rustls/webpki (kube-rs) is stricter than
//!   openssl about them.
//! - An RSA-2048 ServiceAccount signing key pair.
//! - Client certificates for the kubelet (CN=system:node:127.0.0.1, O=system:nodes, as a real
//!   node's) and for the apiserver's calls to the kubelet (O=system:masters), so `kubectl logs`
//!   and `exec` work with the kubelet's webhook authorization left on.
//! - Static tokens (--token-auth-file) for an admin, the controller manager and the scheduler,
//!   all in system:masters, as separate users so request logs tell them apart.

use std::fs;
use std::io::Read;
use std::path::Path;

use crate::layout::{self, Layout};
use crate::process::run;
use crate::{Error, Result};

const APISERVER_EXT: &str = "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:kubernetes,IP:10.0.0.1
";

const CLIENT_EXT: &str = "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
";

/// The token users: (file stem, user name, uid).
pub const TOKEN_USERS: [(&str, &str, &str); 3] = [
    ("admin", "toma-admin", "uid-toma-admin"),
    ("kcm", "toma-kube-controller-manager", "uid-toma-kcm"),
    ("scheduler", "toma-kube-scheduler", "uid-toma-scheduler"),
];

pub fn generate(layout: &Layout) -> Result<()> {
    let dir = layout.pki("");
    fs::create_dir_all(&dir).map_err(Error::io("creating directory", &dir))?;
    let openssl = Path::new("openssl");
    let pki = |file: &str| layout.pki(file).display().to_string();
    run(
        openssl,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=toma-test-ca",
            "-keyout",
            &pki("ca.key"),
            "-out",
            &pki("ca.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-addext",
            "subjectKeyIdentifier=hash",
        ],
    )?;
    leaf(
        layout,
        "apiserver",
        "/CN=kube-apiserver",
        &["-newkey", "rsa:2048"],
        APISERVER_EXT,
    )?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    leaf(
        layout,
        "kubelet",
        "/O=system:nodes/CN=system:node:127.0.0.1",
        &ec,
        CLIENT_EXT,
    )?;
    leaf(
        layout,
        "apiserver-kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        &ec,
        CLIENT_EXT,
    )?;
    run(openssl, &["genrsa", "-out", &pki("sa.key"), "2048"])?;
    run(
        openssl,
        &["rsa", "-in", &pki("sa.key"), "-pubout", "-out", &pki("sa.pub")],
    )?;

    let mut csv = String::new();
    for (stem, user, uid) in TOKEN_USERS {
        let token = random_hex()?;
        layout::write_private(&layout.pki(&format!("{stem}.token")), &token)?;
        // Read by curl with `-H @file`, so the token is never on a command line.
        layout::write_private(
            &layout.pki(&format!("{stem}.header")),
            &format!("Authorization: Bearer {token}\n"),
        )?;
        // token,user,uid,"groups"
        csv.push_str(&format!("{token},{user},{uid},\"system:masters\"\n"));
    }
    layout::write_private(&layout.pki("tokens.csv"), &csv)?;
    for key in [
        "ca.key",
        "apiserver.key",
        "kubelet.key",
        "apiserver-kubelet-client.key",
        "sa.key",
    ] {
        set_mode(&layout.pki(key), 0o600)?;
    }
    Ok(())
}

/// A key and a certificate signed by the CA: `<stem>.key`, `<stem>.crt`.
fn leaf(layout: &Layout, stem: &str, subject: &str, key_args: &[&str], ext: &str) -> Result<()> {
    let pki = |suffix: &str| layout.pki(&format!("{stem}.{suffix}")).display().to_string();
    let mut args = vec!["req", "-nodes", "-subj", subject];
    args.extend_from_slice(key_args);
    let (key, csr, crt, extfile) = (pki("key"), pki("csr"), pki("crt"), pki("ext"));
    args.extend_from_slice(&["-keyout", &key, "-out", &csr]);
    run(Path::new("openssl"), &args)?;
    layout::write(Path::new(&extfile), ext)?;
    let (ca, ca_key) = (
        layout.pki("ca.crt").display().to_string(),
        layout.pki("ca.key").display().to_string(),
    );
    run(
        Path::new("openssl"),
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ],
    )?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Error::io("setting mode of", path))
}

fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::io("reading", "/dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn token(layout: &Layout, stem: &str) -> Result<String> {
    let path = layout.pki(&format!("{stem}.token"));
    fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .map_err(Error::io("reading", &path))
}
