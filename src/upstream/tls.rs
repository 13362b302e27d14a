//! rustls client configuration with the ring provider (one crypto stack for the whole binary):
//! trust a given CA file, or the system's root certificates.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::UpstreamError;

/// A client config trusting `ca_file`'s certificates, or the system roots when `None`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, UpstreamError> {
    client_config_with(ca_file, None)
}

/// Like `client_config`, presenting a client certificate chain and key (PEM files) when given.
pub fn client_config_with(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, UpstreamError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(f) => {
            let certs = CertificateDer::pem_file_iter(f)
                .map_err(|e| UpstreamError::Tls(format!("{}: {e}", f.display())))?;
            for c in certs {
                let c = c.map_err(|e| UpstreamError::Tls(format!("{}: {e}", f.display())))?;
                roots
                    .add(c)
                    .map_err(|e| UpstreamError::Tls(format!("{}: {e}", f.display())))?;
            }
            if roots.is_empty() {
                return Err(UpstreamError::Tls(format!(
                    "{}: no certificate found",
                    f.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(UpstreamError::Tls(
                    "no system CA certificates found; install ca-certificates or set upstream.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let cfg = match client {
        None => cfg.with_no_client_auth(),
        Some((cert, key)) => {
            let e = |f: &Path, e: &dyn std::fmt::Display| {
                UpstreamError::Tls(format!("{}: {e}", f.display()))
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|x| e(cert, &x))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|x| e(cert, &x))?;
            if chain.is_empty() {
                return Err(e(cert, &"no certificate found"));
            }
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|x| e(key, &x))?;
            cfg.with_client_auth_cert(chain, key_der)
                .map_err(|x| e(key, &x))?
        }
    };
    Ok(Arc::new(cfg))
}
