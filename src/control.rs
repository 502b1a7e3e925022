//! Control: how the command line's writes reach the store's one owner.
//!
//! While a daemon runs it is the store's only writer: it holds the data folder's lock
//! ([`FolderLock`]) for its whole life, and what its writer keeps in memory (entries held back,
//! filters, cell ids) is only true while nothing else writes the file. So `forget`, `unforget`,
//! `purge` and `rotate-salt` from the command line are sent to it over a local socket and
//! carried out by its store, by the same code ([`execute`]) that runs them in the command's own
//! process when no daemon runs.
//!
//! The socket is `control.sock` in the data folder, mode 0600, one JSON line each way. The
//! daemon also checks each peer's uid (`SO_PEERCRED`) and answers only its own user and root.
//! Nothing on the network reaches it.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::Config;
use crate::identity::{Identity, Signer};
use crate::ingest::Ingest;
use crate::jobs;
use crate::privacy::SharedSalts;
use crate::store::{
    Departure, FolderLock, ForgetReport, Kind, PurgeReport, Store, StoreError, folder_of,
};

/// The socket's name in the data folder.
pub(crate) const SOCKET_NAME: &str = "control.sock";
/// A request is one short JSON line; anything longer is not one.
const REQUEST_LIMIT: u64 = 4096;
/// How long a connected peer may take to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// How long the command line waits for the daemon's answer: a purge of a month of data, or a
/// write queued behind a full writer, takes a while, but not this long.
const REPLY_WAIT: Duration = Duration::from_secs(600);

/// A write the command line asks of the store's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {
    Forget {
        game: String,
        user_id: String,
    },
    Unforget {
        game: String,
        user_id: String,
    },
    /// Deletes what is past retention, by the owner's clock.
    Purge,
    RotateSalt,
    /// Signs a document the command line exports and records it in the ledger; the document
    /// stays with the command line, only its hash and size travel.
    SignExport {
        from: String,
        to: String,
        /// The BLAKE3 hash of the document, hex.
        hash: String,
        size: i64,
    },
    /// A new identity key, the change recorded in the ledger and signed by both keys.
    RotateIdentity,
}

