//! Edge: `init`, a new folder with a configuration, a database key, an identity and a
//! self-signed certificate.

use std::path::PathBuf;

use anyhow::Context as _;

use super::common::{Failure, create_private_dir, new_secret};
use crate::config::{Config, INIT_LISTEN, SecretHash};
use crate::store::DbKey;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The folder to create (must not contain a collector.toml yet)
    #[arg(long, default_value = "./tracks-collector", value_name = "DIR")]
    dir: PathBuf,
    /// The id of the game to configure
    #[arg(long, default_value = "my-game")]
    game: String,
}

pub(super) fn run(args: Args) -> Result<(), Failure> {
    let (dir, game) = (args.dir.as_path(), args.game.as_str());
    let config_file = dir.join("collector.toml");
    if config_file.exists() {
        return Err(Failure::config(anyhow::anyhow!(
            "{} already exists; refusing to overwrite it",
            config_file.display()
        )));
    }
    create_private_dir(dir)?;
    create_private_dir(&dir.join("data"))?;
    let key_file = dir.join("data").join("db.key");
    if !key_file.exists() {
        DbKey::generate()?.write_new_file(&key_file)?;
    }
    let identity = crate::identity::Identity::load_or_create(&crate::identity::key_path(
        &dir.join("data").join("collector.db"),
    ))
    .context("cannot make the collector's identity")?;
    let generated =
        crate::http::tls::generate_self_signed(&dir.join("tls"), &crate::http::tls::local_names())?;
    let measure_key = new_secret("mk");
    // `{listen}` before `{game}`, so the user's game id is not searched for it.
    let text = INIT_TEMPLATE
        .replace("{listen}", &INIT_LISTEN.to_string())
        .replace("{game}", game)
        .replace(
            "{measure_hash}",
            &SecretHash::of(measure_key.as_bytes()).to_config_string(),
        );
    crate::files::write_private_new(&config_file, text.as_bytes())
        .with_context(|| format!("cannot write {}", config_file.display()))?;
    // The file must load as written; a template error is ours, not the user's.
    Config::load(&config_file).map_err(Failure::config)?;
    println!("Created {}:", dir.display());
    println!("  collector.toml      the configuration (edit listen, allowed_origins, games)");
    println!("  data/db.key         the database key (back it up: without it the data is lost)");
    println!(
        "  data/identity.key   the key that signs what leaves (fingerprint {})",
        crate::identity::fingerprint(&identity.public_key())
    );
    println!(
        "  tls/                a self-signed certificate; clients trust {}",
        generated.ca.display()
    );
    println!();
    println!("The measure key of game \"{game}\" (shown once; only its hash is stored):");
    println!("  {measure_key}");
    println!();
    println!("Start it with:");
    println!(
        "  tracks-collector --config {} serve",
        config_file.display()
    );
    Ok(())
}

const INIT_TEMPLATE: &str = r#"# tracks-collector configuration, written by `tracks-collector init`.
# Every key is described in collector.example.toml; relative paths are relative to this file.

[server]
listen = "{listen}"
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
trusted_proxies = []
allowed_origins = []

[storage]
path = "data/collector.db"
key_file = "data/db.key"

[[games]]
id = "{game}"
measure_key = "{measure_hash}"
"#;
