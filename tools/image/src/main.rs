//! toma-image: writes toma's container image as an OCI image archive, from a release binary
//! and this machine's libraries, with no container engine, no registry and no base image.
//! `make image` runs it; the Dockerfile runs it with --rootfs to get the very same files.

mod oci;
mod rootfs;
mod tar;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;

use oci::ImageSpec;
use tar::{Node, Tree};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Packs the toma binary into a reproducible single-layer image. The same binary, libraries,
/// arguments and SOURCE_DATE_EPOCH give the same bytes, hence the same digest.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The toma binary (cargo build --release -p toma).
    #[arg(long, default_value = "target/release/toma")]
    binary: PathBuf,
    /// Where to write the OCI image archive.
    #[arg(long, required_unless_present = "rootfs")]
    out: Option<PathBuf>,
    /// Write the image's files into this (new or empty) directory instead of an archive.
    #[arg(long, conflicts_with = "out")]
    rootfs: Option<PathBuf>,
    /// The full reference the image is published under, e.g. ghcr.io/toma-dev/toma:0.1.0.
    #[arg(long, required_unless_present = "rootfs")]
    reference: Option<String>,
    /// toma's version, for the org.opencontainers.image.version annotation.
    #[arg(long, default_value = "")]
    version: String,
    /// The source commit, for org.opencontainers.image.revision.
    #[arg(long, default_value = "")]
    revision: String,
    /// The source repository URL, for org.opencontainers.image.source.
    #[arg(long, default_value = "")]
    source: String,
    /// Modification time of every file, in seconds since the epoch (the commit's time).
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    source_date_epoch: u64,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toma-image: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let tree = rootfs::toma_tree(&cli.binary)?;
    if let Some(dir) = &cli.rootfs {
        return write_rootfs(&tree, dir);
    }
    let out = cli.out.as_ref().expect("clap requires --out without --rootfs");
    let spec = image_spec(&cli);
    let layer = tree.to_tar(cli.source_date_epoch)?;
    let packed = oci::archive(&spec, &layer, cli.source_date_epoch)?;
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    // Written next to the target and renamed, so an importer never sees half an archive.
    let partial = out.with_extension("partial");
    fs::write(&partial, &packed.bytes)?;
    fs::rename(&partial, out)?;
    println!("archive:   {}", out.display());
    println!("reference: {}", spec.reference);
    println!("digest:    {}", packed.manifest_digest);
    println!(
        "size:      {:.1} MB unpacked, {:.1} MB archive, packed in {:.1} s",
        packed.layer_tar_size as f64 / 1e6,
        packed.bytes.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How toma runs in the image. The entrypoint holds the subcommand, so a pod's `args:` (the
/// chart passes only flags) replace nothing but the image's empty Cmd.
fn image_spec(cli: &Cli) -> ImageSpec {
    let annotations = [
        ("org.opencontainers.image.title", "toma"),
        (
            "org.opencontainers.image.description",
            "Keeps short-lived TURN credentials fresh in Kubernetes Secrets",
        ),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
        ("org.opencontainers.image.version", cli.version.as_str()),
        ("org.opencontainers.image.revision", cli.revision.as_str()),
        ("org.opencontainers.image.source", cli.source.as_str()),
    ];
    ImageSpec {
        reference: cli.reference.clone().unwrap_or_default(),
        entrypoint: vec![rootfs::BINARY_PATH.into(), "run".into()],
        user: format!("{0}:{0}", rootfs::USER),
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            format!("SSL_CERT_FILE={}", rootfs::CA_BUNDLE),
        ],
        exposed_ports: vec!["8080/tcp".into()],
        annotations: annotations
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    }
}

/// The image's files as a directory tree, for `COPY --from=… /rootfs /` in the Dockerfile.
fn write_rootfs(tree: &Tree, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    for (path, node) in tree.iter() {
        let target = dir.join(path);
        let mode = match node {
            Node::Dir { mode } => {
                fs::create_dir_all(&target)?;
                *mode
            }
            Node::File { mode, data } => {
                fs::write(&target, data)?;
                *mode
            }
        };
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
    }
    println!("rootfs:    {}", dir.display());
    Ok(())
}
