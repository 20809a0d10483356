//! How connections are made: plain TCP, or TLS through rustls (feature `tls`).
//!
//! The URL's `sslmode` decides, as for libpq:
//!
//! - `disable`: plain TCP.
//! - `prefer` (tokio-postgres's default when the URL names none): TLS when the server offers
//!   it, plain otherwise. Like libpq, the certificate is verified only when a CA is
//!   configured (`sslrootcert` in the URL or [`PgStoreOptions::tls_ca_file`]): `prefer` can
//!   be downgraded by whoever sits on the path anyway, and verifying against the system roots
//!   would break every server with a self-signed certificate (Debian's default cluster has
//!   one) that connected fine in plain text before.
//! - `require`: TLS or no connection, and the certificate is always verified (name and
//!   chain) — against the configured CA, else the system's roots. This is stricter than
//!   libpq's `require`, which verifies only when a root file exists: encryption to an
//!   unauthenticated peer protects nothing against an active attacker.
//!
//! Without the feature, `require` or a configured CA is refused with
//! [`ConfigError::TlsNotBuilt`] before any connection is made: a URL asking for TLS is
//! never served in plain text. `prefer` connects in plain text, as it always did.
//!
//! [`PgStoreOptions::tls_ca_file`]: crate::PgStoreOptions::tls_ca_file

use std::path::PathBuf;
use std::pin::Pin;

use deadpool_postgres::{Manager, ManagerConfig};
use futures_util::Stream;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::error::ConfigError;

/// The URL parameter naming a CA file (libpq's name). tokio-postgres does not know it, so it
/// is taken out of the URL before the URL is parsed.
const SSLROOTCERT: &str = "sslrootcert";

/// The messages of a connection that is not a pooled one (the notice listener's).
pub(crate) type Messages =
    Pin<Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

/// The connector every connection of a store uses.
#[derive(Clone)]
pub(crate) enum Tls {
    /// Plain TCP.
    Plain,
    /// TLS through rustls (the server may still answer plain text under `prefer`).
    #[cfg(feature = "tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Tls {
    /// The connector for `config`'s `sslmode` and the CA file, if one is configured.
    pub(crate) async fn for_config(
        config: &Config,
        ca_file: Option<PathBuf>,
    ) -> Result<Tls, ConfigError> {
        let verify = match plan(
            config.get_ssl_mode(),
            ca_file.is_some(),
            cfg!(feature = "tls"),
        )? {
            Plan::Plain => return Ok(Tls::Plain),
            Plan::Tls { verify } => verify,
        };
        #[cfg(not(feature = "tls"))]
        {
            // `plan` never asks for TLS in a build without it.
            let _ = (verify, ca_file);
            Err(ConfigError::TlsNotBuilt { asked: "TLS" })
        }
        #[cfg(feature = "tls")]
        {
            // Reading the CA file or the system's roots is blocking file I/O.
            let client = tokio::task::spawn_blocking(move || {
                crate::tls_rustls::client_config(verify, ca_file)
            })
            .await
            .map_err(|e| ConfigError::Tls(format!("loading certificates: {e}")))??;
            Ok(Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
                client,
            )))
        }
    }

    /// A pool manager connecting through this connector.
    pub(crate) fn manager(&self, config: Config, manager: ManagerConfig) -> Manager {
        match self {
            Tls::Plain => Manager::from_config(config, NoTls, manager),
            #[cfg(feature = "tls")]
            Tls::Rustls(tls) => Manager::from_config(config, tls.clone(), manager),
        }
    }

    /// One connection outside the pool: the client and the connection's messages (which
    /// must be polled for the client to make progress).
    pub(crate) async fn connect(
        &self,
        config: &Config,
    ) -> Result<(Client, Messages), tokio_postgres::Error> {
        match self {
            Tls::Plain => {
                let (client, mut connection) = config.connect(NoTls).await?;
                let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                Ok((client, Box::pin(messages)))
            }
            #[cfg(feature = "tls")]
            Tls::Rustls(tls) => {
                let (client, mut connection) = config.connect(tls.clone()).await?;
                let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                Ok((client, Box::pin(messages)))
            }
        }
    }
}

/// What a connection does, from the URL's `sslmode`, whether a CA file is configured and
/// whether this build has TLS (a parameter, so both builds' rules are tested in either).
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Plain,
    Tls { verify: bool },
}

