//! A private CA for tests that reach the fake Cloudflare over HTTPS, made with the openssl CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A throw-away CA and a server certificate it signed, valid for a day.
pub struct TestCa {
    /// The CA certificate (PEM), for clients to trust (`SSL_CERT_FILE`).
    pub ca_file: PathBuf,
    pub ca_pem: String,
    /// The server's certificate chain and key, for [`fake_cloudflare::Config::tls`].
    pub server: fake_cloudflare::Tls,
}

impl TestCa {
    /// A CA in `dir` (created) and a server certificate for the IP addresses `ips`.
    pub fn new(dir: &Path, ips: &[&str]) -> TestCa {
        std::fs::create_dir_all(dir).unwrap();
        let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        let extensions = format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            sans.join(",")
        );
        std::fs::write(dir.join("server.ext"), extensions).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir,
            &[
                &["req", "-x509"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.crt", "-days", "1"],
                &[
                    "-subj",
                    "/CN=toma test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign",
                ],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=fake-cloudflare",
                ],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "1",
                "-extfile",
                "server.ext",
            ],
        );
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
        TestCa {
            ca_file: dir.join("ca.crt"),
            ca_pem: read("ca.crt"),
            server: fake_cloudflare::Tls {
                cert_chain_pem: read("server.crt"),
                key_pem: read("server.key"),
            },
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (hack/prerequisites.sh)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
