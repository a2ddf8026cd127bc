//! `dialpool doctor URL`: connects step by step, prints each phase with its
//! time and the limit it ran under, reads the server's own limits beside the
//! client's settings, and turns the mismatches into findings with advice.
//! On a failure it names the layer, the phase, the limit, whether it was a
//! timeout, a refusal or a permanent error, and what to check.
//!
//! Exit status: 0 healthy (notes allowed), 1 with findings, 2 when the
//! database cannot be reached (or the URL is invalid).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialpool::config::{fmt_duration, DbKind, SslMode};
use dialpool::{Code, Config, Error, Layer, Session};
use serde_json::{json, Value};

/// The first query's bound when `query_timeout` is off, so the doctor
/// itself never hangs on a server that logs in and then goes silent.
const DOCTOR_QUERY_BOUND: Duration = Duration::from_secs(10);
/// The bound of each read of a server setting.
const SETTING_READ_BOUND: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Failed,
    /// Not needed: an IP address needs no lookup, sslmode=disable no TLS.
    Skipped,
    /// An earlier phase failed.
    NotReached,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::NotReached => "not reached",
        }
    }
}

/// One phase of the connection.
struct Phase {
    name: &'static str,
    status: Status,
    took: Option<Duration>,
    /// The option that bounds this phase and its value (`None`: off).
    limit: (&'static str, Option<Duration>),
    detail: String,
}

/// A server setting as read, with its value in a comparable form.
struct Setting {
    name: &'static str,
    shown: String,
    duration: Option<Duration>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Severity {
    /// Worth knowing; does not make the run unhealthy.
    Info,
    /// Worth changing: exit status 1.
    Warning,
}

/// Something worth changing (or knowing), with a stable id for machines.
struct Finding {
    id: &'static str,
    severity: Severity,
    message: String,
    advice: String,
}

impl Finding {
    fn warning(id: &'static str, message: String, advice: impl Into<String>) -> Finding {
        Finding {
            id,
            severity: Severity::Warning,
            message,
            advice: advice.into(),
        }
    }
    fn info(id: &'static str, message: String, advice: impl Into<String>) -> Finding {
        Finding {
            id,
            severity: Severity::Info,
            message,
            advice: advice.into(),
        }
    }
}

pub struct Report {
    url: String,
    database: &'static str,
    phases: Vec<Phase>,
    server: Vec<Setting>,
    server_version: String,
    client: Vec<(&'static str, String)>,
    findings: Vec<Finding>,
    failure: Option<Failure>,
}

/// Why the database could not be reached, and in which phase.
struct Failure {
    error: Error,
    phase: Option<&'static str>,
    /// The limit the failed phase ran under, for errors where none fired.
    ran_under: Option<(&'static str, Option<Duration>)>,
}

fn limit_text(limit: (&str, Option<Duration>)) -> String {
    format!("{}={}", limit.0, limit.1.map_or("off".into(), fmt_duration))
}

fn limit_json(limit: (&str, Option<Duration>)) -> Value {
    json!({
        "name": limit.0,
        "value": limit.1.map_or("off".into(), fmt_duration),
        "ms": limit.1.map(|d| d.as_secs_f64() * 1e3),
    })
}

fn ms_json(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_secs_f64() * 1e3))
}

/// Runs the doctor and prints the report; returns the exit status.
pub fn run(url: &str, json: bool) -> u8 {
    let report = match Config::parse(url) {
        Err(e) => Report {
            url: dialpool::config::redact_url(url),
            database: "unknown",
            phases: Vec::new(),
            server: Vec::new(),
            server_version: String::new(),
            client: Vec::new(),
            findings: Vec::new(),
            failure: Some(Failure {
                error: e,
                phase: None,
                ran_under: None,
            }),
        },
        Ok(config) => match dialpool::runtime::block_on(examine(config)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("dialpool doctor: {e}");
                return 2;
            }
        },
    };
    if json {
        // Serialising a Value built here cannot fail; print nothing rather
        // than panic if it ever did.
        if let Ok(text) = serde_json::to_string_pretty(&report.to_json()) {
            println!("{text}");
        }
    } else {
        report.print();
    }
    report.exit_status()
}

/// The phase a connect error belongs to.
fn phase_of(e: &Error) -> Option<&'static str> {
    match e.code() {
        Code::DnsError | Code::DnsTimeout => Some("dns"),
        Code::ConnectTimeout
        | Code::ConnectionRefused
        | Code::NetworkUnreachable
        | Code::NetworkError => Some("tcp"),
        Code::TlsError | Code::TlsTimeout => Some("tls"),
        _ => match e.layer() {
            Layer::Dial => Some("tcp"),
            Layer::Login => Some("login"),
            Layer::Query => Some("query"),
            Layer::Pool | Layer::None => None,
        },
    }
}

