//! A response body that keeps the request's limit slots until it is fully sent (or dropped),
//! so a streamed answer counts against the key's and the gateway's concurrency while it
//! streams.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

/// `inner`, holding `slots` for as long as it lives.
pub(super) struct HeldBody {
    inner: Body,
    _slots: Vec<OwnedSemaphorePermit>,
}

impl HeldBody {
    /// Wraps `inner`.
    pub(super) fn new(inner: Body, slots: Vec<OwnedSemaphorePermit>) -> Self {
        HeldBody {
            inner,
            _slots: slots,
        }
    }
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
