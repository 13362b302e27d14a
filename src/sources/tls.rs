//! Server-side TLS for listener sources: reads the PEM certificate chain, key and optional
//! client CA of `[source.tls]` into a rustls acceptor (ring provider, TLS 1.2 and 1.3).

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TcpTls;

/// Why the TLS settings could not be used; names the field and file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.{field}: cannot read {path}: {reason}")]
    Read {
        field: &'static str,
        path: String,
        reason: String,
    },
    #[error("tls.{field}: {path} holds no PEM certificate")]
    NoCert { field: &'static str, path: String },
    #[error("tls: {0}")]
    Rustls(String),
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |e: rustls_pki_types::pem::Error| TlsError::Read {
        field,
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            field,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The acceptor for `cfg`; every file is read now, so a bad path or PEM is reported at start
/// (and by `edgewatch check`) rather than at the first client.
pub fn acceptor(cfg: &TcpTls) -> Result<TlsAcceptor, TlsError> {
    let chain = certs("cert", &cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| TlsError::Read {
        field: "key",
        path: cfg.key.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs("client_ca", ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Rustls(format!("client_ca {}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls(format!("client_ca {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("cert/key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
