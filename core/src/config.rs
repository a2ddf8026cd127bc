//! The connection URL and its options.
//!
//! One URL form serves every language:
//! `postgres://user:pass@h1:5432,h2:5433/db?connect_timeout=3s&max_open=20`.
//! Every rule about an option — its default, its valid range, its error
//! message — lives here once; the bindings pass strings through.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Which protocol speaks over the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbKind {
    /// `postgres://`, `postgresql://`
    Postgres,
    /// `mysql://`, `mariadb://`
    Mysql,
    /// `tcp://host:port`: a plain socket with the dial options, no protocol.
    Tcp,
}

impl DbKind {
    pub fn default_port(self) -> Option<u16> {
        match self {
            DbKind::Postgres => Some(5432),
            DbKind::Mysql => Some(3306),
            DbKind::Tcp => None,
        }
    }
    fn scheme(self) -> &'static str {
        match self {
            DbKind::Postgres => "postgres",
            DbKind::Mysql => "mysql",
            DbKind::Tcp => "tcp",
        }
    }
}

/// One `host:port` of the URL's host list. `host` is a name or an IP literal
/// (IPv6 without brackets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// TLS modes with the meanings libpq gives them. MySQL's names are accepted
/// as aliases: disabled, preferred, required, verify_ca, verify_identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plain first; TLS only if the server insists. dialpool treats it as
    /// plain text because it never retries a refused plain login.
    Allow,
    /// TLS when the server offers it, plain otherwise; no verification.
    Prefer,
    /// TLS or fail; the certificate is verified against `sslrootcert` when
    /// one is given (as libpq does), otherwise not verified.
    Require,
    /// TLS, and the chain must lead to a trusted root (`sslrootcert` or the
    /// system roots); the host name is not checked.
    VerifyCa,
    /// TLS, trusted chain, and the certificate names the host we dialed.
    VerifyFull,
}

impl SslMode {
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
    /// Whether TLS is attempted at all.
    pub fn wants_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Allow)
    }
    /// Whether the connection must fail when TLS cannot be had.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself; only the login code should call this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// TCP keepalive probing. `idle: None` turns keepalive off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Option<Duration>,
    pub interval: Duration,
    pub count: u32,
}

/// TLS settings for the in-band upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
}

/// The dial layer's limits and socket options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialOptions {
    pub dns_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub syn_retries: Option<u32>,
    pub keepalive: Keepalive,
    pub tcp_user_timeout: Option<Duration>,
    pub tls_timeout: Option<Duration>,
    pub tls: TlsOptions,
}

/// The pool layer's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    pub acquire_timeout: Option<Duration>,
    pub max_open: u32,
    pub max_idle: u32,
    pub min_idle: u32,
    pub max_lifetime: Option<Duration>,
    pub max_idle_time: Option<Duration>,
    pub ping_after: Duration,
    pub ping_timeout: Option<Duration>,
    pub health_check_period: Option<Duration>,
    pub leak_threshold: Option<Duration>,
}

/// The query layer's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOptions {
    pub query_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub cancel_timeout: Option<Duration>,
}

/// A parsed, validated URL. Build with [`Config::parse`], adjust with
/// [`Config::set`] (same validation), then check with [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub kind: DbKind,
    pub hosts: Vec<HostPort>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub dbname: Option<String>,
    pub dial: DialOptions,
    pub login_timeout: Option<Duration>,
    pub pool: PoolOptions,
    pub query: QueryOptions,
    pub application_name: Option<String>,
    pub options: Option<String>,
    pub statement_cache: u32,
    /// The pool's name in its metrics; `None`: `host:port/dbname`.
    pub pool_name: Option<String>,
    /// Options as the user gave them (after overrides), for `Display`.
    given: BTreeMap<&'static str, String>,
    /// Whether `max_idle` was set explicitly (otherwise it follows `max_open`).
    max_idle_given: bool,
}

/// How an option's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A duration; `0` means "no limit" / "off".
    Duration,
    /// A duration that must be positive.
    PositiveDuration,
    /// A whole number in the range.
    Int(u32, u32),
    SslMode,
    Text,
    Path,
    Secret,
}

/// One option: its name, how it is read, its default as text, and why.
pub struct OptionSpec {
    pub name: &'static str,
    kind: Kind,
    pub layer: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
    pub reason: &'static str,
}

impl OptionSpec {
    /// The valid values, as told to a user who gave a bad one.
    pub fn valid(&self) -> String {
        match self.kind {
            Kind::Duration => {
                "a duration such as 250ms, 3s, 1m30s, or bare seconds (0 turns it off)".into()
            }
            Kind::PositiveDuration => {
                "a positive duration such as 250ms, 3s, 1m30s, or bare seconds".into()
            }
            Kind::Int(lo, hi) => format!("a whole number from {lo} to {hi}"),
            Kind::SslMode => "one of disable, allow, prefer, require, verify-ca, verify-full \
                 (or MySQL's disabled, preferred, required, verify_ca, verify_identity)"
                .into(),
            Kind::Text => "any text".into(),
            Kind::Path => "a file path".into(),
            Kind::Secret => "any text".into(),
        }
    }
}

macro_rules! spec {
    ($name:literal, $kind:expr, $layer:literal, $default:literal, $meaning:literal, $reason:literal) => {
        OptionSpec {
            name: $name,
            kind: $kind,
            layer: $layer,
            default: $default,
            meaning: $meaning,
            reason: $reason,
        }
    };
}

