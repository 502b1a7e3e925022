//! The benches' baseline servers, run as a child of the bench's own executable (a role, named
//! by `INGEST_BENCH_ROLE`): bare hyper + rustls with the collector's TLS setup, answering
//! every request, either
//!
//! - `baseline`: 204 once the body is read: what HTTP and TLS alone cost; or
//! - `sealed`: 204 once the body is sealed (AES-256-GCM) and on disk (fdatasync): the least a
//!   durable, encrypted ingest can cost on this machine. One writer thread appends the sealed
//!   records to a preallocated log, one flusher thread syncs them in groups: while one
//!   fdatasync runs, the next group gathers, as a store with group commit would.
//!
//! A bench's `main` calls [`run_role_if_asked`] first; [`role_command`] starts a role.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::oneshot;
use tracks_collector::testkit::TlsFiles;
use tracks_collector::testkit::{CertResolver, server_config};

pub(crate) const ROLE_VAR: &str = "INGEST_BENCH_ROLE";
pub(crate) const PORT_VAR: &str = "INGEST_BENCH_PORT";
pub(crate) const CERT_VAR: &str = "INGEST_BENCH_CERT";
pub(crate) const KEY_VAR: &str = "INGEST_BENCH_KEY";
/// The folder of the sealed role's log file.
pub(crate) const LOG_DIR_VAR: &str = "INGEST_BENCH_LOG_DIR";

/// The log's size: written once at start, then overwritten from 0 when its end is reached.
const LOG_BYTES: u64 = 256 * 1024 * 1024;
/// Records the writer takes from its queue for one write, at most.
const MAX_BATCH: usize = 4096;
/// Batches the flusher takes for one fdatasync, at most.
const MAX_GROUP: usize = 4096;
/// How often the sealed role reports its records and syncs on stderr.
const REPORT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// 204 once the body is read.
    Bare,
    /// 204 once the body is sealed and synced to the log.
    Sealed,
}

impl Role {
    pub(crate) fn env_value(self) -> &'static str {
        match self {
            Role::Bare => "baseline",
            Role::Sealed => "sealed",
        }
    }
}