async fn examine(config: Config) -> Report {
    let config = Arc::new(config);
    let mut report = Report {
        url: config.to_string(),
        database: match config.kind {
            DbKind::Postgres => "postgresql",
            DbKind::Mysql => "mysql",
            DbKind::Tcp => "tcp",
        },
        phases: Vec::new(),
        server: Vec::new(),
        server_version: String::new(),
        client: client_settings(&config),
        findings: Vec::new(),
        failure: None,
    };
    client_findings(&config, &mut report.findings);
    if config.kind == DbKind::Tcp {
        report.failure = Some(Failure {
            error: Error::invalid_argument(
                "the doctor examines database URLs (postgres://, mysql://); tcp:// has no server to ask",
            ),
            phase: None,
            ran_under: None,
        });
        return report;
    }
    let dial = &config.dial;
    let first = &config.hosts[0];
    let mut phases = vec![
        Phase {
            name: "dns",
            status: Status::Ok,
            took: None,
            limit: ("dns_timeout", dial.dns_timeout),
            detail: first.host.clone(),
        },
        Phase {
            name: "tcp",
            status: Status::Ok,
            took: None,
            limit: ("connect_timeout", dial.connect_timeout),
            detail: first.to_string(),
        },
        Phase {
            name: "tls",
            status: Status::Ok,
            took: None,
            limit: ("tls_timeout", dial.tls_timeout),
            detail: format!("sslmode={}", dial.tls.sslmode.name()),
        },
        Phase {
            name: "login",
            status: Status::Ok,
            took: None,
            limit: ("login_timeout", config.login_timeout),
            detail: String::new(),
        },
        Phase {
            name: "query",
            status: Status::Ok,
            took: None,
            limit: ("query_timeout", config.query.query_timeout),
            detail: "SELECT 1".into(),
        },
    ];
    let start = Instant::now();
    let session = Session::connect(config.clone(), &dialpool::Ctx::none()).await;
    let total = start.elapsed();
    let timings = match &session {
        Ok(s) => s.timings(),
        Err(e) => e.phases().copied().unwrap_or_default(),
    };
    phases[0].took = timings.dns;
    phases[1].took = timings.connect;
    phases[2].took = timings.tls;
    if timings.dns.is_none() && first.host.parse::<IpAddr>().is_ok() {
        phases[0].status = Status::Skipped;
        phases[0].detail = "IP address, no lookup".into();
    }
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            let failed = phase_of(&e);
            let mut reached = true;
            for p in &mut phases {
                if Some(p.name) == failed {
                    p.status = Status::Failed;
                    // The error's own time is the failed step's; a phase
                    // timing, when the dialer kept one, is the same step.
                    p.took = p.took.or(e.elapsed()).or_else(|| {
                        // A refused login carries no time of its own: what
                        // the connect spent after dialing.
                        (p.name == "login").then(|| {
                            total.saturating_sub(
                                timings.dns.unwrap_or_default()
                                    + timings.connect.unwrap_or_default()
                                    + timings.tls.unwrap_or_default(),
                            )
                        })
                    });
                    reached = false;
                } else if !reached {
                    p.status = Status::NotReached;
                    p.took = None;
                } else if p.name == "tls" && p.took.is_none() {
                    // Passed without a handshake: sslmode or the server
                    // left TLS out.
                    p.status = Status::Skipped;
                    p.detail = format!("not used (sslmode={})", dial.tls.sslmode.name());
                }
            }
            let ran_under = phases
                .iter()
                .find(|p| p.status == Status::Failed)
                .map(|p| p.limit);
            report.phases = phases;
            report.failure = Some(Failure {
                error: e,
                phase: failed,
                ran_under,
            });
            return report;
        }
    };
    if !session.is_tls() {
        phases[2].status = Status::Skipped;
        phases[2].detail = format!("not used (sslmode={})", dial.tls.sslmode.name());
    }
    phases[1].detail = session.peer().to_string();
    let dialed = timings.dns.unwrap_or_default()
        + timings.connect.unwrap_or_default()
        + timings.tls.unwrap_or_default();
    phases[3].took = Some(total.saturating_sub(dialed));
    phases[3].detail = match session.as_postgres() {
        Some(pg) => format!("{} as {}", pg.auth_method(), pg.user()),
        None => format!("as {}", session.user()),
    };
    let ctx = match config.query.query_timeout {
        Some(_) => dialpool::Ctx::none(),
        None => dialpool::Ctx::timeout(DOCTOR_QUERY_BOUND),
    };
    let q = Instant::now();
    match session.query("SELECT 1", &[], &ctx).await {
        Ok(_) => phases[4].took = Some(q.elapsed()),
        Err(e) => {
            phases[4].status = Status::Failed;
            phases[4].took = Some(q.elapsed());
            let ran_under = Some(phases[4].limit);
            report.phases = phases;
            report.failure = Some(Failure {
                error: e,
                phase: Some("query"),
                ran_under,
            });
            return report;
        }
    }
    report.phases = phases;
    report.server_version = session.server_version();
    read_server_limits(&mut session, config.kind, &mut report.server).await;
    server_findings(&config, session.is_tls(), config.kind, &mut report);
    session.close().await;
    report
}

