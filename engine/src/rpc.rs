//! RPC plumbing: the one place gRPC channels and servers are made (always with deadlines,
//! limits, authentication and, when configured, TLS), a pool that reuses channels per
//! peer, and the block fetch that the driver and executors share.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use dashmap::DashMap;
use futures::{stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

use crate::block_read::BlockBatches;
use crate::codec::BlockDecoder;
use crate::error::{EngineError, Result};
use crate::ids::BlockId;
use crate::proto;
use crate::proto::executor_service_client::ExecutorServiceClient;
use crate::security::{ClientAuth, Security};

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

/// Connections a driver or executor server holds open at once; further ones wait in the
/// listen backlog until one closes. A cluster needs one per peer process (channels are
/// shared), so this bounds what a flood of connections can cost, not normal work.
pub const MAX_CONNECTIONS: usize = 1024;

/// Calls in flight on one connection (HTTP/2 streams); further ones wait.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Largest request header block a server reads (tokens and metadata are small).
const MAX_HEADER_BYTES: u32 = 16 * 1024;

/// A channel with Ember's deadlines whose requests carry this process's credentials.
pub type RpcChannel = InterceptedService<Channel, ClientAuth>;

/// The connections accepted on `listener`, at most `max_connections` open at once, with
/// Nagle's algorithm off: RPCs are small request/response pairs, and delayed ACKs would
/// otherwise hold each response ~40 ms.
pub fn incoming(
    listener: tokio::net::TcpListener,
    max_connections: usize,
) -> impl futures::Stream<Item = std::io::Result<LimitedStream>> {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    stream::unfold((listener, slots), |(listener, slots)| async move {
        // Waiting for a slot before accepting leaves further connections in the backlog.
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            LimitedStream {
                stream,
                _permit: permit,
            }
        });
        Some((accepted, (listener, slots)))
    })
}

/// An accepted connection that holds one of its server's connection slots until closed.
#[derive(Debug)]
pub struct LimitedStream {
    stream: tokio::net::TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A server builder for a driver or executor: TLS as configured, and bounds on streams
/// per connection and header size. Services added to it are wrapped in
/// [`Security::server_auth`] by their owner.
///
/// # Errors
///
/// The TLS material is unusable.
pub fn server(security: &Security) -> Result<tonic::transport::Server> {
    Ok(security
        .server_builder()?
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(MAX_HEADER_BYTES)))
}

/// The address peers should dial to reach a server bound to `bound`: `advertise`
/// (`HOST` or `HOST:PORT`; without a port, the bound one) when given; else the bound
/// address; else, for a wildcard bind, this host's address on the route toward `toward`
/// (the driver, for an executor), or on the default route. Never `0.0.0.0` or `::`.
///
/// # Errors
///
/// `advertise` is malformed, a wildcard, or a name that does not resolve.
pub fn advertised_address(
    bound: std::net::SocketAddr,
    advertise: Option<&str>,
    toward: Option<&str>,
) -> Result<String> {
    use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
    let unusable = |why: String| EngineError::Security(format!("--advertise: {why}"));
    if let Some(text) = advertise {
        let text = text.trim();
        let (host, port) = match text.parse::<SocketAddr>() {
            Ok(addr) => (addr.ip().to_string(), addr.port()),
            Err(_) => match text.parse::<IpAddr>() {
                Ok(ip) => (ip.to_string(), bound.port()),
                Err(_) => match text.rsplit_once(':') {
                    Some((host, port)) if !host.contains(':') => (
                        host.to_string(),
                        port.parse::<u16>()
                            .map_err(|_| unusable(format!("`{port}` in `{text}` is not a port")))?,
                    ),
                    _ => (text.to_string(), bound.port()),
                },
            },
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(unusable(format!("`{text}` names no host")));
        }
        if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
            return Err(unusable(format!(
                "`{text}` is a wildcard; peers need an address they can dial"
            )));
        }
        if port == 0 {
            return Err(unusable(format!("`{text}` has port 0")));
        }
        let resolved = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| unusable(format!("`{host}` does not resolve: {e}")))?
            .next()
            .ok_or_else(|| unusable(format!("`{host}` resolves to no address")))?;
        return Ok(match host.parse::<IpAddr>() {
            Ok(_) => resolved.to_string(),
            Err(_) => format!("{host}:{port}"),
        });
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    // A UDP "connection" sends nothing: it only asks the kernel which local address the
    // route to the target leaves from.
    let target = toward
        .and_then(|t| t.to_socket_addrs().ok()?.next())
        .unwrap_or_else(|| SocketAddr::from(([192, 0, 2, 1], 9)));
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let routed = UdpSocket::bind(local)
        .and_then(|socket| {
            socket.connect(target)?;
            socket.local_addr()
        })
        .map(|addr| addr.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified());
    let ip = match routed {
        Some(ip) => ip,
        None => {
            tracing::warn!(%bound, "no route to tell peers this host's address; advertising loopback (give --advertise)");
            IpAddr::from([127, 0, 0, 1])
        }
    };
    Ok(SocketAddr::new(ip, bound.port()).to_string())
}

