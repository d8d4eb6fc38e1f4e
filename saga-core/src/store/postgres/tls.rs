//! TLS of the PostgreSQL store: `sslmode` and `sslrootcert` read with
//! libpq's meanings, and the rustls connector they call for.
//!
//! tokio-postgres 0.7 knows only `disable`, `prefer` and `require`, and
//! refuses the URL of a managed database that says `verify-full`. So the
//! store takes its two parameters out of the connection string before
//! tokio-postgres reads it, and gives tokio-postgres the mode it knows
//! (`require` for both `verify-*`) with a connector whose certificate
//! check is the one the user asked for:
//!
//! | `sslmode`     | encrypted            | certificate checked                        |
//! |---------------|----------------------|--------------------------------------------|
//! | `disable`     | never                | -                                          |
//! | `prefer` (default) | if the server offers TLS | no                              |
//! | `require`     | always               | no (as `verify-ca` if `sslrootcert` names a file, as libpq does) |
//! | `verify-ca`   | always               | signed by a trusted CA                     |
//! | `verify-full` | always               | signed by a trusted CA, and names the host |
//!
//! The trusted CAs are those of `sslrootcert=<file>` (PEM), else, or with
//! `sslrootcert=system`, the operating system's store
//! (`rustls-native-certs`: where operators install their company's or
//! their cloud's CA; a compiled-in list would not know those). The crypto
//! provider is rustls' `ring`, chosen explicitly: the default, aws-lc-rs,
//! needs cmake or a long C build (ring has no post-quantum key exchange).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as ClientMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// `sslmode`, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of `disable`, `prefer`, `require`, `verify-ca`, `verify-full`"
                ));
            }
        })
    }

    /// The mode tokio-postgres is given: whether it asks for TLS, and
    /// whether it insists.
    fn client_mode(self) -> ClientMode {
        match self {
            SslMode::Disable => ClientMode::Disable,
            SslMode::Prefer => ClientMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => ClientMode::Require,
        }
    }
}

/// Where the trusted CAs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RootCert {
    /// The operating system's store.
    System,
    /// A PEM file.
    File(String),
}

/// The TLS parameters of a connection string, and the string without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parsed {
    pub(super) rest: String,
    pub(super) mode: SslMode,
    pub(super) root_cert: Option<RootCert>,
}

/// Takes `sslmode` and `sslrootcert` out of `url` (a `postgres://` URL or
/// a `key=value` string).
pub(super) fn parse(url: &str) -> Result<Parsed, String> {
    let (rest, pairs) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        strip_url(url)?
    } else {
        strip_key_values(url)?
    };
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    for (key, value) in pairs {
        match key {
            Key::SslMode => mode = SslMode::parse(&value)?,
            Key::SslRootCert => {
                root_cert = Some(if value == "system" {
                    RootCert::System
                } else {
                    RootCert::File(value)
                });
            }
        }
    }
    Ok(Parsed {
        rest,
        mode,
        root_cert,
    })
}

#[derive(Debug, Clone, Copy)]
enum Key {
    SslMode,
    SslRootCert,
}

fn ours(key: &str) -> Option<Key> {
    match key {
        "sslmode" => Some(Key::SslMode),
        "sslrootcert" => Some(Key::SslRootCert),
        _ => None,
    }
}

/// A URL without our query parameters, and their (decoded) values.
fn strip_url(url: &str) -> Result<(String, Vec<(Key, String)>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match ours(&percent_decode(key)?) {
            Some(key) => taken.push((key, percent_decode(value)?)),
            None => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    "a `%` in the URL's parameters is not followed by two hex digits".to_owned()
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's parameters are not UTF-8".to_owned())
}

/// A `key=value` string without our keys, and their values. Values are
/// unquoted, or in single quotes with `\'` and `\\` escapes (libpq's
/// rules, which tokio-postgres follows).
fn strip_key_values(text: &str) -> Result<(String, Vec<(Key, String)>), String> {
    let mut kept = String::with_capacity(text.len());
    let mut taken = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let start = rest;
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = rest[key_end..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("`{key}` in the connection string has no `=`"))?
            .trim_start();
        let (value, after) = key_value(rest)?;
        rest = after;
        let pair = &start[..start.len() - rest.len()];
        match ours(key) {
            Some(key) => taken.push((key, value)),
            None => {
                if !kept.is_empty() {
                    kept.push(' ');
                }
                kept.push_str(pair);
            }
        }
    }
    Ok((kept, taken))
}

/// One value of a `key=value` string, and what follows it.
fn key_value(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    if let Some(quoted) = text.strip_prefix('\'') {
        let mut chars = quoted.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '\'' => return Ok((value, &quoted[at + 1..])),
                '\\' => match chars.next() {
                    Some((_, escaped)) => value.push(escaped),
                    None => break,
                },
                c => value.push(c),
            }
        }
        return Err("a quoted value in the connection string has no closing `'`".to_owned());
    }
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => return Ok((value, &text[at..])),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            c => value.push(c),
        }
    }
    Ok((value, ""))
}

/// The connector of a store, and the mode tokio-postgres is given.
pub(super) struct Tls {
    pub(super) connector: MakeRustlsConnect,
    pub(super) client_mode: ClientMode,
    /// Whether the server's certificate is checked (for error messages).
    pub(super) mode: SslMode,
}