/// The server's own limits, each with its value as a duration when it is one.
async fn read_server_limits(session: &mut Session, kind: DbKind, out: &mut Vec<Setting>) {
    let ctx = dialpool::Ctx::timeout(SETTING_READ_BOUND);
    if kind == DbKind::Postgres {
        let names = [
            "idle_session_timeout",
            "idle_in_transaction_session_timeout",
            "statement_timeout",
            "tcp_keepalives_idle",
            "tcp_keepalives_interval",
            "tcp_keepalives_count",
            "tcp_user_timeout",
            "max_connections",
            "ssl",
        ];
        for name in names {
            let Ok(r) = session
                .query(
                    "SELECT setting, unit FROM pg_settings WHERE name = $1",
                    &[Some(name)],
                    &ctx,
                )
                .await
            else {
                continue;
            };
            if r.row_count() == 0 {
                continue;
            }
            let setting = r.get(0, 0).unwrap_or("").to_string();
            let duration =
                setting
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| match r.get(0, 1).unwrap_or("") {
                        "ms" => Some(Duration::from_millis(n)),
                        "s" => Some(Duration::from_secs(n)),
                        "min" => Some(Duration::from_secs(n.saturating_mul(60))),
                        _ => None,
                    });
            out.push(setting_of(name, setting, duration));
        }
    } else {
        // The session's values: what applies to this connection (a
        // non-interactive client gets the global wait_timeout). MySQL keeps
        // these in seconds, max_execution_time in milliseconds; MariaDB's
        // statement limit is max_statement_time, in seconds.
        let names: [(&'static str, Option<f64>); 8] = [
            ("wait_timeout", Some(1.0)),
            ("interactive_timeout", Some(1.0)),
            ("net_read_timeout", Some(1.0)),
            ("net_write_timeout", Some(1.0)),
            ("max_execution_time", Some(0.001)),
            ("max_statement_time", Some(1.0)),
            ("max_connections", None),
            ("have_ssl", None),
        ];
        for (name, unit) in names {
            let Ok(r) = session
                .query(
                    "SHOW SESSION VARIABLES WHERE Variable_name = ?",
                    &[Some(name)],
                    &ctx,
                )
                .await
            else {
                continue;
            };
            if r.row_count() == 0 {
                continue;
            }
            let setting = r.get(0, 1).unwrap_or("").to_string();
            let duration = unit.and_then(|scale| {
                setting
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e12)
                    .map(|v| Duration::from_secs_f64(v * scale))
            });
            out.push(setting_of(name, setting, duration));
        }
    }
}

fn setting_of(name: &'static str, setting: String, duration: Option<Duration>) -> Setting {
    let shown = match duration {
        Some(d) if d.is_zero() => "0 (off)".to_string(),
        Some(d) => fmt_duration(d),
        None => setting,
    };
    Setting {
        name,
        shown,
        duration,
    }
}

