//! RPC plumbing: the one place gRPC channels are made (always with deadlines), a pool that
//! reuses them per peer, and the block fetch that the driver and executors share.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::codec::PartitionDecoder;
use crate::error::{EngineError, Result};
use crate::ids::BlockId;
use crate::partition::Partition;
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

/// Fetches one block from the executor at `address`, returning it and the bytes moved.
pub async fn fetch_block(
    pool: &ChannelPool,
    address: &str,
    block: BlockId,
) -> Result<(Arc<Partition>, usize)> {
    let mut client = pool.executor(address)?;
    let request = proto::FetchBlockRequest {
        block: Some(block.into()),
    };
    let mut stream = tokio::time::timeout(CONTROL_TIMEOUT, client.fetch_block(request))
        .await
        .map_err(|_| transport_error(address, tonic::Status::deadline_exceeded("fetch start")))?
        .map_err(|s| transport_error(address, s))?
        .into_inner();
    let mut decoder = PartitionDecoder::new();
    loop {
        let next = tokio::time::timeout(FETCH_IDLE_TIMEOUT, stream.next())
            .await
            .map_err(|_| {
                transport_error(address, tonic::Status::deadline_exceeded("fetch stalled"))
            })?;
        match next {
            Some(Ok(chunk)) => decoder.push(chunk.data)?,
            Some(Err(status)) => return Err(transport_error(address, status)),
            None => break,
        }
    }
    let bytes = decoder.bytes_read();
    Ok((Arc::new(decoder.finish()?), bytes))
}
