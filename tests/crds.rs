//! The committed CRDs must be what the Rust types generate: run `hack/generate.sh` after
//! changing src/api.rs.

#[test]
fn committed_crds_match_the_rust_types() {
    let committed = include_str!("../crds/toma.dev.yaml");
    assert!(
        committed == toma::crds_yaml(),
        "crds/toma.dev.yaml is out of date: run hack/generate.sh and commit the result"
    );
}
