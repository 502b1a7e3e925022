//! HTTP: a budget for the HTTP/2 control frames a client sends. PING, SETTINGS and
//! WINDOW_UPDATE carry no request, and each costs the server work (h2 answers every PING with a
//! PONG: 8 connections once drew 150 MB of them in 15 s). h2 has no limit of its own for them,
//! so the connection's bytes are read here on their way to it: past a budget per kind, the
//! client is sent GOAWAY(ENHANCE_YOUR_CALM) and the connection ends. It ends as a lingering
//! close: the collector's side is shut and what the client still sends is read and dropped for
//! a moment, since closing a socket with unread bytes resets it, and a reset can destroy the
//! GOAWAY on its way to the client.
//!
//! Only the frame headers are read (9 bytes each); HTTP/1.1 connections, which do not start
//! with the HTTP/2 preface, pass through untouched.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// What an HTTP/2 client sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const ACK: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Control frames of one kind a connection may send at once, then per second. A browser sends
/// a handful in a connection's life; a client library's keep-alive pings one every few
/// seconds.
const BURST: f64 = 100.0;
const PER_SECOND: f64 = 10.0;
/// How long a flooding client's bytes are still read and dropped after its GOAWAY.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The frame boundaries of one direction of an HTTP/2 connection.
#[derive(Debug, Default)]
struct Frames {
    /// The current frame's header, as far as it has come.
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
}

/// A frame header read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    /// Follows `bytes`; for each frame header completed, `on_header` is told it and the offset
    /// in `bytes` where its frame began (0 if it began before them), and stops the reading by
    /// answering `false`. Answers where it stopped, if it did.
    fn follow(
        &mut self,
        bytes: &[u8],
        mut on_header: impl FnMut(Header, usize) -> bool,
    ) -> Option<usize> {
        let mut at = 0;
        while at < bytes.len() {
            if self.payload_left > 0 {
                let skipped = self.payload_left.min(bytes.len() - at);
                self.payload_left -= skipped;
                at += skipped;
                continue;
            }
            let began = at.saturating_sub(self.header_len);
            let taken = (HEADER_LEN - self.header_len).min(bytes.len() - at);
            self.header[self.header_len..self.header_len + taken]
                .copy_from_slice(&bytes[at..at + taken]);
            self.header_len += taken;
            at += taken;
            if self.header_len < HEADER_LEN {
                break;
            }
            let h = self.header;
            self.header_len = 0;
            self.payload_left =
                usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let header = Header {
                kind: h[3],
                flags: h[4],
                stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            };
            if !on_header(header, began) {
                return Some(began);
            }
        }
        None
    }
}

/// A token bucket of one kind of frame.
#[derive(Debug, Clone, Copy)]
struct Budget {
    left: f64,
    since: Instant,
}

impl Budget {
    fn new(now: Instant) -> Budget {
        Budget {
            left: BURST,
            since: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.since).as_secs_f64() * PER_SECOND;
        self.left = (self.left + refill).min(BURST);
        self.since = now;
        if self.left < 1.0 {
            return false;
        }
        self.left -= 1.0;
        true
    }
}

/// What the connection is, as far as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// This many bytes of the preface seen so far.
    Detecting(usize),
    Http2,
    /// Not HTTP/2: bytes pass untouched.
    Other,
}

/// A connection's stream, its HTTP/2 control frames counted.
pub(super) struct ControlBudget<S> {
    inner: S,
    protocol: Protocol,
    inbound: Frames,
    outbound: Frames,
    /// PING, SETTINGS, WINDOW_UPDATE.
    budgets: [Budget; 3],
    /// The highest stream the client opened, for the GOAWAY.
    last_stream: u32,
    /// Once over budget: the GOAWAY, and how much of it is written.
    goaway: Option<([u8; HEADER_LEN + 8], usize)>,
    /// Once the GOAWAY is out and the collector's side shut: until when the client's bytes are
    /// still read and dropped.
    lingering: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<Metrics>,
}

impl<S> ControlBudget<S> {
    pub(super) fn new(inner: S, metrics: Arc<Metrics>) -> ControlBudget<S> {
        let now = Instant::now();
        ControlBudget {
            inner,
            protocol: Protocol::Detecting(0),
            inbound: Frames::default(),
            outbound: Frames::default(),
            budgets: [Budget::new(now); 3],
            last_stream: 0,
            goaway: None,
            lingering: None,
            metrics,
        }
    }

    /// Reads `bytes` the client sent; answers where to cut them if the client went over its
    /// budget there (nothing from there on reaches h2).
    fn inspect(&mut self, mut bytes: &[u8]) -> Option<usize> {
        let mut offset = 0;
        if let Protocol::Detecting(seen) = self.protocol {
            let taken = (PREFACE.len() - seen).min(bytes.len());
            if bytes[..taken] != PREFACE[seen..seen + taken] {
                self.protocol = Protocol::Other;
                return None;
            }
            self.protocol = if seen + taken == PREFACE.len() {
                Protocol::Http2
            } else {
                Protocol::Detecting(seen + taken)
            };
            bytes = &bytes[taken..];
            offset = taken;
        }
        if self.protocol != Protocol::Http2 {
            return None;
        }
        let now = Instant::now();
        let (budgets, last_stream) = (&mut self.budgets, &mut self.last_stream);
        let cut = self.inbound.follow(bytes, |header, _| {
            let budget = match header.kind {
                PING | SETTINGS if header.flags & ACK != 0 => return true,
                PING => &mut budgets[0],
                SETTINGS => &mut budgets[1],
                WINDOW_UPDATE => &mut budgets[2],
                HEADERS => {
                    *last_stream = (*last_stream).max(header.stream);
                    return true;
                }
                _ => return true,
            };
            budget.take(now)
        })?;
        Some(offset + cut)
    }

