//! What the integration tests of loadtest share.

use std::path::{Path, PathBuf};

/// The directory of the binaries of this build profile (`target/debug`), where `cargo test
/// --workspace` also builds the origin and the edge.
pub fn profile_dir() -> PathBuf {
    let loadtest = Path::new(env!("CARGO_BIN_EXE_loadtest"));
    loadtest
        .parent()
        .expect("the loadtest binary is in a directory")
        .to_owned()
}
