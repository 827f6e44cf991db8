//! Throwaway certificates for HTTPS tests.

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed serving certificate for `127.0.0.1` and `localhost`.
pub struct TestCert {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
}

impl TestCert {
    pub fn localhost() -> Result<Self, rcgen::Error> {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])?;
        Ok(Self {
            cert_pem: ck.cert.pem(),
            cert_der: ck.cert.der().clone(),
            key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der())),
        })
    }
}
