//! A node that cannot start says what is missing, before anything starts.

use toma_cluster::{Cluster, Settings};

#[test]
fn up_without_node_binaries_names_the_build_script_and_starts_nothing() {
    let dir = std::env::temp_dir().join(format!("toma-cluster-missing-{}", std::process::id()));
    let node_dir = dir.with_extension("no-node-build");
    let settings = Settings::from_lookup(|name| match name {
        "TOMA_CLUSTER_DIR" => Some(dir.display().to_string()),
        "TOMA_NODE_DIR" => Some(node_dir.display().to_string()),
        _ => None,
    })
    .unwrap();
    let cluster = Cluster::new(settings);
    let error = cluster.up().unwrap_err().to_string();
    assert!(error.contains("run hack/build-node.sh"), "{error}");
    assert!(error.contains("TOMA_NODE=0"), "{error}");
    assert!(
        !dir.exists(),
        "up created {} although it could not start",
        dir.display()
    );
    std::fs::remove_file(cluster.layout().lock_file()).unwrap();
}
