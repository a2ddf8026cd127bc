//! `dialpool doctor` as a user runs it — the built binary — against the
//! throwaway servers and the real fault fixtures: healthy is exit 0, a
//! server limit below the client's is a finding and exit 1, every fault is
//! exit 2 with the layer, phase, limit and kind named, in the text output
//! and field by field in `--json`.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{dialpool, Run};
use dialpool_testkit::{fault, netns, MariaDbOptions, MariaDbServer, SharedServer};
use serde_json::Value;

/// A doctor run never needs longer; past it the run is killed.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// Allowed past a limit before the error is late: generous, so a loaded
/// machine never flakes (precision is the benchmarks' job).
const SLACK_MS: f64 = 2000.0;

fn doctor(url: &str) -> Run {
    dialpool(&["doctor", url], RUN_LIMIT)
}

fn doctor_json(url: &str) -> (Run, Value) {
    let run = dialpool(&["doctor", url, "--json"], RUN_LIMIT);
    let doc = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{}", run.output()));
    (run, doc)
}

/// The URL by the name the test certificates carry (`localhost`, no IP SAN),
/// verified against the server's CA: the only TLS setting with no finding.
fn verified(url: &str, ca: &std::path::Path, extra: &str) -> String {
    format!(
        "{}?sslmode=verify-full&sslrootcert={}{extra}",
        url.replacen("@127.0.0.1:", "@localhost:", 1),
        ca.display()
    )
}

fn shared(server: Result<SharedServer, String>) -> (String, std::path::PathBuf) {
    let s = server.expect("throwaway server");
    let ca = s.ca_file.expect("the throwaway servers have TLS");
    (s.url, ca)
}

fn phase<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no phase {name}: {doc:#}"))
}

fn warning_ids(doc: &Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "warning")
        .map(|f| f["id"].as_str().expect("id").to_string())
        .collect()
}

fn finding<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no finding {id}: {doc:#}"))
}

/// What a healthy run must show, for either database.
fn check_healthy(url: &str, settings: &[&str], version: &str, login: &str) {
    let run = doctor(url);
    assert_eq!(run.status, Some(0), "{}", run.output());
    let out = &run.stdout;
    assert!(!out.contains("dp-secret-pw"), "password printed: {out}");
    for (name, limit) in [
        ("dns", "(dns_timeout=5s)"),
        ("tcp", "(connect_timeout=5s)"),
        ("tls", "(tls_timeout=5s)"),
        ("login", "(login_timeout=10s)"),
        ("query", "(query_timeout=30s)"),
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} phase line: {out}"));
        assert!(line.contains(" ms "), "{name} has a time: {line}");
        assert!(line.contains(limit), "{name} names its limit: {line}");
    }
    for s in settings {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(s)),
            "server setting {s} shown: {out}"
        );
    }
    assert!(!out.contains("findings:"), "{out}");
    assert_eq!(out.lines().last(), Some("healthy"), "{out}");

    let (run, doc) = doctor_json(url);
    assert_eq!(run.status, Some(0), "{}", run.output());
    assert_eq!(doc["status"], "healthy", "{doc:#}");
    assert_eq!(doc["exit_status"], 0);
    assert_eq!(doc["healthy"], true);
    assert!(doc["error"].is_null(), "{doc:#}");
    assert!(!doc["url"].as_str().expect("url").contains("dp-secret-pw"));
    let names: Vec<&str> = doc["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["dns", "tcp", "tls", "login", "query"]);
    for (name, limit, ms) in [
        ("dns", "dns_timeout", 5000.0),
        ("tcp", "connect_timeout", 5000.0),
        ("tls", "tls_timeout", 5000.0),
        ("login", "login_timeout", 10000.0),
        ("query", "query_timeout", 30000.0),
    ] {
        let p = phase(&doc, name);
        assert_eq!(p["status"], "ok", "{p:#}");
        let took = p["ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} ms: {p:#}"));
        assert!(took >= 0.0 && took < ms, "{name} took {took} ms");
        assert_eq!(p["limit"]["name"], limit, "{p:#}");
        assert_eq!(p["limit"]["ms"].as_f64(), Some(ms), "{p:#}");
    }
    assert_eq!(phase(&doc, "dns")["detail"], "localhost");
    assert_eq!(phase(&doc, "tls")["detail"], "sslmode=verify-full");
    let login_detail = phase(&doc, "login")["detail"].as_str().expect("detail");
    assert!(login_detail.contains(login), "{login_detail}");
    assert!(
        doc["server"]["version"]
            .as_str()
            .expect("version")
            .contains(version),
        "{doc:#}"
    );
    for s in settings {
        let v = &doc["server"]["settings"][*s];
        assert!(v["value"].is_string(), "setting {s}: {doc:#}");
    }
    assert_eq!(doc["client"]["sslmode"], "verify-full");
    assert_eq!(doc["client"]["query_timeout"], "30s");
    assert_eq!(doc["client"]["keepalive_idle"], "15s");
    assert_eq!(doc["client"]["tcp_user_timeout"], "30s");
    assert_eq!(doc["findings"], Value::Array(Vec::new()), "{doc:#}");
}