/// Serves a role and returns true if this process was started as one (`INGEST_BENCH_ROLE`);
/// false if it is the bench itself. Serves until killed.
pub(crate) fn run_role_if_asked() -> bool {
    let role = match std::env::var(ROLE_VAR).as_deref() {
        Err(_) => return false,
        Ok("baseline") => Role::Bare,
        Ok("sealed") => Role::Sealed,
        Ok(other) => panic!("{ROLE_VAR}={other}: not a role (baseline, sealed)"),
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let port: u16 = var(PORT_VAR).parse().expect("the port is not a number");
    let files = TlsFiles {
        cert: PathBuf::from(var(CERT_VAR)),
        key: PathBuf::from(var(KEY_VAR)),
    };
    // Opened before the port is bound: accepting connections means the log is ready.
    let log =
        (role == Role::Sealed).then(|| Arc::new(SealedLog::open(Path::new(&var(LOG_DIR_VAR)))));
    serve(port, &files, log);
    true
}

/// The command that runs `role` from this executable on `port`; `log_dir` holds the sealed
/// role's log file (it is created).
pub(crate) fn role_command(role: Role, port: u16, tls: &TlsFiles, log_dir: &Path) -> Command {
    let mut command =
        Command::new(std::env::current_exe().expect("cannot find the bench executable"));
    command
        .env(ROLE_VAR, role.env_value())
        .env(PORT_VAR, port.to_string())
        .env(CERT_VAR, &tls.cert)
        .env(KEY_VAR, &tls.key)
        .env(LOG_DIR_VAR, log_dir);
    command
}

/// The server of both roles: the collector's TLS config and hyper builder; each request's
/// body is read, then sealed and synced if there is a `log`, then answered.
fn serve(port: u16, files: &TlsFiles, log: Option<Arc<SealedLog>>) {
    let resolver = CertResolver::load(files).expect("cannot load the baseline's certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(
        server_config(resolver).expect("cannot build the baseline's TLS config"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the baseline's runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the baseline cannot bind its port");
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        // Until killed, like the collector's own accept loop.
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let builder = builder.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    let log = log.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(request, log).await) }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    log: Option<Arc<SealedLog>>,
) -> Response<Full<Bytes>> {
    // Read the body like the collector does.
    let body = request.into_body().collect().await;
    let status = match (log, body) {
        (None, _) => StatusCode::NO_CONTENT,
        (Some(_), Err(_)) => StatusCode::BAD_REQUEST,
        (Some(log), Ok(body)) => {
            if log.append(&body.to_bytes()).await {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// A sealed record on its way to the log, and whom to tell once it is synced. The sender is
/// completed after the sync that covers the record, and dropped unanswered if the write or
/// the sync failed.
struct Pending {
    record: Vec<u8>,
    synced: oneshot::Sender<()>,
}

/// The sealed role's log: the key, the nonce counter and the writer thread's queue.
struct SealedLog {
    key: LessSafeKey,
    /// The next nonce. The key is fresh for each process, so a counter never repeats one.
    nonces: AtomicU64,
    queue: mpsc::Sender<Pending>,
}

impl SealedLog {
    /// Creates `dir/sealed.log` full of zeros and synced, and starts the writer and flusher.
    fn open(dir: &Path) -> SealedLog {
        std::fs::create_dir_all(dir).expect("cannot create the sealed log's folder");
        let mut file = File::create(dir.join("sealed.log")).expect("cannot create the sealed log");
        // Written and synced once now, so that the later fdatasyncs flush data only: the
        // file's size and blocks no longer change.
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..LOG_BYTES / zeros.len() as u64 {
            file.write_all(&zeros)
                .expect("cannot preallocate the sealed log");
        }
        file.sync_data().expect("cannot sync the sealed log");
        let file = Arc::new(file);

        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("no random bytes for the sealed log's key");
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte key is an AES-256 key"),
        );

        let (queue, records) = mpsc::channel();
        let (to_flusher, batches) = mpsc::channel();
        let flushed = file.clone();
        std::thread::Builder::new()
            .name("sealed-writer".into())
            .spawn(move || write_records(&file, &records, &to_flusher))
            .expect("cannot start the sealed log's writer");
        std::thread::Builder::new()
            .name("sealed-flusher".into())
            .spawn(move || sync_batches(&flushed, &batches))
            .expect("cannot start the sealed log's flusher");
        SealedLog {
            key,
            nonces: AtomicU64::new(0),
            queue,
        }
    }

    /// Seals `body` here, in the request's task, and waits until it is synced; false if it
    /// could not be.
    async fn append(&self, body: &[u8]) -> bool {
        let counter = self.nonces.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[NONCE_LEN - 8..].copy_from_slice(&counter.to_be_bytes());
        // Record: sealed length (u32 LE), nonce, ciphertext, tag.
        let sealed_len = body.len() + AES_256_GCM.tag_len();
        let Ok(length) = u32::try_from(sealed_len) else {
            return false;
        };
        let mut record = Vec::with_capacity(4 + NONCE_LEN + sealed_len);
        record.extend_from_slice(&length.to_le_bytes());
        record.extend_from_slice(&nonce);
        record.extend_from_slice(body);
        let Ok(tag) = self.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut record[4 + NONCE_LEN..],
        ) else {
            return false;
        };
        record.extend_from_slice(tag.as_ref());

        let (synced, done) = oneshot::channel();
        if self.queue.send(Pending { record, synced }).is_err() {
            return false;
        }
        done.await.is_ok()
    }
}

/// The writer thread: takes everything queued, writes it at the log's offset in one call and
/// hands the waiters to the flusher; until the queue closes.
fn write_records(
    file: &File,
    records: &mpsc::Receiver<Pending>,
    flusher: &mpsc::Sender<Vec<oneshot::Sender<()>>>,
) {
    let mut offset = 0u64;
    let mut buffer = Vec::new();
    while let Ok(first) = records.recv() {
        let batch: Vec<Pending> = std::iter::once(first)
            .chain(records.try_iter().take(MAX_BATCH - 1))
            .collect();
        buffer.clear();
        let mut waiters = Vec::with_capacity(batch.len());
        for pending in batch {
            buffer.extend_from_slice(&pending.record);
            waiters.push(pending.synced);
        }
        let len = buffer.len() as u64;
        if len > LOG_BYTES {
            // Dropped waiters answer 500.
            continue;
        }
        if offset + len > LOG_BYTES {
            offset = 0;
        }
        if file.write_all_at(&buffer, offset).is_err() {
            continue;
        }
        offset += len;
        if flusher.send(waiters).is_err() {
            return;
        }
    }
}

/// The flusher thread: one fdatasync for every batch handed over so far, then tells their
/// waiters; until the writer is gone. Reports its counts every `REPORT_EVERY`, so a run shows
/// that it really synced, and how many records each sync covered.
fn sync_batches(file: &File, batches: &mpsc::Receiver<Vec<oneshot::Sender<()>>>) {
    let (mut records, mut syncs, mut failed) = (0u64, 0u64, 0u64);
    let mut reported = Instant::now();
    while let Ok(mut waiters) = batches.recv() {
        for more in batches.try_iter().take(MAX_GROUP - 1) {
            waiters.extend(more);
        }
        syncs += 1;
        records += waiters.len() as u64;
        if file.sync_data().is_ok() {
            for waiter in waiters {
                // The request may have gone (its connection closed): nobody to tell.
                let _ = waiter.send(());
            }
        } else {
            failed += 1;
        }
        if reported.elapsed() >= REPORT_EVERY {
            reported = Instant::now();
            eprintln!(
                "sealed log: {records} records in {syncs} syncs ({:.1} per sync, {failed} \
                 failed)",
                records as f64 / syncs as f64
            );
        }
    }
}
