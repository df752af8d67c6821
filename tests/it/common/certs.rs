//! A certificate authority made by a test, and certificates it signs for the test's hosts
//! (PEM files in a temporary directory).

use std::path::PathBuf;

use ember::engine::security::{Secret, Security, TlsFiles, TlsSettings};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A test's CA and the directory its files live in.
pub struct TestPki {
    dir: tempfile::TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestPki {
    /// A fresh CA, its certificate written as `ca.pem`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Ember test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).expect("write ca");
        Self { dir, issuer }
    }

    /// The CA certificate's file.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate and key for `name`, valid for `hosts` (names or IP addresses).
    pub fn issue(&self, name: &str, hosts: &[&str]) -> TlsFiles {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<String>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).expect("signs");
        let write = |file: &str, text: String| -> PathBuf {
            let path = self.dir.path().join(file);
            std::fs::write(&path, text).expect("write pem");
            path
        };
        TlsFiles {
            cert: write(&format!("{name}.pem"), cert.pem()),
            key: write(&format!("{name}-key.pem"), key.serialize_pem()),
            ca: self.ca(),
        }
    }
}

/// A random test secret (32 hex digits).
pub fn test_secret() -> Secret {
    Secret::generate()
}

/// Security with `secret` and TLS from `files` (mutual when asked).
pub fn secured(secret: &Secret, files: TlsFiles, mutual: bool) -> Security {
    Security {
        secret: Some(secret.clone()),
        tls: Some(TlsSettings::load(files, mutual).expect("TLS files load")),
        allow_insecure: false,
    }
}
