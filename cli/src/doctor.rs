//! `dialpool doctor URL`: connects step by step, prints each phase with its
//! time and the limit it ran under, reads the server's own limits beside the
//! client's settings, and turns the mismatches into findings with advice.
//!
//! Exit status: 0 healthy, 1 with findings, 2 when the database cannot be
//! reached (or the URL is invalid).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialpool::config::{fmt_duration, DbKind, SslMode};
use dialpool::{Config, Error, Session};

/// One phase of the connection.
struct Phase {
    name: &'static str,
    took: Option<Duration>,
    limit: String,
    detail: String,
}

/// A server setting as read, with its value in a comparable form.
struct Setting {
    name: &'static str,
    shown: String,
    duration: Option<Duration>,
}

/// Something worth changing.
struct Finding {
    severity: &'static str,
    message: String,
}

pub struct Report {
    url: String,
    phases: Vec<Phase>,
    server: Vec<Setting>,
    server_version: String,
    client: Vec<(&'static str, String)>,
    findings: Vec<Finding>,
    failure: Option<Error>,
}

fn limit(name: &str, value: Option<Duration>) -> String {
    format!("{name}={}", value.map_or("off".into(), fmt_duration))
}

/// Runs the doctor and prints the report; returns the exit status.
pub fn run(url: &str, json: bool) -> u8 {
    let report = match Config::parse(url) {
        Err(e) => Report {
            url: dialpool::config::redact_url(url),
            phases: Vec::new(),
            server: Vec::new(),
            server_version: String::new(),
            client: Vec::new(),
            findings: Vec::new(),
            failure: Some(e),
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
        println!("{}", report.to_json());
    } else {
        report.print();
    }
    if report.failure.is_some() {
        2
    } else if report.findings.iter().any(|f| f.severity != "info") {
        1
    } else {
        0
    }
}

async fn examine(config: Config) -> Report {
    let config = Arc::new(config);
    let mut report = Report {
        url: config.to_string(),
        phases: Vec::new(),
        server: Vec::new(),
        server_version: String::new(),
        client: client_settings(&config),
        findings: Vec::new(),
        failure: None,
    };
    client_findings(&config, &mut report.findings);
    if config.kind == DbKind::Tcp {
        report.failure = Some(Error::invalid_argument(
            "the doctor examines database URLs (postgres://, mysql://); tcp:// has no server to ask",
        ));
        return report;
    }
    let start = Instant::now();
    let session = Session::connect(config.clone(), &dialpool::Ctx::none()).await;
    let total = start.elapsed();
    let dial = &config.dial;
    let timings = match &session {
        Ok(s) => s.timings(),
        Err(e) => e.phases().copied().unwrap_or_default(),
    };
    let first = &config.hosts[0];
    report.phases.push(Phase {
        name: "dns",
        took: timings.dns,
        limit: limit("dns_timeout", dial.dns_timeout),
        detail: if timings.dns.is_some() {
            first.host.clone()
        } else {
            "IP address, no lookup".into()
        },
    });
    report.phases.push(Phase {
        name: "tcp",
        took: timings.connect,
        limit: limit("connect_timeout", dial.connect_timeout),
        detail: match &session {
            Ok(s) => s.peer().to_string(),
            Err(_) => first.to_string(),
        },
    });
    report.phases.push(Phase {
        name: "tls",
        took: timings.tls,
        limit: limit("tls_timeout", dial.tls_timeout),
        detail: match &session {
            Ok(s) if !s.is_tls() => "not used".into(),
            _ => format!("sslmode={}", dial.tls.sslmode.name()),
        },
    });
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            report.failure = Some(e);
            return report;
        }
    };
    let dialed = timings.dns.unwrap_or_default()
        + timings.connect.unwrap_or_default()
        + timings.tls.unwrap_or_default();
    let how = match session.as_postgres() {
        Some(pg) => format!("{} as {}", pg.auth_method(), pg.user()),
        None => format!("as {}", session.user()),
    };
    report.phases.push(Phase {
        name: "login",
        took: Some(total.saturating_sub(dialed)),
        limit: limit("login_timeout", config.login_timeout),
        detail: how,
    });
    let q = Instant::now();
    match session.query("SELECT 1", &[], &dialpool::Ctx::none()).await {
        Ok(_) => report.phases.push(Phase {
            name: "query",
            took: Some(q.elapsed()),
            limit: limit("query_timeout", config.query.query_timeout),
            detail: "SELECT 1".into(),
        }),
        Err(e) => {
            report.failure = Some(e);
            return report;
        }
    }
    report.server_version = session.server_version();
    read_server_limits(&mut session, config.kind, &mut report.server).await;
    server_findings(&config, session.is_tls(), config.kind, &mut report);
    session.close().await;
    report
}

