//! Reverse-proxy mode: behind a TLS-terminating proxy every connection comes from the proxy, so
//! rate limits and logs would see one client. For peers listed as trusted proxies the client
//! is taken from `X-Forwarded-For` instead: the rightmost address that is not itself a trusted
//! proxy (each proxy appends the peer it saw, so entries left of that one are the client's
//! own claims and may be forged). From any other peer the header is ignored. The proxy must
//! append the peer it saw (nginx `$proxy_add_x_forwarded_for`, Caddy and HAProxy do) or
//! replace the header; one that passes a client's header through unchanged lets the client
//! choose its address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The proxies whose forwarded headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.1`) and ranges (`10.0.0.0/8`).
    ///
    /// # Errors
    /// The first entry that is neither, in words.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for e in entries {
            let e = e.as_ref().trim();
            let net = match e.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => e
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("{e:?} is neither an address nor an address/prefix"))?,
            };
            nets.push(net);
        }
        Ok(Self(Arc::new(nets)))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client behind `peer`, given the request's `X-Forwarded-For` values.
    pub fn client<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            // A malformed entry ends the walk: nothing left of it can be attributed.
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
}

/// Middleware: replaces the connection's peer address with the client named by a trusted
/// proxy, so every extractor of `ConnectInfo` (login limits, sign-up limits, logs) sees the
/// client.
pub async fn real_client(
    State(proxies): State<TrustedProxies>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let client = proxies.client(peer.ip(), forwarded);
        if client != peer.ip() {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_peers_name_the_client_and_forged_hops_are_skipped() {
        let p = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let one = |peer: &str, xff: &str| p.client(ip(peer), std::iter::once(xff));
        // Through the trusted proxy: the client it saw.
        assert_eq!(one("127.0.0.1", "203.0.113.7"), ip("203.0.113.7"));
        // Through two trusted proxies: the first untrusted hop from the right.
        assert_eq!(one("127.0.0.1", "203.0.113.7, 10.1.2.3"), ip("203.0.113.7"));
        // A client that sends its own X-Forwarded-For cannot pick its address: the proxy
        // appended the real one on the right.
        assert_eq!(one("127.0.0.1", "1.1.1.1, 203.0.113.7"), ip("203.0.113.7"));
        // From an untrusted peer the header is ignored.
        assert_eq!(one("198.51.100.9", "1.1.1.1"), ip("198.51.100.9"));
        // Entries with ports, as some proxies write them.
        assert_eq!(one("127.0.0.1", "203.0.113.7:5678"), ip("203.0.113.7"));
        assert_eq!(one("127.0.0.1", "[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(one("127.0.0.1", "[2001:db8::2]"), ip("2001:db8::2"));
        // Garbage ends the walk at the last good hop.
        assert_eq!(one("127.0.0.1", "nonsense"), ip("127.0.0.1"));
        // IPv4-mapped IPv6 peers are the IPv4 proxy.
        assert_eq!(one("::ffff:127.0.0.1", "203.0.113.8"), ip("203.0.113.8"));
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.example"]).is_err());
    }

    #[tokio::test]
    async fn the_layer_hands_handlers_the_client() {
        let proxies = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
        let app = Router::new()
            .route(
                "/",
                get(|ConnectInfo(a): ConnectInfo<SocketAddr>| async move { a.ip().to_string() }),
            )
            .layer(axum::middleware::from_fn_with_state(proxies, real_client));
        let ask = |peer: &str, xff: Option<&str>| {
            let mut req = Request::builder().uri("/");
            if let Some(x) = xff {
                req = req.header("x-forwarded-for", x);
            }
            let mut req = req.body(Body::empty()).unwrap();
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(ip(peer), 40000)));
            let app = app.clone();
            async move {
                let r = app.oneshot(req).await.unwrap();
                let b = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
                String::from_utf8(b.to_vec()).unwrap()
            }
        };
        assert_eq!(ask("127.0.0.1", Some("203.0.113.7")).await, "203.0.113.7");
        assert_eq!(ask("192.0.2.1", Some("203.0.113.7")).await, "192.0.2.1");
        assert_eq!(ask("127.0.0.1", None).await, "127.0.0.1");
    }
}
