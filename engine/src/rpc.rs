//! RPC plumbing: the one place gRPC channels are made (always with deadlines), a pool that
//! reuses them per peer, and the block fetch that the driver and executors share.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use dashmap::DashMap;
use futures::{stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

use crate::block_read::BlockBatches;
use crate::codec::BlockDecoder;
use crate::error::{EngineError, Result};
use crate::ids::BlockId;
use crate::proto;
use crate::proto::executor_service_client::ExecutorServiceClient;

/// How long to wait for a TCP connection to a peer. Peers are on a LAN or loopback: a
/// connection that takes longer than this is as good as refused.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Deadline of control calls (register, heartbeat, remove blocks, status, shutdown).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest gap between two chunks of a block before a fetch is abandoned.
pub const FETCH_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 keep-alive: a peer that stops answering pings for this long (killed, partitioned)
/// fails every call in flight on the channel instead of leaving it hanging.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest gRPC message accepted: block chunks are bounded far below this
/// ([`crate::codec::MAX_CHUNK_BYTES`]); plans of wide queries can be a few MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The connections accepted on `listener`, with Nagle's algorithm off: RPCs are small
/// request/response pairs, and delayed ACKs would otherwise hold each response ~40 ms.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    })
}

/// Makes a lazily-connecting channel to `address` (`host:port`) with Ember's deadlines.
pub fn channel(address: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| EngineError::Transport {
            address: address.to_string(),
            status: Box::new(tonic::Status::invalid_argument(e.to_string())),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// Channels by peer address, made once and shared (a tonic channel multiplexes calls).
#[derive(Debug, Default, Clone)]
pub struct ChannelPool {
    channels: Arc<DashMap<String, Channel>>,
}

impl ChannelPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The channel to `address`, made on first use.
    pub fn get(&self, address: &str) -> Result<Channel> {
        if let Some(c) = self.channels.get(address) {
            return Ok(c.clone());
        }
        let c = channel(address)?;
        self.channels.insert(address.to_string(), c.clone());
        Ok(c)
    }

    /// Forgets the channel to a peer that was lost.
    pub fn forget(&self, address: &str) {
        self.channels.remove(address);
    }

    /// An executor client on the channel to `address`.
    pub fn executor(&self, address: &str) -> Result<ExecutorServiceClient<Channel>> {
        Ok(ExecutorServiceClient::new(self.get(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// Turns a gRPC status from `address` into an [`EngineError`].
pub fn transport_error(address: &str, status: tonic::Status) -> EngineError {
    EngineError::Transport {
        address: address.to_string(),
        status: Box::new(status),
    }
}

/// What fetches moved and how long they waited for it, summed over every fetch that
/// shares these counters.
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Bytes received on the wire.
    pub bytes: AtomicU64,
    /// Microseconds spent waiting for the peer (connection, first and later chunks).
    pub micros: AtomicU64,
}

/// Starts fetching one block from the executor at `address` and returns its batches as
/// they arrive: each is decoded as soon as its last chunk is in, so a block is never held
/// whole by the fetcher. Bytes and waiting time are added to `stats`.
pub async fn fetch_block_stream(
    pool: &ChannelPool,
    address: &str,
    block: BlockId,
    stats: Arc<FetchStats>,
) -> Result<BlockBatches> {
    let started = Instant::now();
    let mut client = pool.executor(address)?;
    let request = proto::FetchBlockRequest {
        block: Some(block.into()),
    };
    let response = tokio::time::timeout(CONTROL_TIMEOUT, client.fetch_block(request)).await;
    stats
        .micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    let chunks = response
        .map_err(|_| transport_error(address, tonic::Status::deadline_exceeded("fetch start")))?
        .map_err(|s| transport_error(address, s))?
        .into_inner();
    let state = Fetching {
        address: address.to_string(),
        chunks,
        decoder: Some(BlockDecoder::new()),
        ready: VecDeque::new(),
        stats,
    };
    Ok(stream::try_unfold(state, Fetching::next_batch).boxed())
}

/// A block fetch in progress: the response stream, its decoder and the batches decoded
/// but not yet handed out.
struct Fetching {
    address: String,
    chunks: tonic::Streaming<proto::BlockChunk>,
    /// `None` once the stream ended and was checked complete.
    decoder: Option<BlockDecoder>,
    ready: VecDeque<RecordBatch>,
    stats: Arc<FetchStats>,
}

impl Fetching {
    async fn next_batch(mut self) -> Result<Option<(RecordBatch, Self)>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(Some((batch, self)));
            }
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(None);
            };
            let waited = Instant::now();
            let next = tokio::time::timeout(FETCH_IDLE_TIMEOUT, self.chunks.next()).await;
            self.stats
                .micros
                .fetch_add(waited.elapsed().as_micros() as u64, Ordering::Relaxed);
            match next.map_err(|_| {
                transport_error(
                    &self.address,
                    tonic::Status::deadline_exceeded("fetch stalled"),
                )
            })? {
                Some(Ok(chunk)) => {
                    self.stats
                        .bytes
                        .fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
                    decoder.push(chunk.data, &mut self.ready)?;
                }
                Some(Err(status)) => return Err(transport_error(&self.address, status)),
                None => {
                    if let Some(decoder) = self.decoder.take() {
                        decoder.finish()?;
                    }
                }
            }
        }
    }
}
