//! The chart ships the CRDs `crdgen` prints. This fails when the committed copy has drifted from
//! the Rust types; `make crds` regenerates it.

#[test]
fn chart_crds_match_the_rust_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/ferrolb/charts/crds/files/crds.yaml"
    );
    let committed = std::fs::read_to_string(path).expect("the chart's CRD file exists");
    let generated = ferrolb_crds::crds_yaml().expect("CRDs render as YAML");
    assert!(
        committed == generated,
        "{path} differs from crdgen's output; run `make crds` and commit the result"
    );
}
