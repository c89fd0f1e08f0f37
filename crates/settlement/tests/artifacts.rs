//! The committed contract artifacts (contracts/out/*.json, from which the Rust bindings are generated) must be
//! what the committed sources compile to.

mod common;

use std::process::Command;

#[test]
fn committed_contract_artifacts_match_a_fresh_compilation() {
    let out = Command::new(common::repo_root().join("scripts/build-contracts.sh"))
        .arg("--check")
        .output()
        .expect("run scripts/build-contracts.sh --check (needs node and npm)");
    assert!(
        out.status.success(),
        "contract artifacts are stale: run scripts/build-contracts.sh and commit contracts/out\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
