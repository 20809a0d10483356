//! `serve --redis` / `serve --postgres`: the arguments of a host that shares its store with
//! other hosts.
//!
//! Every host serving the same shared store reads every query; each query is written by one
//! host at a time, the holder of its lease. A host needs a name unique among them (a host
//! restarted under its name takes its queries back at once; two live hosts under one name
//! would keep taking them from each other) and an address other hosts' clients can reach,
//! which a non-owner names in its 409 answer.

use std::net::SocketAddr;
use std::time::Duration;

use liveresults::runtime::{HostIdentity, RuntimeConfig};

use super::CliResult;

/// Default lease length: a host that dies leaves its queries unwritten this long at most.
const DEFAULT_LEASE_TTL_MS: u64 = 10_000;

/// Where the shared store is and who this host is.
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    /// A Redis server holding the store (`redis://HOST:PORT`), shared with other hosts:
    /// every host serves every query's reads, each query is written by one host at a time.
    #[arg(long, value_name = "URL", conflicts_with_all = ["data", "memory"], group = "shared")]
    pub redis: Option<String>,
    /// A PostgreSQL database holding the store (`postgres://USER@HOST/DB`, schema
    /// `liveresults`), shared with other hosts like --redis.
    #[arg(long, value_name = "URL", conflicts_with_all = ["data", "memory"], group = "shared")]
    pub postgres: Option<String>,
    /// This host's name, unique among the hosts sharing the store and the same across its
    /// restarts (required with --redis or --postgres).
    #[arg(long, value_name = "NAME", requires = "shared")]
    host_name: Option<String>,
    /// The URL other hosts' clients reach this host at, named to them when they write a
    /// query this host owns (default: http:// and the bound address).
    #[arg(long, value_name = "URL", requires = "shared")]
    advertise: Option<String>,
    /// How long a query's lease lasts unless renewed (renewed every third of it): how long
    /// the queries of a host that died stay unwritten (100 to 3,600,000 ms).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_LEASE_TTL_MS,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000), requires = "shared")]
    lease_ttl_ms: u64,
}

impl HostArgs {
    /// `config` for this host: unchanged without a shared store, otherwise with the host's
    /// identity (its address defaulting to `bound`) and lease length.
    pub fn apply(&self, config: RuntimeConfig, bound: SocketAddr) -> CliResult<RuntimeConfig> {
        if self.redis.is_none() && self.postgres.is_none() {
            return Ok(config);
        }
        let name = match self.host_name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => {
                return Err(
                    "a shared store needs --host-name NAME: a name unique among the hosts \
                            sharing it"
                        .to_owned(),
                )
            }
        };
        let address = match &self.advertise {
            Some(url) => url.clone(),
            None => format!("http://{bound}"),
        };
        let ttl = Duration::from_millis(self.lease_ttl_ms);
        tracing::info!(host = %name, %address, ?ttl, "sharing the store with other hosts");
        Ok(config.host(HostIdentity::new(name, address), ttl))
    }
}