/// Makes a lazily-connecting channel to `address` (`host:port`) with Ember's deadlines,
/// this process's credentials and TLS.
pub fn channel(address: &str, security: &Security) -> Result<RpcChannel> {
    let endpoint = Endpoint::from_shared(format!("{}://{address}", security.scheme()))
        .map_err(|e| EngineError::Transport {
            address: address.to_string(),
            status: Box::new(tonic::Status::invalid_argument(e.to_string())),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let endpoint = security.client_tls(endpoint)?;
    Ok(InterceptedService::new(
        endpoint.connect_lazy(),
        security.client_auth(),
    ))
}

/// Channels by peer address, made once and shared (a tonic channel multiplexes calls).
#[derive(Debug, Clone)]
pub struct ChannelPool {
    channels: Arc<DashMap<String, RpcChannel>>,
    security: Security,
}

impl ChannelPool {
    /// An empty pool whose channels carry `security`'s credentials and TLS.
    pub fn new(security: Security) -> Self {
        Self {
            channels: Arc::default(),
            security,
        }
    }

    /// The channel to `address`, made on first use.
    pub fn get(&self, address: &str) -> Result<RpcChannel> {
        if let Some(c) = self.channels.get(address) {
            return Ok(c.clone());
        }
        let c = channel(address, &self.security)?;
        self.channels.insert(address.to_string(), c.clone());
        Ok(c)
    }

    /// Forgets the channel to a peer that was lost.
    pub fn forget(&self, address: &str) {
        self.channels.remove(address);
    }

    /// An executor client on the channel to `address`.
    pub fn executor(&self, address: &str) -> Result<ExecutorServiceClient<RpcChannel>> {
        Ok(ExecutorServiceClient::new(self.get(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// A driver client on `channel`, with Ember's message size limits.
pub fn driver_client(
    channel: RpcChannel,
) -> crate::proto::driver_service_client::DriverServiceClient<RpcChannel> {
    crate::proto::driver_service_client::DriverServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
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
    /// Bytes received: on the wire, or read from a same-host peer's block file.
    pub bytes: AtomicU64,
    /// Of `bytes`, those read from same-host block files (memory-mapped).
    pub mapped: AtomicU64,
    /// Microseconds spent waiting for the peer (connection, first and later chunks).
    pub micros: AtomicU64,
}

/// Starts fetching one block from the executor at `address` and returns its batches as
/// they arrive: each is decoded as soon as its last chunk is in, so a block is never held
/// whole by the fetcher. Bytes and waiting time are added to `stats`.
///
/// With `share`, the fetcher's same-host share directory: a peer sharing it answers with
/// the block's Arrow IPC file there, which is memory-mapped instead of sent (a file that
/// cannot be read then is fetched over the stream after all).
pub async fn fetch_block_stream(
    pool: &ChannelPool,
    address: &str,
    block: BlockId,
    stats: Arc<FetchStats>,
    share: Option<&Path>,
) -> Result<BlockBatches> {
    let mut chunks = open_fetch(pool, address, block, share, &stats).await?;
    // Waiting for the first chunk (or the file's name) and mapping count as fetching too.
    let mut started = Instant::now();
    let mut decoder = BlockDecoder::new();
    let mut ready = VecDeque::new();
    if let Some(share) = share {
        // A same-host peer answers with one chunk naming the file; others start sending.
        let first = tokio::time::timeout(FETCH_IDLE_TIMEOUT, chunks.next())
            .await
            .map_err(|_| {
                transport_error(address, tonic::Status::deadline_exceeded("fetch stalled"))
            })?;
        match first {
            Some(Ok(chunk)) if !chunk.shared_path.is_empty() => {
                match map_shared(share, PathBuf::from(chunk.shared_path)).await {
                    Ok((bytes, batches)) => {
                        stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                        stats.mapped.fetch_add(bytes, Ordering::Relaxed);
                        stats
                            .micros
                            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                        return Ok(stream::iter(batches.into_iter().map(Ok)).boxed());
                    }
                    Err(e) => {
                        tracing::debug!(%block, error = %e, "same-host block file unreadable; fetching it");
                        stats
                            .micros
                            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                        chunks = open_fetch(pool, address, block, None, &stats).await?;
                        started = Instant::now();
                    }
                }
            }
            Some(Ok(chunk)) => {
                stats
                    .bytes
                    .fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
                decoder.push(chunk.data, &mut ready)?;
            }
            Some(Err(status)) => return Err(transport_error(address, status)),
            // An ended stream is checked complete by the first poll below.
            None => {}
        }
    }
    stats
        .micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    let state = Fetching {
        address: address.to_string(),
        chunks,
        decoder: Some(decoder),
        ready,
        stats,
    };
    Ok(stream::try_unfold(state, Fetching::next_batch).boxed())
}

/// Sends the fetch request for `block` and returns the response stream.
async fn open_fetch(
    pool: &ChannelPool,
    address: &str,
    block: BlockId,
    share: Option<&Path>,
    stats: &FetchStats,
) -> Result<tonic::Streaming<proto::BlockChunk>> {
    let started = Instant::now();
    let mut client = pool.executor(address)?;
    let request = proto::FetchBlockRequest {
        block: Some(block.into()),
        share_dir: share
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let response = tokio::time::timeout(CONTROL_TIMEOUT, client.fetch_block(request)).await;
    stats
        .micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok(response
        .map_err(|_| transport_error(address, tonic::Status::deadline_exceeded("fetch start")))?
        .map_err(|s| transport_error(address, s))?
        .into_inner())
}

/// Maps the block file a same-host peer named, which must lie inside `share` (a peer
/// names only files it wrote there); returns its size and batches.
async fn map_shared(share: &Path, path: PathBuf) -> Result<(u64, Vec<RecordBatch>)> {
    let inside = path.is_absolute()
        && path.starts_with(share)
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    if !inside {
        return Err(EngineError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "a peer named a block file outside the share directory",
            ),
        ));
    }
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::metadata(&path)
            .map_err(|e| EngineError::io(&path, e))?
            .len();
        // SAFETY: the path lies in this process's own share directory, where only the
        // application's executors write block files (mode 0700, made by its session).
        let (_, batches) = unsafe { crate::shared_block::map_block_file(&path) }?;
        Ok((bytes, batches))
    })
    .await
    .map_err(|e| EngineError::Internal(format!("mapping a block file: {e}")))?
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(text: &str) -> std::net::SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn advertised_addresses_are_dialable() {
        let any = bound("0.0.0.0:5000");
        // Explicit: a host takes the bound port; a host and port are kept as given.
        assert_eq!(
            advertised_address(any, Some("10.1.2.3"), None).unwrap(),
            "10.1.2.3:5000"
        );
        assert_eq!(
            advertised_address(any, Some("10.1.2.3:7000"), None).unwrap(),
            "10.1.2.3:7000"
        );
        assert_eq!(
            advertised_address(any, Some("::1"), None).unwrap(),
            "[::1]:5000"
        );
        assert_eq!(
            advertised_address(any, Some("[::1]:7000"), None).unwrap(),
            "[::1]:7000"
        );
        assert_eq!(
            advertised_address(any, Some("localhost"), None).unwrap(),
            "localhost:5000"
        );
        // Not dialable: refused with the reason.
        for (text, why) in [
            ("0.0.0.0", "wildcard"),
            ("[::]:7000", "wildcard"),
            ("10.1.2.3:0", "port 0"),
            ("somehost:port", "not a port"),
            ("", "no host"),
        ] {
            let e = advertised_address(any, Some(text), None).expect_err(text);
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
        // Bound to one address: that one.
        assert_eq!(
            advertised_address(bound("127.0.0.1:5000"), None, None).unwrap(),
            "127.0.0.1:5000"
        );
        // Bound to a wildcard: the address on the route to the driver, never 0.0.0.0.
        assert_eq!(
            advertised_address(any, None, Some("127.0.0.1:9")).unwrap(),
            "127.0.0.1:5000"
        );
        let default_route = advertised_address(any, None, None).unwrap();
        assert!(!default_route.starts_with("0.0.0.0"), "{default_route}");
    }
}
