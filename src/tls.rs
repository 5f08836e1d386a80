//! TLS on the gRPC listener (`[server.tls]`) and the principal of a client certificate (auth
//! mode `mtls`).
//!
//! tonic terminates TLS with rustls; with `client_ca_file` the handshake verifies the
//! client's chain against those CAs (webpki), so by the time a call reaches the middleware
//! its connection's certificate is trusted and only its name is read here. The principal is
//! the leaf certificate's first URI subject alternative name (e.g. a SPIFFE ID), else its
//! first DNS name; the subject's common name is never used (RFC 6125 deprecates it).

use std::path::Path;
use std::time::Duration;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use x509_parser::extensions::GeneralName;

use crate::config::{ConfigError, TlsConfig};

/// How long a client may take over its handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes aws-lc-rs rustls's process-wide crypto provider. The dependency graph enables both
/// of rustls's providers (the AWS SDK brings ring), so rustls cannot pick one by itself.
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is all this wants.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(ConfigError::Invalid(format!(
            "[server.tls] {what} {}: not PEM",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A gRPC server builder terminating TLS per `tls`: the files are read and the rustls
/// configuration is built here, once, so a bad certificate or key is refused at start-up (and
/// by `check-config`).
pub fn server(tls: &TlsConfig) -> Result<Server, ConfigError> {
    install_crypto_provider();
    let identity = Identity::from_pem(
        read(&tls.cert_file, "cert_file")?,
        read(&tls.key_file, "key_file")?,
    );
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &tls.client_ca_file {
        config = config
            .client_ca_root(Certificate::from_pem(read(ca, "client_ca_file")?))
            .client_auth_optional(tls.client_auth_optional);
    }
    Server::builder().tls_config(config).map_err(|e| {
        let detail = std::error::Error::source(&e)
            .map(ToString::to_string)
            .unwrap_or_else(|| e.to_string());
        ConfigError::Invalid(format!("[server.tls]: {detail}"))
    })
}

/// The principal named by the verified client certificate of the call's connection.
pub fn principal(extensions: &http::Extensions) -> Result<String, &'static str> {
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .ok_or("the connection is not TLS")?
        .peer_certs()
        .ok_or("the client presented no certificate")?;
    let leaf = certs.first().ok_or("the client presented no certificate")?;
    principal_of(leaf.as_ref())
}

/// The first URI subject alternative name of a DER certificate, else its first DNS name.
pub fn principal_of(der: &[u8]) -> Result<String, &'static str> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| "the client certificate cannot be parsed")?;
    let names = certificate
        .subject_alternative_name()
        .map_err(|_| "the client certificate's subject alternative names are malformed")?
        .ok_or("the client certificate has no subject alternative name")?;
    let names = &names.value.general_names;
    let uri = names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let dns = || {
        names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        })
    };
    uri.or_else(dns)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .ok_or("the client certificate names no URI or DNS subject alternative name")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: &[rcgen::SanType]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = names.to_vec();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_principal_is_the_first_uri_else_the_first_dns_name() {
        let uri = rcgen::SanType::URI("spiffe://example.org/ops".try_into().unwrap());
        let dns = rcgen::SanType::DnsName("ops.example.org".try_into().unwrap());
        assert_eq!(
            principal_of(&certificate(&[dns.clone(), uri])).unwrap(),
            "spiffe://example.org/ops"
        );
        assert_eq!(
            principal_of(&certificate(&[dns])).unwrap(),
            "ops.example.org"
        );
        assert!(principal_of(&certificate(&[])).is_err());
        assert!(principal_of(b"not a certificate").is_err());
    }

    #[test]
    fn bad_files_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let tls = TlsConfig {
            cert_file: junk.clone(),
            key_file: junk.clone(),
            client_ca_file: None,
            client_auth_optional: false,
        };
        let error = server(&tls).unwrap_err().to_string();
        assert!(
            error.contains("cert_file") && error.contains("junk.pem"),
            "{error}"
        );
        let missing = TlsConfig {
            cert_file: dir.path().join("missing.pem"),
            ..tls
        };
        assert!(
            server(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing.pem")
        );
    }
}
