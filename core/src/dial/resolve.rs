//! Name resolution through the system resolver (getaddrinfo), so that
//! /etc/hosts, nsswitch and resolv.conf apply as they do for every other
//! program on the host. getaddrinfo blocks, so it runs on tokio's blocking
//! pool and the caller stops waiting when `dns_timeout` passes; the lookup
//! thread finishes on its own once the resolver gives up.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, SocketAddr};

/// Why a lookup failed: getaddrinfo's code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    pub code: i32,
    pub name: &'static str,
    pub text: String,
    /// errno when `code` is EAI_SYSTEM.
    pub errno: Option<i32>,
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.text, self.name)
    }
}

impl std::error::Error for LookupError {}

impl LookupError {
    /// Whether asking again later may succeed (the resolver was unreachable
    /// or overloaded), as opposed to the name not existing.
    pub fn is_temporary(&self) -> bool {
        self.code == libc::EAI_AGAIN
    }
}

/// An IP literal needs no lookup.
pub fn literal(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| vec![SocketAddr::new(ip, port)])
}

/// Blocking getaddrinfo for TCP addresses of `host`, in the resolver's order
/// (RFC 6724 sorting is glibc's job).
pub fn getaddrinfo(host: &str, port: u16) -> Result<Vec<SocketAddr>, LookupError> {
    let c_host = CString::new(host).map_err(|_| LookupError {
        code: libc::EAI_NONAME,
        name: "EAI_NONAME",
        text: "host name contains a NUL byte".into(),
        errno: None,
    })?;
    // SAFETY: an all-zero addrinfo is the documented way to start hints.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_protocol = libc::IPPROTO_TCP;
    hints.ai_flags = libc::AI_ADDRCONFIG;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C string and hints; `res` is freed below.
    let rc = unsafe { libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        let errno = (rc == libc::EAI_SYSTEM)
            .then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        // SAFETY: gai_strerror returns a static string for any code.
        let text = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) }
            .to_string_lossy()
            .into_owned();
        return Err(LookupError {
            code: rc,
            name: eai_name(rc),
            text,
            errno,
        });
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut cur = res;
    while !cur.is_null() {
        // SAFETY: `cur` walks the list getaddrinfo returned.
        let ai = unsafe { &*cur };
        let addr = match ai.ai_family {
            libc::AF_INET if !ai.ai_addr.is_null() => {
                // SAFETY: AF_INET entries hold a sockaddr_in.
                let sin = unsafe { &*(ai.ai_addr as *const libc::sockaddr_in) };
                Some(SocketAddr::new(
                    IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()),
                    port,
                ))
            }
            libc::AF_INET6 if !ai.ai_addr.is_null() => {
                // SAFETY: AF_INET6 entries hold a sockaddr_in6.
                let sin6 = unsafe { &*(ai.ai_addr as *const libc::sockaddr_in6) };
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    ip,
                    port,
                    0,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        };
        if let Some(a) = addr {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        cur = ai.ai_next;
    }
    // SAFETY: `res` came from a successful getaddrinfo.
    unsafe { libc::freeaddrinfo(res) };
    if out.is_empty() {
        return Err(LookupError {
            code: libc::EAI_NODATA,
            name: "EAI_NODATA",
            text: "no IPv4 or IPv6 address for this name".into(),
            errno: None,
        });
    }
    Ok(out)
}

fn eai_name(code: i32) -> &'static str {
    match code {
        libc::EAI_NONAME => "EAI_NONAME",
        libc::EAI_AGAIN => "EAI_AGAIN",
        libc::EAI_FAIL => "EAI_FAIL",
        libc::EAI_NODATA => "EAI_NODATA",
        libc::EAI_FAMILY => "EAI_FAMILY",
        libc::EAI_MEMORY => "EAI_MEMORY",
        libc::EAI_SERVICE => "EAI_SERVICE",
        libc::EAI_SYSTEM => "EAI_SYSTEM",
        _ => "EAI_OTHER",
    }
}

/// Orders addresses as RFC 8305 §4 asks: alternate the families, starting
/// with the family the resolver put first.
pub fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_v6 = first.is_ipv6();
    let (primary, secondary): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(primary.len() + secondary.len());
    let mut p = primary.into_iter();
    let mut s = secondary.into_iter();
    loop {
        match (p.next(), s.next()) {
            (None, None) => break,
            (a, b) => {
                out.extend(a);
                out.extend(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_families() {
        let a: Vec<SocketAddr> = [
            "[::1]:1",
            "[::2]:1",
            "[::3]:1",
            "127.0.0.1:1",
            "127.0.0.2:1",
        ]
        .iter()
        .map(|s| s.parse().expect("addr"))
        .collect();
        let got: Vec<String> = interleave(a).iter().map(|a| a.to_string()).collect();
        assert_eq!(
            got,
            [
                "[::1]:1",
                "127.0.0.1:1",
                "[::2]:1",
                "127.0.0.2:1",
                "[::3]:1"
            ]
        );
    }

    #[test]
    fn literals_and_localhost() {
        assert_eq!(literal("::1", 5).map(|v| v.len()), Some(1));
        assert_eq!(literal("db", 5), None);
        let local = getaddrinfo("localhost", 80).expect("localhost resolves");
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
    }
}
