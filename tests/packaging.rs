//! Packaging: the committed man pages are what the binary generates.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn pages(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("man page folder")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&path).expect("page"))
        })
        .collect()
}

#[test]
fn committed_man_pages_match_the_binary() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(common::binary())
        .args(["manpage", "--dir"])
        .arg(out.path())
        .status()
        .expect("run manpage");
    assert!(status.success());
    let committed = pages(&Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/man"));
    let generated = pages(out.path());
    assert!(generated.contains_key("tracks-collector.1"));
    assert!(
        committed == generated,
        "packaging/man is stale: run `cargo run -- manpage --dir packaging/man` and commit it"
    );
}