fn plan(mode: SslMode, ca_file: bool, tls_built: bool) -> Result<Plan, ConfigError> {
    if mode == SslMode::Disable {
        return Ok(Plan::Plain);
    }
    let require = mode == SslMode::Require;
    if !tls_built {
        if require {
            return Err(ConfigError::TlsNotBuilt {
                asked: "sslmode=require",
            });
        }
        if ca_file {
            return Err(ConfigError::TlsNotBuilt {
                asked: "a CA file (sslrootcert)",
            });
        }
        return Ok(Plan::Plain);
    }
    Ok(Plan::Tls {
        verify: require || ca_file,
    })
}

/// Takes `sslrootcert=FILE` out of a connection string (URL query parameter, or a
/// `key=value` word of the other form), returning the rest and the file. The value is
/// percent-decoded in a URL.
pub(crate) fn take_sslrootcert(url: &str) -> Result<(String, Option<PathBuf>), ConfigError> {
    let key = format!("{SSLROOTCERT}=");
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), None));
        };
        let mut file = None;
        let mut kept = Vec::new();
        for param in query.split('&') {
            match param.strip_prefix(&key) {
                Some(value) => file = Some(PathBuf::from(percent_decode(value)?)),
                None => kept.push(param),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, file));
    }
    let mut file = None;
    let mut kept = Vec::new();
    for word in url.split_whitespace() {
        match word.strip_prefix(&key) {
            Some(value) => file = Some(PathBuf::from(value.trim_matches('\''))),
            None => kept.push(word),
        }
    }
    Ok((kept.join(" "), file))
}

fn percent_decode(value: &str) -> Result<String, ConfigError> {
    let invalid = || ConfigError::InvalidUrl(format!("{SSLROOTCERT}: invalid percent-encoding"));
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3).ok_or_else(invalid)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_out() {
        let (rest, file) =
            take_sslrootcert("postgres://u:p@h/db?sslmode=require&sslrootcert=%2Ftmp%2Fca.pem")
                .unwrap();
        assert_eq!(rest, "postgres://u:p@h/db?sslmode=require");
        assert_eq!(file, Some(PathBuf::from("/tmp/ca.pem")));
        let (rest, file) = take_sslrootcert("postgres://h/db?sslrootcert=ca.pem").unwrap();
        assert_eq!(
            (rest.as_str(), file),
            ("postgres://h/db", Some("ca.pem".into()))
        );
        let (rest, file) =
            take_sslrootcert("host=h sslrootcert=/x/ca.pem sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), file),
            ("host=h sslmode=require", Some("/x/ca.pem".into()))
        );
        let (rest, file) = take_sslrootcert("postgres://h/db?sslmode=disable").unwrap();
        assert_eq!(
            (rest.as_str(), file),
            ("postgres://h/db?sslmode=disable", None)
        );
        assert!(take_sslrootcert("postgres://h/db?sslrootcert=%zz").is_err());
    }

    #[test]
    fn without_tls_built_require_is_refused_never_plain() {
        let err = plan(SslMode::Require, false, false).unwrap_err();
        assert!(matches!(err, ConfigError::TlsNotBuilt { .. }), "{err}");
        assert!(err.to_string().contains("sslmode=require"), "{err}");
        let err = plan(SslMode::Prefer, true, false).unwrap_err();
        assert!(matches!(err, ConfigError::TlsNotBuilt { .. }), "{err}");
        assert_eq!(plan(SslMode::Prefer, false, false).unwrap(), Plan::Plain);
        assert_eq!(plan(SslMode::Disable, true, false).unwrap(), Plan::Plain);
    }

    #[test]
    fn with_tls_built_require_or_a_ca_verifies() {
        let tls = |verify| Plan::Tls { verify };
        assert_eq!(plan(SslMode::Require, false, true).unwrap(), tls(true));
        assert_eq!(plan(SslMode::Prefer, true, true).unwrap(), tls(true));
        assert_eq!(plan(SslMode::Prefer, false, true).unwrap(), tls(false));
        assert_eq!(plan(SslMode::Disable, true, true).unwrap(), Plan::Plain);
    }

    /// The URL as parsed by tokio-postgres carries the mode `plan` sees (`prefer` when the
    /// URL names none).
    #[test]
    fn sslmode_comes_from_the_url() {
        let mode = |url: &str| url.parse::<Config>().unwrap().get_ssl_mode();
        assert_eq!(mode("postgres://h/db?sslmode=require"), SslMode::Require);
        assert_eq!(mode("postgres://h/db"), SslMode::Prefer);
        assert_eq!(mode("host=h sslmode=disable"), SslMode::Disable);
    }
}