/// Every option the URL takes, in the order of the README table.
pub static OPTIONS: &[OptionSpec] = &[
    spec!("dns_timeout", Kind::Duration, "dial", "5s",
        "Time for resolving the host name through the system resolver.",
        "glibc waits 5 s per nameserver before trying the next; a lookup slower than that is a broken resolver, better reported than waited for."),
    spec!("connect_timeout", Kind::Duration, "dial", "5s",
        "Time for one TCP connect attempt (each address of each host gets its own).",
        "A healthy path answers a SYN in milliseconds; 5 s survives one lost SYN (Linux resends after 1 s and 3 s) while Linux alone would wait 127 s."),
    spec!("syn_retries", Kind::Int(1, 127), "dial", "OS default (6)",
        "TCP_SYNCNT: how many SYNs the kernel sends before giving up on a connect.",
        "connect_timeout already bounds the attempt; set it only to make the kernel give up sooner on its own."),
    spec!("keepalive_idle", Kind::Duration, "dial", "15s",
        "Idle time before the first TCP keepalive probe; 0 turns keepalive off.",
        "Go's and pgx's default; finds a silently dead idle connection in about half a minute instead of Linux's two hours."),
    spec!("keepalive_interval", Kind::PositiveDuration, "dial", "5s",
        "Time between keepalive probes.",
        "With keepalive_count=3, a dead peer is noticed 15 s after the first unanswered probe."),
    spec!("keepalive_count", Kind::Int(1, 127), "dial", "3",
        "Unanswered probes before the kernel drops the connection.",
        "Three tolerates a lost probe or two without keeping a dead connection for long."),
    spec!("tcp_user_timeout", Kind::Duration, "dial", "30s",
        "TCP_USER_TIMEOUT: how long sent data may stay unacknowledged before the kernel drops the connection; 0 leaves the OS default.",
        "Without it a black-holed peer holds a writer for ~15 minutes of retransmissions; no Go driver sets it."),
    spec!("tls_timeout", Kind::Duration, "dial", "5s",
        "Time for the TLS handshake after the in-band TLS request.",
        "A handshake is two round trips and some CPU; a server that takes longer is stuck, and drivers without this limit hang on it."),
    spec!("sslmode", Kind::SslMode, "dial", "prefer",
        "Whether and how TLS is used, with libpq's meanings.",
        "libpq's default: encrypt when the server offers it, without breaking servers that do not."),
    spec!("sslrootcert", Kind::Path, "dial", "system roots",
        "PEM file of the CA certificates to trust.",
        "With verify-ca and verify-full the system's roots are used when none is given."),
    spec!("sslcert", Kind::Path, "dial", "none",
        "PEM file of the client certificate (needs sslkey).",
        "Only for servers that authenticate clients by certificate."),
    spec!("sslkey", Kind::Path, "dial", "none",
        "PEM file of the client certificate's private key.",
        "Goes with sslcert."),
    spec!("login_timeout", Kind::Duration, "login", "10s",
        "Time for the protocol startup and authentication after the dial.",
        "SCRAM's 4096 hash iterations and a busy server's backend start take well under a second; 10 s catches a stuck server without failing a slow one."),
    spec!("acquire_timeout", Kind::Duration, "pool", "5s",
        "How long a caller waits for a pooled connection.",
        "HikariCP and psycopg wait 30 s, which hides an exhausted pool behind slow requests; 5 s fails early with the pool's numbers in the error."),
    spec!("max_open", Kind::Int(1, 10_000), "pool", "10",
        "Most connections open at once (in use plus idle).",
        "HikariCP's default; ten pools fit in PostgreSQL's default max_connections=100."),
    spec!("max_idle", Kind::Int(0, 10_000), "pool", "max_open",
        "Most idle connections kept; extra ones are closed when released.",
        "Keeping every connection avoids reconnect storms after a burst."),
    spec!("min_idle", Kind::Int(0, 10_000), "pool", "0",
        "Idle connections kept ready (opened when the pool opens, refilled in the background).",
        "No background connections unless asked for; set it to hide connect latency."),
    spec!("max_lifetime", Kind::Duration, "pool", "30m",
        "Age after which a connection is closed (each shortened by up to 5 % at random); 0 turns it off.",
        "HikariCP's default; recycles connections through failovers and DNS changes, jittered so they do not expire together."),
    spec!("max_idle_time", Kind::Duration, "pool", "10m",
        "Idle time after which a connection is closed; kept below the server's own idle cut; 0 turns it off.",
        "HikariCP's and psycopg's default; frees server slots after a burst."),
    spec!("ping_after", Kind::Duration, "pool", "1s",
        "A connection idle longer than this is pinged before it is handed out; 0 pings every time.",
        "pgx's default: a connection used a moment ago needs no round trip, an older one does."),
    spec!("ping_timeout", Kind::Duration, "pool", "1s",
        "Time for that ping; a connection that fails it is closed and another tried.",
        "A ping on a healthy connection takes a round trip; pgx added the limit after a ping hung on a black-holed connection."),
    spec!("health_check_period", Kind::Duration, "pool", "30s",
        "How often idle connections are checked, expired ones closed and min_idle refilled; 0 turns it off.",
        "Often enough to refill after an outage within a minute, rare enough to cost nothing."),
    spec!("leak_threshold", Kind::Duration, "pool", "0 (off)",
        "A connection held longer than this produces one leak warning.",
        "Only the application knows how long is too long."),
    spec!("pool_name", Kind::Text, "pool", "host:port/dbname",
        "The pool's name in its metrics (the db.client.connection.pool.name label).",
        "The form OpenTelemetry's conventions suggest; name pools apart when one program has two for the same database."),
    spec!("query_timeout", Kind::Duration, "query", "0 (off)",
        "Time for a statement; when it passes the statement is cancelled on the server.",
        "How long a statement may run is the application's choice; a caller deadline applies anyway."),
    spec!("read_timeout", Kind::Duration, "query", "0 (off)",
        "Longest silence on the socket while a reply is due; the connection is closed.",
        "A long statement is legitimately silent; query_timeout and tcp_user_timeout cover stuck ones."),
    spec!("write_timeout", Kind::Duration, "query", "0 (off)",
        "Longest time the socket may refuse data while a statement is sent; the connection is closed.",
        "tcp_user_timeout already drops a peer that stops acknowledging."),
    spec!("cancel_timeout", Kind::Duration, "query", "5s",
        "Time for the server-side cancel (a fresh dial plus CancelRequest or KILL QUERY).",
        "lib/pq hard-codes 10 s and hangs when the network is gone; a cancel that takes longer will not help."),
    spec!("application_name", Kind::Text, "login", "none",
        "Shown in pg_stat_activity (PostgreSQL) / sent as a connect attribute.",
        "As libpq: the application names itself."),
    spec!("options", Kind::Text, "login", "none",
        "PostgreSQL run-time parameters sent at startup, e.g. -c statement_timeout=5s.",
        "As libpq."),
    spec!("statement_cache", Kind::Int(0, 100_000), "query", "100",
        "Prepared statements kept per connection (LRU); 0 disables it, as PgBouncer's transaction mode needs. Statements without parameters are prepared too: PostgreSQL's at their first run (no extra round trip), MySQL's at their second.",
        "Enough for an application's hot statements; each costs server memory."),
    spec!("dbname", Kind::Text, "login", "the user name",
        "Database name; overrides the URL path.",
        "As libpq."),
    spec!("user", Kind::Text, "login", "the OS user",
        "User name; overrides the URL's user.",
        "As libpq."),
    spec!("password", Kind::Secret, "login", "none",
        "Password; overrides the URL's. Never printed.",
        "Lets a binding pass the password apart from the URL."),
];