fn client_settings(c: &Config) -> Vec<(&'static str, String)> {
    let d = |v: Option<Duration>| v.map_or("off".to_string(), fmt_duration);
    vec![
        ("dns_timeout", d(c.dial.dns_timeout)),
        ("connect_timeout", d(c.dial.connect_timeout)),
        ("tls_timeout", d(c.dial.tls_timeout)),
        ("login_timeout", d(c.login_timeout)),
        ("acquire_timeout", d(c.pool.acquire_timeout)),
        ("query_timeout", d(c.query.query_timeout)),
        ("cancel_timeout", d(c.query.cancel_timeout)),
        ("max_open", c.pool.max_open.to_string()),
        ("max_lifetime", d(c.pool.max_lifetime)),
        ("max_idle_time", d(c.pool.max_idle_time)),
        ("ping_after", fmt_duration(c.pool.ping_after)),
        ("keepalive_idle", d(c.dial.keepalive.idle)),
        (
            "keepalive_interval",
            fmt_duration(c.dial.keepalive.interval),
        ),
        ("keepalive_count", c.dial.keepalive.count.to_string()),
        ("tcp_user_timeout", d(c.dial.tcp_user_timeout)),
        ("sslmode", c.dial.tls.sslmode.name().to_string()),
    ]
}

fn client_findings(c: &Config, out: &mut Vec<Finding>) {
    if c.dial.keepalive.idle.is_none() {
        out.push(Finding::warning(
            "keepalive_off",
            "TCP keepalive is off (keepalive_idle=0): a silently dead idle connection is found only when it is next used".into(),
            "set keepalive_idle=15s (the default)",
        ));
    }
    if c.dial.tcp_user_timeout.is_none() {
        out.push(Finding::warning(
            "no_tcp_user_timeout",
            "no tcp_user_timeout: a write to a black-holed peer is retransmitted for ~15 minutes before the kernel gives up".into(),
            "set tcp_user_timeout=30s (the default)",
        ));
    }
    if c.pool.acquire_timeout.is_none() {
        out.push(Finding::warning(
            "acquire_timeout_off",
            "acquire_timeout=0: callers wait for a pooled connection without end".into(),
            "set acquire_timeout, e.g. 5s (the default)",
        ));
    }
    if let (Some(connect), Some(acquire)) = (c.dial.connect_timeout, c.pool.acquire_timeout) {
        if connect > acquire {
            out.push(Finding::warning(
                "connect_timeout_above_acquire_timeout",
                format!(
                    "connect_timeout={} is longer than the acquire_timeout={} a waiter runs under: the waiter gets ACQUIRE_TIMEOUT before a hanging connect can fail with its own error",
                    fmt_duration(connect),
                    fmt_duration(acquire)
                ),
                format!("lower connect_timeout below {}", fmt_duration(acquire)),
            ));
        }
    }
    if let (Some(login), Some(acquire)) = (c.login_timeout, c.pool.acquire_timeout) {
        if login > acquire.saturating_mul(4) {
            out.push(Finding::info(
                "login_timeout_far_above_acquire_timeout",
                format!(
                    "login_timeout={} is far above acquire_timeout={}: waiters time out long before a stuck login is abandoned",
                    fmt_duration(login),
                    fmt_duration(acquire)
                ),
                "fine if logins are slow on purpose; otherwise lower login_timeout",
            ));
        }
    }
}