/// The server's own limits, each with its value as a duration when it is one.
async fn read_server_limits(session: &mut Session, kind: DbKind, out: &mut Vec<Setting>) {
    let ctx = dialpool::Ctx::timeout(Duration::from_secs(5));
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
                        "min" => Some(Duration::from_secs(n * 60)),
                        _ => None,
                    });
            out.push(setting_of(name, setting, duration));
        }
    } else {
        // MySQL keeps these in seconds, max_execution_time in milliseconds;
        // MariaDB's statement limit is max_statement_time, in seconds.
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
                    .filter(|v| v.is_finite() && *v >= 0.0)
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
        ("connect_timeout", d(c.dial.connect_timeout)),
        ("tls_timeout", d(c.dial.tls_timeout)),
        ("login_timeout", d(c.login_timeout)),
        ("acquire_timeout", d(c.pool.acquire_timeout)),
        ("query_timeout", d(c.query.query_timeout)),
        ("max_open", c.pool.max_open.to_string()),
        ("max_lifetime", d(c.pool.max_lifetime)),
        ("max_idle_time", d(c.pool.max_idle_time)),
        ("keepalive_idle", d(c.dial.keepalive.idle)),
        ("tcp_user_timeout", d(c.dial.tcp_user_timeout)),
        ("sslmode", c.dial.tls.sslmode.name().to_string()),
    ]
}