#[test]
fn healthy_postgres_is_exit_0() {
    let (url, ca) = shared(dialpool_testkit::shared_pg());
    let url = verified(&url, &ca, "&query_timeout=30s");
    check_healthy(
        &url,
        &[
            "idle_session_timeout",
            "idle_in_transaction_session_timeout",
            "statement_timeout",
            "tcp_keepalives_idle",
            "tcp_keepalives_interval",
            "tcp_keepalives_count",
        ],
        "PostgreSQL",
        "SCRAM-SHA-256",
    );
}

#[test]
fn healthy_mariadb_is_exit_0() {
    let (url, ca) = shared(dialpool_testkit::shared_mariadb());
    let url = verified(&url, &ca, "&query_timeout=30s");
    check_healthy(
        &url,
        &[
            "wait_timeout",
            "interactive_timeout",
            "net_read_timeout",
            "net_write_timeout",
            "max_statement_time",
        ],
        "MariaDB",
        "as dialpool",
    );
}

/// A private MariaDB whose `wait_timeout` (5 s) is below the default
/// `max_idle_time` (10m): the doctor reports it, with the value the pool
/// would lower max_idle_time to, and exit 1; with max_idle_time below the
/// cut the same server is healthy.
#[test]
fn mariadb_wait_timeout_below_max_idle_time_is_a_finding() {
    dialpool_testkit::ensure_installed().expect("packages");
    let server = MariaDbServer::start(MariaDbOptions {
        tls: true,
        settings: vec![("wait_timeout".into(), "5".into())],
    })
    .expect("private MariaDB");
    let ca = server.ca_file().expect("TLS");
    let url = verified(&server.url(), &ca, "&query_timeout=30s");

    let run = doctor(&url);
    assert_eq!(run.status, Some(1), "{}", run.output());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("wait_timeout") && l.trim_end().ends_with(" 5s")),
        "{}",
        run.output()
    );
    assert!(
        run.stdout
            .contains("[max_idle_time_above_server_idle_cut] max_idle_time=10m"),
        "{}",
        run.output()
    );
    assert!(run.stdout.contains("wait_timeout=5s"), "{}", run.output());
    assert_eq!(
        run.stdout.lines().last(),
        Some("1 finding (exit status 1)"),
        "{}",
        run.output()
    );

    let (run, doc) = doctor_json(&url);
    assert_eq!(run.status, Some(1), "{}", run.output());
    assert_eq!(doc["status"], "findings");
    assert_eq!(doc["exit_status"], 1);
    assert_eq!(doc["healthy"], false);
    assert!(doc["error"].is_null());
    assert_eq!(doc["server"]["settings"]["wait_timeout"]["seconds"], 5.0);
    assert_eq!(doc["client"]["max_idle_time"], "10m");
    assert_eq!(
        warning_ids(&doc),
        ["max_idle_time_above_server_idle_cut"],
        "{doc:#}"
    );
    let f = finding(&doc, "max_idle_time_above_server_idle_cut");
    assert_eq!(f["severity"], "warning");
    let message = f["message"].as_str().expect("message");
    assert!(message.contains("max_idle_time=10m"), "{message}");
    assert!(message.contains("wait_timeout=5s"), "{message}");
    // The pool's own margin: a tenth of the cut, at most 5 s.
    assert!(message.contains("4.5s"), "{message}");
    assert!(
        f["advice"]
            .as_str()
            .expect("advice")
            .contains("max_idle_time=4.5s"),
        "{f:#}"
    );

    let fixed = format!("{url}&max_idle_time=4s");
    let (run, doc) = doctor_json(&fixed);
    assert_eq!(run.status, Some(0), "{}", run.output());
    assert_eq!(doc["findings"], Value::Array(Vec::new()), "{doc:#}");
}

