//! RPC security: the shared secret that authenticates every call between a driver, its
//! executors and clients, the TLS settings of servers and channels, and the rule that an
//! unprotected server stays on loopback.
//!
//! # Authentication
//!
//! Every process of an application knows the same secret (`--secret-file` or
//! `EMBER_SECRET`). A caller never sends it: each request carries, in the
//! [`AUTH_HEADER`] metadata entry, a token `v1.<unix ms>.<nonce>.<mac>` where the nonce is
//! 16 random bytes and the MAC is HMAC-SHA256 of the version, time and nonce under the
//! secret. A server accepts a token whose MAC verifies (ring's constant-time check), whose
//! time is within [`TOKEN_WINDOW`] of its own clock, and whose nonce it has not seen in
//! that window (so a token read off the wire cannot be used again). A missing or wrong
//! token is refused with `UNAUTHENTICATED` and logged with the caller's address.
//!
//! Without TLS, the request bodies themselves are neither secret nor protected against
//! a machine in the middle that rewrites them: authentication keeps strangers out; TLS
//! keeps the network honest.
//!
//! Spark Connect clients authenticate the way PySpark does: `authorization: Bearer
//! <token>` where the token is the secret's value ([`ServerAuth::bearer`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::error::{EngineError, Result};

/// The metadata entry that carries Ember's request token.
pub const AUTH_HEADER: &str = "x-ember-auth";

/// The environment variable a secret may be given in (instead of a file).
pub const SECRET_ENV: &str = "EMBER_SECRET";

/// How far a token's time may be from the server's clock (either way): covers the clock
/// skew between hosts and a request's time in flight.
pub const TOKEN_WINDOW: Duration = Duration::from_secs(60);

/// The fewest bytes a secret may have.
pub const MIN_SECRET_BYTES: usize = 16;

/// What the MAC covers besides the time and nonce, so a token means nothing elsewhere.
const TOKEN_DOMAIN: &[u8] = b"ember-rpc-v1";

/// The shared secret of an application. Never printed.
#[derive(Clone)]
pub struct Secret {
    value: Arc<[u8]>,
    key: hmac::Key,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from its bytes (surrounding white space removed, as a file written by
    /// `echo` ends in a newline).
    ///
    /// # Errors
    ///
    /// Fewer than [`MIN_SECRET_BYTES`] bytes.
    pub fn new(value: &[u8]) -> Result<Self> {
        let value = value.trim_ascii();
        if value.len() < MIN_SECRET_BYTES {
            return Err(EngineError::Security(format!(
                "the secret has {} bytes; it needs at least {MIN_SECRET_BYTES} \
                 (make one with `openssl rand -hex 32`)",
                value.len()
            )));
        }
        Ok(Self {
            value: Arc::from(value),
            key: hmac::Key::new(hmac::HMAC_SHA256, value),
        })
    }

    /// A fresh random secret (for a local cluster, whose processes all get it from the
    /// session that starts them).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random number generator works");
        Self::new(hex(&bytes).as_bytes()).expect("64 hex digits are a valid secret")
    }

    /// Reads a secret from `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or holds too short a secret.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
        Self::new(&bytes).map_err(|e| match e {
            EngineError::Security(why) => {
                EngineError::Security(format!("{}: {why}", path.display()))
            }
            other => other,
        })
    }

    /// The secret's value, to hand to a child process (in its environment, never on a
    /// command line, which other users can read).
    pub fn expose(&self) -> &[u8] {
        &self.value
    }

    /// A fresh token for one request, made at `now_ms` with `nonce`.
    fn token_at(&self, now_ms: u64, nonce: &[u8; 16]) -> String {
        let nonce = hex(nonce);
        let tag = hmac::sign(&self.key, &signed_text(now_ms, &nonce));
        format!("v1.{now_ms}.{nonce}.{}", hex(tag.as_ref()))
    }

    /// A fresh token for one request.
    pub fn token(&self) -> String {
        let mut nonce = [0u8; 16];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random number generator works");
        self.token_at(now_ms(), &nonce)
    }
}

/// The bytes a token's MAC covers.
fn signed_text(time_ms: u64, nonce_hex: &str) -> Vec<u8> {
    let mut text = TOKEN_DOMAIN.to_vec();
    text.extend_from_slice(format!(".{time_ms}.{nonce_hex}").as_bytes());
    text
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// TLS material of one process: its certificate and key (its identity as a server, and as
/// a client under mutual TLS) and the certificate authority it trusts for peers.
#[derive(Clone)]
pub struct TlsSettings {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
    /// Whether servers require clients to present a certificate signed by the CA.
    pub mutual: bool,
    /// The files the material came from, passed on to child processes.
    pub files: TlsFiles,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("files", &self.files)
            .field("mutual", &self.mutual)
            .finish()
    }
}