fn client_findings(c: &Config, out: &mut Vec<Finding>) {
    let warn = |m: String| Finding {
        severity: "warning",
        message: m,
    };
    if c.dial.keepalive.idle.is_none() {
        out.push(warn("TCP keepalive is off (keepalive_idle=0): a silently dead idle connection is found only when used; set keepalive_idle=15s".into()));
    }
    if c.dial.tcp_user_timeout.is_none() {
        out.push(warn("no tcp_user_timeout: a black-holed peer holds a writer for ~15 minutes of retransmissions; set tcp_user_timeout=30s".into()));
    }
    if let (Some(connect), Some(acquire)) = (c.dial.connect_timeout, c.pool.acquire_timeout) {
        if connect > acquire {
            out.push(warn(format!(
                "connect_timeout={} is longer than the acquire_timeout={} it runs under: a waiter gives up before a connect can fail with its own error; lower connect_timeout",
                fmt_duration(connect),
                fmt_duration(acquire)
            )));
        }
    }
    if let (Some(login), Some(acquire)) = (c.login_timeout, c.pool.acquire_timeout) {
        if login > acquire.saturating_mul(4) {
            out.push(Finding {
                severity: "info",
                message: format!(
                    "login_timeout={} is far above acquire_timeout={}: waiters will time out long before a stuck login is abandoned",
                    fmt_duration(login),
                    fmt_duration(acquire)
                ),
            });
        }
    }
    if c.pool.acquire_timeout.is_none() {
        out.push(warn("acquire_timeout=0: callers wait for a pooled connection without end; set acquire_timeout".into()));
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
        let value = c.pool.max_idle_time;
        if value.is_none_or(|v| v >= cut) {
            add.push(Finding {
                severity: "warning",
                message: format!(
                    "max_idle_time={} is not below the server's {idle_cut_name}={}: the server closes idle sessions first (the pool lowers it to {} on its own and reports it; set it below the cut to make it explicit)",
                    value.map_or("off".into(), fmt_duration),
                    fmt_duration(cut),
                    fmt_duration(cut - (cut / 10).min(Duration::from_secs(5)))
                ),
            });
        }
    }
    if let Some(cut) = get("idle_in_transaction_session_timeout") {
        add.push(Finding {
            severity: "info",
            message: format!(
                "the server ends sessions idle inside a transaction after {}: hold no connection in an open transaction longer (leak_threshold can warn)",
                fmt_duration(cut)
            ),
        });
    }
    let server_statement_limit = get("statement_timeout")
        .or_else(|| get("max_execution_time"))
        .or_else(|| get("max_statement_time"));
    if server_statement_limit.is_none() && c.query.query_timeout.is_none() {
        add.push(Finding {
            severity: "info",
            message:
                "neither the server nor query_timeout limits statements: only callers' deadlines do"
                    .into(),
        });
    }
    if !tls {
        add.push(Finding {
            severity: "warning",
            message: format!(
                "the connection is not encrypted (sslmode={}): use sslmode=verify-full with sslrootcert",
                c.dial.tls.sslmode.name()
            ),
        });
    } else if !matches!(c.dial.tls.sslmode, SslMode::VerifyFull) {
        add.push(Finding {
            severity: "warning",
            message: format!(
                "TLS is on but the server's identity is not fully verified (sslmode={}): use sslmode=verify-full",
                c.dial.tls.sslmode.name()
            ),
        });
    }
    if let Some(max) = report
        .server
        .iter()
        .find(|s| s.name == "max_connections")
        .and_then(|s| s.shown.parse::<u32>().ok())
    {
        if c.pool.max_open >= max {
            add.push(Finding {
                severity: "warning",
                message: format!(
                    "max_open={} reaches the server's max_connections={}: one pool can exhaust the server",
                    c.pool.max_open, max
                ),
            });
        }
    }
    report.findings.extend(add);
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

impl Report {
    fn print(&self) {
        println!("dialpool doctor {}", self.url);
        println!();
        for p in &self.phases {
            println!(
                "  {:<6} {:>10}   {:<26} {}",
                p.name,
                ms(p.took),
                format!("({})", p.limit),
                p.detail
            );
        }
        if let Some(e) = &self.failure {
            println!();
            println!("FAILED in the {} layer: {}", e.layer(), e.code());
            println!("  {e}");
            let kind = if e.is_timeout() {
                format!(
                    "a timeout ({} fired)",
                    e.limit_value()
                        .map(|l| format!("{}={}", l.name, fmt_duration(l.value)))
                        .unwrap_or_else(|| "a limit".into())
                )
            } else if e.code() == dialpool::Code::ConnectionRefused {
                "a refusal: the host answered, nothing listens on that port".into()
            } else if e.is_retryable() {
                "a failure that may pass on retry".into()
            } else {
                "a permanent error: retrying will not help until it is fixed".into()
            };
            println!("  this is {kind}");
            if let Some(h) = e.hint() {
                println!("  check: {h}");
            }
            return;
        }
        println!();
        println!("server: {}", self.server_version);
        for s in &self.server {
            println!("  {:<38} {}", s.name, s.shown);
        }
        println!();
        println!("client:");
        for (k, v) in &self.client {
            println!("  {k:<38} {v}");
        }
        println!();
        if self.findings.is_empty() {
            println!("no findings: healthy");
        } else {
            println!("findings:");
            for f in &self.findings {
                println!("  [{}] {}", f.severity, f.message);
            }
        }
    }

    fn to_json(&self) -> String {
        let mut j = Json::default();
        j.open('{');
        j.key("url").string(&self.url);
        j.key("healthy").raw(
            if self.failure.is_none() && self.findings.iter().all(|f| f.severity == "info") {
                "true"
            } else {
                "false"
            },
        );
        j.key("phases").open('[');
        for p in &self.phases {
            j.open('{');
            j.key("name").string(p.name);
            j.key("ms");
            match p.took {
                Some(d) => j.raw(&format!("{:.3}", d.as_secs_f64() * 1e3)),
                None => j.raw("null"),
            };
            j.key("limit").string(&p.limit);
            j.key("detail").string(&p.detail);
            j.close('}');
        }
        j.close(']');
        j.key("server").open('{');
        j.key("version").string(&self.server_version);
        for s in &self.server {
            j.key(s.name).string(&s.shown);
        }
        j.close('}');
        j.key("client").open('{');
        for (k, v) in &self.client {
            j.key(k).string(v);
        }
        j.close('}');
        j.key("findings").open('[');
        for f in &self.findings {
            j.open('{');
            j.key("severity").string(f.severity);
            j.key("message").string(&f.message);
            j.close('}');
        }
        j.close(']');
        j.key("error");
        match &self.failure {
            None => {
                j.raw("null");
            }
            Some(e) => {
                j.open('{');
                j.key("code").string(&format!("DP_{}", e.code().name()));
                j.key("layer").string(e.layer().name());
                j.key("limit");
                match e.limit() {
                    Some(l) => j.string(l),
                    None => j.raw("null"),
                };
                j.key("timeout")
                    .raw(if e.is_timeout() { "true" } else { "false" });
                j.key("retryable")
                    .raw(if e.is_retryable() { "true" } else { "false" });
                j.key("message").string(&e.to_string());
                j.close('}');
            }
        }
        j.close('}');
        j.out
    }
}

/// A minimal JSON writer: the report is small and flat, and a dependency
/// for it would be heavier than these lines.
#[derive(Default)]
struct Json {
    out: String,
    need_comma: bool,
}

impl Json {
    fn sep(&mut self) {
        if self.need_comma {
            self.out.push(',');
        }
    }
    fn open(&mut self, c: char) -> &mut Self {
        self.sep();
        self.out.push(c);
        self.need_comma = false;
        self
    }
    fn close(&mut self, c: char) -> &mut Self {
        self.out.push(c);
        self.need_comma = true;
        self
    }
    fn key(&mut self, k: &str) -> &mut Self {
        self.sep();
        self.push_str(k);
        self.out.push(':');
        self.need_comma = false;
        self
    }
    fn string(&mut self, s: &str) -> &mut Self {
        self.sep();
        self.push_str(s);
        self.need_comma = true;
        self
    }
    fn raw(&mut self, s: &str) -> &mut Self {
        self.sep();
        self.out.push_str(s);
        self.need_comma = true;
        self
    }
    fn push_str(&mut self, s: &str) {
        self.out.push('"');
        for ch in s.chars() {
            match ch {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                c if (c as u32) < 0x20 => self.out.push_str(&format!("\\u{:04x}", c as u32)),
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}