/// The same finding on PostgreSQL, whose `idle_session_timeout` a session
/// can set for itself through the URL's `options`.
#[test]
fn postgres_idle_session_timeout_below_max_idle_time_is_a_finding() {
    let (url, ca) = shared(dialpool_testkit::shared_pg());
    let url = verified(
        &url,
        &ca,
        "&query_timeout=30s&options=-c%20idle_session_timeout%3D3s",
    );
    let (run, doc) = doctor_json(&url);
    assert_eq!(run.status, Some(1), "{}", run.output());
    assert_eq!(
        doc["server"]["settings"]["idle_session_timeout"]["seconds"],
        3.0
    );
    assert_eq!(
        warning_ids(&doc),
        ["max_idle_time_above_server_idle_cut"],
        "{doc:#}"
    );
    let message = finding(&doc, "max_idle_time_above_server_idle_cut")["message"]
        .as_str()
        .expect("message");
    assert!(message.contains("idle_session_timeout=3s"), "{message}");
    let (run, _) = doctor_json(&format!("{url}&max_idle_time=2s"));
    assert_eq!(run.status, Some(0), "{}", run.output());
}

/// Client settings the issue names: keepalive off, no tcp_user_timeout, a
/// connect_timeout longer than acquire_timeout, TLS not verified; and a
/// server statement limit that fires before query_timeout.
#[test]
fn risky_client_settings_are_findings() {
    let (url, _) = shared(dialpool_testkit::shared_pg());
    let url = format!(
        "{url}?sslmode=require&keepalive_idle=0&tcp_user_timeout=0&connect_timeout=10s&acquire_timeout=2s\
         &query_timeout=30s&options=-c%20statement_timeout%3D20s"
    );
    let (run, doc) = doctor_json(&url);
    assert_eq!(run.status, Some(1), "{}", run.output());
    let mut ids = warning_ids(&doc);
    ids.sort();
    assert_eq!(
        ids,
        [
            "connect_timeout_above_acquire_timeout",
            "keepalive_off",
            "no_tcp_user_timeout",
            "query_timeout_not_below_server_statement_limit",
            "tls_unverified",
        ],
        "{doc:#}"
    );
    for f in doc["findings"].as_array().expect("findings") {
        assert!(
            !f["advice"].as_str().expect("advice").is_empty(),
            "advice for {f:#}"
        );
    }
    let connect = finding(&doc, "connect_timeout_above_acquire_timeout")["message"]
        .as_str()
        .expect("message");
    assert!(
        connect.contains("connect_timeout=10s") && connect.contains("acquire_timeout=2s"),
        "{connect}"
    );
    let text = doctor(&url);
    assert_eq!(text.status, Some(1), "{}", text.output());
    assert!(text.stdout.contains("findings:"), "{}", text.output());
    assert!(
        text.stdout.contains("      → "),
        "advice lines: {}",
        text.output()
    );

    let plain = format!(
        "{}?sslmode=disable&query_timeout=30s",
        url.split('?').next().unwrap_or("")
    );
    let (run, doc) = doctor_json(&plain);
    assert_eq!(run.status, Some(1), "{}", run.output());
    assert_eq!(warning_ids(&doc), ["tls_off"], "{doc:#}");
}

/// What an unreachable database must show.
struct Unreachable<'a> {
    code: &'a str,
    layer: &'a str,
    phase: &'a str,
    /// timeout, refusal, unreachable, permanent.
    kind: &'a str,
    /// The limit that fires (name, ms) for a timeout.
    fired: Option<(&'a str, &'a str, f64)>,
    /// The limit the failed phase ran under.
    ran_under: &'a str,
}

