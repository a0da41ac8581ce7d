//! Which `Host` names a token-less web answers to. Without a token it listens on loopback only,
//! yet a web page the operator visits can still reach it by DNS rebinding (a name of its own
//! that resolves to 127.0.0.1); the browser then sends that name as `Host`, so answering only
//! to loopback names and the bind address shuts it out. With a token, the token is the guard.

use std::net::SocketAddr;

/// The names answered to besides the bind address.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// The host names (without port, lowercase, IPv6 in brackets) this server answers to.
#[derive(Debug, Clone)]
pub struct ServedHosts {
    names: Vec<String>,
}

impl ServedHosts {
    /// The loopback names, the host of `bind` and the address actually bound (`listening`).
    pub fn new(bind: &str, listening: Option<SocketAddr>) -> Self {
        let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect();
        let mut add = |name: String| {
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        };
        // An unspecified address (0.0.0.0, [::]) is nobody's name.
        let unspecified = |h: &str| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
        };
        if let Some((host, _port)) = split_host(bind).filter(|(h, _)| !unspecified(h)) {
            add(host);
        }
        if let Some(addr) = listening.filter(|a| !a.ip().is_unspecified()) {
            add(match addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            });
        }
        Self { names }
    }

    /// Whether `authority` (a `Host` value: name, optional port) names this server.
    pub fn serves(&self, authority: &str) -> bool {
        split_host(authority).is_some_and(|(host, _)| self.names.contains(&host))
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// `HOST[:PORT]` or `[V6][:PORT]` into the lowercase host and the port text; `None` when malformed.
fn split_host(authority: &str) -> Option<(String, &str)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, ""),
            _ => (host, rest.strip_prefix(':')?),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => (authority, ""),
        }
    };
    let name_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.')),
        None => host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')),
    };
    let valid = name_ok && !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| (host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_the_bind_address_are_served_with_any_port() {
        let hosts = ServedHosts::new("127.0.0.1:8080", "127.0.0.1:8080".parse().ok());
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(hosts.serves(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8080",
            "127.0.0.2:8080",
            "",
            ":8080",
            "localhost:80x",
            "[::1",
            "[::1]x",
            "user@localhost",
        ] {
            assert!(!hosts.serves(refused), "{refused}");
        }
    }

    #[test]
    fn the_bind_name_and_the_bound_address_are_served_too() {
        let hosts = ServedHosts::new("127.0.0.2:0", "127.0.0.2:41234".parse().ok());
        assert!(hosts.serves("127.0.0.2:41234"));
        let v6 = ServedHosts::new("[::1]:0", "[::1]:5000".parse().ok());
        assert!(v6.serves("[::1]:5000"));
        let named = ServedHosts::new("cm-box:8080", None);
        assert!(named.serves("cm-box:8080"));
        let any = ServedHosts::new("0.0.0.0:8080", "0.0.0.0:8080".parse().ok());
        assert!(!any.serves("0.0.0.0:8080"));
    }
}
