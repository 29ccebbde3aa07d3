//! Web origins (`scheme://host[:port]`, RFC 6454) as browsers send them in the `Origin`
//! header: the form `server.cors_allowed_origins` must be written in, and the
//! same-origin test the data plane applies to WebSocket upgrades.
//!
//! An allowed origin is compared byte for byte with the header, so a configured value
//! that a browser could never send (upper case, a path, the default port) is refused at
//! start-up instead of silently never matching.

/// Why a configured origin is refused; the message says how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{origin:?} is not an origin: {reason}; write it as a browser sends it, e.g. https://app.example.com or http://localhost:8080"
)]
pub struct OriginError {
    pub origin: String,
    pub reason: &'static str,
}

/// The parts of a serialized origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    /// `None` when the origin leaves out the port (the scheme's default).
    pub port: Option<u16>,
}

/// The port a scheme means when the origin does not name one.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Parse an origin in its serialized form (lower case, no path, no default port).
pub fn parse(origin: &str) -> Result<Origin<'_>, OriginError> {
    let fail = |reason| OriginError {
        origin: origin.to_owned(),
        reason,
    };
    if origin == "*" || origin == "null" {
        return Err(fail(
            "wildcards and the opaque origin \"null\" are not allowed; list each origin",
        ));
    }
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| fail("it has no scheme"))?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !scheme_ok {
        return Err(fail(
            "the scheme must be lower case letters, digits, '+', '-', '.'",
        ));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(fail(
            "an origin has no path, query or fragment (no trailing '/')",
        ));
    }
    if rest.contains('@') {
        return Err(fail("an origin has no user name or password"));
    }
    // A bracketed IPv6 literal holds colons of its own.
    let (host, port) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok() && !v6.contains(|c: char| c.is_ascii_uppercase())
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
    };
    if !host_ok {
        return Err(fail(
            "the host must be a lower case DNS name, an IPv4 address or a bracketed IPv6 address",
        ));
    }
    let port = match port {
        None => None,
        Some(p) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|n| *n != 0 && !p.starts_with('0'))
                .ok_or_else(|| fail("the port must be a number from 1 to 65535"))?;
            if default_port(scheme) == Some(n) {
                return Err(fail("browsers leave out the scheme's default port"));
            }
            Some(n)
        }
    };
    Ok(Origin { scheme, host, port })
}

/// Check a configured origin.
pub fn check(origin: &str) -> Result<(), OriginError> {
    parse(origin).map(|_| ())
}

impl Origin<'_> {
    /// Does this origin name the server the request was sent to (its `Host` header)?
    /// The scheme is not compared (TLS may end in front of the node); a missing port
    /// on either side is the scheme's default.
    pub fn is_host(&self, host_header: &str) -> bool {
        let default = default_port(self.scheme);
        let (host, port) = match host_header.rfind(':') {
            Some(i) if !host_header[i..].contains(']') => {
                (&host_header[..i], host_header[i + 1..].parse().ok())
            }
            _ => (host_header, default),
        };
        let port = port.or(default);
        host.eq_ignore_ascii_case(self.host) && port.is_some() && port == self.port.or(default)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn browser_forms_are_accepted() {
        for ok in [
            "https://app.example.com",
            "http://localhost:8080",
            "http://127.0.0.1:5173",
            "http://[::1]:3000",
            "capacitor://localhost",
        ] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            parse("http://localhost:8080").unwrap(),
            Origin {
                scheme: "http",
                host: "localhost",
                port: Some(8080)
            }
        );
    }

    #[test]
    fn forms_a_browser_never_sends_are_refused_with_the_reason() {
        for (bad, why) in [
            ("*", "wildcards"),
            ("null", "wildcards"),
            ("app.example.com", "no scheme"),
            ("https://app.example.com/", "no path"),
            ("https://app.example.com/chat", "no path"),
            ("https://App.example.com", "lower case"),
            ("HTTPS://app.example.com", "scheme"),
            ("https://app.example.com:443", "default port"),
            ("http://app.example.com:80", "default port"),
            ("http://localhost:0", "port"),
            ("http://localhost:99999", "port"),
            ("http://localhost:", "port"),
            ("https://user@app.example.com", "user name"),
            ("https://", "host"),
            ("https://exa mple.com", "host"),
        ] {
            let e = check(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("e.g. https://app.example.com"), "{bad}: {e}");
        }
    }

    #[test]
    fn same_host_compares_host_and_effective_port() {
        let o = parse("http://127.0.0.1:3000").unwrap();
        assert!(o.is_host("127.0.0.1:3000"));
        assert!(!o.is_host("127.0.0.1:3001"));
        assert!(!o.is_host("127.0.0.1"));
        let o = parse("https://chat.example.com").unwrap();
        assert!(o.is_host("chat.example.com"));
        assert!(o.is_host("chat.example.com:443"));
        assert!(!o.is_host("evil.example.com"));
        assert!(!o.is_host("chat.example.com.evil.com"));
        let o = parse("http://[::1]:3000").unwrap();
        assert!(o.is_host("[::1]:3000"));
        // No default port for an unknown scheme: a bare host never matches.
        assert!(!parse("capacitor://localhost").unwrap().is_host("localhost"));
    }
}