fn check_unreachable(url: &str, want: Unreachable) {
    const PHASES: [&str; 5] = ["dns", "tcp", "tls", "login", "query"];
    let run = doctor(url);
    assert_eq!(run.status, Some(2), "{}", run.output());
    let out = &run.stdout;
    assert!(
        out.contains(&format!(
            "FAILED in the {} layer ({} phase): {}",
            want.layer, want.phase, want.code
        )),
        "{}",
        run.output()
    );
    let limit_line = match want.fired {
        Some((name, value, _)) => format!("  limit: {name}={value} fired after "),
        None => format!(
            "  limit: none fired (the {} phase ran under {}=",
            want.phase, want.ran_under
        ),
    };
    assert!(
        out.contains(&limit_line),
        "{limit_line:?} in {}",
        run.output()
    );
    let kind_line = match want.kind {
        "timeout" => "  this is a timeout: ",
        "refusal" => "  this is a refusal: ",
        "unreachable" => "  this is unreachable: ",
        _ => "  this is a permanent error: ",
    };
    assert!(out.contains(kind_line), "{kind_line:?} in {}", run.output());
    assert!(
        out.contains("\n  check: "),
        "what to check: {}",
        run.output()
    );
    let failed_line = out
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{} ", want.phase)))
        .unwrap_or_else(|| panic!("no {} phase line: {}", want.phase, run.output()));
    assert!(failed_line.ends_with("FAILED"), "{failed_line}");
    assert_eq!(
        out.lines().last(),
        Some("the database cannot be reached (exit status 2)"),
        "{}",
        run.output()
    );

    let (run, doc) = doctor_json(url);
    assert_eq!(run.status, Some(2), "{}", run.output());
    assert_eq!(doc["status"], "unreachable");
    assert_eq!(doc["exit_status"], 2);
    assert_eq!(doc["healthy"], false);
    assert!(doc["server"]["version"].is_null(), "{doc:#}");
    let e = &doc["error"];
    assert_eq!(e["code"], format!("DP_{}", want.code), "{doc:#}");
    assert_eq!(e["layer"], want.layer, "{doc:#}");
    assert_eq!(e["phase"], want.phase, "{doc:#}");
    assert_eq!(e["kind"], want.kind, "{doc:#}");
    assert_eq!(e["timeout"], want.kind == "timeout", "{doc:#}");
    assert_eq!(e["ran_under"]["name"], want.ran_under, "{doc:#}");
    assert!(
        e["message"]
            .as_str()
            .expect("message")
            .starts_with(&format!("{}: ", want.layer)),
        "{doc:#}"
    );
    assert!(e["check"].is_string(), "{doc:#}");
    match want.fired {
        Some((name, value, ms)) => {
            assert_eq!(e["limit"]["name"], name, "{doc:#}");
            assert_eq!(e["limit"]["value"], value, "{doc:#}");
            assert_eq!(e["limit"]["ms"].as_f64(), Some(ms), "{doc:#}");
            let elapsed = e["elapsed_ms"].as_f64().expect("elapsed_ms");
            assert!(elapsed >= ms - 1.0, "fired early: {elapsed} ms: {doc:#}");
            assert!(
                elapsed <= ms + SLACK_MS,
                "fired late: {elapsed} ms: {doc:#}"
            );
            assert!(phase(&doc, want.phase)["ms"].as_f64().is_some(), "{doc:#}");
        }
        None => assert!(e["limit"].is_null(), "{doc:#}"),
    }
    let failed_at = PHASES
        .iter()
        .position(|p| *p == want.phase)
        .expect("known phase");
    for (i, name) in PHASES.iter().enumerate() {
        let status = &phase(&doc, name)["status"];
        if i == failed_at {
            assert_eq!(status, "failed", "{name}: {doc:#}");
        } else if i > failed_at {
            assert_eq!(status, "not reached", "{name}: {doc:#}");
            assert!(phase(&doc, name)["ms"].is_null(), "{name}: {doc:#}");
        } else {
            assert!(status == "ok" || status == "skipped", "{name}: {doc:#}");
        }
    }
}

#[test]
fn refused_port_is_exit_2() {
    check_unreachable(
        &format!("postgres://u:p@{}/db", fault::refused_addr()),
        Unreachable {
            code: "CONNECTION_REFUSED",
            layer: "dial",
            phase: "tcp",
            kind: "refusal",
            fired: None,
            ran_under: "connect_timeout",
        },
    );
}

#[test]
fn syn_black_hole_is_exit_2() {
    let hole = fault::SynBlackHole::new().expect("SYN black hole");
    check_unreachable(
        &format!("postgres://u:p@{}/db?connect_timeout=500ms", hole.addr),
        Unreachable {
            code: "CONNECT_TIMEOUT",
            layer: "dial",
            phase: "tcp",
            kind: "timeout",
            fired: Some(("connect_timeout", "500ms", 500.0)),
            ran_under: "connect_timeout",
        },
    );
}

#[test]
fn silent_peer_stalls_tls_is_exit_2() {
    let peer = fault::SilentPeer::new().expect("silent peer");
    check_unreachable(
        &format!(
            "postgres://u:p@{}/db?sslmode=require&tls_timeout=500ms",
            peer.addr
        ),
        Unreachable {
            code: "TLS_TIMEOUT",
            layer: "dial",
            phase: "tls",
            kind: "timeout",
            fired: Some(("tls_timeout", "500ms", 500.0)),
            ran_under: "tls_timeout",
        },
    );
}

#[test]
fn silent_peer_stalls_login_is_exit_2() {
    let peer = fault::SilentPeer::new().expect("silent peer");
    for scheme in ["postgres", "mysql"] {
        check_unreachable(
            &format!(
                "{scheme}://u:p@{}/db?sslmode=disable&login_timeout=500ms",
                peer.addr
            ),
            Unreachable {
                code: "LOGIN_TIMEOUT",
                layer: "login",
                phase: "login",
                kind: "timeout",
                fired: Some(("login_timeout", "500ms", 500.0)),
                ran_under: "login_timeout",
            },
        );
    }
}

