//! Mutual TLS between Darter components: one CA, and a certificate + key per
//! component. Servers require a client certificate signed by the CA; clients
//! present theirs and check the server's against the same CA. Used for gRPC
//! (tonic) and for the agents' TCP piece data path (rustls).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Where the PEM files are (e.g. a mounted cert-manager Secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFiles {
    /// CA certificate(s) that sign every component's certificate.
    pub ca_cert: PathBuf,
    /// This component's certificate chain (its IP addresses in the SANs).
    pub cert: PathBuf,
    /// This component's private key.
    pub key: PathBuf,
    /// A DNS name every server certificate carries. When set, clients check
    /// it instead of the address they dial, so one certificate can serve
    /// every agent (e.g. one Secret mounted on every node); unset, each
    /// server's certificate must name its own IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no usable {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// Loaded PEM material, ready to build server and client configs.
#[derive(Clone)]
pub struct MutualTls {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    server_name: Option<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl MutualTls {
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let tls = Self {
            ca_pem: read(&files.ca_cert)?,
            cert_pem: read(&files.cert)?,
            key_pem: read(&files.key)?,
            server_name: files.server_name.clone(),
        };
        // Fail at start-up, naming the file, rather than at the first handshake.
        if tls.certs(&tls.ca_pem).is_empty() {
            return Err(TlsError::Pem {
                path: files.ca_cert.clone(),
                what: "certificate",
            });
        }
        if tls.certs(&tls.cert_pem).is_empty() {
            return Err(TlsError::Pem {
                path: files.cert.clone(),
                what: "certificate",
            });
        }
        if PrivateKeyDer::from_pem_slice(&tls.key_pem).is_err() {
            return Err(TlsError::Pem {
                path: files.key.clone(),
                what: "private key",
            });
        }
        Ok(tls)
    }

    /// From PEM text already in memory (tests, generated certificates).
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Self {
        Self {
            ca_pem: ca.as_bytes().to_vec(),
            cert_pem: cert.as_bytes().to_vec(),
            key_pem: key.as_bytes().to_vec(),
            server_name: None,
        }
    }

    /// The name clients check in server certificates instead of the address.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    fn certs(&self, pem: &[u8]) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .collect()
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// gRPC server: requires a client certificate from the CA.
    pub fn grpc_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// gRPC client: presents this component's certificate, trusts only the CA.
    pub fn grpc_client(&self) -> ClientTlsConfig {
        let cfg = ClientTlsConfig::new()
            .identity(self.identity())
            .ca_certificate(Certificate::from_pem(&self.ca_pem));
        match &self.server_name {
            Some(name) => cfg.domain_name(name.clone()),
            None => cfg,
        }
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in self.certs(&self.ca_pem) {
            roots
                .add(c)
                .map_err(|e| TlsError::Setup(format!("CA certificate: {e}")))?;
        }
        Ok(Arc::new(roots))
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| TlsError::Setup(format!("private key: {e}")))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Raw TLS server (the data path): requires a client certificate from the CA.
    pub fn rustls_server(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            Self::provider(),
        )
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
        let cfg = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs(&self.cert_pem), self.key()?)
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        Ok(Arc::new(cfg))
    }

    /// Raw TLS client (the data path): presents this component's certificate.
    pub fn rustls_client(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let cfg = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.certs(&self.cert_pem), self.key()?)
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        Ok(Arc::new(cfg))
    }
}
