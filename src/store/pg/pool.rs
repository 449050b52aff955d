//! A small pool of PostgreSQL connections, with TLS for every host that is
//! not loopback.
//!
//! A handful of connections suffice (one store call at a time per job, and
//! a lease renewal per held job every few seconds); a broken connection is
//! dropped and replaced on the next call. Each connection keeps the
//! statements prepared on it ([`Conn::prepared`]), so a hot statement (a
//! chunk acknowledgement) is parsed once per connection and then costs one
//! round trip a call.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{pg_error, FleetOptions};
use crate::store::error::{Result, StoreError};

/// Connections open at once, at most.
const MAX_CONNECTIONS: usize = 8;
/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Pool(Arc<PoolInner>);

struct PoolInner {
    config: Config,
    /// `None`: a loopback database, reached without TLS.
    tls: Option<MakeRustlsConnect>,
    idle: Mutex<Vec<Pooled>>,
    permits: Arc<Semaphore>,
}

/// A connection and the statements prepared on it, keyed by their SQL.
struct Pooled {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// A connection taken from the pool; back into it when dropped, unless broken.
pub(super) struct Conn {
    client: Option<Pooled>,
    pool: Arc<PoolInner>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub(super) fn new(opts: &FleetOptions) -> Result<Pool> {
        let mut config: Config = opts
            .url
            .as_str()
            .parse()
            .map_err(|e| StoreError::Pg(format!("the URL is not a PostgreSQL URL: {e}")))?;
        if let Some(p) = &opts.password {
            config.password(p.expose());
        }
        config.application_name(format!("modelferry {}", opts.instance));
        config.connect_timeout(CONNECT_TIMEOUT);
        // A holder frozen inside a transaction (SIGSTOP, a paused VM) keeps
        // its row locks while its connection lives, and a locked job cannot
        // be taken over. Our transactions last milliseconds: the server
        // ends a session left idle in one for a third of a lease.
        let idle_ms = (opts.lease / 3).max(Duration::from_secs(1)).as_millis();
        let options = format!(
            "{} -c idle_in_transaction_session_timeout={idle_ms}",
            config.get_options().unwrap_or_default()
        );
        config.options(options.trim());
        config.keepalives_idle(Duration::from_secs(30));
        let tls = if is_loopback(&opts.url) {
            None
        } else {
            // Beyond this host the password and the jobs travel encrypted,
            // whatever `sslmode` the URL asked for.
            config.ssl_mode(SslMode::Require);
            Some(tls_connector()?)
        };
        Ok(Pool(Arc::new(PoolInner {
            config,
            tls,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        })))
    }

    /// A connection: an idle one, or a new one.
    pub(super) async fn get(&self) -> Result<Conn> {
        let permit = self
            .0
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Call(e.to_string()))?;
        let idle = {
            let mut idle = self.0.idle.lock().unwrap_or_else(|p| p.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.client.is_closed())
        };
        let client = match idle {
            Some(c) => c,
            None => Pooled {
                client: self.connect().await?,
                statements: HashMap::new(),
            },
        };
        Ok(Conn {
            client: Some(client),
            pool: self.0.clone(),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Client> {
        // The connection task ends when the client is dropped or the
        // connection breaks; its error shows on the next call instead.
        match &self.0.tls {
            None => {
                let (client, conn) = self.0.config.connect(NoTls).await.map_err(pg_error)?;
                tokio::spawn(conn);
                Ok(client)
            }
            Some(tls) => {
                let (client, conn) = self.0.config.connect(tls.clone()).await.map_err(pg_error)?;
                tokio::spawn(conn);
                Ok(client)
            }
        }
    }
}

impl Conn {
    fn pooled(&mut self) -> &mut Pooled {
        self.client.as_mut().expect("present until dropped")
    }

    /// `sql` prepared on this connection: by the server on first use, then
    /// the same statement for as long as the connection lives.
    pub(super) async fn prepared(&mut self, sql: &'static str) -> Result<Statement> {
        let pooled = self.pooled();
        if let Some(s) = pooled.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = pooled.client.prepare(sql).await.map_err(pg_error)?;
        pooled.statements.insert(sql, s.clone());
        Ok(s)
    }
}

impl Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client.as_ref().expect("present until dropped").client
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.pooled().client
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !c.client.is_closed() {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(c);
            }
        }
    }
}

/// Whether the database is on this host. A `postgresql://` URL's host is
/// opaque to the URL parser (not a special scheme), so an address comes as
/// a "domain" and is parsed here.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_start_matches('[').trim_end_matches(']');
            d.eq_ignore_ascii_case("localhost")
                || d.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
        }
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// TLS with the system's trusted roots (as the platform client uses).
fn tls_connector() -> Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the system store holds but rustls cannot parse is
        // one root fewer, not a reason to refuse every connection.
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Pg(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn only_this_host_goes_without_tls() {
        for (url, local) in [
            ("postgresql://m@127.0.0.1:5432/db", true),
            ("postgresql://m@localhost/db", true),
            ("postgresql://m@[::1]:5432/db", true),
            ("postgresql://m@10.0.0.5/db", false),
            ("postgresql://m@db.internal/db", false),
        ] {
            assert_eq!(is_loopback(&url::Url::parse(url).unwrap()), local, "{url}");
        }
    }
}
