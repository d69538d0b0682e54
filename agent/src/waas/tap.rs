//! The raw bytes of an HTTP/1 request head, as the client sent them.
//!
//! hyper frames a request that carries both `Content-Length` and `Transfer-Encoding` by the
//! chunked coding and drops the length before the proxy sees the head (the safe reading of RFC
//! 9112 §6.1), so the conflict a smuggling attempt relies on is invisible in the parsed request.
//! [`Tapped`] wraps the client's socket and keeps the most recent bytes read; the handler takes
//! each request's head out of that window ([`HeadTap::take_head`]) and so sees what was sent.
//! Memory per connection is bounded by the window (and in steady state is one request head).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The recent bytes a client sent on one connection (at most `cap`).
pub struct HeadTap {
    window: Mutex<Vec<u8>>,
    cap: usize,
    stopped: AtomicBool,
}

impl HeadTap {
    /// A window of at most `cap` bytes.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(HeadTap {
            window: Mutex::new(Vec::new()),
            cap,
            stopped: AtomicBool::new(false),
        })
    }

    fn record(&self, data: &[u8]) {
        if data.is_empty() || self.cap == 0 || self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if data.len() >= self.cap {
            w.clear();
            w.extend_from_slice(&data[data.len() - self.cap..]);
            return;
        }
        let over = (w.len() + data.len()).saturating_sub(self.cap);
        if over > 0 {
            w.drain(..over);
        }
        w.extend_from_slice(data);
    }

    /// Stops recording and frees the window (HTTP/2 and upgraded connections: no HTTP/1 heads).
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        *w = Vec::new();
    }

    /// Finds the head that starts with `request_line` (`GET /path HTTP/1.1`), drops it and
    /// everything before it from the window (what follows, a body or a pipelined request,
    /// stays), and returns the values of the `Content-Length` lines in it when `lengths` is
    /// true. A head not in the window (cut by the bound) clears the window and yields nothing.
    pub fn take_head(&self, request_line: &[u8], lengths: bool) -> Vec<String> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let Some(start) = find(&w, request_line) else {
            w.clear();
            return Vec::new();
        };
        let Some(len) = find(&w[start..], b"\r\n\r\n")
            .map(|e| e + 4)
            .or_else(|| find(&w[start..], b"\n\n").map(|e| e + 2))
        else {
            w.clear();
            return Vec::new();
        };
        let end = start + len;
        let found = if lengths {
            content_lengths(&w[start..end])
        } else {
            Vec::new()
        };
        w.drain(..end);
        found
    }
}

/// First position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        let at = hay[i..=last_start].iter().position(|&b| b == first)? + i;
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Values of the `Content-Length` header lines of a raw head (at most 8, 64 bytes each).
fn content_lengths(head: &[u8]) -> Vec<String> {
    head.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = &line[..colon];
            name.trim_ascii()
                .eq_ignore_ascii_case(b"content-length")
                .then(|| {
                    let v = line[colon + 1..].trim_ascii();
                    String::from_utf8_lossy(&v[..v.len().min(64)]).into_owned()
                })
        })
        .take(8)
        .collect()
}

/// A client socket whose reads are copied into a [`HeadTap`].
pub struct Tapped<S> {
    inner: S,
    tap: Arc<HeadTap>,
}

impl<S> Tapped<S> {
    /// Wraps `inner`, recording into `tap`.
    pub fn new(inner: S, tap: Arc<HeadTap>) -> Self {
        Tapped { inner, tap }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tapped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.tap.record(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tapped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_taken_in_order_and_lengths_found() {
        let tap = HeadTap::new(1024);
        tap.record(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        tap.record(b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length : 44\r\n\r\n0\r\n\r\n");
        assert!(tap.take_head(b"POST /a HTTP/1.1", false).is_empty());
        assert_eq!(tap.take_head(b"POST /b HTTP/1.1", true), ["44"]);
        // The chunked body stays; the next head is found after it.
        tap.record(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(tap.take_head(b"GET /c HTTP/1.1", true).is_empty());
        assert!(tap.window.lock().unwrap().is_empty());
    }

    #[test]
    fn the_window_is_bounded() {
        let tap = HeadTap::new(16);
        tap.record(&[b'a'; 100]);
        tap.record(b"0123456789");
        let w = tap.window.lock().unwrap().clone();
        assert_eq!(w.len(), 16);
        assert!(w.ends_with(b"0123456789"));
        // A head cut by the bound is not found and clears the window.
        assert!(tap.take_head(b"GET / HTTP/1.1", true).is_empty());
        assert!(tap.window.lock().unwrap().is_empty());
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abd"), None);
        // Stopped (HTTP/2, upgraded): nothing more is kept.
        tap.stop();
        tap.record(b"GET / HTTP/1.1\r\n\r\n");
        assert!(tap.window.lock().unwrap().is_empty());
    }
}
