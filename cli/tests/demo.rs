//! `dialpool demo`, the README's first command, run as CI runs it: its
//! table must show every scenario's layer, code and limit, the measured
//! times around each limit, and the statements cancelled on the server; the
//! `--json` form the same, field by field; the Go `database/sql` contrast
//! when Go is installed; under a minute, leaving nothing behind.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{dialpool, Run};
use serde_json::Value;

/// The demo promises under a minute; past this the run is killed.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// The demo's own promise.
const DEMO_BUDGET_MS: f64 = 60_000.0;
/// Allowed past a limit: generous, so a loaded machine never flakes.
const SLACK_MS: f64 = 2000.0;

/// One scenario as the demo must report it.
struct Want {
    id: &'static str,
    scenario: &'static str,
    layer: &'static str,
    code: &'static str,
    /// The limit that fires: (name, value, ms).
    limit: Option<(&'static str, &'static str, f64)>,
    /// Whether a statement ran and was cancelled on the server.
    cancelled: Option<bool>,
    sqlstate: Option<&'static str>,
    /// A Go database/sql caller gets an error here too.
    go_fails: bool,
}

const WANT: [Want; 8] = [
    Want {
        id: "syn_black_hole",
        scenario: "host never answers SYN",
        layer: "dial",
        code: "CONNECT_TIMEOUT",
        limit: Some(("connect_timeout", "500ms", 500.0)),
        cancelled: None,
        sqlstate: None,
        go_fails: true,
    },
    Want {
        id: "refused_port",
        scenario: "port nobody listens on",
        layer: "dial",
        code: "CONNECTION_REFUSED",
        limit: None,
        cancelled: None,
        sqlstate: None,
        go_fails: true,
    },
    Want {
        id: "stalled_tls",
        scenario: "server stalls TLS",
        layer: "dial",
        code: "TLS_TIMEOUT",
        limit: Some(("tls_timeout", "500ms", 500.0)),
        cancelled: None,
        sqlstate: None,
        go_fails: true,
    },
    Want {
        id: "wrong_certificate_name",
        scenario: "certificate for another name",
        layer: "dial",
        code: "TLS_ERROR",
        limit: None,
        cancelled: None,
        sqlstate: None,
        go_fails: true,
    },
    Want {
        id: "exhausted_pool",
        scenario: "pool exhausted (2 of 2 held)",
        layer: "pool",
        code: "ACQUIRE_TIMEOUT",
        limit: Some(("acquire_timeout", "500ms", 500.0)),
        cancelled: None,
        sqlstate: None,
        go_fails: true,
    },
    Want {
        id: "slow_query_postgres",
        scenario: "slow query, PostgreSQL",
        layer: "query",
        code: "QUERY_TIMEOUT",
        limit: Some(("query_timeout", "1s", 1000.0)),
        cancelled: Some(true),
        sqlstate: Some("57014"),
        go_fails: true,
    },
    Want {
        id: "slow_query_mariadb",
        scenario: "slow query, MariaDB",
        layer: "query",
        code: "QUERY_TIMEOUT",
        limit: Some(("query_timeout", "1s", 1000.0)),
        cancelled: Some(true),
        sqlstate: Some("70100"),
        go_fails: true,
    },
    Want {
        id: "idle_connection_cut",
        scenario: "server cut an idle connection",
        layer: "-",
        code: "OK",
        limit: None,
        cancelled: None,
        sqlstate: None,
        go_fails: false,
    },
];

fn go_installed() -> bool {
    Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Compiles the Go contrast once into a temporary directory, so the Go build
/// cache is warm: the demo's own build then takes a second, and what is
/// tested is the demo, not how fast this machine compiles pgx from cold.
fn warm_go_build_cache() {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("../go");
    let out = std::env::temp_dir().join(format!("dialpool-demo-test-{}", std::process::id()));
    let status = Command::new("go")
        .args(["build", "-buildvcs=false", "-o"])
        .arg(out.join("contrast"))
        .arg("./cmd/contrast")
        .current_dir(&module)
        .env("CGO_ENABLED", "0")
        .status();
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "go build ./cmd/contrast: {status:?}"
    );
}