impl Command {
    /// For the log: never the user id.
    fn name(&self) -> &'static str {
        match self {
            Command::Forget { .. } => "forget",
            Command::Unforget { .. } => "unforget",
            Command::Purge => "purge",
            Command::RotateSalt => "rotate-salt",
            Command::SignExport { .. } => "sign-export",
            Command::RotateIdentity => "rotate-identity",
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Forgotten {
        report: ForgetReport,
    },
    Unforgotten {
        lifted: bool,
    },
    /// Everything received before `cutoff` (unix seconds) went.
    Purged {
        cutoff: i64,
        report: PurgeReport,
    },
    Rotated,
    /// The ledger row of an export, and what the document carries: all hex.
    Signed {
        seq: i64,
        signature: String,
        ledger_prev: String,
        public_key: String,
    },
    IdentityRotated {
        seq: i64,
        fingerprint: String,
    },
}

/// The daemon's answer on the socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
enum Reply {
    Done {
        outcome: Outcome,
    },
    /// The request is wrong (an unknown game, an empty user id): nothing was done.
    Refused {
        message: String,
    },
    /// It was right, and failed.
    Failed {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is wrong; nothing was done.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The daemon carried the command out and it failed, or it could not be asked.
    #[error("{0}")]
    Failed(String),
}

/// The store's owner, and what a command needs besides the store.
#[derive(Debug, Clone)]
pub struct Owner {
    pub config: Arc<Config>,
    pub store: Store,
    /// The ring the daemon hashes with: a rotation or a purge changes it at once.
    pub salts: SharedSalts,
    /// The identity the daemon signs with: a rotation swaps it at once.
    pub signer: Signer,
    /// Where the identity key is kept (`identity::key_path`).
    pub identity_path: PathBuf,
}

impl Owner {
    /// The owner of `store`, signing with the identity kept beside its database (made there
    /// if missing), as a command run without a daemon is.
    pub fn with_identity(
        config: Arc<Config>,
        store: Store,
        salts: SharedSalts,
    ) -> Result<Owner, ControlError> {
        let identity_path = crate::identity::key_path(&config.storage.path);
        let last_rotation = store.reader()?.last_rotation()?;
        let signer = Signer::new(
            Identity::load_settled(&identity_path, last_rotation)
                .map_err(|err| ControlError::Failed(err.to_string()))?,
        );
        Ok(Owner {
            config,
            store,
            salts,
            signer,
            identity_path,
        })
    }
}

/// Carries `command` out on the owner's store at `now`.
pub(crate) async fn execute(
    owner: &Owner,
    command: Command,
    now: i64,
) -> Result<Outcome, ControlError> {
    let ingest = || {
        Ingest::new(
            &owner.config,
            owner.salts.clone(),
            owner.store.block_key().clone(),
        )
    };
    match command {
        Command::Forget { game, user_id } => {
            let player = ingest()
                .subject(&game, &user_id)
                .map_err(|err| ControlError::Refused(err.to_string()))?;
            let report = owner
                .store
                .forget(&player.game, player.users, player.block, now)
                .await?;
            Ok(Outcome::Forgotten { report })
        }
        Command::Unforget { game, user_id } => {
            let player = ingest()
                .subject(&game, &user_id)
                .map_err(|err| ControlError::Refused(err.to_string()))?;
            let lifted = owner.store.unforget(player.block).await?;
            Ok(Outcome::Unforgotten { lifted })
        }
        Command::Purge => {
            let privacy = &owner.config.privacy;
            let report = jobs::purge(&owner.store, &owner.salts, privacy, now).await?;
            let cutoff = now - i64::from(privacy.retention_days) * crate::clock::DAY_SECS;
            Ok(Outcome::Purged { cutoff, report })
        }
        Command::RotateSalt => {
            jobs::rotate_salt(&owner.store, &owner.salts, now)
                .await
                .map_err(|err| ControlError::Failed(err.to_string()))?;
            Ok(Outcome::Rotated)
        }
        Command::SignExport {
            from,
            to,
            hash,
            size,
        } => sign_export(owner, from, to, &hash, size, now).await,
        Command::RotateIdentity => rotate_identity(owner, now).await,
    }
}

/// Records a document the command line exports (`hash`, hex, and `size`) in the ledger and
/// returns the signature.
async fn sign_export(
    owner: &Owner,
    from: String,
    to: String,
    hash: &str,
    size: i64,
    now: i64,
) -> Result<Outcome, ControlError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hash, &mut bytes)
        .map_err(|_| ControlError::Refused("the hash is not 64 hex characters".into()))?;
    let departure = Departure {
        kind: Kind::Export,
        destination: "command line".into(),
        from,
        to,
        hash: bytes,
        size,
        kept: None,
    };
    let signed = owner
        .store
        .record_departure(departure, owner.signer.current(), now)
        .await?;
    Ok(Outcome::Signed {
        seq: signed.seq,
        signature: hex::encode(signed.signature),
        ledger_prev: hex::encode(signed.prev),
        public_key: hex::encode(signed.public_key),
    })
}

/// Makes a new identity key, records the change in the ledger signed by both keys, and signs
/// with the new key from then on.
async fn rotate_identity(owner: &Owner, now: i64) -> Result<Outcome, ControlError> {
    let failed = |err: crate::identity::IdentityError| ControlError::Failed(err.to_string());
    let old = owner.signer.current();
    // The new key is on disk before the ledger names it, and in place after.
    let new = Arc::new(Identity::prepare_new(&owner.identity_path).map_err(failed)?);
    let seq = owner.store.record_rotation(old, new.clone(), now).await?;
    Identity::commit_new(&owner.identity_path).map_err(failed)?;
    let fingerprint = crate::identity::fingerprint(&new.public_key());
    owner
        .signer
        .replace(Identity::load(&owner.identity_path).map_err(failed)?);
    tracing::info!(%fingerprint, "the collector's identity was rotated");
    Ok(Outcome::IdentityRotated { seq, fingerprint })
}

