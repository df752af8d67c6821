//! The security options every Ember command shares (`--secret-file`, `--tls-*`,
//! `--insecure`) and how a local cluster hands them to its executor processes.

use std::path::PathBuf;
use std::process::Command;

use ember_engine::security::{Secret, Security, TlsFiles, TlsSettings, SECRET_ENV};
use ember_engine::EngineError;

use crate::error::Result;

/// Who may call this process's servers, and how its connections are protected.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// File holding the application's shared secret (at least 16 bytes): every driver,
    /// executor and client call must prove it knows it. The secret itself never crosses
    /// the network. Instead of a file, the secret may be in the EMBER_SECRET environment
    /// variable.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// TLS: this process's certificate chain (PEM). Needs --tls-key and --tls-ca.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// TLS: this process's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TLS: the certificate authority (PEM) that signed the peers' certificates.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: servers also require callers to present a certificate signed by
    /// --tls-ca (and this process presents its own when it calls).
    #[arg(long, requires = "tls_cert")]
    pub tls_mutual: bool,
    /// Allow listening on a non-loopback address without a secret. Anyone who can reach
    /// the port could then run tasks as this user.
    #[arg(long)]
    pub insecure: bool,
}

impl SecurityArgs {
    /// The settings these options describe: the secret from --secret-file, else from
    /// EMBER_SECRET; TLS material read and checked.
    ///
    /// # Errors
    ///
    /// A file cannot be read, the secret is too short, a PEM file holds no PEM.
    pub fn resolve(&self) -> Result<Security> {
        let secret = match &self.secret_file {
            Some(path) => Some(Secret::from_file(path)?),
            None => match std::env::var_os(SECRET_ENV) {
                Some(value) => {
                    Some(Secret::new(value.as_encoded_bytes()).map_err(|e| match e {
                        EngineError::Security(why) => EngineError::Security(format!(
                            "the {SECRET_ENV} environment variable: {why}"
                        )),
                        other => other,
                    })?)
                }
                None => None,
            },
        };
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsSettings::load(
                TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: ca.clone(),
                },
                self.tls_mutual,
            )?),
            (None, None, None) => None,
            _ => {
                return Err(EngineError::Security(
                    "TLS needs all of --tls-cert, --tls-key and --tls-ca".into(),
                )
                .into())
            }
        };
        Ok(Security {
            secret,
            tls,
            allow_insecure: self.insecure,
        })
    }
}

/// Gives an executor process `security`: the secret in its environment (never on its
/// command line, which other users can read), the TLS files as options.
pub(crate) fn pass_to_child(security: &Security, cmd: &mut Command) {
    match &security.secret {
        Some(secret) => {
            use std::os::unix::ffi::OsStrExt;
            cmd.env(SECRET_ENV, std::ffi::OsStr::from_bytes(secret.expose()));
        }
        None => {
            cmd.env_remove(SECRET_ENV);
        }
    }
    if let Some(tls) = &security.tls {
        cmd.arg("--tls-cert")
            .arg(&tls.files.cert)
            .arg("--tls-key")
            .arg(&tls.files.key)
            .arg("--tls-ca")
            .arg(&tls.files.ca);
        if tls.mutual {
            cmd.arg("--tls-mutual");
        }
    }
}
