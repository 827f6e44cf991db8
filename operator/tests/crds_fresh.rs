//! The checked-in CRD YAML must match what the Rust types generate.

#[test]
fn generated_crds_are_fresh() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/generated");
    for (name, yaml) in darter_crds::all_crd_yaml().expect("render") {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "crds/generated/{name} is stale: run `cargo run -p darter-operator -- crds --write crds/generated`"
        );
    }
}
