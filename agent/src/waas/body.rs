//! Request bodies: read a bounded prefix for inspection, then stream the prefix and the rest
//! upstream unchanged.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};

/// The body forwarded upstream: the frames read for inspection, then the rest of the client's
/// body as it arrives.
pub struct PrefixedBody {
    prefix: VecDeque<Frame<Bytes>>,
    prefix_len: u64,
    rest: Option<Incoming>,
}

impl PrefixedBody {
    /// An empty body.
    pub fn empty() -> Self {
        PrefixedBody {
            prefix: VecDeque::new(),
            prefix_len: 0,
            rest: None,
        }
    }
}

/// What [`read_prefix`] saw.
pub struct Prefix {
    /// Up to `limit` bytes of the body, for inspection.
    pub bytes: Vec<u8>,
    /// True when the whole body was read (nothing beyond `bytes`).
    pub complete: bool,
    /// The body to forward (prefix frames + the unread rest).
    pub body: PrefixedBody,
}

/// Why the prefix could not be read.
#[derive(Debug)]
pub enum PrefixError {
    /// The client sent too slowly.
    Timeout,
    /// The client's body failed (reset, malformed chunking).
    Body(hyper::Error),
}

/// Reads frames of `body` until `limit` bytes are held, the body ends, or `timeout` passes.
/// Memory stays within `limit` plus one frame (hyper frames are at most its read buffer).
pub async fn read_prefix(
    mut body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Prefix, PrefixError> {
    let mut bytes = Vec::new();
    let mut frames = VecDeque::new();
    let mut prefix_len = 0u64;
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut complete = body.is_end_stream();
    while !complete && bytes.len() < limit {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| PrefixError::Timeout)?;
        match frame {
            None => complete = true,
            Some(Err(e)) => return Err(PrefixError::Body(e)),
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    let room = limit - bytes.len();
                    bytes.extend_from_slice(&d[..d.len().min(room)]);
                    prefix_len += d.len() as u64;
                    seen += d.len();
                }
                frames.push_back(f);
                complete = body.is_end_stream();
            }
        }
    }
    Ok(Prefix {
        bytes,
        complete: complete && seen <= limit,
        body: PrefixedBody {
            prefix: frames,
            prefix_len,
            rest: (!complete).then_some(body),
        },
    })
}

impl Body for PrefixedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(f) = this.prefix.pop_front() {
            if let Some(d) = f.data_ref() {
                this.prefix_len = this.prefix_len.saturating_sub(d.len() as u64);
            }
            return Poll::Ready(Some(Ok(f)));
        }
        match &mut this.rest {
            Some(r) => Pin::new(r).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.rest {
            None => SizeHint::with_exact(self.prefix_len),
            Some(r) => {
                let h = r.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + self.prefix_len);
                if let Some(u) = h.upper() {
                    out.set_upper(u + self.prefix_len);
                }
                out
            }
        }
    }
}
