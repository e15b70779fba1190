//! TLS for PostgreSQL through rustls, following libpq's `sslmode` (no OpenSSL).
//!
//! libpq semantics: `disable` = plain; `prefer` (the default) and `require` encrypt without
//! checking the certificate; `verify-ca` and `verify-full` check it against the Mozilla roots
//! plus `sslrootcert` (a PEM file) when given, and `verify-full` also checks the host name.
//! rustls always checks the host name, so `verify-ca` is as strict as `verify-full`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TlsPolicy {
    Disable,
    /// Encrypt when the server offers it; no certificate check (libpq `prefer`).
    Prefer,
    /// Encrypt, no certificate check (libpq `require`).
    Require,
    /// Encrypt and check the certificate (libpq `verify-ca` / `verify-full`).
    Verify {
        root_cert: Option<PathBuf>,
    },
}

impl TlsPolicy {
    /// Map libpq's `sslmode` (and `sslrootcert`) to a policy.
    ///
    /// Rule: the five libpq modes are accepted with libpq's meaning (see the module comment);
    /// a missing `sslmode` is `prefer`, like libpq. Reason: a URL that works with `psql` must
    /// mean the same here, so nobody gets a silently weaker or unexpectedly failing connection.
    pub(super) fn from_params(
        sslmode: Option<&str>,
        root_cert: Option<PathBuf>,
    ) -> Result<TlsPolicy, StoreError> {
        Ok(match sslmode.unwrap_or("prefer") {
            "disable" => TlsPolicy::Disable,
            "allow" | "prefer" => TlsPolicy::Prefer,
            "require" if root_cert.is_none() => TlsPolicy::Require,
            // libpq: require with a root certificate behaves like verify-ca.
            "require" | "verify-ca" | "verify-full" => TlsPolicy::Verify { root_cert },
            other => {
                return Err(StoreError::Url(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    pub(super) fn ssl_mode(&self) -> SslMode {
        match self {
            TlsPolicy::Disable => SslMode::Disable,
            TlsPolicy::Prefer => SslMode::Prefer,
            TlsPolicy::Require | TlsPolicy::Verify { .. } => SslMode::Require,
        }
    }

    pub(super) fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Url(format!("TLS: {e}")))?;
        let config = match self {
            TlsPolicy::Verify { root_cert } => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                if let Some(path) = root_cert {
                    let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                        StoreError::Url(format!("sslrootcert {}: {e}", path.display()))
                    })?;
                    for cert in certs {
                        let cert = cert.map_err(|e| {
                            StoreError::Url(format!("sslrootcert {}: {e}", path.display()))
                        })?;
                        roots.add(cert).map_err(|e| {
                            StoreError::Url(format!("sslrootcert {}: {e}", path.display()))
                        })?;
                    }
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

/// libpq's `prefer`/`require`: the handshake's signatures are checked (so the session key is
/// really the server's), but not who signed the certificate.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_follows_libpq() {
        let p = |m: Option<&str>| TlsPolicy::from_params(m, None).unwrap();
        assert_eq!(p(None), TlsPolicy::Prefer);
        assert_eq!(p(Some("disable")), TlsPolicy::Disable);
        assert_eq!(p(Some("require")), TlsPolicy::Require);
        assert_eq!(
            p(Some("verify-full")),
            TlsPolicy::Verify { root_cert: None }
        );
        assert_eq!(p(Some("verify-ca")), TlsPolicy::Verify { root_cert: None });
        let ca = Some(PathBuf::from("/ca.pem"));
        assert_eq!(
            TlsPolicy::from_params(Some("require"), ca.clone()).unwrap(),
            TlsPolicy::Verify { root_cert: ca }
        );
        let err = TlsPolicy::from_params(Some("sometimes"), None).unwrap_err();
        assert!(err.to_string().contains("sslmode=sometimes"), "{err}");
    }

    #[test]
    fn every_policy_builds_a_connector() {
        for p in [
            TlsPolicy::Disable,
            TlsPolicy::Prefer,
            TlsPolicy::Require,
            TlsPolicy::Verify { root_cert: None },
        ] {
            p.connector().unwrap();
        }
    }
}