/// The options table of the README, generated from [`OPTIONS`] so the two
/// cannot drift apart (a test compares them).
pub fn options_markdown() -> String {
    let mut out = String::from(
        "| option | layer | default | what it does | why this default |\n|---|---|---|---|---|\n",
    );
    for s in OPTIONS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} {} | {} |\n",
            s.name,
            s.layer,
            s.default,
            s.meaning,
            match s.kind {
                Kind::Duration | Kind::PositiveDuration | Kind::Int(..) | Kind::SslMode =>
                    format!("Valid: {}.", s.valid()),
                _ => String::new(),
            },
            s.reason
        ));
    }
    out
}

/// The option spec of `name`, if it is one.
pub fn option_spec(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|s| s.name == name)
}

impl Default for Config {
    fn default() -> Config {
        Config {
            kind: DbKind::Postgres,
            hosts: vec![HostPort {
                host: "localhost".into(),
                port: 5432,
            }],
            user: None,
            password: None,
            dbname: None,
            dial: DialOptions {
                dns_timeout: Some(Duration::from_secs(5)),
                connect_timeout: Some(Duration::from_secs(5)),
                syn_retries: None,
                keepalive: Keepalive {
                    idle: Some(Duration::from_secs(15)),
                    interval: Duration::from_secs(5),
                    count: 3,
                },
                tcp_user_timeout: Some(Duration::from_secs(30)),
                tls_timeout: Some(Duration::from_secs(5)),
                tls: TlsOptions {
                    sslmode: SslMode::Prefer,
                    sslrootcert: None,
                    sslcert: None,
                    sslkey: None,
                },
            },
            login_timeout: Some(Duration::from_secs(10)),
            pool: PoolOptions {
                acquire_timeout: Some(Duration::from_secs(5)),
                max_open: 10,
                max_idle: 10,
                min_idle: 0,
                max_lifetime: Some(Duration::from_secs(30 * 60)),
                max_idle_time: Some(Duration::from_secs(10 * 60)),
                ping_after: Duration::from_secs(1),
                ping_timeout: Some(Duration::from_secs(1)),
                health_check_period: Some(Duration::from_secs(30)),
                leak_threshold: None,
            },
            query: QueryOptions {
                query_timeout: None,
                read_timeout: None,
                write_timeout: None,
                cancel_timeout: Some(Duration::from_secs(5)),
            },
            application_name: None,
            options: None,
            statement_cache: 100,
            pool_name: None,
            given: BTreeMap::new(),
            max_idle_given: false,
        }
    }
}

