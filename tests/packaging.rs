//! Packaging: the committed man pages are what the binary generates, and the unit, the
//! maintainer scripts and the packaged configuration agree on where things live.

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

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

#[test]
fn unit_scripts_and_config_agree_on_paths() {
    let config = tracks_collector::testkit::Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/collector.example.toml"),
    )
    .expect("the example config loads");
    assert_eq!(
        config.storage.key_file,
        Path::new("/var/lib/tracks-collector/db.key")
    );
    assert!(config.storage.path.starts_with("/var/lib/tracks-collector"));

    let postinst = read("packaging/postinst");
    assert!(postinst.contains("STATE_DIR=/var/lib/tracks-collector\n"));
    assert!(postinst.contains("KEY_FILE=\"$STATE_DIR/db.key\"\n"));
    assert!(postinst.contains("CREDSTORE_KEY=/etc/credstore/tracks-collector.db-key\n"));

    let unit = read("systemd/tracks-collector.service");
    for line in [
        "Type=notify\n",
        "WatchdogSec=30s\n",
        "StateDirectory=tracks-collector\n",
        "StateDirectoryMode=0700\n",
        "User=tracks-collector\n",
        "LoadCredential=db-key:tracks-collector.db-key\n",
        // Idle sockets must not run the daemon out of files (the default soft limit is 1024).
        "LimitNOFILE=65536\n",
        "ExecStart=/usr/bin/tracks-collector --config /etc/tracks-collector/collector.toml serve\n",
    ] {
        assert!(unit.contains(line), "the unit lacks {line:?}");
    }
    assert_eq!(
        tracks_collector::testkit::CREDENTIAL_NAME,
        "db-key",
        "the credential name the unit passes"
    );

    let manifest = read("Cargo.toml");
    assert!(manifest.contains(
        r#"["config/collector.example.toml", "etc/tracks-collector/collector.toml", "644"]"#
    ));
    assert_eq!(
        tracks_collector::testkit::DEFAULT_CONFIG_PATH,
        "/etc/tracks-collector/collector.toml"
    );
}