/// Where the daemon owning the database at `db_path` listens.
pub(crate) fn socket_path(db_path: &Path) -> PathBuf {
    folder_of(db_path).join(SOCKET_NAME)
}

/// Why a daemon could not claim its data folder.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("{}", busy(folder, *pid))]
    Running { folder: PathBuf, pid: Option<i32> },
    #[error(transparent)]
    Store(StoreError),
    #[error("cannot make the control socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Who holds the folder: a daemon that answers on its socket, else a command (or a daemon
/// still starting or stopping).
fn busy(folder: &Path, pid: Option<i32>) -> String {
    match pid {
        Some(pid) => format!(
            "{} is already served by a running tracks-collector (pid {pid}); stop it first \
             (`systemctl stop tracks-collector`)",
            folder.display()
        ),
        None => format!(
            "{} is in use by another tracks-collector process (a command such as `purge`, or a \
             daemon starting or stopping); start again once it is done",
            folder.display()
        ),
    }
}

/// A data folder claimed by a daemon: its lock, and the control socket, bound and answering
/// once [`Control::serve`] runs (a command sent meanwhile waits in the socket's backlog).
#[derive(Debug)]
pub struct Claim {
    pub lock: FolderLock,
    pub control: Control,
}

impl Claim {
    /// Takes the lock of the data folder of `db_path` and binds its control socket; when
    /// another daemon holds it, says which.
    pub async fn take(db_path: &Path) -> Result<Claim, ClaimError> {
        let lock = match FolderLock::take(db_path) {
            Ok(lock) => lock,
            Err(StoreError::Locked { folder }) => {
                let pid = running_pid(db_path).await;
                return Err(ClaimError::Running { folder, pid });
            }
            Err(err) => return Err(ClaimError::Store(err)),
        };
        let control = Control::bind(db_path).map_err(|source| ClaimError::Socket {
            path: socket_path(db_path),
            source,
        })?;
        Ok(Claim { lock, control })
    }
}

/// The pid of the daemon answering on the control socket of `db_path`, as the kernel gives
/// it: the process that made the socket.
async fn running_pid(db_path: &Path) -> Option<i32> {
    let stream = UnixStream::connect(socket_path(db_path)).await.ok()?;
    stream.peer_cred().ok()?.pid()
}

/// The control socket, bound by the lock's holder.
#[derive(Debug)]
pub struct Control {
    listener: UnixListener,
    socket: SocketFile,
    /// The daemon's own uid: the socket's owner.
    uid: u32,
}

impl Control {
    /// Binds the socket of `db_path`'s folder. Only the holder of the folder's lock calls it,
    /// so a socket file already there was left by a daemon that died, and goes.
    pub fn bind(db_path: &Path) -> std::io::Result<Control> {
        let path = socket_path(db_path);
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        let socket = SocketFile(path);
        std::fs::set_permissions(&socket.0, std::fs::Permissions::from_mode(0o600))?;
        let uid = std::fs::metadata(&socket.0)?.uid();
        Ok(Control {
            listener,
            socket,
            uid,
        })
    }

    /// Answers commands, carried out at the time `clock` tells, until dropped (the daemon's
    /// stop aborts it); the socket file goes with it.
    pub async fn serve(self, owner: Owner, clock: fn() -> i64) {
        let owner = Arc::new(owner);
        let _socket = self.socket;
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept on the control socket");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(peer) if peer.uid() == 0 || peer.uid() == self.uid => {}
                Ok(peer) => {
                    tracing::warn!(
                        uid = peer.uid(),
                        "refused a control connection from another user"
                    );
                    continue;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "refused a control connection of unknown origin");
                    continue;
                }
            }
            // Carried out to the end even if the command line goes away meanwhile.
            tokio::spawn(answer(stream, owner.clone(), clock));
        }
    }
}

