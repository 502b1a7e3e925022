//! Test support: a headless Chromium driven over the DevTools protocol, and a tiny HTTP server
//! for the landing pages it visits. Loopback only; every wait is bounded.
// Each test binary that includes this file uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// One DevTools command gets this long to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `wait_until` polls by default.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
fn chromium_binary() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("CHROMIUM") {
        Some(path) => vec![PathBuf::from(path)],
        None => std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .flat_map(|dir| [dir.join("chromium"), dir.join("chromium-browser")])
            .collect(),
    };
    if let Some(found) = candidates.into_iter().find(|path| path.is_file()) {
        return found;
    }
    panic!(
        "Chromium is not installed, and the browser tests need it: run `scripts/test.sh`, which \
         installs Debian's `chromium` (or set CHROMIUM to a Chromium binary)"
    );
}

/// Chromium refuses to start its sandbox as root (CI runs as root).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .map(|line| line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A headless Chromium with its own throw-away profile; closed (then killed) on drop.
pub(crate) struct Chromium {
    child: Child,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    stderr: Arc<Mutex<String>>,
    /// The DevTools events read so far (messages without an id), for the domains a test
    /// enabled: requests a page made, console and security messages.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

/// One tab, attached with its own DevTools session.
#[derive(Debug, Clone)]
pub(crate) struct Tab {
    session: String,
}

impl Chromium {
    /// Starts Chromium, which then sends `user_agent` and trusts only the leaf certificate
    /// whose public key hashes (base64 SHA-256 of the SPKI) are given.
    pub(crate) fn launch(user_agent: &str, trusted_spki: &[String]) -> Chromium {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut command = Command::new(chromium_binary());
        command.args([
            "--headless",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-sync",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--disable-breakpad",
            "--metrics-recording-only",
            "--mute-audio",
            "--password-store=basic",
            "--use-mock-keychain",
            "--no-proxy-server",
            "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,\
             CertificateTransparencyComponentUpdater,AutofillServerCommunication",
            // Nothing beyond loopback: every other name fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ]);
        command.arg(format!("--user-data-dir={}", profile.path().display()));
        command.arg(format!("--user-agent={user_agent}"));
        if !trusted_spki.is_empty() {
            command.arg(format!(
                "--ignore-certificate-errors-spki-list={}",
                trusted_spki.join(",")
            ));
        }
        if running_as_root() {
            command.arg("--no-sandbox");
        }
        command.arg("about:blank");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");

        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
        let stderr_pipe = child.stderr.take().expect("stderr pipe");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = url_tx.send(url.trim().to_string());
                }
                if let Ok(mut log) = log.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let Ok(url) = url_rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "Chromium did not open its DevTools port within 30 s; stderr:\n{}",
                stderr.lock().map(|s| s.clone()).unwrap_or_default()
            );
        };
        let address = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|host| host.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("unexpected DevTools URL {url}"));
        let stream =
            TcpStream::connect_timeout(&address, Duration::from_secs(10)).expect("DevTools port");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let (socket, _) = tungstenite::client::client(url.as_str(), stream)
            .unwrap_or_else(|err| panic!("DevTools websocket handshake: {err}"));
        // Short reads from now on, so that every call can check its own deadline.
        socket
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Chromium {
            child,
            socket,
            next_id: 0,
            stderr,
            events: Vec::new(),
            _profile: profile,
        }
    }

    /// Fails the test with what Chromium printed, which usually says why.
    fn fail(&self, message: &str) -> ! {
        let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        panic!("{message}\nChromium's stderr:\n{stderr}");
    }

    /// Sends one command and waits for its answer: `Ok(result)` or `Err(error message)`.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap_or_else(|err| panic!("DevTools send {method}: {err}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "DevTools {method} did not answer within {CALL_TIMEOUT:?}"
                ));
            }
            let text = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(err))
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(err) => self.fail(&format!("DevTools read during {method}: {err}")),
            };
            let Ok(answer) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            // Events (no id) are kept; answers to earlier calls are not ours.
            if answer.get("id").is_none() && answer.get("method").is_some() {
                self.events.push(answer);
                continue;
            }
            if answer["id"].as_u64() != Some(id) {
                continue;
            }
            return match answer.get("error") {
                Some(error) => Err(error.to_string()),
                None => Ok(answer["result"].clone()),
            };
        }
    }

    /// A new blank tab.
    pub(crate) fn open_tab(&mut self) -> Tab {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .expect("Target.createTarget");
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .expect("Target.attachToTarget");
        Tab {
            session: attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
        }
    }

    /// Starts a navigation, as if the visitor came from a link on `referrer`.
    pub(crate) fn navigate(&mut self, tab: &Tab, url: &str, referrer: Option<&str>) {
        let mut params = json!({ "url": url });
        if let Some(referrer) = referrer {
            params["referrer"] = json!(referrer);
        }
        let answer = self
            .call(Some(&tab.session), "Page.navigate", params)
            .unwrap_or_else(|err| panic!("Page.navigate {url}: {err}"));
        if let Some(error) = answer.get("errorText") {
            panic!("navigating to {url} failed: {error}");
        }
    }

    /// Evaluates a JavaScript expression in the tab (promises awaited); the value, or the
    /// exception's text.
    pub(crate) fn eval(&mut self, tab: &Tab, expression: &str) -> Result<Value, String> {
        let answer = self.call(
            Some(&tab.session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(exception) = answer.get("exceptionDetails") {
            return Err(exception.to_string());
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Sends a DevTools command to the tab and answers its result.
    pub(crate) fn command(&mut self, tab: &Tab, method: &str, params: Value) -> Value {
        self.call(Some(&tab.session), method, params)
            .unwrap_or_else(|err| self.fail(&format!("{method}: {err}")))
    }

    /// The events the tab's enabled domains sent so far, with their method name.
    pub(crate) fn events(&self, tab: &Tab, method: &str) -> Vec<Value> {
        self.events
            .iter()
            .filter(|event| event["sessionId"] == tab.session.as_str() && event["method"] == method)
            .map(|event| event["params"].clone())
            .collect()
    }

    /// Shows the tab at `width` x `height` CSS pixels (a phone's when `mobile`), then takes a
    /// PNG of the whole page, beyond the window's height.
    pub(crate) fn screenshot(
        &mut self,
        tab: &Tab,
        width: u32,
        height: u32,
        mobile: bool,
    ) -> Vec<u8> {
        self.resize(tab, width, height, mobile);
        let shot = self.command(
            tab,
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let data = shot["data"].as_str().unwrap_or_default();
        data_encoding::BASE64
            .decode(data.as_bytes())
            .unwrap_or_else(|err| self.fail(&format!("screenshot data: {err}")))
    }

    /// A PNG of the page's top `width` x `height` CSS pixels, scaled by `scale`.
    pub(crate) fn screenshot_top(
        &mut self,
        tab: &Tab,
        width: u32,
        height: u32,
        scale: f64,
    ) -> Vec<u8> {
        let clip = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": scale });
        let shot = self.command(
            tab,
            "Page.captureScreenshot",
            json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }),
        );
        let data = shot["data"].as_str().unwrap_or_default();
        data_encoding::BASE64
            .decode(data.as_bytes())
            .unwrap_or_else(|err| self.fail(&format!("screenshot data: {err}")))
    }

    /// Lays the tab out at `width` x `height` CSS pixels.
    pub(crate) fn resize(&mut self, tab: &Tab, width: u32, height: u32, mobile: bool) {
        self.command(
            tab,
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
    }

    /// Polls `expression` until it is `true` (errors, e.g. during a navigation, count as not
    /// yet), for at most `limit`.
    pub(crate) fn wait_until(&mut self, tab: &Tab, expression: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = Ok(Value::Null);
        while Instant::now() < deadline {
            last = self.eval(tab, expression);
            if last == Ok(Value::Bool(true)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.fail(&format!(
            "`{expression}` was not true within {limit:?} (last: {last:?})"
        ));
    }

    /// Waits until the tab shows a fully loaded page whose URL starts with `prefix`.
    pub(crate) fn wait_loaded(&mut self, tab: &Tab, prefix: &str) {
        let expression = format!(
            "document.readyState === 'complete' && location.href.startsWith({})",
            json!(prefix)
        );
        self.wait_until(tab, &expression, WAIT);
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // A clean close lets Chromium take its helper processes down with it.
        let _ = self.socket.send(Message::text(
            json!({ "id": 0, "method": "Browser.close" }).to_string(),
        ));
        let _ = self.socket.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns true, for at most `limit`; panics with `what` otherwise.
pub(crate) fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {limit:?}");
}

/// A page a `Site` serves: status, content type, body.
pub(crate) type Page = (u16, &'static str, String);

/// A plain HTTP/1.1 server on 127.0.0.1 for landing pages, one thread, `Connection: close`;
/// stopped on drop.
pub(crate) struct Site {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Site {
    /// Serves `route(path_and_query)` for every GET.
    pub(crate) fn start(route: impl Fn(&str) -> Page + Send + 'static) -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                answer(stream, &route);
            }
        });
        Site {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`: the origin the collector allows.
    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn answer(mut stream: TcpStream, route: &impl Fn(&str) -> Page) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split(' ').nth(1).unwrap_or("/");
    let (status, content_type, body) = route(target);
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