/// Where a process's TLS material is: PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain this process presents.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The certificate authority peers' certificates must be signed by.
    pub ca: PathBuf,
}

impl TlsSettings {
    /// Reads the PEM files and checks each holds PEM; whether the certificate and key
    /// themselves are usable is found when a server or channel is built from them.
    ///
    /// # Errors
    ///
    /// A file cannot be read or holds no PEM block.
    pub fn load(files: TlsFiles, mutual: bool) -> Result<Self> {
        let read = |path: &Path, what: &str| -> Result<Vec<u8>> {
            let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
            if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(EngineError::Security(format!(
                    "{}: not a PEM file (expected the {what})",
                    path.display()
                )));
            }
            Ok(bytes)
        };
        Ok(Self {
            cert: read(&files.cert, "certificate, --tls-cert")?,
            key: read(&files.key, "private key, --tls-key")?,
            ca: read(&files.ca, "certificate authority, --tls-ca")?,
            mutual,
            files,
        })
    }

    fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert, &self.key));
        if self.mutual {
            config.client_ca_root(Certificate::from_pem(&self.ca))
        } else {
            config
        }
    }

    fn client_config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca));
        if self.mutual {
            config.identity(Identity::from_pem(&self.cert, &self.key))
        } else {
            config
        }
    }
}

/// How a process protects its RPCs: who may call (the secret), how (TLS), and whether it
/// may listen beyond loopback without either.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The application's shared secret; `None` accepts every caller.
    pub secret: Option<Secret>,
    /// TLS for servers and channels; `None` is plaintext.
    pub tls: Option<TlsSettings>,
    /// Allow listening on a non-loopback address without a secret.
    pub allow_insecure: bool,
}

impl Security {
    /// No secret, no TLS: for servers on loopback only.
    pub fn none() -> Self {
        Self::default()
    }

    /// Refuses a server on a non-loopback address without a secret, unless
    /// [`Security::allow_insecure`] says so: anyone who reaches such a server could run
    /// plans that read and write files as this user. `what` names the server in the error.
    ///
    /// # Errors
    ///
    /// The address is reachable from other hosts and nothing authenticates callers.
    pub fn check_exposure(&self, what: &str, ip: IpAddr) -> Result<()> {
        if ip.is_loopback() || self.secret.is_some() || self.allow_insecure {
            return Ok(());
        }
        Err(EngineError::Security(format!(
            "refusing to serve {what} on {ip} without a secret: anyone who reaches it could run \
             tasks as this user; give a secret (--secret-file, or {SECRET_ENV}) or pass \
             --insecure to allow it"
        )))
    }

    /// A tonic server builder with this process's TLS (if any).
    ///
    /// # Errors
    ///
    /// The TLS material is unusable.
    pub fn server_builder(&self) -> Result<tonic::transport::Server> {
        let builder = tonic::transport::Server::builder();
        match &self.tls {
            Some(tls) => builder
                .tls_config(tls.server_config())
                .map_err(|e| EngineError::Security(format!("TLS server settings: {e}"))),
            None => Ok(builder),
        }
    }

    /// The check every Ember server runs on every request.
    pub fn server_auth(&self) -> ServerAuth {
        ServerAuth::new(self.secret.clone(), Scheme::Token)
    }

    /// Adds this process's token to outgoing requests.
    pub fn client_auth(&self) -> ClientAuth {
        ClientAuth {
            secret: self.secret.clone(),
        }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Applies the client side of TLS to an endpoint.
    ///
    /// # Errors
    ///
    /// The TLS material is unusable.
    pub fn client_tls(
        &self,
        endpoint: tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Endpoint> {
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.client_config())
                .map_err(|e| EngineError::Security(format!("TLS client settings: {e}"))),
            None => Ok(endpoint),
        }
    }
}

/// Adds a fresh token to every outgoing request when the process has a secret.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    secret: Option<Secret>,
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(secret) = &self.secret {
            let token = MetadataValue::try_from(secret.token())
                .map_err(|e| Status::internal(format!("making the request token: {e}")))?;
            request.metadata_mut().insert(AUTH_HEADER, token);
        }
        Ok(request)
    }
}

/// How callers prove they know the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// Ember's own token ([`AUTH_HEADER`]).
    Token,
    /// `authorization: Bearer <secret>` (Spark Connect clients).
    Bearer,
}