#[test]
fn wrong_password_is_exit_2_and_permanent() {
    let (url, _) = shared(dialpool_testkit::shared_pg());
    let url = format!(
        "{}?sslmode=disable",
        url.replacen(":dp-secret-pw@", ":not-the-password@", 1)
    );
    check_unreachable(
        &url,
        Unreachable {
            code: "AUTH_FAILED",
            layer: "login",
            phase: "login",
            kind: "permanent",
            fired: None,
            ran_under: "login_timeout",
        },
    );
    let (_, doc) = doctor_json(&url);
    assert_eq!(doc["error"]["sqlstate"], "28P01", "{doc:#}");
    assert!(!doc.to_string().contains("not-the-password"), "{doc:#}");
}

#[test]
fn certificate_for_another_name_is_exit_2_and_permanent() {
    let (url, ca) = shared(dialpool_testkit::shared_pg());
    check_unreachable(
        &format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display()),
        Unreachable {
            code: "TLS_ERROR",
            layer: "dial",
            phase: "tls",
            kind: "permanent",
            fired: None,
            ran_under: "tls_timeout",
        },
    );
}

#[test]
fn invalid_url_is_exit_2() {
    let (run, doc) = doctor_json("postgres://db.example.test/app?conect_timeout=1s");
    assert_eq!(run.status, Some(2), "{}", run.output());
    assert_eq!(doc["error"]["code"], "DP_INVALID_ARGUMENT", "{doc:#}");
    assert!(doc["error"]["phase"].is_null(), "{doc:#}");
    assert_eq!(doc["phases"], Value::Array(Vec::new()));
    let run = dialpool(&["doctor"], RUN_LIMIT);
    assert_eq!(run.status, Some(2), "usage: {}", run.output());
}

#[test]
fn nxdomain_is_exit_2_in_the_dns_phase() {
    if !netns::enter(
        "nxdomain_is_exit_2_in_the_dns_phase",
        netns::NetnsSpec {
            resolver: netns::Resolver::NxDomain,
            ..Default::default()
        },
    ) {
        return;
    }
    check_unreachable(
        "postgres://u:p@no-such-db.example.test/db?dns_timeout=3s",
        Unreachable {
            code: "DNS_ERROR",
            layer: "dial",
            phase: "dns",
            kind: "permanent",
            fired: None,
            ran_under: "dns_timeout",
        },
    );
}

#[test]
fn silent_resolver_is_exit_2_with_dns_timeout() {
    if !netns::enter(
        "silent_resolver_is_exit_2_with_dns_timeout",
        netns::NetnsSpec {
            resolver: netns::Resolver::Silent,
            ..Default::default()
        },
    ) {
        return;
    }
    check_unreachable(
        "postgres://u:p@db.example.test/db?dns_timeout=500ms",
        Unreachable {
            code: "DNS_TIMEOUT",
            layer: "dial",
            phase: "dns",
            kind: "timeout",
            fired: Some(("dns_timeout", "500ms", 500.0)),
            ran_under: "dns_timeout",
        },
    );
}

#[test]
fn iptables_drop_is_exit_2_with_connect_timeout() {
    if !netns::enter(
        "iptables_drop_is_exit_2_with_connect_timeout",
        netns::NetnsSpec::default(),
    ) {
        return;
    }
    // Inside the namespace: a real listener, and a DROP rule in front of it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    netns::drop_tcp_port(port).expect("iptables DROP");
    check_unreachable(
        &format!("postgres://u:p@127.0.0.1:{port}/db?connect_timeout=500ms"),
        Unreachable {
            code: "CONNECT_TIMEOUT",
            layer: "dial",
            phase: "tcp",
            kind: "timeout",
            fired: Some(("connect_timeout", "500ms", 500.0)),
            ran_under: "connect_timeout",
        },
    );
}

#[test]
fn loopback_down_is_exit_2_network_unreachable() {
    if !netns::enter(
        "loopback_down_is_exit_2_network_unreachable",
        netns::NetnsSpec {
            loopback_up: false,
            ..Default::default()
        },
    ) {
        return;
    }
    check_unreachable(
        "postgres://u:p@127.0.0.1:5432/db",
        Unreachable {
            code: "NETWORK_UNREACHABLE",
            layer: "dial",
            phase: "tcp",
            kind: "unreachable",
            fired: None,
            ran_under: "connect_timeout",
        },
    );
}