fn server_findings(c: &Config, tls: bool, kind: DbKind, report: &mut Report) {
    let get = |name: &str| {
        report
            .server
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.duration)
            .filter(|d| !d.is_zero())
    };
    let mut add = Vec::new();
    let idle_cut_name = if kind == DbKind::Postgres {
        "idle_session_timeout"
    } else {
        "wait_timeout"
    };
    if let Some(cut) = get(idle_cut_name) {
        let idle = c.pool.max_idle_time;
        if idle.is_none_or(|v| v >= cut) {
            // max_lifetime matters only because max_idle_time does not
            // retire the connection first; name it then too.
            let lifetime = c
                .pool
                .max_lifetime
                .filter(|l| *l >= cut)
                .map(|l| format!(" (and max_lifetime={})", fmt_duration(l)))
                .unwrap_or_default();
            let margin = (cut / 10).min(Duration::from_secs(5));
            add.push(Finding::warning(
                "max_idle_time_above_server_idle_cut",
                format!(
                    "max_idle_time={}{lifetime} is not below the server's {idle_cut_name}={}: the server closes an idle session before the pool retires it (the pool lowers max_idle_time to {} on its own once it has read the cut, and reports the adjustment)",
                    idle.map_or("off".into(), fmt_duration),
                    fmt_duration(cut),
                    fmt_duration(cut - margin)
                ),
                format!(
                    "set max_idle_time={} or lower, so the URL says what the pool does",
                    fmt_duration(cut - margin)
                ),
            ));
        }
    }
    if let Some(cut) = get("idle_in_transaction_session_timeout") {
        add.push(Finding::info(
            "server_idle_in_transaction_cut",
            format!(
                "the server ends sessions idle inside a transaction after {}",
                fmt_duration(cut)
            ),
            "hold no connection in an open transaction longer; leak_threshold can warn",
        ));
    }
    let server_statement_limit = [
        "statement_timeout",
        "max_execution_time",
        "max_statement_time",
    ]
    .into_iter()
    .find_map(|name| get(name).map(|d| (name, d)));
    match (server_statement_limit, c.query.query_timeout) {
        (None, None) => add.push(Finding::info(
            "statements_unlimited",
            "neither the server nor query_timeout limits statements: only callers' deadlines do"
                .into(),
            "set query_timeout for a default bound",
        )),
        (Some((name, server)), query) if query.is_none_or(|q| q >= server) => {
            let ours = match query {
                Some(q) => format!("before query_timeout={} does", fmt_duration(q)),
                None => "while query_timeout is off".into(),
            };
            add.push(Finding::warning(
                "query_timeout_not_below_server_statement_limit",
                format!(
                    "the server's {name}={} ends statements {ours}: callers get the server's error (SERVER_ERROR) instead of QUERY_TIMEOUT with the limit named",
                    fmt_duration(server),
                ),
                format!("set query_timeout below {}", fmt_duration(server)),
            ))
        }
        _ => {}
    }
    if !tls {
        add.push(Finding::warning(
            "tls_off",
            format!(
                "the connection is not encrypted (sslmode={})",
                c.dial.tls.sslmode.name()
            ),
            "use sslmode=verify-full with sslrootcert",
        ));
    } else if !matches!(c.dial.tls.sslmode, SslMode::VerifyFull) {
        add.push(Finding::warning(
            "tls_unverified",
            format!(
                "TLS is on but the server's identity is not fully verified (sslmode={})",
                c.dial.tls.sslmode.name()
            ),
            "use sslmode=verify-full (with sslrootcert for a private CA)",
        ));
    }
    if let Some(max) = report
        .server
        .iter()
        .find(|s| s.name == "max_connections")
        .and_then(|s| s.shown.parse::<u32>().ok())
    {
        if c.pool.max_open >= max {
            add.push(Finding::warning(
                "max_open_reaches_max_connections",
                format!(
                    "max_open={} reaches the server's max_connections={}: one pool can exhaust the server",
                    c.pool.max_open, max
                ),
                "lower max_open, leaving room for other clients and the admin",
            ));
        }
    }
    report.findings.extend(add);
}

fn ms_text(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

impl Failure {
    /// timeout, refusal, unreachable, permanent or transient.
    fn kind(&self) -> &'static str {
        let e = &self.error;
        if e.is_timeout() {
            "timeout"
        } else if e.code() == Code::ConnectionRefused {
            "refusal"
        } else if e.code() == Code::NetworkUnreachable {
            "unreachable"
        } else if e.is_retryable() {
            "transient"
        } else {
            "permanent"
        }
    }

    fn kind_text(&self) -> String {
        match self.kind() {
            "timeout" => format!(
                "a timeout: {} fired",
                self.error
                    .limit_value()
                    .map(|l| format!("{}={}", l.name, fmt_duration(l.value)))
                    .unwrap_or_else(|| "a limit".into())
            ),
            "refusal" => "a refusal: the host answered, but nothing listens on that port".into(),
            "unreachable" => "unreachable: this machine has no route to that network".into(),
            "transient" => "a failure that may pass on retry".into(),
            _ => "a permanent error: retrying will not help until it is fixed".into(),
        }
    }

    fn limit_line(&self) -> String {
        match (self.error.limit_value(), self.ran_under) {
            (Some(l), _) => format!(
                "{}={} fired after {}",
                l.name,
                fmt_duration(l.value),
                ms_text(self.error.elapsed())
            ),
            (None, Some(under)) => format!(
                "none fired (the {} phase ran under {})",
                self.phase.unwrap_or("failed"),
                limit_text(under)
            ),
            (None, None) => "none".into(),
        }
    }
}

impl Report {
    fn warnings(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count()
    }

    fn exit_status(&self) -> u8 {
        if self.failure.is_some() {
            2
        } else if self.warnings() > 0 {
            1
        } else {
            0
        }
    }