impl Config {
    /// Parses and validates a URL.
    pub fn parse(url: &str) -> Result<Config> {
        let mut config = Config::parse_unvalidated(url)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a URL without the checks across options, so that a binding can
    /// apply keyword overrides with [`Config::set`] before [`Config::validate`].
    pub fn parse_unvalidated(url: &str) -> Result<Config> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            Error::invalid_argument(format!(
                "invalid URL {:?}: no scheme; valid forms are postgres://, postgresql://, mysql://, mariadb:// and tcp://host:port",
                redact_url(url)
            ))
        })?;
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => DbKind::Postgres,
            "mysql" | "mariadb" => DbKind::Mysql,
            "tcp" => DbKind::Tcp,
            other => {
                return Err(Error::invalid_argument(format!(
                    "invalid URL scheme {other:?}; valid schemes are postgres, postgresql, mysql, mariadb and tcp"
                )))
            }
        };
        let mut config = Config {
            kind,
            ..Config::default()
        };

        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], Some(&before_query[i + 1..])),
            None => (before_query, None),
        };
        // The password may contain '@' only percent-encoded; the last '@'
        // separates user info from hosts, as libpq reads it.
        let (userinfo, hostlist) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                config.user = Some(percent_decode(user, "user")?);
            }
            if let Some(p) = password {
                // The password is decoded but its text never echoed in errors.
                let decoded = percent_decode(p, "password").map_err(|_| {
                    Error::invalid_argument(
                        "invalid URL: the password has a bad percent-escape; write '%' as %25 and non-ASCII bytes as %XX",
                    )
                })?;
                config.password = Some(Secret(decoded));
            }
        }
        config.hosts = parse_hosts(hostlist, kind)?;
        if let Some(path) = path {
            if !path.is_empty() {
                if kind == DbKind::Tcp {
                    return Err(Error::invalid_argument(format!(
                        "invalid URL: tcp:// takes no database path, got /{path}; use tcp://host:port?options"
                    )));
                }
                config.dbname = Some(percent_decode(path, "database name")?);
            }
        }
        if let Some(query) = query {
            let mut seen: Vec<&str> = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (raw_key, raw_value) = pair.split_once('=').ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "invalid option {:?}: expected key=value",
                        pair
                    ))
                })?;
                let key = percent_decode(raw_key, "option name")?;
                let spec = lookup(&key)?;
                if seen.contains(&spec.name) {
                    return Err(Error::invalid_argument(format!(
                        "option {:?} is given twice; give each option once",
                        spec.name
                    )));
                }
                seen.push(spec.name);
                let value = percent_decode(raw_value, spec.name)?;
                config.set(spec.name, &value)?;
            }
        }
        Ok(config)
    }

    /// Sets one option from its text form, with the same validation as the
    /// URL. Later calls override earlier ones (keyword arguments override the
    /// URL). Call [`Config::validate`] afterwards.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let spec = lookup(key)?;
        let name = spec.name;
        let bad = |why: &str| -> Error {
            let shown = if spec.kind == Kind::Secret {
                "***".to_string()
            } else {
                format!("{value:?}")
            };
            Error::invalid_argument(format!(
                "invalid value {shown} for {name}: {why}; valid: {}",
                spec.valid()
            ))
        };
        let duration = || -> Result<Duration> {
            let d = parse_duration(value).map_err(|why| bad(&why))?;
            if spec.kind == Kind::PositiveDuration && d.is_zero() {
                return Err(bad("must be greater than zero"));
            }
            Ok(d)
        };
        let off_if_zero = |d: Duration| if d.is_zero() { None } else { Some(d) };
        let int = || -> Result<u32> {
            let Kind::Int(lo, hi) = spec.kind else {
                return Err(Error::internal(format!("{name} is not an integer option")));
            };
            let n: u64 = value
                .trim()
                .parse()
                .map_err(|_| bad("not a whole number"))?;
            if n < u64::from(lo) || n > u64::from(hi) {
                return Err(bad("out of range"));
            }
            Ok(n as u32)
        };
        let text = || -> Result<String> {
            if value.contains('\0') {
                return Err(bad("contains a NUL byte"));
            }
            Ok(value.to_string())
        };
        let path = || -> Result<PathBuf> {
            if value.is_empty() {
                return Err(bad("empty"));
            }
            Ok(PathBuf::from(text()?))
        };

        match name {
            "dns_timeout" => self.dial.dns_timeout = off_if_zero(duration()?),
            "connect_timeout" => self.dial.connect_timeout = off_if_zero(duration()?),
            "syn_retries" => self.dial.syn_retries = Some(int()?),
            "keepalive_idle" => {
                let d = duration()?;
                if d > Duration::from_secs(32_767) {
                    return Err(bad("Linux allows at most 32767s"));
                }
                if !d.is_zero() && d < Duration::from_secs(1) {
                    return Err(bad(
                        "the kernel counts keepalive in whole seconds; use at least 1s",
                    ));
                }
                self.dial.keepalive.idle = off_if_zero(d);
            }
            "keepalive_interval" => {
                let d = duration()?;
                if d > Duration::from_secs(32_767) {
                    return Err(bad("Linux allows at most 32767s"));
                }
                if d < Duration::from_secs(1) {
                    return Err(bad(
                        "the kernel counts keepalive in whole seconds; use at least 1s",
                    ));
                }
                self.dial.keepalive.interval = d;
            }
            "keepalive_count" => self.dial.keepalive.count = int()?,
            "tcp_user_timeout" => {
                let d = duration()?;
                if d.as_millis() > u128::from(u32::MAX) {
                    return Err(bad(
                        "too large: the kernel takes milliseconds in 32 bits (at most 1193h)",
                    ));
                }
                self.dial.tcp_user_timeout = off_if_zero(d);
            }
            "tls_timeout" => self.dial.tls_timeout = off_if_zero(duration()?),
            "sslmode" => {
                self.dial.tls.sslmode = match value.trim().to_ascii_lowercase().as_str() {
                    "disable" | "disabled" => SslMode::Disable,
                    "allow" => SslMode::Allow,
                    "prefer" | "preferred" => SslMode::Prefer,
                    "require" | "required" => SslMode::Require,
                    "verify-ca" | "verify_ca" => SslMode::VerifyCa,
                    "verify-full" | "verify_full" | "verify_identity" | "verify-identity" => {
                        SslMode::VerifyFull
                    }
                    _ => return Err(bad("unknown mode")),
                }
            }
            "sslrootcert" => self.dial.tls.sslrootcert = Some(path()?),
            "sslcert" => self.dial.tls.sslcert = Some(path()?),
            "sslkey" => self.dial.tls.sslkey = Some(path()?),
            "login_timeout" => self.login_timeout = off_if_zero(duration()?),
            "acquire_timeout" => self.pool.acquire_timeout = off_if_zero(duration()?),
            "max_open" => self.pool.max_open = int()?,
            "max_idle" => {
                self.pool.max_idle = int()?;
                self.max_idle_given = true;
            }
            "min_idle" => self.pool.min_idle = int()?,
            "max_lifetime" => self.pool.max_lifetime = off_if_zero(duration()?),
            "max_idle_time" => self.pool.max_idle_time = off_if_zero(duration()?),
            "ping_after" => self.pool.ping_after = duration()?,
            "ping_timeout" => self.pool.ping_timeout = off_if_zero(duration()?),
            "health_check_period" => self.pool.health_check_period = off_if_zero(duration()?),
            "leak_threshold" => self.pool.leak_threshold = off_if_zero(duration()?),
            "query_timeout" => self.query.query_timeout = off_if_zero(duration()?),
            "read_timeout" => self.query.read_timeout = off_if_zero(duration()?),
            "write_timeout" => self.query.write_timeout = off_if_zero(duration()?),
            "cancel_timeout" => self.query.cancel_timeout = off_if_zero(duration()?),
            "application_name" => self.application_name = Some(text()?),
            "options" => self.options = Some(text()?),
            "statement_cache" => self.statement_cache = int()?,
            "pool_name" => self.pool_name = Some(text()?),
            "dbname" => self.dbname = Some(text()?),
            "user" => self.user = Some(text()?),
            "password" => {
                if value.contains('\0') {
                    return Err(bad("contains a NUL byte"));
                }
                self.password = Some(Secret(value.to_string()));
            }
            other => {
                return Err(Error::internal(format!(
                    "option {other} is listed but not handled"
                )))
            }
        }
        let shown = if spec.kind == Kind::Secret {
            "***".to_string()
        } else {
            value.to_string()
        };
        self.given.insert(name, shown);
        Ok(())
    }

    /// Checks the rules that involve several options.
    pub fn validate(&mut self) -> Result<()> {
        let p = &mut self.pool;
        if !self.max_idle_given {
            p.max_idle = p.max_open;
        }
        if p.max_idle > p.max_open {
            return Err(Error::invalid_argument(format!(
                "invalid value {} for max_idle: more than max_open={}; valid: 0 to max_open",
                p.max_idle, p.max_open
            )));
        }
        if p.min_idle > p.max_open {
            return Err(Error::invalid_argument(format!(
                "invalid value {} for min_idle: more than max_open={}; valid: 0 to max_open",
                p.min_idle, p.max_open
            )));
        }
        if p.min_idle > p.max_idle {
            return Err(Error::invalid_argument(format!(
                "invalid value {} for min_idle: more than max_idle={}; valid: 0 to max_idle",
                p.min_idle, p.max_idle
            )));
        }
        let tls = &self.dial.tls;
        if tls.sslcert.is_some() != tls.sslkey.is_some() {
            return Err(Error::invalid_argument(
                "sslcert and sslkey go together: give both or neither",
            ));
        }
        if self.kind == DbKind::Tcp && self.hosts.iter().any(|h| h.port == 0) {
            return Err(Error::invalid_argument(
                "invalid URL: tcp:// needs a port on every host, e.g. tcp://127.0.0.1:5432",
            ));
        }
        Ok(())
    }

    /// The options as given (after overrides), rendered with the password hidden.
    pub fn given_options(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.given.iter().map(|(k, v)| (*k, v.as_str()))
    }
}

