//! One client connection: length-prefixed frames in, responses out in request order.
//!
//! The read loop decodes and admits requests one at a time (a produce request is queued in
//! the appender here, so a producer's pipelined requests keep their order); each request
//! yields a response future, and the write loop awaits those futures in order. A frame
//! over `socket_request_max_bytes`, a malformed frame or an unsupported API version closes
//! the connection with a log line; other connections are unaffected.
//!
//! Memory held by requests is bounded twice: a frame's declared size is checked against
//! `socket_request_max_bytes` before anything is read, and every frame first takes its size
//! from the listener-wide [`RequestMemory`] pool (Kafka's `queued.max.request.bytes`), held
//! until the request is decoded and admitted: many slow clients announcing large frames wait
//! for room in the pool instead of each holding a frame buffer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ResponseFuture};
use crate::broker::Broker;
use crate::security::Session;

/// Requests admitted but not yet answered per connection. Producers pipeline many
/// requests (librdkafka's default in-flight limit is a million), each waiting for its
/// segment: with a 25 ms object store PUT, 10 MB/s of small produce requests keep a few
/// hundred in flight, and a lower cap queues them in the client instead. Their memory is
/// bounded by the request pool and `max_inflight_bytes`, not by this.
const MAX_PENDING_RESPONSES: usize = 1024;

/// Request bytes read but not yet decoded and admitted, across every connection of a
/// listener. A frame waits for its size in permits before it is read.
#[derive(Clone)]
pub struct RequestMemory {
    permits: Arc<Semaphore>,
    total: usize,
}

impl RequestMemory {
    /// A pool of `total` bytes; it is raised to `max_frame` so any admissible frame fits.
    pub fn new(total: usize, max_frame: usize) -> Self {
        let total = total.max(max_frame).min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    async fn acquire(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes.min(self.total)).ok()?;
        self.permits.clone().acquire_many_owned(n).await.ok()
    }

    /// Bytes currently held by frames being read or decoded.
    pub fn in_use(&self) -> usize {
        self.total - self.permits.available_permits()
    }
}

#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("frame of {size} bytes exceeds socket_request_max_bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("negative frame size {0}")]
    Negative(i32),
    #[error("the request memory pool is closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Serves one connection (plain TCP or TLS, split into its halves) until the client
/// closes it, a frame is bad, or the broker shuts down. On SASL listeners a client that
/// has not authenticated within `sasl_authentication_timeout_ms` is dropped.
pub async fn serve<R, W>(
    broker: Arc<Broker>,
    reader: R,
    writer: W,
    mut session: Session,
    memory: RequestMemory,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let peer = session.peer;
    let (tx, rx) = mpsc::channel::<ResponseFuture>(MAX_PENDING_RESPONSES);
    let unanswered = Arc::new(AtomicUsize::new(0));
    let writer_task = tokio::spawn(write_loop(writer, rx, peer, unanswered.clone()));
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let max = broker.settings.socket_request_max_bytes;
    let auth_deadline = tokio::time::Instant::now() + broker.security.auth_timeout;
    tracing::debug!(%peer, listener = session.listener.name(), "connection.open");
    crate::metrics::gauge_add(&crate::metrics::CONNECTIONS, 1);
    loop {
        let unauthenticated = session.listener.sasl() && !session.authenticated;
        let frame = tokio::select! {
            f = read_frame(&mut reader, max, &memory) => f,
            _ = tokio::time::sleep_until(auth_deadline), if unauthenticated => {
                crate::metrics::inc(&crate::metrics::AUTHENTICATION_FAILURES);
                tracing::info!(%peer, "closing connection: no SASL authentication in time");
                break;
            }
            _ = shutdown.cancelled() => break,
        };
        let (frame, permit) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(FrameError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "connection.read");
                break;
            }
            Err(e) => {
                crate::metrics::inc(&crate::metrics::MALFORMED_REQUESTS);
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        let waiting = unanswered.load(Ordering::Relaxed);
        let dispatched = api::dispatch(&broker, frame, &mut session, waiting).await;
        drop(permit);
        match dispatched {
            Ok(Some(response)) => {
                unanswered.fetch_add(1, Ordering::Relaxed);
                if tx.send(response).await.is_err() {
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                if matches!(e, api::DispatchError::Malformed { .. }) {
                    crate::metrics::inc(&crate::metrics::MALFORMED_REQUESTS);
                }
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        }
        if session.close {
            break;
        }
    }
    drop(tx);
    let _ = writer_task.await;
    crate::metrics::gauge_add(&crate::metrics::CONNECTIONS, -1);
    tracing::debug!(%peer, "connection.closed");
}

/// Reads one frame and the pool permits it holds; `None` on a clean end of stream.
async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    max: usize,
    memory: &RequestMemory,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, FrameError> {
    let size = match reader.read_i32().await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if size < 0 {
        return Err(FrameError::Negative(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    // The pool bounds what all frames being read may allocate together, so the buffer is
    // allocated once, at its size (growing it as bytes arrive costs copies and page faults
    // on the produce path).
    let permit = memory.acquire(size).await.ok_or(FrameError::Closed)?;
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        let n = (&mut *reader)
            .take((size - buf.len()) as u64)
            .read_buf(&mut buf)
            .await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some((buf.freeze(), permit)))
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<ResponseFuture>,
    peer: SocketAddr,
    unanswered: Arc<AtomicUsize>,
) {
    while let Some(response) = rx.recv().await {
        let answer = response.await;
        unanswered.fetch_sub(1, Ordering::Relaxed);
        match answer {
            Ok(Some(bytes)) => {
                if let Err(e) = writer.write_all(&bytes).await {
                    tracing::debug!(%peer, error = %e, "connection.write");
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(%peer, error = %e, "closing connection");
                break;
            }
        }
    }
    let _ = writer.shutdown().await;
}
