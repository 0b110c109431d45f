//! One layer and its config as an OCI image layout, packed in a tar archive (`oci-archive:` to
//! skopeo, `ctr images import`, `podman load`). It also holds a Docker `manifest.json` naming
//! the same blobs, so `docker load` takes it too. Every JSON document is written with sorted
//! keys and no timestamps, and the layer is gzipped by a pinned compressor with a zero header
//! time, so the digests depend only on the files and the settings.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::Result;
use crate::tar::Tree;

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// How the image runs and what it says about itself; the rootfs comes separately.
pub struct ImageSpec {
    /// Full reference it is published and imported under, e.g. ghcr.io/toma-dev/toma:0.1.0.
    pub reference: String,
    pub entrypoint: Vec<String>,
    pub user: String,
    pub env: Vec<String>,
    pub exposed_ports: Vec<String>,
    /// OCI annotations, copied into the config's labels as Docker shows those.
    pub annotations: Vec<(String, String)>,
}

/// The archive, and the digest registries and runtimes will know the image by.
pub struct Archive {
    pub bytes: Vec<u8>,
    pub manifest_digest: String,
    pub layer_tar_size: usize,
}

pub fn archive(spec: &ImageSpec, layer_tar: &[u8], mtime: u64) -> Result<Archive> {
    let layer_gz = gzip(layer_tar)?;
    let annotations: Map<String, Value> = spec
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let ports: Map<String, Value> = spec
        .exposed_ports
        .iter()
        .map(|p| (p.clone(), json!({})))
        .collect();
    let config = canonical(&json!({
        "architecture": architecture(),
        "os": "linux",
        "config": {
            "User": spec.user,
            "Entrypoint": spec.entrypoint,
            "Env": spec.env,
            "ExposedPorts": ports,
            "WorkingDir": "/",
            "Labels": annotations,
        },
        "rootfs": { "type": "layers", "diff_ids": [sha256(layer_tar)] },
        "history": [{ "created_by": "toma-image (make image)" }],
    }));
    let manifest = canonical(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer_gz)],
        "annotations": annotations,
    }));
    let manifest_digest = sha256(&manifest);
    let mut manifest_descriptor = descriptor(MANIFEST_TYPE, &manifest);
    manifest_descriptor["platform"] = json!({ "architecture": architecture(), "os": "linux" });
    // containerd names an imported image after io.containerd.image.name; skopeo and the OCI
    // spec look at ref.name. Both hold the full reference.
    manifest_descriptor["annotations"] = json!({
        "io.containerd.image.name": spec.reference,
        "org.opencontainers.image.ref.name": spec.reference,
    });
    let index = canonical(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_descriptor],
    }));
    let docker_manifest = canonical(&json!([{
        "Config": blob_path(&config),
        "RepoTags": [spec.reference],
        "Layers": [blob_path(&layer_gz)],
    }]));

    let mut layout = Tree::default();
    for blob in [&layer_gz, &config, &manifest] {
        layout.add_file(&blob_path(blob), 0o644, blob.clone());
    }
    layout.add_file("index.json", 0o644, index);
    layout.add_file("manifest.json", 0o644, docker_manifest);
    layout.add_file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
    Ok(Archive {
        bytes: layout.to_tar(mtime)?,
        manifest_digest,
        layer_tar_size: layer_tar.len(),
    })
}

/// The OCI name of this machine's architecture, which is the binary's and its libraries'.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn blob_path(data: &[u8]) -> String {
    format!("blobs/sha256/{}", &sha256(data)["sha256:".len()..])
}

fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(data), "size": data.len() })
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // GzEncoder writes a zero modification time and no file name into the header.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

/// Compact JSON with object keys sorted at every level, whatever order serde_json's maps keep.
fn canonical(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<_> = map.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ImageSpec {
        ImageSpec {
            reference: "ghcr.io/example/toma:1.2.3".into(),
            entrypoint: vec!["/toma".into(), "run".into()],
            user: "65532:65532".into(),
            env: vec!["PATH=/usr/bin".into()],
            exposed_ports: vec!["8080/tcp".into()],
            annotations: vec![("org.opencontainers.image.version".into(), "1.2.3".into())],
        }
    }

    fn layer() -> Vec<u8> {
        let mut tree = Tree::default();
        tree.add_file("toma", 0o755, b"binary".to_vec());
        tree.to_tar(1_700_000_000).unwrap()
    }

    /// The blob at `path` inside an archive written by Tree::to_tar (names fit one header).
    fn member(archive: &[u8], path: &str) -> Vec<u8> {
        let mut at = 0;
        while at + 512 <= archive.len() && archive[at] != 0 {
            let header = &archive[at..at + 512];
            let name = String::from_utf8_lossy(&header[..100])
                .trim_end_matches('\0')
                .to_string();
            let size_text = String::from_utf8_lossy(&header[124..135]).to_string();
            let size = usize::from_str_radix(&size_text, 8).unwrap();
            if name == path {
                return archive[at + 512..at + 512 + size].to_vec();
            }
            at += 512 + size.next_multiple_of(512);
        }
        panic!("{path} is not in the archive");
    }

    #[test]
    fn packing_twice_gives_the_same_bytes_and_digest() {
        let first = archive(&spec(), &layer(), 1_700_000_000).unwrap();
        let second = archive(&spec(), &layer(), 1_700_000_000).unwrap();
        assert_eq!(first.manifest_digest, second.manifest_digest);
        assert!(first.bytes == second.bytes);
    }

    #[test]
    fn index_names_the_manifest_whose_blobs_match_their_digests() {
        let packed = archive(&spec(), &layer(), 0).unwrap();
        let index: Value = serde_json::from_slice(&member(&packed.bytes, "index.json")).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            "ghcr.io/example/toma:1.2.3"
        );
        assert_eq!(entry["digest"], packed.manifest_digest);
        let manifest_path = format!("blobs/sha256/{}", &packed.manifest_digest[7..]);
        let manifest_bytes = member(&packed.bytes, &manifest_path);
        assert_eq!(sha256(&manifest_bytes), packed.manifest_digest);
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let config_bytes = member(&packed.bytes, &format!("blobs/sha256/{}", &config_digest[7..]));
        assert_eq!(sha256(&config_bytes), config_digest);
        let config: Value = serde_json::from_slice(&config_bytes).unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!(["/toma", "run"]));
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&layer()));
        assert!(config.get("created").is_none(), "no timestamp in the config");
    }

    #[test]
    fn json_keys_are_sorted() {
        assert_eq!(
            canonical(&json!({"b": 1, "a": {"d": 2, "c": 3}})),
            br#"{"a":{"c":3,"d":2},"b":1}"#
        );
    }
}