impl fmt::Display for Config {
    /// The URL with the password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.kind.scheme())?;
        if let Some(user) = &self.user {
            write!(f, "{}", percent_encode(user))?;
            if self.password.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{h}")?;
        }
        if let Some(db) = &self.dbname {
            write!(f, "/{}", percent_encode(db))?;
        }
        let mut sep = '?';
        for (k, v) in &self.given {
            if matches!(*k, "user" | "dbname" | "password") {
                continue;
            }
            write!(f, "{sep}{k}={}", percent_encode(v))?;
            sep = '&';
        }
        Ok(())
    }
}

fn lookup(key: &str) -> Result<&'static OptionSpec> {
    if let Some(spec) = option_spec(key) {
        return Ok(spec);
    }
    let valid: Vec<&str> = OPTIONS.iter().map(|s| s.name).collect();
    let closest = OPTIONS
        .iter()
        .map(|s| (levenshtein(&key.to_ascii_lowercase(), s.name), s.name))
        .min()
        .filter(|(d, _)| *d <= 3 || key.len() > 6 && *d <= key.len() / 2);
    let suggestion = match closest {
        Some((_, name)) => format!("; did you mean {name:?}?"),
        None => String::new(),
    };
    Err(Error::invalid_argument(format!(
        "unknown option {key:?}{suggestion} (valid options: {})",
        valid.join(", ")
    )))
}

