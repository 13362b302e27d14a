//! rustls client configuration with the ring provider (one crypto stack for the whole binary):
//! trust a given CA file, or the system's root certificates.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};

use super::UpstreamError;

/// A client config trusting `ca_file`'s certificates, or the system roots when `None`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, UpstreamError> {
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
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