/// Builds the connector `parsed` asks for. Reads the CA file or the
/// system's store now, once: a missing file fails the store's `connect`,
/// not its first reconnect.
pub(super) fn connector(parsed: &Parsed) -> Result<Tls, String> {
    // Deprecated since rustls 0.23.48 because ring has no post-quantum key
    // exchange; aws-lc-rs has, but needs cmake or a long C build. A
    // TODO-design: switch when the project can afford aws-lc-rs's build.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut mode = parsed.mode;
    // libpq: "if a root CA file exists, sslmode=require behaves like
    // verify-ca".
    if mode == SslMode::Require && matches!(parsed.root_cert, Some(RootCert::File(_))) {
        mode = SslMode::VerifyCa;
    }
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("setting up TLS: {e}"))?;
    let verifier = |check| {
        Arc::new(Verifier {
            check,
            provider: Arc::clone(&provider),
        })
    };
    let config = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(verifier(Check::Nothing))
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let roots = Arc::new(roots(parsed.root_cert.as_ref())?);
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier(Check::SignedBy(roots)))
                .with_no_client_auth()
        }
        SslMode::VerifyFull => {
            let roots = Arc::new(roots(parsed.root_cert.as_ref())?);
            let full = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| format!("setting up TLS certificate checks: {e}"))?;
            builder.with_webpki_verifier(full).with_no_client_auth()
        }
    };
    Ok(Tls {
        connector: MakeRustlsConnect::new(config),
        client_mode: parsed.mode.client_mode(),
        mode,
    })
}

/// The trusted CAs: the file's, or the system's.
fn roots(root_cert: Option<&RootCert>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(RootCert::File(path)) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("reading sslrootcert `{path}`: {e}"))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("reading sslrootcert `{path}`: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("reading sslrootcert `{path}`: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("sslrootcert `{path}` holds no PEM certificate"));
            }
        }
        Some(RootCert::System) | None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "the system's certificate store has no CA{why}: name the server's CA with `sslrootcert=<file>`"
                ));
            }
        }
    }
    Ok(roots)
}

/// The certificate check of `prefer`, `require` and `verify-ca` (for
/// `verify-full`, rustls' own `WebPkiServerVerifier`). Either way the
/// handshake's signatures are checked, so the server holds the key of the
/// certificate it showed.
#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
enum Check {
    /// `prefer` and `require` (libpq's meaning: encrypted, not
    /// authenticated): any certificate is taken. Never built for
    /// `verify-*` (see [`connector`]).
    Nothing,
    /// `verify-ca`: the chain must lead to one of these CAs; the names in
    /// the certificate are not compared with the host.
    SignedBy(Arc<RootCertStore>),
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Check::SignedBy(roots) = &self.check {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether `error` (a failed connection) is the TLS handshake refusing
/// the server's certificate.
pub(super) fn certificate_refused(error: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let rustls = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(
            rustls,
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> (String, SslMode, Option<RootCert>) {
        let p = parse(url).unwrap();
        (p.rest, p.mode, p.root_cert)
    }

    #[test]
    fn a_url_loses_our_parameters_and_keeps_the_others() {
        assert_eq!(
            parsed(
                "postgres://u:p@db:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20b.pem&connect_timeout=3"
            ),
            (
                "postgres://u:p@db:5432/app?application_name=x&connect_timeout=3".to_owned(),
                SslMode::VerifyFull,
                Some(RootCert::File("/etc/ca b.pem".to_owned()))
            )
        );
        assert_eq!(
            parsed("postgresql://db/app?sslmode=disable"),
            ("postgresql://db/app".to_owned(), SslMode::Disable, None)
        );
        assert_eq!(
            parsed("postgres://db/app"),
            ("postgres://db/app".to_owned(), SslMode::Prefer, None)
        );
        assert_eq!(
            parsed("postgres://db/app?sslrootcert=system&sslmode=verify-ca").2,
            Some(RootCert::System)
        );
    }

    #[test]
    fn a_key_value_string_loses_our_keys_and_keeps_the_others() {
        assert_eq!(
            parsed(
                r"host=db user = saga password='it\'s' sslmode= verify-full sslrootcert='/etc/my ca\'s.pem' dbname=app"
            ),
            (
                r"host=db user = saga password='it\'s' dbname=app".to_owned(),
                SslMode::VerifyFull,
                Some(RootCert::File("/etc/my ca's.pem".to_owned()))
            )
        );
        assert_eq!(
            parsed("host=db sslmode=require"),
            ("host=db".to_owned(), SslMode::Require, None)
        );
    }

    #[test]
    fn an_unknown_mode_or_a_broken_string_is_an_error() {
        assert_eq!(
            parse("postgres://db/app?sslmode=allow").unwrap_err(),
            "sslmode `allow` is not one of `disable`, `prefer`, `require`, `verify-ca`, `verify-full`"
        );
        assert!(parse("host=db sslrootcert='open").is_err());
        assert!(parse("host=db sslmode").is_err());
        assert!(parse("postgres://db/app?sslrootcert=%zz").is_err());
    }

    #[test]
    fn verify_modes_are_required_of_tokio_postgres() {
        for (mode, client) in [
            (SslMode::Disable, ClientMode::Disable),
            (SslMode::Prefer, ClientMode::Prefer),
            (SslMode::Require, ClientMode::Require),
            (SslMode::VerifyCa, ClientMode::Require),
            (SslMode::VerifyFull, ClientMode::Require),
        ] {
            assert_eq!(mode.client_mode(), client);
        }
    }

    #[test]
    fn a_missing_ca_file_fails_naming_it() {
        let parsed =
            parse("postgres://db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").unwrap();
        let error = connector(&parsed).err().unwrap();
        assert!(
            error.starts_with("reading sslrootcert `/nonexistent/ca.pem`: "),
            "{error}"
        );
    }
}