    fn flood(&mut self) {
        let mut frame = [0u8; HEADER_LEN + 8];
        frame[2] = 8;
        frame[3] = GOAWAY;
        frame[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&self.last_stream.to_be_bytes());
        frame[HEADER_LEN + 4..].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        self.goaway = Some((frame, 0));
        self.metrics.connection_refused("http2_control_flood");
    }
}

impl<S: AsyncWrite + Unpin> ControlBudget<S> {
    /// Whether the GOAWAY is written, all of it.
    fn goaway_sent(&self) -> bool {
        self.goaway
            .as_ref()
            .is_some_and(|(frame, written)| *written == frame.len())
    }

    /// Writes what is left of the GOAWAY, once h2 is between two frames of its own (else the
    /// connection just ends). Ready when there is nothing (more) to write.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.outbound.at_boundary() {
            return Poll::Ready(Ok(()));
        }
        let Some((frame, written)) = &mut self.goaway else {
            return Poll::Ready(Ok(()));
        };
        while *written < frame.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &frame[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ControlBudget<S> {
    /// After the GOAWAY: shuts the collector's side, then reads and drops what the client
    /// still sends until it closes or `LINGER` passes. Ready when the connection may end.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.lingering.is_none() {
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.lingering = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut dropped = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut dropped);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {}
            }
            return match self.lingering.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
                Some(Poll::Pending) => Poll::Pending,
                _ => Poll::Ready(Ok(())),
            };
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ControlBudget<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.goaway.is_some() {
            // The GOAWAY, a lingering close, then the end of the stream: h2 ends the connection.
            if ready!(this.poll_goaway(cx)).is_ok() && this.goaway_sent() {
                let _ = ready!(this.poll_linger(cx));
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.protocol == Protocol::Other {
            return Poll::Ready(Ok(()));
        }
        if let Some(cut) = this.inspect(&buf.filled()[before..]) {
            buf.set_filled(before + cut);
            this.flood();
            if cut == 0 {
                // Nothing for h2 in this read: straight to the end.
                if ready!(this.poll_goaway(cx)).is_ok() && this.goaway_sent() {
                    let _ = ready!(this.poll_linger(cx));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ControlBudget<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.goaway.is_some() && this.outbound.at_boundary() {
            // What h2 writes after the GOAWAY (PONGs of the flood) is dropped: the client was
            // told to go, and the connection ends once its read side does.
            ready!(this.poll_goaway(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if this.protocol == Protocol::Http2 {
            this.outbound.follow(&buf[..n], |_, _| true);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_goaway(cx))?;
        if this.lingering.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_goaway(cx))?;
        if this.lingering.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut bytes = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
        ];
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend(std::iter::repeat_n(0u8, payload));
        bytes
    }

    fn counted() -> ControlBudget<tokio::io::Empty> {
        ControlBudget::new(tokio::io::empty(), Arc::new(Metrics::default()))
    }

    #[test]
    fn frames_are_followed_across_reads_of_any_size() {
        let mut bytes = frame(HEADERS, 0x4, 1, 30);
        bytes.extend(frame(PING, 0, 0, 8));
        bytes.extend(frame(HEADERS, 0x4, 7, 0));
        for chunk in [1, 2, 5, 9, 10, 64] {
            let mut frames = Frames::default();
            let mut seen = Vec::new();
            for piece in bytes.chunks(chunk) {
                frames.follow(piece, |header, _| {
                    seen.push((header.kind, header.stream));
                    true
                });
            }
            assert_eq!(seen, vec![(HEADERS, 1), (PING, 0), (HEADERS, 7)], "{chunk}");
            assert!(frames.at_boundary());
        }
    }

    #[test]
    fn a_ping_flood_is_cut_at_the_first_ping_past_the_budget() {
        let mut connection = counted();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, 6));
        bytes.extend(frame(HEADERS, 0x5, 3, 10));
        // Acknowledgements are answers, not requests: never counted.
        for _ in 0..500 {
            bytes.extend(frame(PING, ACK, 0, 8));
        }
        let before_flood = bytes.len();
        for _ in 0..1000 {
            bytes.extend(frame(PING, 0, 0, 8));
        }
        let cut = connection.inspect(&bytes).expect("over budget");
        assert_eq!(cut, before_flood + BURST as usize * 17);
        assert_eq!(connection.last_stream, 3);
        connection.flood();
        let (goaway, _) = connection.goaway.expect("a GOAWAY");
        assert_eq!(&goaway[..HEADER_LEN], &[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0]);
        assert_eq!(&goaway[HEADER_LEN..], &[0, 0, 0, 3, 0, 0, 0, 0xb]);
    }

    #[test]
    fn http1_passes_untouched() {
        let mut connection = counted();
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
        assert_eq!(connection.inspect(&request), None);
        assert_eq!(connection.protocol, Protocol::Other);
    }
}