/// Checks every request a server receives; see the module documentation.
#[derive(Debug, Clone)]
pub struct ServerAuth {
    inner: Option<Arc<Checker>>,
}

#[derive(Debug)]
struct Checker {
    secret: Secret,
    scheme: Scheme,
    /// Nonces seen, with the time (ms) after which they can be forgotten.
    seen: DashMap<[u8; 16], u64>,
    /// Tokens accepted since the last sweep of `seen`.
    since_sweep: AtomicU64,
    /// A key of this process only: bearer tokens are compared as MACs under it, in
    /// constant time whatever their length.
    compare_key: hmac::Key,
    expected_bearer: hmac::Tag,
}

impl ServerAuth {
    fn new(secret: Option<Secret>, scheme: Scheme) -> Self {
        Self {
            inner: secret.map(|secret| {
                let compare_key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
                    .expect("the system's random number generator works");
                let expected_bearer = hmac::sign(&compare_key, secret.expose());
                Arc::new(Checker {
                    secret,
                    scheme,
                    seen: DashMap::new(),
                    since_sweep: AtomicU64::new(0),
                    compare_key,
                    expected_bearer,
                })
            }),
        }
    }

    /// The check of a Spark Connect endpoint: a Bearer token equal to the secret.
    pub fn bearer(secret: Option<Secret>) -> Self {
        Self::new(secret, Scheme::Bearer)
    }
}

impl Interceptor for ServerAuth {
    fn call(&mut self, request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let Some(checker) = &self.inner else {
            return Ok(request);
        };
        match checker.check(&request, now_ms()) {
            Ok(()) => Ok(request),
            Err(reason) => {
                let peer = request
                    .remote_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "an unknown address".into());
                tracing::warn!(%peer, %reason, "refused an unauthenticated call");
                Err(Status::unauthenticated(format!(
                    "Ember refused the call: {reason}"
                )))
            }
        }
    }
}

impl Checker {
    fn check(&self, request: &Request<()>, now: u64) -> std::result::Result<(), String> {
        match self.scheme {
            Scheme::Token => {
                let token = request
                    .metadata()
                    .get(AUTH_HEADER)
                    .ok_or("no credentials (the caller has no secret, or a different one)")?
                    .to_str()
                    .map_err(|_| "malformed credentials")?;
                self.check_token(token, now)
            }
            Scheme::Bearer => {
                let header = request
                    .metadata()
                    .get("authorization")
                    .ok_or("no token (connect with sc://HOST:PORT/;token=SECRET)")?
                    .to_str()
                    .map_err(|_| "malformed authorization header")?;
                let token = header
                    .strip_prefix("Bearer ")
                    .ok_or("the authorization header is not a Bearer token")?;
                hmac::verify(
                    &self.compare_key,
                    token.as_bytes(),
                    self.expected_bearer.as_ref(),
                )
                .map_err(|_| "wrong token".to_string())
            }
        }
    }