    fn status(&self) -> &'static str {
        match self.exit_status() {
            0 => "healthy",
            1 => "findings",
            _ => "unreachable",
        }
    }

    fn print(&self) {
        println!("dialpool doctor {}", self.url);
        println!();
        for p in &self.phases {
            let took = match p.status {
                Status::Ok | Status::Failed => ms_text(p.took),
                Status::Skipped | Status::NotReached => "-".into(),
            };
            let detail = match p.status {
                Status::Ok | Status::Skipped => p.detail.clone(),
                Status::Failed => "FAILED".into(),
                Status::NotReached => "not reached".into(),
            };
            println!(
                "  {:<6} {:>10}   {:<26} {}",
                p.name,
                took,
                format!("({})", limit_text(p.limit)),
                detail
            );
        }
        if let Some(f) = &self.failure {
            let e = &f.error;
            println!();
            match f.phase {
                Some(phase) => println!(
                    "FAILED in the {} layer ({phase} phase): {}",
                    e.layer(),
                    e.code()
                ),
                None => println!("FAILED: {}", e.code()),
            }
            println!("  {e}");
            println!("  limit: {}", f.limit_line());
            println!("  this is {}", f.kind_text());
            if let Some(h) = e.hint() {
                println!("  check: {h}");
            }
        } else {
            println!();
            println!("server: {}", self.server_version);
            for s in &self.server {
                println!("  {:<38} {}", s.name, s.shown);
            }
        }
        // The whole client table only beside the server's; after a failure
        // the findings below still name the client settings that matter.
        if self.failure.is_none() {
            println!();
            println!("client:");
            for (k, v) in &self.client {
                println!("  {k:<38} {v}");
            }
        }
        for (severity, title) in [(Severity::Warning, "findings"), (Severity::Info, "notes")] {
            let of: Vec<&Finding> = self
                .findings
                .iter()
                .filter(|f| f.severity == severity)
                .collect();
            if of.is_empty() {
                continue;
            }
            println!();
            println!("{title}:");
            for f in of {
                println!("  [{}] {}", f.id, f.message);
                println!("      → {}", f.advice);
            }
        }
        println!();
        match self.exit_status() {
            0 => println!("healthy"),
            1 => println!(
                "{} finding{} (exit status 1)",
                self.warnings(),
                if self.warnings() == 1 { "" } else { "s" }
            ),
            _ => println!("the database cannot be reached (exit status 2)"),
        }
    }

    fn to_json(&self) -> Value {
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "status": p.status.name(),
                    "ms": match p.status {
                        Status::Ok | Status::Failed => ms_json(p.took),
                        Status::Skipped | Status::NotReached => Value::Null,
                    },
                    "limit": limit_json(p.limit),
                    "detail": p.detail,
                })
            })
            .collect();
        let settings: serde_json::Map<String, Value> = self
            .server
            .iter()
            .map(|s| {
                (
                    s.name.to_string(),
                    json!({
                        "value": s.shown,
                        "seconds": s.duration.map(|d| d.as_secs_f64()),
                    }),
                )
            })
            .collect();
        let client: serde_json::Map<String, Value> = self
            .client
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "id": f.id,
                    "severity": match f.severity {
                        Severity::Warning => "warning",
                        Severity::Info => "info",
                    },
                    "message": f.message,
                    "advice": f.advice,
                })
            })
            .collect();
        let error = self.failure.as_ref().map_or(Value::Null, |f| {
            let e = &f.error;
            json!({
                "code": format!("DP_{}", e.code().name()),
                "layer": e.layer().name(),
                "phase": f.phase,
                "kind": f.kind(),
                "limit": e.limit_value().map(|l| limit_json((l.name, Some(l.value)))),
                "ran_under": f.ran_under.map(limit_json),
                "timeout": e.is_timeout(),
                "retryable": e.is_retryable(),
                "elapsed_ms": ms_json(e.elapsed()),
                "sqlstate": e.sqlstate(),
                "message": e.to_string(),
                "check": e.hint(),
            })
        });
        json!({
            "url": self.url,
            "database": self.database,
            "status": self.status(),
            "exit_status": self.exit_status(),
            "healthy": self.exit_status() == 0,
            "phases": phases,
            "server": {
                "version": if self.server_version.is_empty() { Value::Null } else { json!(self.server_version) },
                "settings": settings,
            },
            "client": client,
            "findings": findings,
            "error": error,
        })
    }
}
