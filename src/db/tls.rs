//! TLS for tokio-postgres with rustls, following libpq's sslmode semantics:
//! `disable` (no TLS), `prefer` and `require` (encrypt, do not verify — unless a root
//! certificate is given, where `require` verifies like `verify-ca`, as libpq does),
//! `verify-ca` (chain only) and `verify-full` (chain and host name).
//!
//! The modes that do not verify accept any certificate, X.509 v1 included (Citus and other old
//! self-signed setups make v1 certificates, which webpki cannot parse): they never hand the
//! certificate to webpki, take only its public key out of it, and check the handshake
//! signature with that key. The verifying modes go through webpki and keep refusing v1.

use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                "invalid sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
            )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// How certificates are checked once TLS is negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

impl Verify {
    /// What a mode checks; `None` for `disable`. `require` with a root certificate verifies
    /// the chain like `verify-ca`, as libpq does; `prefer` never verifies.
    fn of(mode: SslMode, has_root_cert: bool) -> Option<Verify> {
        Some(match (mode, has_root_cert) {
            (SslMode::Disable, _) => return None,
            (SslMode::Prefer, _) => Verify::Nothing,
            (SslMode::Require, false) => Verify::Nothing,
            (SslMode::Require, true) | (SslMode::VerifyCa, _) => Verify::Chain,
            (SslMode::VerifyFull, _) => Verify::ChainAndName,
        })
    }
}

/// Whether a connection with this mode (and root certificate, or none) verifies the server
/// certificate.
pub fn verifies(mode: SslMode, has_root_cert: bool) -> bool {
    matches!(
        Verify::of(mode, has_root_cert),
        Some(Verify::Chain | Verify::ChainAndName)
    )
}

/// Builds the rustls client configuration for a mode; `None` for `disable`.
pub fn client_config(mode: SslMode, root_cert: Option<&Path>) -> Result<Option<ClientConfig>> {
    let Some(verify) = Verify::of(mode, root_cert.is_some()) else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup failed: {e}")))?;
    let config = if verify == Verify::Nothing {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let roots = Arc::new(load_roots(root_cert)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| Error::Config(format!("TLS setup failed: {e}")))?;
        if verify == Verify::ChainAndName {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                .with_no_client_auth()
        }
    };
    Ok(Some(config))
}

/// Root certificates: the `sslrootcert` file, or the system store for `sslrootcert=system`.
fn load_roots(root_cert: Option<&Path>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) if path.as_os_str() == "system" => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!("cannot read sslrootcert {}: {e}", path.display()))
            })?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    Error::Config(format!("sslrootcert {} is not PEM: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    Error::Config(format!("bad certificate in {}: {e}", path.display()))
                })?;
            }
        }
        None => {
            return Err(Error::Config(
                "sslmode verify-ca and verify-full need a root certificate: set sslrootcert \
                 (or PGSSLROOTCERT) to the CA file, or to 'system'"
                    .into(),
            ))
        }
    }
    if roots.is_empty() {
        return Err(Error::Config("sslrootcert holds no certificate".into()));
    }
    Ok(roots)
}

/// Accepts any certificate (libpq's `prefer`/`require`), but still checks handshake signatures.
///
/// rustls' `verify_tls12_signature`/`verify_tls13_signature` parse the certificate with webpki,
/// which refuses X.509 v1 (`UnsupportedCertVersion`). So the public key is taken out of the
/// certificate here ([`public_key_of`]) and the signature checked against it alone: with rustls'
/// raw-public-key helper for TLS 1.3, and with webpki's raw-key entity for TLS 1.2, trying
/// each algorithm the scheme maps to, as rustls does. This proves that the server holds the
/// key of the certificate it sent, which is what libpq (OpenSSL) checks in these modes too.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let spki = public_key_of(cert)?;
        let key = webpki::RawPublicKeyEntity::try_from(&spki).map_err(cert_error)?;
        let algorithms = self
            .0
            .signature_verification_algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algorithms)| *algorithms)
            .ok_or(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
        let mut last = None;
        for algorithm in algorithms {
            match key.verify_signature(*algorithm, message, dss.signature()) {
                Ok(()) => return Ok(HandshakeSignatureValid::assertion()),
                // The key is of another type than this algorithm's: try the next.
                Err(e @ webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => {
                    last = Some(e)
                }
                Err(e) => return Err(cert_error(e)),
            }
        }
        Err(last.map_or(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into(),
            cert_error,
        ))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &public_key_of(cert)?,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The DER SubjectPublicKeyInfo of a certificate, whatever its version: walks
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }` and reads nothing
/// else (no extensions, no names, no dates), so v1 certificates and unusual fields pass.
fn public_key_of(
    cert: &CertificateDer<'_>,
) -> std::result::Result<SubjectPublicKeyInfoDer<'static>, rustls::Error> {
    use x509_cert::der::{AnyRef, Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
    let walk = || -> x509_cert::der::Result<Option<Vec<u8>>> {
        let certificate = AnyRef::from_der(cert.as_ref())?;
        if certificate.tag() != Tag::Sequence {
            return Ok(None);
        }
        let tbs: AnyRef = SliceReader::new(certificate.value())?.decode()?;
        if tbs.tag() != Tag::Sequence {
            return Ok(None);
        }
        let mut fields = SliceReader::new(tbs.value())?;
        let version = Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N0,
        };
        if fields.peek_tag()? == version {
            fields.decode::<AnyRef>()?;
        }
        // serialNumber, signature, issuer, validity, subject
        for _ in 0..5 {
            fields.decode::<AnyRef>()?;
        }
        let spki: AnyRef = fields.decode()?;
        Ok(Some(spki.to_der()?))
    };
    match walk() {
        Ok(Some(spki)) => Ok(SubjectPublicKeyInfoDer::from(spki)),
        _ => Err(rustls::CertificateError::BadEncoding.into()),
    }
}

/// A webpki error from a signature check as rustls reports it (the mapping rustls keeps private,
/// for the cases a raw-key check can give).
fn cert_error(e: webpki::Error) -> rustls::Error {
    use rustls::CertificateError;
    match e {
        webpki::Error::BadDer | webpki::Error::TrailingData(_) => {
            CertificateError::BadEncoding.into()
        }
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature.into(),
        webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                public_key_algorithm_id: cx.public_key_algorithm_id,
            }
            .into()
        }
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))).into(),
    }
}

/// Verifies the chain but not the host name (libpq's `verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