/// Removes the socket file when the daemon stops, so a command line that finds none knows no
/// daemon answers.
#[derive(Debug)]
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn answer(stream: UnixStream, owner: Arc<Owner>, clock: fn() -> i64) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut request = BufReader::new(read.take(REQUEST_LIMIT));
    match tokio::time::timeout(REQUEST_WAIT, request.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let reply = match serde_json::from_str::<Command>(line.trim_end()) {
        Ok(command) => {
            let name = command.name();
            tracing::info!(
                command = name,
                "carrying out a command from the command line"
            );
            match execute(&owner, command, clock()).await {
                Ok(outcome) => Reply::Done { outcome },
                Err(ControlError::Refused(message)) => Reply::Refused { message },
                Err(err) => {
                    tracing::error!(command = name, error = %err, "a command from the command line failed");
                    Reply::Failed {
                        message: err.to_string(),
                    }
                }
            }
        }
        Err(err) => Reply::Refused {
            message: format!("not a command this daemon knows: {err}"),
        },
    };
    if let Ok(mut bytes) = serde_json::to_vec(&reply) {
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }
}

/// Has the daemon owning the database at `db_path` carry out `command`.
pub async fn send(db_path: &Path, command: &Command) -> Result<Outcome, ControlError> {
    let path = socket_path(db_path);
    let unreachable = |err: std::io::Error| {
        let hint = match err.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "run this command as the daemon's user or as root"
            }
            // The lock is held but nobody listens: a daemon starting or stopping.
            _ => "if the daemon is starting or stopping, try again in a moment",
        };
        ControlError::Failed(format!(
            "a running daemon owns {}, and its control socket {} does not answer: {err}; {hint}",
            folder_of(db_path).display(),
            path.display()
        ))
    };
    let mut stream = UnixStream::connect(&path).await.map_err(unreachable)?;
    let mut request =
        serde_json::to_vec(command).map_err(|err| ControlError::Failed(err.to_string()))?;
    request.push(b'\n');
    stream.write_all(&request).await.map_err(unreachable)?;
    let mut reply = String::new();
    let mut stream = BufReader::new(stream);
    match tokio::time::timeout(REPLY_WAIT, stream.read_line(&mut reply)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Err(err)) => return Err(unreachable(err)),
        Ok(Ok(_)) => {
            return Err(ControlError::Failed(
                "the daemon closed the control connection without an answer (did it stop?); \
                 whether the command ran shows in its log"
                    .into(),
            ));
        }
        Err(_) => {
            return Err(ControlError::Failed(format!(
                "no answer from the daemon within {REPLY_WAIT:?}; whether the command ran \
                 shows in its log"
            )));
        }
    }
    match serde_json::from_str::<Reply>(reply.trim_end()) {
        Ok(Reply::Done { outcome }) => Ok(outcome),
        Ok(Reply::Refused { message }) => Err(ControlError::Refused(message)),
        Ok(Reply::Failed { message }) => Err(ControlError::Failed(format!(
            "the running daemon carried the command out, and it failed: {message}"
        ))),
        Err(err) => Err(ControlError::Failed(format!(
            "the daemon's answer is not one this command knows (a different version?): {err}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire format is what an older or newer command line meets: kept readable and fixed.
    #[test]
    fn commands_and_outcomes_are_one_json_line_each() {
        let forget = Command::Forget {
            game: "g".into(),
            user_id: "u".into(),
        };
        let line = serde_json::to_string(&forget).expect("json");
        assert_eq!(line, r#"{"command":"forget","game":"g","user_id":"u"}"#);
        assert_eq!(
            serde_json::from_str::<Command>(&line).expect("back"),
            forget
        );
        assert_eq!(
            serde_json::to_string(&Command::RotateSalt).expect("json"),
            r#"{"command":"rotate-salt"}"#
        );
        let refused = serde_json::from_str::<Command>(r#"{"command":"drop-table"}"#);
        assert!(
            refused.is_err(),
            "an unknown command is not read as another"
        );
        let reply = Reply::Done {
            outcome: Outcome::Purged {
                cutoff: 7,
                report: PurgeReport::default(),
            },
        };
        let line = serde_json::to_string(&reply).expect("json");
        match serde_json::from_str::<Reply>(&line).expect("back") {
            Reply::Done { outcome } => {
                assert!(matches!(outcome, Outcome::Purged { cutoff: 7, .. }))
            }
            other => panic!("{other:?}"),
        }
    }
}