    fn check_token(&self, token: &str, now: u64) -> std::result::Result<(), String> {
        let mut parts = token.split('.');
        let (Some("v1"), Some(time), Some(nonce_hex), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err("malformed credentials".into());
        };
        let time: u64 = time.parse().map_err(|_| "malformed credentials")?;
        let mac = unhex(mac).ok_or("malformed credentials")?;
        hmac::verify(
            &self.secret.key,
            &signed_text(time, nonce_hex),
            mac.as_slice(),
        )
        .map_err(|_| "wrong credentials (the caller has a different secret)")?;
        let window = TOKEN_WINDOW.as_millis() as u64;
        if time.abs_diff(now) > window {
            return Err(format!(
                "stale credentials ({} s from this host's clock; at most {} s allowed)",
                time.abs_diff(now) / 1000,
                window / 1000
            ));
        }
        let nonce: [u8; 16] = unhex(nonce_hex)
            .and_then(|n| n.try_into().ok())
            .ok_or("malformed credentials")?;
        // A token is usable until `time + window`; its nonce must be remembered that long.
        if self.seen.insert(nonce, time + window).is_some() {
            return Err("replayed credentials".into());
        }
        if self.since_sweep.fetch_add(1, Ordering::Relaxed) >= 4096 {
            self.since_sweep.store(0, Ordering::Relaxed);
            self.seen.retain(|_, expires| *expires >= now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef0123456789abcdef\n").expect("secret")
    }

    fn request_with(header: &'static str, value: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert(header, MetadataValue::try_from(value).expect("ascii"));
        r
    }

    fn checker(secret: Secret, scheme: Scheme) -> Arc<Checker> {
        ServerAuth::new(Some(secret), scheme)
            .inner
            .expect("a checker")
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        let e = Secret::new(b"short").expect_err("too short");
        assert!(e.to_string().contains("at least 16"), "{e}");
        assert_eq!(format!("{:?}", secret()), "Secret(..)");
        assert_eq!(secret().expose(), b"0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn tokens_verify_once_within_the_window() {
        let c = checker(secret(), Scheme::Token);
        let now = now_ms();
        let token = secret().token_at(now, &[7; 16]);
        assert!(
            !token.contains("0123456789abcdef0123"),
            "the secret is not sent"
        );
        assert_eq!(c.check(&request_with(AUTH_HEADER, &token), now), Ok(()));
        let again = c
            .check(&request_with(AUTH_HEADER, &token), now)
            .expect_err("a token is good once");
        assert!(again.contains("replayed"), "{again}");
        let fresh = secret().token_at(now, &[8; 16]);
        assert_eq!(
            c.check(&request_with(AUTH_HEADER, &fresh), now + 1000),
            Ok(())
        );
    }

    #[test]
    fn wrong_missing_stale_and_tampered_tokens_are_refused() {
        let c = checker(secret(), Scheme::Token);
        let now = now_ms();
        let other = Secret::new(b"another secret of enough bytes").expect("secret");
        let wrong = c
            .check(
                &request_with(AUTH_HEADER, &other.token_at(now, &[1; 16])),
                now,
            )
            .expect_err("other secret");
        assert!(wrong.contains("different secret"), "{wrong}");
        let missing = c.check(&Request::new(()), now).expect_err("no token");
        assert!(missing.contains("no credentials"), "{missing}");
        let old = secret().token_at(now - 120_000, &[2; 16]);
        let stale = c
            .check(&request_with(AUTH_HEADER, &old), now)
            .expect_err("stale");
        assert!(stale.contains("stale"), "{stale}");
        // The time moved forward by an attacker: the MAC no longer matches.
        let good = secret().token_at(now - 120_000, &[3; 16]);
        let moved = good.replacen(&(now - 120_000).to_string(), &now.to_string(), 1);
        let tampered = c
            .check(&request_with(AUTH_HEADER, &moved), now)
            .expect_err("tampered");
        assert!(tampered.contains("wrong credentials"), "{tampered}");
        for junk in ["", "v1", "v2.1.2.3", "v1.x.y.z", "v1.1.00.zz", "v1.1.2.3.4"] {
            assert!(c.check(&request_with(AUTH_HEADER, junk), now).is_err());
        }
    }

    #[test]
    fn bearer_tokens_equal_the_secret() {
        let c = checker(secret(), Scheme::Bearer);
        let ok = request_with("authorization", "Bearer 0123456789abcdef0123456789abcdef");
        assert_eq!(c.check(&ok, 0), Ok(()));
        let bad = request_with("authorization", "Bearer 0123456789abcdef0123456789abcdeX");
        assert_eq!(c.check(&bad, 0), Err("wrong token".into()));
        assert!(c.check(&Request::new(()), 0).is_err());
        assert!(c
            .check(&request_with("authorization", "Basic abc"), 0)
            .is_err());
    }

    #[test]
    fn the_interceptors_agree() {
        let security = Security {
            secret: Some(secret()),
            ..Security::default()
        };
        let mut client = security.client_auth();
        let mut server = security.server_auth();
        let request = client.call(Request::new(())).expect("token added");
        assert!(server.call(request).is_ok());
        let status = server.call(Request::new(())).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut open = Security::none().server_auth();
        assert!(open.call(Request::new(())).is_ok());
    }

    #[test]
    fn exposure_needs_a_secret_or_consent() {
        let none = Security::none();
        assert!(none
            .check_exposure("x", "127.0.0.1".parse().unwrap())
            .is_ok());
        assert!(none.check_exposure("x", "::1".parse().unwrap()).is_ok());
        let e = none
            .check_exposure("the driver", "0.0.0.0".parse().unwrap())
            .expect_err("wildcard without a secret");
        assert!(e.to_string().contains("--insecure"), "{e}");
        let consent = Security {
            allow_insecure: true,
            ..Security::none()
        };
        assert!(consent
            .check_exposure("x", "10.0.0.1".parse().unwrap())
            .is_ok());
        let secured = Security {
            secret: Some(secret()),
            ..Security::none()
        };
        assert!(secured
            .check_exposure("x", "10.0.0.1".parse().unwrap())
            .is_ok());
    }
}
