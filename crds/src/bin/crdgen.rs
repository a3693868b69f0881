//! `crdgen` prints ferrolb's CRDs as YAML, generated from the Rust types.
//!
//! The chart ships this output; `crds/tests/drift.rs` fails when the committed copy differs.
//! Regenerate with `make crds`.

fn main() {
    match ferrolb_crds::crds_yaml() {
        Ok(yaml) => print!("{yaml}"),
        Err(e) => {
            eprintln!("crdgen: cannot render the CRDs as YAML: {e}");
            std::process::exit(1);
        }
    }
}
