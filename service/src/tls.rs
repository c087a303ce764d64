//! HTTPS for `weir serve`: the rustls server configuration from a PEM certificate chain
//! and private key (`--tls-cert`, `--tls-key`). TLS 1.2 and 1.3 with the aws-lc-rs
//! provider; no client certificates (callers authenticate with bearer tokens).
//!
//! Without these flags the service speaks plain HTTP and binds loopback by default; on
//! any other address it should sit behind TLS, its own or a proxy's, since bearer tokens
//! travel in every request.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM files of `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads the certificate chain and key and checks that they belong together.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert_path = files.cert.display();
    let key_path = files.key.display();
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read the TLS certificate {cert_path}: {error}"))?;
    if chain.is_empty() {
        return Err(format!("the TLS certificate {cert_path} holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|error| format!("cannot read the TLS private key {key_path}: {error}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot set up TLS: {error}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("the TLS key {key_path} does not fit the certificate {cert_path}: {error}"))?;
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = std::env::temp_dir().join(format!("weir-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let missing = TlsFiles { cert: dir.join("absent.pem"), key: dir.join("absent.key") };
        let error = server_config(&missing).unwrap_err();
        assert!(error.contains("absent.pem"), "{error}");
        let no_pem = TlsFiles { cert: empty.clone(), key: empty };
        let error = server_config(&no_pem).unwrap_err();
        assert!(error.contains("holds no PEM certificate"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