fn parse_hosts(list: &str, kind: DbKind) -> Result<Vec<HostPort>> {
    if list.is_empty() {
        if kind == DbKind::Tcp {
            return Err(Error::invalid_argument(
                "invalid URL: tcp:// needs host:port, e.g. tcp://127.0.0.1:5432",
            ));
        }
        return Ok(vec![HostPort {
            host: "localhost".into(),
            port: kind.default_port().unwrap_or(0),
        }]);
    }
    let mut hosts = Vec::new();
    for item in list.split(',') {
        let (host, port) = if let Some(rest) = item.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| {
                Error::invalid_argument(format!(
                    "invalid host {item:?}: an IPv6 literal needs its closing ']', e.g. [::1]:5432"
                ))
            })?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(Error::invalid_argument(format!(
                    "invalid host {item:?}: {host:?} in brackets is not an IPv6 address"
                )));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "invalid host {item:?}: expected ':port' after ']'"
                    ))
                })?),
            };
            (host.to_string(), port)
        } else {
            if item.matches(':').count() > 1 {
                return Err(Error::invalid_argument(format!(
                    "invalid host {item:?}: write an IPv6 address in brackets, e.g. [::1]:5432"
                )));
            }
            match item.split_once(':') {
                Some((h, p)) => (percent_decode(h, "host")?, Some(p)),
                None => (percent_decode(item, "host")?, None),
            }
        };
        if host.is_empty() {
            return Err(Error::invalid_argument(format!(
                "invalid host list {list:?}: empty host name"
            )));
        }
        if host.contains('/') {
            return Err(Error::invalid_argument(format!(
                "invalid host {host:?}: Unix-domain sockets are not supported; use a TCP host name or address"
            )));
        }
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(Error::invalid_argument(format!(
                        "invalid port {p:?} for host {host:?}: valid ports are 1 to 65535"
                    )))
                }
            },
            None => kind.default_port().ok_or_else(|| {
                Error::invalid_argument(format!(
                    "invalid URL: tcp:// needs a port for host {host:?}, e.g. tcp://{host}:5432"
                ))
            })?,
        };
        hosts.push(HostPort { host, port });
    }
    Ok(hosts)
}

/// Parses a duration in Go's notation (`250ms`, `3s`, `1m30s`, `1.5h`) or a
/// bare number of seconds (`3`, `0.5`), as libpq's `connect_timeout` is read.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.starts_with('-') {
        return Err("negative".into());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s.parse().map_err(|_| "not a number".to_string())?;
        return seconds(secs);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("bad number {:?}", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err("a number without a unit inside a compound duration".into()),
            other => {
                return Err(format!(
                    "unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ))
            }
        };
        total += number * scale;
    }
    seconds(total)
}

fn seconds(secs: f64) -> std::result::Result<Duration, String> {
    // Ten years is far above any sensible limit and far below overflow.
    if !secs.is_finite() || secs > 10.0 * 365.0 * 86_400.0 {
        return Err("too large".into());
    }
    let d = Duration::from_secs_f64(secs);
    // Round to whole nanoseconds that the float may have smeared.
    Ok(Duration::from_nanos(
        d.as_nanos().min(u128::from(u64::MAX)) as u64
    ))
}

