//! TLS for the remote sinks: rustls with `ring` as the one process-wide
//! crypto provider (installed once; no aws-lc), and the MQTT client
//! configuration built from PEM files (CA, client certificate and key).
//!
//! Errors name the config key and the file, never key material.

use crate::sinks::mqtt::config::MqttTlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {message}")]
    File {
        key: &'static str,
        path: String,
        message: String,
    },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Installs `ring` as the rustls default provider (once; later calls and a
/// provider installed by someone else are fine).
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |message: String| TlsError::File {
        key,
        path: path.display().to_string(),
        message,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The rustls client configuration for `[sinks.mqtt.tls]`.
pub fn mqtt_client_config(t: &MqttTlsConfig) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    ensure_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca_file {
        Some(path) => {
            for c in certs("sinks.mqtt.tls.ca_file", path)? {
                roots.add(c).map_err(|e| TlsError::Invalid {
                    key: "sinks.mqtt.tls.ca_file",
                    message: e.to_string(),
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(TlsError::Invalid {
                    key: "sinks.mqtt.tls.ca_file",
                    message: "no CA file given and no system trust roots found".into(),
                });
            }
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match (&t.client_cert_file, &t.client_key_file) {
        (Some(cert), Some(key_path)) => {
            let chain = certs("sinks.mqtt.tls.client_cert_file", cert)?;
            crate::config::warn_if_exposed("sinks.mqtt.tls.client_key_file", key_path);
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::File {
                key: "sinks.mqtt.tls.client_key_file",
                path: key_path.display().to_string(),
                message: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Invalid {
                    key: "sinks.mqtt.tls.client_key_file",
                    message: e.to_string(),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// PEM bytes of an extra CA for the InfluxDB client (checked to parse).
pub fn influx_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, TlsError> {
    ensure_crypto_provider();
    let key = "sinks.influxdb.tls_ca_file";
    certs(key, path)?
        .iter()
        .map(|c| {
            reqwest::Certificate::from_der(c.as_ref()).map_err(|e| TlsError::Invalid {
                key,
                message: e.to_string(),
            })
        })
        .collect()
}
