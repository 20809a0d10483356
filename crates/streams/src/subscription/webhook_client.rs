//! The HTTP client of webhook deliveries and the address rules it connects under.
//!
//! The create-time URL check sees only the URL: a host *name* can resolve to a private,
//! loopback or metadata address (`169.254.169.254`), or resolve to a public one at create time
//! and a private one later (DNS rebinding). So the client resolves names itself and drops every
//! address [`is_blocked`] refuses at connect time; a name left with no address fails the
//! delivery (retried like any other failure). IP-literal hosts never reach a resolver and are
//! checked by [`super::input::webhook_url`] with the same rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::store::StoreError;

/// Whether a webhook may not connect to `ip`: private (RFC 1918), loopback (unless
/// `allow_loopback`, the `--allow-dev-webhooks` development mode), link-local, CGNAT
/// (100.64/10), IETF protocol assignments (192.0.0/24), benchmarking (198.18/15),
/// documentation, reserved (240/4), broadcast, multicast and unspecified addresses; IPv6
/// unique-local (fc00::/7), link-local, site-local, multicast, documentation and unspecified,
/// and IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4) by that address.
pub fn is_blocked(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(ip) => is_blocked_v4(ip, allow_loopback),
        IpAddr::V6(ip) => is_blocked_v6(ip, allow_loopback),
    }
}

fn is_blocked_v4(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        return !allow_loopback;
    }
    ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64)
        || (a, b, c) == (192, 0, 0)
        || (a, b, c) == (192, 0, 2)
        || (a, b & 0xfe) == (198, 18)
        || (a, b, c) == (198, 51, 100)
        || (a, b, c) == (203, 0, 113)
        || a >= 240
}

fn is_blocked_v6(ip: Ipv6Addr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return !allow_loopback;
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), 64:ff9b::a.b.c.d (NAT64).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_blocked_v4(embedded(s[6], s[7]), allow_loopback);
    }
    if s[0] == 0x2002 {
        return is_blocked_v4(embedded(s[1], s[2]), false);
    }
    ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0], s[1]) == (0x2001, 0x0db8)
        || (s[0], s[1]) == (0x2001, 0)
        || s[..4] == [0x100, 0, 0, 0]
}

/// A name that resolved to no address a webhook may connect to.
#[derive(Debug, thiserror::Error)]
#[error("webhook host {0} resolves to no public address")]
struct NoPublicAddress(String);

/// Resolves with the system resolver (on the blocking pool, via tokio) and keeps only the
/// addresses [`is_blocked`] allows; the connection is made to exactly those.
#[derive(Debug)]
struct PublicOnly {
    allow_loopback: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found
                .filter(|addr| !is_blocked(addr.ip(), allow_loopback))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(NoPublicAddress(host)) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The webhook client: HTTPS with rustls (the ring provider reqwest selects itself) and the
/// OS's root certificates; no redirects (a redirect could lead past the URL checks), no
/// proxies from the environment (a proxy would resolve the name past [`PublicOnly`]), names
/// resolved by [`PublicOnly`]. A machine whose roots cannot be read still starts: its client
/// trusts no certificate (HTTPS webhooks then fail and are retried).
pub fn webhook_client(allow_loopback: bool) -> Result<reqwest::Client, StoreError> {
    let builder = || {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnly { allow_loopback }))
    };
    builder().build().or_else(|e| {
        tracing::warn!(error = %e, "no root certificates for HTTPS webhooks");
        (builder().tls_built_in_root_certs(false).build())
            .map_err(|e| StoreError::Backend(format!("webhook client: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_reserved_addresses_are_blocked() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(is_blocked(ip, false), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "198.20.0.1"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(!is_blocked(ip, false), "{ip}");
        }
        assert!(!is_blocked("127.0.0.1".parse().expect("ip"), true));
        assert!(!is_blocked("::1".parse().expect("ip"), true));
        assert!(is_blocked("10.0.0.1".parse().expect("ip"), true));
    }

    /// A listener on loopback reached by *name*: refused at connect time unless loopback is
    /// allowed (a name resolving to a private address is filtered the same way).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_resolving_to_loopback_are_refused_at_connect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        let url = format!("http://localhost:{port}/hook");
        let strict = webhook_client(false).expect("client");
        assert!(strict.post(&url).send().await.is_err());
        let dev = webhook_client(true).expect("client");
        let answer = dev
            .post(&url)
            .send()
            .await
            .expect("dev mode reaches loopback");
        assert_eq!(answer.status(), 200);
        // A TLS handshake with a peer that answers plain HTTP: an error, not a panic.
        let https = format!("https://localhost:{port}/hook");
        assert!(dev.post(&https).send().await.is_err());
    }

    /// HTTPS works without a process-wide rustls provider (none is installed here) and an
    /// unreachable HTTPS host is a delivery failure, not a panic.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_to_an_unreachable_host_fails_without_panicking() {
        let client = webhook_client(false).expect("client");
        let sent = client
            .post("https://unreachable.invalid/hook")
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        assert!(sent.is_err());
    }
}