/// Formats a duration the way Go does (`3s`, `250ms`, `1m30s`, `1.5s`).
pub fn fmt_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let trim = |value: f64| -> String {
        let s = format!("{value:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}us", trim(nanos as f64 / 1e3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim(nanos as f64 / 1e6));
    }
    let total_secs = d.as_secs();
    let hours = total_secs / 3600;
    let minutes = (total_secs % 3600) / 60;
    let secs = (total_secs % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if secs > 0.0 || out.is_empty() {
        out.push_str(&format!("{}s", trim(secs)));
    }
    out
}

fn percent_decode(text: &str, what: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => out.push(b),
                    None => {
                        return Err(Error::invalid_argument(format!(
                            "invalid {what} {text:?}: '%' must start an escape of two hex digits (write '%' as %25)"
                        )))
                    }
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| {
        Error::invalid_argument(format!("invalid {what} {text:?}: not UTF-8 once decoded"))
    })
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URL with any password replaced, for messages about URLs that did not parse.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Without a scheme we cannot tell where a password would be; show
        // nothing that might be one.
        return if url.contains('@') {
            "<hidden: the text contains '@' and may hold a password>".into()
        } else {
            url.into()
        };
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}{}", &rest[at..])
        }
        None => url.into(),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn err(url: &str) -> String {
        let e = Config::parse(url).expect_err(url);
        assert_eq!(e.code(), Code::InvalidArgument, "{url}: {e}");
        e.to_string()
    }

    #[test]
    fn full_postgres_url() {
        let c = Config::parse(
            "postgres://al%40ice:p%40ss%3Aw0rd@db1:5433,[::1]:5434,db3/my%20db?sslmode=verify-full\
             &connect_timeout=3s&acquire_timeout=1500ms&query_timeout=1m30s&max_open=20\
             &keepalive_idle=0&application_name=web%201",
        )
        .expect("parses");
        assert_eq!(c.kind, DbKind::Postgres);
        assert_eq!(c.user.as_deref(), Some("al@ice"));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("p@ss:w0rd"));
        assert_eq!(
            c.hosts,
            vec![
                HostPort {
                    host: "db1".into(),
                    port: 5433
                },
                HostPort {
                    host: "::1".into(),
                    port: 5434
                },
                HostPort {
                    host: "db3".into(),
                    port: 5432
                },
            ]
        );
        assert_eq!(c.dbname.as_deref(), Some("my db"));
        assert_eq!(c.dial.tls.sslmode, SslMode::VerifyFull);
        assert_eq!(c.dial.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.pool.acquire_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(c.query.query_timeout, Some(Duration::from_secs(90)));
        assert_eq!(c.pool.max_open, 20);
        assert_eq!(c.pool.max_idle, 20, "max_idle follows max_open");
        assert_eq!(c.dial.keepalive.idle, None);
        assert_eq!(c.application_name.as_deref(), Some("web 1"));
    }

    #[test]
    fn schemes_and_default_ports() {
        for (url, kind, port) in [
            ("postgresql://h", DbKind::Postgres, 5432),
            ("mysql://h", DbKind::Mysql, 3306),
            ("mariadb://u@h/db", DbKind::Mysql, 3306),
            ("tcp://127.0.0.1:7", DbKind::Tcp, 7),
            ("postgres://", DbKind::Postgres, 5432),
        ] {
            let c = Config::parse(url).expect(url);
            assert_eq!(c.kind, kind, "{url}");
            assert_eq!(c.hosts[0].port, port, "{url}");
        }
        let c = Config::parse("postgres://").expect("bare");
        assert_eq!(c.hosts[0].host, "localhost");
    }

    #[test]
    fn every_option_parses_and_round_trips_through_display() {
        for spec in OPTIONS {
            let value = match spec.kind {
                Kind::Duration | Kind::PositiveDuration => "7s",
                Kind::Int(lo, _) => {
                    if lo == 0 {
                        "0"
                    } else {
                        "1"
                    }
                }
                Kind::SslMode => "require",
                Kind::Text | Kind::Path | Kind::Secret => "x",
            };
            let mut extra = String::new();
            if spec.name == "sslcert" {
                extra = "&sslkey=k".into();
            }
            if spec.name == "sslkey" {
                extra = "&sslcert=c".into();
            }
            let url = format!("postgres://u@h/d?{}={value}{extra}", spec.name);
            let c = Config::parse(&url).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            if !matches!(spec.name, "user" | "dbname" | "password") {
                let again = Config::parse(&c.to_string()).expect("display parses");
                assert_eq!(again.to_string(), c.to_string());
            }
        }
    }

    #[test]
    fn mysql_sslmode_aliases() {
        for (given, want) in [
            ("disabled", SslMode::Disable),
            ("preferred", SslMode::Prefer),
            ("required", SslMode::Require),
            ("verify_ca", SslMode::VerifyCa),
            ("verify_identity", SslMode::VerifyFull),
            ("VERIFY-FULL", SslMode::VerifyFull),
        ] {
            let c = Config::parse(&format!("mysql://h?sslmode={given}")).expect(given);
            assert_eq!(c.dial.tls.sslmode, want);
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("250ms", 250_000_000u64),
            ("3s", 3_000_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5s", 1_500_000_000),
            ("2", 2_000_000_000),
            ("0.25", 250_000_000),
            ("1h", 3_600_000_000_000),
            ("10us", 10_000),
            ("10µs", 10_000),
            ("0", 0),
        ];
        for (text, nanos) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_nanos(nanos)),
                "{text}"
            );
        }
        for bad in ["", "-1s", "3x", "s", "1s2", "abc", "1e9", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(fmt_duration(Duration::from_secs(3)), "3s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_secs(3600)), "1h0m");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn unknown_key_suggests_closest() {
        let m = err("postgres://h?conect_timeout=3s");
        assert!(m.contains("\"conect_timeout\""), "{m}");
        assert!(m.contains("did you mean \"connect_timeout\""), "{m}");
        assert!(m.contains("valid options:"), "{m}");
        let m = err("postgres://h?zzz=1");
        assert!(!m.contains("did you mean"), "{m}");
    }

    #[test]
    fn duplicate_key() {
        let m = err("postgres://h?max_open=2&max_open=3");
        assert!(m.contains("max_open") && m.contains("twice"), "{m}");
    }

    #[test]
    fn bad_values_name_key_value_and_valid() {
        for (url, key, value) in [
            ("postgres://h?connect_timeout=3x", "connect_timeout", "3x"),
            ("postgres://h?connect_timeout=-1", "connect_timeout", "-1"),
            ("postgres://h?max_open=0", "max_open", "0"),
            ("postgres://h?max_open=many", "max_open", "many"),
            ("postgres://h?sslmode=maybe", "sslmode", "maybe"),
            ("postgres://h?keepalive_count=500", "keepalive_count", "500"),
            (
                "postgres://h?keepalive_interval=0",
                "keepalive_interval",
                "0",
            ),
            (
                "postgres://h?keepalive_idle=100ms",
                "keepalive_idle",
                "100ms",
            ),
            ("postgres://h?syn_retries=0", "syn_retries", "0"),
            (
                "postgres://h?tcp_user_timeout=2000h",
                "tcp_user_timeout",
                "2000h",
            ),
        ] {
            let m = err(url);
            assert!(m.contains(key), "{url}: {m}");
            assert!(m.contains(&format!("{value:?}")), "{url}: {m}");
            assert!(m.contains("valid:"), "{url}: {m}");
        }
    }

    #[test]
    fn cross_option_rules() {
        let m = err("postgres://h?max_open=2&min_idle=3");
        assert!(m.contains("min_idle") && m.contains("max_open=2"), "{m}");
        let m = err("postgres://h?max_open=2&max_idle=5");
        assert!(m.contains("max_idle"), "{m}");
        let m = err("postgres://h?sslcert=/c.pem");
        assert!(m.contains("sslkey"), "{m}");
    }

    #[test]
    fn bad_urls() {
        for (url, needle) in [
            ("localhost:5432", "no scheme"),
            ("http://h", "scheme"),
            ("postgres://h:0", "valid ports"),
            ("postgres://h:99999", "valid ports"),
            ("postgres://h:abc", "valid ports"),
            ("postgres://::1:5432", "brackets"),
            ("postgres://[::1:5432", "closing"),
            ("postgres://[zz]:5432", "IPv6"),
            ("postgres://h1,,h2", "empty host"),
            ("postgres://h?max_open", "key=value"),
            ("postgres://h/d%zz", "escape"),
            ("tcp://127.0.0.1", "port"),
            ("tcp://", "host:port"),
            ("tcp://h:1/db", "no database path"),
        ] {
            let m = err(url);
            assert!(m.contains(needle), "{url}: {m}");
        }
    }

    #[test]
    fn overrides_validate_like_the_url() {
        let mut c = Config::parse_unvalidated("postgres://u:pw@h/db?max_open=5").expect("parse");
        c.set("max_open", "3").expect("override");
        c.set("dbname", "other").expect("override");
        c.validate().expect("valid");
        assert_eq!(c.pool.max_open, 3);
        assert_eq!(c.dbname.as_deref(), Some("other"));
        let e = c.set("max_opne", "3").expect_err("typo");
        assert!(e.to_string().contains("max_open"));
    }

    #[test]
    fn password_never_rendered() {
        let pw = "S3cr3t-pw%21";
        let plain = "S3cr3t-pw!";
        let url = format!("postgres://bob:{pw}@h/db?connect_timeout=3s");
        let c = Config::parse(&url).expect("parse");
        assert_eq!(c.password.as_ref().map(Secret::expose), Some(plain));
        let mut renderings = vec![format!("{c}"), format!("{c:?}"), format!("{c:#?}")];
        let mut c2 = c.clone();
        c2.set("password", plain).expect("set");
        renderings.push(format!("{c2} {c2:?}"));
        // Errors about the URL must not echo it either.
        for bad in [
            format!("postgres://bob:{pw}@h/db?conect_timeout=3s"),
            format!("postgres://bob:{pw}@h:0/db"),
            format!("postgres://bob:{plain}%zz@h/db"),
            format!("postgres://bob:{pw}@h/db?password={pw}&password={pw}"),
            format!("bob:{pw}@h/db"),
            format!("http://bob:{pw}@h/db"),
        ] {
            let e = Config::parse(&bad).expect_err(&bad);
            renderings.push(format!("{e} {e:?}"));
        }
        let e = c2.set("password", "bad\0pw").expect_err("nul");
        renderings.push(format!("{e} {e:?}"));
        for r in renderings {
            assert!(!r.contains(plain) && !r.contains("S3cr3t"), "leaked: {r}");
        }
    }

    #[test]
    fn display_hides_password_and_keeps_options() {
        let c = Config::parse("mysql://u:secret@[::1]:3307/db?query_timeout=2s").expect("parse");
        assert_eq!(
            c.to_string(),
            "mysql://u:***@[::1]:3307/db?query_timeout=2s"
        );
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn options_table_is_complete() {
        let mut names: Vec<&str> = OPTIONS.iter().map(|s| s.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate option spec");
        // Every option of DESIGN.md's layer table.
        for required in [
            "connect_timeout",
            "dns_timeout",
            "syn_retries",
            "keepalive_idle",
            "keepalive_interval",
            "keepalive_count",
            "tcp_user_timeout",
            "tls_timeout",
            "login_timeout",
            "acquire_timeout",
            "max_open",
            "max_idle",
            "min_idle",
            "max_lifetime",
            "max_idle_time",
            "ping_after",
            "ping_timeout",
            "health_check_period",
            "leak_threshold",
            "query_timeout",
            "read_timeout",
            "write_timeout",
            "cancel_timeout",
            "sslmode",
            "sslrootcert",
            "sslcert",
            "sslkey",
            "application_name",
            "options",
            "statement_cache",
            "dbname",
            "user",
        ] {
            assert!(option_spec(required).is_some(), "{required} missing");
        }
    }
}