/// Nothing of the demo run with this pid may be left in the temp dir.
fn assert_cleaned_up(run_pid: u32, run: &Run) {
    let tmp = std::env::temp_dir();
    let leftovers: Vec<String> = std::fs::read_dir(&tmp)
        .expect("temp dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(&format!("dialpool-pg-{run_pid}-"))
                || n.starts_with(&format!("dialpool-mariadb-{run_pid}-"))
                || n == &format!("dialpool-contrast-{run_pid}")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "left in {}: {leftovers:?}\n{}",
        tmp.display(),
        run.output()
    );
}

fn ms_cell(cell: &str) -> f64 {
    cell.trim()
        .strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {cell:?}"))
}

fn check_limit_time(what: &str, measured: f64, limit_ms: f64) {
    assert!(
        measured >= limit_ms - 1.0,
        "{what}: {measured} ms is before the {limit_ms} ms limit"
    );
    assert!(
        measured <= limit_ms + SLACK_MS,
        "{what}: {measured} ms is long past the {limit_ms} ms limit"
    );
}

/// The demo's text, as the README shows it: the table parsed by its
/// columns (separated by at least two spaces), then the callers' errors,
/// then the Go contrast.
#[test]
fn demo_table_and_json() {
    let go = go_installed();
    if go {
        warm_go_build_cache();
    }

    let run = dialpool(&["demo"], RUN_LIMIT);
    assert_eq!(run.status, Some(0), "{}", run.output());
    assert!(!run.stdout.contains("dp-secret-pw"), "{}", run.output());
    assert!(
        run.stderr.contains("servers stopped and removed"),
        "{}",
        run.output()
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines.first().copied().unwrap_or("");
    let columns: Vec<&str> = split_columns(header);
    assert_eq!(
        columns,
        [
            "scenario",
            "layer",
            "code",
            "limit",
            "measured",
            "statement cancelled",
            "server saw"
        ],
        "{}",
        run.output()
    );
    let mut table = HashMap::new();
    for line in lines.iter().skip(2).take_while(|l| !l.is_empty()) {
        let cells = split_columns(line);
        assert_eq!(cells.len(), 7, "{line:?}");
        table.insert(cells[0].to_string(), cells);
    }
    assert_eq!(table.len(), WANT.len(), "{}", run.output());
    for w in &WANT {
        let row = table
            .get(w.scenario)
            .unwrap_or_else(|| panic!("no row for {:?}: {}", w.scenario, run.output()));
        assert_eq!(row[1], w.layer, "{row:?}");
        assert_eq!(row[2], w.code, "{row:?}");
        match w.limit {
            Some((name, value, ms)) => {
                assert_eq!(row[3], format!("{name}={value}"), "{row:?}");
                check_limit_time(w.scenario, ms_cell(row[4]), ms);
            }
            None => assert_eq!(row[3], "-", "{row:?}"),
        }
        match w.cancelled {
            Some(true) => {
                assert!(row[5].starts_with("yes (+"), "{row:?}");
                assert!(row[6].ends_with("statement cancelled"), "{row:?}");
            }
            _ => assert_eq!(row[5], "-", "{row:?}"),
        }
    }
    assert_eq!(
        table["pool exhausted (2 of 2 held)"][6],
        "nothing: no statement was sent"
    );
    assert!(
        table["server cut an idle connection"][6].ends_with("(closed_dead=1)"),
        "{:?}",
        table["server cut an idle connection"]
    );
    let got = run
        .stdout
        .split("\nwhat each caller got:\n")
        .nth(1)
        .expect("the callers' errors");
    for w in &WANT {
        let prefix = if w.code == "OK" {
            format!("  {}: OK in ", w.scenario)
        } else {
            format!("  {}: {}: ", w.scenario, w.layer)
        };
        assert!(
            got.lines().any(|l| l.starts_with(&prefix)),
            "{prefix:?} in {}",
            run.output()
        );
    }
    if go {
        let contrast = run
            .stdout
            .split("\nthe same scenarios through plain Go database/sql (")
            .nth(1)
            .unwrap_or_else(|| panic!("no Go contrast: {}", run.output()));
        for w in &WANT {
            assert!(
                contrast.lines().any(|l| l.starts_with(w.scenario)
                    && (l.contains("pgx/v5 stdlib") || l.contains("go-sql-driver/mysql"))),
                "Go row for {:?}: {}",
                w.scenario,
                run.output()
            );
        }
    } else {
        assert!(
            run.stdout
                .contains("Go database/sql contrast not shown: Go is not installed"),
            "{}",
            run.output()
        );
    }
    assert_cleaned_up(run.pid, &run);

    // The same run for machines.
    let run = dialpool(&["demo", "--json"], RUN_LIMIT);
    assert_eq!(run.status, Some(0), "{}", run.output());
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{}", run.output()));
    let took = doc["took_ms"].as_f64().expect("took_ms");
    assert!(took < DEMO_BUDGET_MS, "the demo took {took} ms");
    assert!(doc["servers"]["postgresql"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    assert!(doc["servers"]["mariadb"]
        .as_str()
        .is_some_and(|v| v.contains("MariaDB")));
    let scenarios = doc["scenarios"].as_array().expect("scenarios");
    let ids: Vec<&str> = scenarios
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, WANT.map(|w| w.id), "{doc:#}");
    for (s, w) in scenarios.iter().zip(&WANT) {
        assert_eq!(s["scenario"], w.scenario, "{s:#}");
        assert_eq!(s["code"], format!("DP_{}", w.code), "{s:#}");
        let measured = s["measured_ms"].as_f64().expect("measured_ms");
        if w.code == "OK" {
            assert!(s["layer"].is_null(), "{s:#}");
            assert!(s["message"].is_null(), "{s:#}");
            assert!(s["ok"].as_str().is_some_and(|t| t.starts_with("OK in ")));
        } else {
            assert_eq!(s["layer"], w.layer, "{s:#}");
            let message = s["message"].as_str().expect("message");
            assert!(message.starts_with(&format!("{}: ", w.layer)), "{s:#}");
        }
        match w.limit {
            Some((name, value, ms)) => {
                assert_eq!(s["limit"]["name"], name, "{s:#}");
                assert_eq!(s["limit"]["value"], value, "{s:#}");
                assert_eq!(s["limit"]["ms"].as_f64(), Some(ms), "{s:#}");
                check_limit_time(w.id, measured, ms);
            }
            None => assert!(s["limit"].is_null(), "{s:#}"),
        }
        assert_eq!(s["sqlstate"].as_str(), w.sqlstate, "{s:#}");
        assert_eq!(s["statement_cancelled"].as_bool(), w.cancelled, "{s:#}");
        if w.cancelled == Some(true) {
            // dialpool returns once the server has stopped the statement:
            // the first look after the error already finds it stopped.
            let after = s["stopped_after_ms"].as_f64().expect("stopped_after_ms");
            assert!(after < 500.0, "stopped {after} ms after the error: {s:#}");
        }
        let go_row = &s["go"];
        if !go {
            assert!(go_row.is_null(), "{s:#}");
            continue;
        }
        assert!(go_row["setup_error"].is_null(), "Go could not run: {s:#}");
        assert!(go_row["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{s:#}");
        assert_eq!(go_row["error"].is_string(), w.go_fails, "{s:#}");
        if w.cancelled.is_some() {
            assert!(go_row["statement_cancelled"].is_boolean(), "{s:#}");
        }
    }
    if go {
        assert_eq!(doc["go"]["available"], true, "{doc:#}");
        let drivers = &doc["go"]["drivers"];
        assert!(drivers["pgx/v5 stdlib"].is_string(), "{doc:#}");
        assert!(drivers["go-sql-driver/mysql"].is_string(), "{doc:#}");
        // The contrast the demo exists for: database/sql gives a pool wait
        // and a query deadline the same context error, and
        // go-sql-driver/mysql leaves the statement running on the server.
        let go_error = |id: &str| {
            scenarios
                .iter()
                .find(|s| s["id"] == id)
                .and_then(|s| s["go"]["error"].as_str())
                .unwrap_or("")
                .to_string()
        };
        for id in [
            "exhausted_pool",
            "slow_query_postgres",
            "slow_query_mariadb",
        ] {
            assert!(
                go_error(id).contains("context deadline exceeded"),
                "{id}: {doc:#}"
            );
        }
        let maria = scenarios
            .iter()
            .find(|s| s["id"] == "slow_query_mariadb")
            .expect("MariaDB row");
        assert_eq!(maria["go"]["statement_cancelled"], false, "{maria:#}");
    } else {
        assert_eq!(doc["go"]["available"], false, "{doc:#}");
        assert!(doc["go"]["reason"].is_string(), "{doc:#}");
    }
    assert_cleaned_up(run.pid, &run);
}

/// Splits a table line on runs of two or more spaces.
fn split_columns(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}
