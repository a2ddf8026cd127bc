//! MySQL/MariaDB sessions against the throwaway MariaDB server.
//!
//! caching_sha2_password has no MariaDB server (10.11 does not implement
//! it): its scramble, its exchange steps and its RSA path are covered by the
//! unit tests in `core/src/mysql/auth.rs` (known vectors, a scripted server,
//! openssl decrypting what the client sent).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialpool::deadline::CancelToken;
use dialpool::mysql::{MysqlConnection, MysqlConnector};
use dialpool::pool::Liveness;
use dialpool::{Code, Config, Deadline, Layer};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn server() -> dialpool_testkit::SharedServer {
    dialpool_testkit::shared_mariadb().expect("MariaDB")
}

/// The shared server's URL with extra options.
fn url(extra: &str) -> String {
    let s = server();
    let sep = if s.url.contains('?') { '&' } else { '?' };
    format!("{}{sep}{extra}", s.url)
}

/// A URL for another account on the shared server.
fn user_url(user: &str, password: &str, extra: &str) -> String {
    format!(
        "mysql://{user}:{password}@127.0.0.1:{}/dialpool?{extra}",
        server().port
    )
}

fn connector_for(url: &str) -> MysqlConnector {
    let config = Config::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    MysqlConnector::new(Arc::new(config)).expect("connector")
}

async fn connect(extra: &str) -> MysqlConnection {
    connector_for(&url(extra))
        .connect(None)
        .await
        .expect("connect")
}

/// A session for looking at the server from the side (processlist, KILL).
async fn admin() -> MysqlConnection {
    connect("sslmode=disable").await
}

async fn one(conn: &mut MysqlConnection, sql: &str, params: &[Option<&str>]) -> Option<String> {
    let r = conn
        .query(sql, params, None, None)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    r.get(0, 0).map(str::to_string)
}

/// What the server's process list says the thread is doing.
async fn command_of(admin: &mut MysqlConnection, id: u32) -> Option<String> {
    one(
        admin,
        "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = ?",
        &[Some(&id.to_string())],
    )
    .await
}

/// Polls the process list until the thread is idle (`Sleep`), for at most
/// 100 ms after `since`, and returns the last command seen. The server sends
/// the statement's ERR first and marks the thread idle just after, so one
/// look right away can still catch it finishing.
async fn idle_within_100ms(admin: &mut MysqlConnection, id: u32, since: Instant) -> Option<String> {
    loop {
        let seen = command_of(admin, id).await;
        if seen.as_deref() == Some("Sleep") || since.elapsed() >= Duration::from_millis(100) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn session_status(conn: &mut MysqlConnection, name: &str) -> u64 {
    one(
        conn,
        "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = ?",
        &[Some(name)],
    )
    .await
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| panic!("status {name}"))
}

#[test]
fn login_plain_and_simple_queries() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable&application_name=dp-test").await;
        assert!(!conn.is_tls());
        assert!(conn.timings().tls.is_none());
        assert!(conn.connection_id() > 0);
        assert!(conn.server_version().contains("MariaDB"), "{}", conn.server_version());
        assert!(!conn.server_version().starts_with("5.5.5-"));
        assert!(conn.is_clean());
        let r = conn
            .query(
                "SELECT 1 AS one, NULL AS nothing, 'żółw 🐢' AS turtle, CONNECTION_ID() AS id, @@collation_connection AS coll",
                &[],
                None,
                None,
            )
            .await
            .expect("select");
        assert_eq!(r.row_count(), 1);
        let names: Vec<&str> = r.columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["one", "nothing", "turtle", "id", "coll"]);
        assert_eq!(r.columns()[0].type_id, 3, "MYSQL_TYPE_LONG");
        assert_eq!(r.columns()[2].type_id, 253, "MYSQL_TYPE_VAR_STRING");
        assert_eq!(r.get(0, 0), Some("1"));
        assert!(r.is_null(0, 1));
        assert_eq!(r.get(0, 2), Some("żółw 🐢"));
        assert_eq!(r.get(0, 3), Some(conn.connection_id().to_string().as_str()));
        assert_eq!(r.get(0, 4), Some("utf8mb4_general_ci"));
        // The connect attributes are not in MariaDB's tables without the
        // performance schema; the program name is at least accepted.
        conn.ping(None).await.expect("ping");
        assert_eq!(
            conn.server_idle_limit().await,
            Some(Duration::from_secs(28800)),
            "MariaDB's default wait_timeout"
        );
        conn.execute("SET SESSION wait_timeout = 7", &[], None, None)
            .await
            .expect("set");
        assert_eq!(conn.server_idle_limit().await, Some(Duration::from_secs(7)));
        conn.close().await;
    });
}

#[test]
fn login_over_tls_verify_full() {
    let s = server();
    let ca = s.ca_file.expect("the test server has TLS");
    let good = format!(
        "mysql://dialpool:dp-secret-pw@localhost:{}/dialpool?sslmode=verify-full&sslrootcert={}",
        s.port,
        ca.display()
    );
    rt().block_on(async {
        let mut conn = connector_for(&good)
            .connect(None)
            .await
            .expect("login over TLS");
        assert!(conn.is_tls());
        assert!(conn.timings().tls.is_some());
        let r = conn
            .query("SHOW SESSION STATUS LIKE 'Ssl_version'", &[], None, None)
            .await
            .expect("status");
        assert!(
            r.get(0, 1).is_some_and(|v| v.starts_with("TLS")),
            "{:?}",
            r.get(0, 1)
        );
        let r = conn
            .query("SELECT ? AS v", &[Some("über TLS")], None, None)
            .await
            .expect("binary over TLS");
        assert_eq!(r.get(0, 0), Some("über TLS"));
        conn.close().await;
        // MySQL's mode names are accepted too.
        let alias = good.replace("sslmode=verify-full", "sslmode=verify_identity");
        let conn = connector_for(&alias).connect(None).await.expect("alias");
        assert!(conn.is_tls());
        conn.close().await;
        // The certificate names localhost only: verify-full to the IP fails.
        let by_ip = good.replace("@localhost:", "@127.0.0.1:");
        let e = connector_for(&by_ip)
            .connect(None)
            .await
            .map(|_| ())
            .expect_err("no IP SAN");
        assert_eq!(e.code(), Code::TlsError, "{e}");
        assert!(!e.is_retryable());
        // sslmode=prefer upgrades when the server offers TLS.
        let mut conn = connect("sslmode=prefer").await;
        assert!(conn.is_tls());
        conn.ping(None).await.expect("ping");
    });
}

/// Creates (or re-creates) an account with a given plugin, allowed on the
/// test database.
async fn create_user(admin: &mut MysqlConnection, user: &str, via: &str) {
    admin
        .execute(
            &format!("CREATE OR REPLACE USER '{user}'@'%' IDENTIFIED VIA {via}"),
            &[],
            None,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("create {user}: {e}"));
    admin
        .execute(
            &format!("GRANT ALL ON dialpool.* TO '{user}'@'%'"),
            &[],
            None,
            None,
        )
        .await
        .expect("grant");
}

#[test]
fn auth_plugins_native_and_ed25519_with_switch() {
    rt().block_on(async {
        let mut admin = admin().await;
        create_user(
            &mut admin,
            "dp_native",
            "mysql_native_password USING PASSWORD('native-pw')",
        )
        .await;
        // client_ed25519 comes as a plugin with the server package.
        let installed = one(
            &mut admin,
            "SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ed25519' AND PLUGIN_STATUS = 'ACTIVE'",
            &[],
        )
        .await;
        if installed.as_deref() != Some("1") {
            admin
                .execute("INSTALL SONAME 'auth_ed25519'", &[], None, None)
                .await
                .expect("install ed25519");
        }
        create_user(&mut admin, "dp_ed", "ed25519 USING PASSWORD('ed-pw')").await;
        let ca = server().ca_file.expect("tls");
        let tls = format!("sslmode=verify-full&sslrootcert={}", ca.display());
        for (user, pw) in [("dp_native", "native-pw"), ("dp_ed", "ed-pw")] {
            for extra in ["sslmode=disable", tls.as_str()] {
                let mut u = user_url(user, pw, extra);
                if extra != "sslmode=disable" {
                    u = u.replace("@127.0.0.1:", "@localhost:");
                }
                let mut conn = connector_for(&u)
                    .connect(None)
                    .await
                    .unwrap_or_else(|e| panic!("{user} {extra}: {e}"));
                let who = one(&mut conn, "SELECT CURRENT_USER()", &[]).await;
                assert_eq!(who.as_deref(), Some(format!("{user}@%").as_str()));
                conn.close().await;
            }
        }
        // ed25519 is not the server's default plugin: the login went
        // through an auth switch. A wrong password is refused there too.
        let e = connector_for(&user_url("dp_ed", "wrong-ed-pw", "sslmode=disable"))
            .connect(None)
            .await
            .map(|_| ())
            .expect_err("wrong ed25519 password");
        assert_eq!(e.code(), Code::AuthFailed, "{e}");
        assert!(!format!("{e} {e:?}").contains("wrong-ed-pw"));
        // An account with no password, and one asking for a plugin dialpool
        // does not speak.
        create_user(&mut admin, "dp_nopw", "mysql_native_password USING ''").await;
        let conn = connector_for(&format!(
            "mysql://dp_nopw@127.0.0.1:{}/dialpool?sslmode=disable",
            server().port
        ))
        .connect(None)
        .await
        .expect("empty password");
        conn.close().await;
    });
}

#[test]
fn wrong_password_is_auth_failed_without_the_password() {
    rt().block_on(async {
        let start = Instant::now();
        let e = connector_for(&user_url("dialpool", "Wr0ngSecret", "sslmode=disable"))
            .connect(None)
            .await
            .map(|_| ())
            .expect_err("bad password");
        assert_eq!(e.code(), Code::AuthFailed, "{e}");
        assert_eq!(e.layer(), Layer::Login);
        assert!(!e.is_retryable());
        assert_eq!(e.sqlstate(), Some("28000"));
        assert!(e.to_string().contains("1045"), "{e}");
        assert!(!format!("{e} {e:?}").contains("Wr0ngSecret"));
        assert!(start.elapsed() < Duration::from_secs(3), "fails at once");
        // The same over TLS (where nothing is hashed on the way).
        let s = server();
        let ca = s.ca_file.expect("tls");
        let u = format!(
            "mysql://dialpool:Wr0ngSecret@localhost:{}/dialpool?sslmode=verify-full&sslrootcert={}",
            s.port,
            ca.display()
        );
        let e = connector_for(&u)
            .connect(None)
            .await
            .map(|_| ())
            .expect_err("bad password");
        assert_eq!(e.code(), Code::AuthFailed, "{e}");
        assert!(!format!("{e} {e:?}").contains("Wr0ngSecret"));
    });
}

#[test]
fn unknown_database_is_a_permanent_login_error() {
    let s = server();
    let u = format!(
        "mysql://dialpool:dp-secret-pw@127.0.0.1:{}/no_such_db?sslmode=disable",
        s.port
    );
    rt().block_on(async {
        let e = connector_for(&u)
            .connect(None)
            .await
            .map(|_| ())
            .expect_err("no db");
        assert_eq!(e.code(), Code::ServerError, "{e}");
        assert_eq!(e.layer(), Layer::Login);
        assert_eq!(e.sqlstate(), Some("42000"));
        assert!(e.to_string().contains("server error 1049"), "{e}");
        assert!(!e.is_retryable());
    });
}

#[test]
fn parameters_nulls_text_and_the_statement_cache() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        let r = conn
            .query(
                "SELECT ? + ? AS sum, ? IS NULL AS isnull, CONCAT(?, '!') AS text, ? AS nothing",
                &[Some("2"), Some("40"), None, Some("żółw 🐢"), None],
                None,
                None,
            )
            .await
            .expect("params");
        assert_eq!(r.get(0, 0), Some("42"));
        assert_eq!(r.get(0, 1), Some("1"));
        assert_eq!(r.get(0, 2), Some("żółw 🐢!"));
        assert!(r.is_null(0, 3));
        assert_eq!(r.columns()[2].name, "text");
        let before = session_status(&mut conn, "COM_STMT_PREPARE").await;
        for i in 0..5 {
            let r = conn
                .query("SELECT ? * 2 AS twice", &[Some(&i.to_string())], None, None)
                .await
                .expect("cached");
            assert_eq!(r.get(0, 0).map(str::to_string), Some((i * 2).to_string()));
        }
        let after = session_status(&mut conn, "COM_STMT_PREPARE").await;
        // The status query itself is cached too.
        assert_eq!(after - before, 1, "the loop's statement was prepared once");
        // Wrong parameter counts are the caller's mistake; the session stays.
        let e = conn
            .query("SELECT ? + ?", &[Some("1")], None, None)
            .await
            .expect_err("count");
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(conn.is_clean());
        // Many parameters.
        let values: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let params: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
        // A flat argument list: a 1000-deep `? + ? + …` tree overruns the
        // server's thread stack.
        let sql = format!("SELECT CONCAT({})", vec!["?"; 1000].join(", "));
        let r = conn
            .query(&sql, &params, None, None)
            .await
            .expect("1000 params");
        let joined = r.get(0, 0).expect("text");
        assert_eq!(joined.len(), 10 + 90 * 2 + 900 * 3);
        assert!(joined.starts_with("0123456789101112"), "in order");
        assert!(joined.ends_with("997998999"));
    });
}

/// A statement without parameters runs as text the first time and is
/// prepared when it comes back (MySQL's protocol cannot pipeline the
/// preparation, so a statement run once keeps its one round trip); the
/// results are the same either way. What the server will not prepare, and
/// text with placeholders but no parameters, keep running as text, with
/// the answers the text gets.
#[test]
fn statements_without_parameters_are_prepared_when_they_come_back() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        let sql = "SELECT 40 + 2 AS answer, 'x' AS t, NULL AS n, 1.5e0 AS f";
        // The status query is itself cached after its first run.
        let p0 = session_status(&mut conn, "COM_STMT_PREPARE").await;
        let mut rows = Vec::new();
        let mut prepares = Vec::new();
        for _ in 0..4 {
            let r = conn.query(sql, &[], None, None).await.expect("run");
            rows.push((
                r.get(0, 0).map(str::to_string),
                r.get(0, 1).map(str::to_string),
                r.is_null(0, 2),
                r.get(0, 3).map(str::to_string),
            ));
            prepares.push(session_status(&mut conn, "COM_STMT_PREPARE").await - p0);
        }
        assert_eq!(prepares, vec![0, 1, 1, 1], "text once, then prepared once");
        let first = rows[0].clone();
        assert_eq!(
            first,
            (
                Some("42".into()),
                Some("x".into()),
                true,
                Some("1.5".into())
            )
        );
        assert!(rows.iter().all(|r| *r == first), "{rows:?}");

        // SQL-level PREPARE and EXECUTE: not in the prepared-statement
        // protocol (ER_UNSUPPORTED_PS). Refused once, then text only.
        for _ in 0..2 {
            conn.query("PREPARE dp_s FROM 'SELECT 7'", &[], None, None)
                .await
                .expect("PREPARE as text");
        }
        let mut attempts = Vec::new();
        for _ in 0..4 {
            let before = session_status(&mut conn, "COM_STMT_PREPARE").await;
            assert_eq!(
                one(&mut conn, "EXECUTE dp_s", &[]).await.as_deref(),
                Some("7")
            );
            attempts.push(session_status(&mut conn, "COM_STMT_PREPARE").await - before);
        }
        assert_eq!(attempts, vec![0, 1, 0, 0], "one refused attempt");
        assert!(conn.is_clean());

        // Placeholders without parameters: the server's error, every time.
        let mut errors = Vec::new();
        for _ in 0..3 {
            let e = conn
                .query("SELECT ? AS v", &[], None, None)
                .await
                .expect_err("a syntax error as text");
            errors.push((e.code(), e.sqlstate().map(str::to_string)));
        }
        assert_eq!(errors[0].0, Code::ServerError, "{errors:?}");
        assert!(errors.iter().all(|e| *e == errors[0]), "{errors:?}");
        assert!(conn.is_clean());

        // A statement cached for callers with parameters stays cached when
        // someone runs it without: no new preparation afterwards.
        let with = "SELECT ? + 0 AS w";
        assert_eq!(
            one(&mut conn, with, &[Some("3")]).await.as_deref(),
            Some("3")
        );
        let before = session_status(&mut conn, "COM_STMT_PREPARE").await;
        for _ in 0..2 {
            let e = conn
                .query(with, &[], None, None)
                .await
                .expect_err("no parameters");
            assert_eq!(e.code(), Code::ServerError, "{e}");
        }
        assert_eq!(
            one(&mut conn, with, &[Some("4")]).await.as_deref(),
            Some("4")
        );
        let after = session_status(&mut conn, "COM_STMT_PREPARE").await;
        assert_eq!(after - before, 0, "still cached");
        assert_eq!(one(&mut conn, "SELECT 5", &[]).await.as_deref(), Some("5"));
    });
}

#[test]
fn statement_cache_limits_and_zero() {
    rt().block_on(async {
        // Capacity 2: the least recently used is closed on the server.
        let mut conn = connect("sslmode=disable&statement_cache=2").await;
        let sqls = ["SELECT ? + 1", "SELECT ? + 2", "SELECT ? + 3", "SELECT ? + 1"];
        let p0 = session_status(&mut conn, "COM_STMT_PREPARE").await;
        let c0 = session_status(&mut conn, "COM_STMT_CLOSE").await;
        for sql in sqls {
            conn.query(sql, &[Some("1")], None, None).await.expect("run");
        }
        let p1 = session_status(&mut conn, "COM_STMT_PREPARE").await;
        let c1 = session_status(&mut conn, "COM_STMT_CLOSE").await;
        // The status query S competes in the cache too: A, B (evicts S),
        // C (evicts A), A again (evicts B), then S again (evicts C). Each
        // eviction is closed right after the execution that caused it.
        assert_eq!(p1 - p0, 5, "prepares");
        assert_eq!(c1 - c0, 4, "evicted statements closed");
        // Capacity 0 (as behind a transaction-mode proxy): prepare, execute,
        // close every time.
        let mut conn = connect("sslmode=disable&statement_cache=0").await;
        let p0 = session_status(&mut conn, "COM_STMT_PREPARE").await;
        let c0 = session_status(&mut conn, "COM_STMT_CLOSE").await;
        for i in 0..4 {
            let r = conn
                .query("SELECT ? AS v", &[Some(&i.to_string())], None, None)
                .await
                .expect("uncached");
            assert_eq!(r.get(0, 0).map(str::to_string), Some(i.to_string()));
        }
        let p1 = session_status(&mut conn, "COM_STMT_PREPARE").await;
        let c1 = session_status(&mut conn, "COM_STMT_CLOSE").await;
        // Between the two reads: the second status query, the 4 runs and
        // the third status query were prepared; the first status query's
        // close, the second's, the 4 runs' and the third's were counted
        // by the fourth (each close goes out right after its statement).
        assert_eq!(p1 - p0, 6, "every run prepared anew");
        assert_eq!(c1 - c0, 6, "every statement closed");
        let global = one(
            &mut conn,
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'PREPARED_STMT_COUNT'",
            &[],
        )
        .await;
        assert!(global.is_some());
    });
}

/// Every type, once through the text protocol (no parameters) and once
/// through the binary protocol (with one): the rendered text must be
/// identical, cell by cell.
#[test]
fn binary_results_render_exactly_like_text_results() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        conn.execute("SET time_zone = '+00:00'", &[], None, None)
            .await
            .expect("tz");
        conn.execute(
            "CREATE OR REPLACE TABLE dp_types (
               id INT PRIMARY KEY,
               ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
               mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, iz INT(6) ZEROFILL,
               bi BIGINT, bu BIGINT UNSIGNED,
               f FLOAT, fd FLOAT(7,3), d DOUBLE, dd DOUBLE(12,4), dc DECIMAL(24,6),
               dt DATE, dtm DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6), ts TIMESTAMP(2) NULL,
               tm TIME, tm2 TIME(2), y YEAR,
               c CHAR(5), vc VARCHAR(50), tx TEXT, bl BLOB, bt BIT(10), e ENUM('a','b'),
               st SET('x','y'), j JSON, u UUID, ip INET6
             ) CHARACTER SET utf8mb4",
            &[],
            None,
            None,
        )
        .await
        .expect("create");
        conn.execute("INSERT INTO dp_types (id) VALUES (1)", &[], None, None)
            .await
            .expect("nulls");
        conn.execute(
            "INSERT INTO dp_types VALUES (2,
               -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, 42,
               -9223372036854775808, 18446744073709551615,
               3.14159274, 1234.5678, 0.1e0 + 0.2e0, 12345678.12345, -123456789012345678.123456,
               '2024-02-29', '2024-02-29 13:05:09', '2024-02-29 13:05:09.5', '1999-12-31 23:59:59.000001',
               '2038-01-19 03:14:07.99',
               '-838:59:59', '12:34:56.78', 2024,
               'ab', 'żółw 🐢', REPEAT('x', 1000), x'00FF10', b'1010101010', 'b',
               'x,y', '{\"a\": [1, 2.5, \"ü\"]}', '123e4567-e89b-12d3-a456-426614174000', '2001:db8::1')",
            &[],
            None,
            None,
        )
        .await
        .expect("values");
        conn.execute(
            "INSERT INTO dp_types VALUES (3,
               0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
               1e10, -0.0005, 1e15, 0.00005, 0,
               '0000-00-00', '0000-00-00 00:00:00', '2000-01-01 00:00:00', '2000-01-01 00:00:00',
               '1970-01-01 00:00:01',
               '00:00:00', '-00:00:00.01', 0,
               '', '', '', '', b'0', 'a', '', '[]', '00000000-0000-0000-0000-000000000000', '::')",
            &[],
            None,
            None,
        )
        .await
        .expect("edges");
        conn.execute(
            "INSERT INTO dp_types (id, f, d, dd, tm, tm2, y) VALUES
               (4, -1.25e-20, 1e-16, -99999999.9999, '100:00:00', '-1 02:03:04.5', 1901),
               (5, 123456789, 1.7976931348623157e308, 0.5, '-00:00:01', '838:59:59', 2155),
               (6, 1.5e-7, -2.2250738585072014e-308, 1, '01:02:03', '00:00:00.99', NULL),
               (7, 0.1, 123456789012345680, 2, NULL, NULL, NULL),
               (8, 65504, 1234567890123456.7, 3, NULL, NULL, NULL)",
            &[],
            None,
            None,
        )
        .await
        .expect("floats");
        let text = conn
            .query("SELECT * FROM dp_types ORDER BY id", &[], None, None)
            .await
            .expect("text");
        let binary = conn
            .query(
                "SELECT * FROM dp_types WHERE id >= ? ORDER BY id",
                &[Some("0")],
                None,
                None,
            )
            .await
            .expect("binary");
        assert_eq!(text.row_count(), 8);
        assert_eq!(text.columns(), binary.columns());
        for row in 0..text.row_count() {
            for col in 0..text.column_count() {
                assert_eq!(
                    binary.bytes(row, col),
                    text.bytes(row, col),
                    "row {row}, column {} ({:?})",
                    text.columns()[col].name,
                    text.get(row, col)
                );
            }
        }
        // A few that must look as MariaDB prints them.
        let at = |r: usize, name: &str| text.get(r, text.column_index(name).expect("column"));
        assert_eq!(at(1, "iz"), Some("000042"));
        assert_eq!(at(1, "d"), Some("0.30000000000000004"));
        assert_eq!(at(1, "f"), Some("3.14159"));
        assert_eq!(at(1, "tm"), Some("-838:59:59"));
        assert_eq!(at(1, "dtm3"), Some("2024-02-29 13:05:09.500"));
        assert_eq!(at(2, "d"), Some("1e15"));
        assert_eq!(at(1, "vc"), Some("żółw 🐢"));
        // Text or bytes by the column's character set (the same in both
        // protocols: the columns were compared above).
        let holds_bytes = |name: &str| text.columns()[text.column_index(name).expect("column")].binary;
        for name in ["c", "vc", "tx", "e", "st", "j", "u", "ip", "i", "dc", "dtm", "tm"] {
            assert!(!holds_bytes(name), "{name} is text");
        }
        for name in ["bl", "bt"] {
            assert!(holds_bytes(name), "{name} is bytes");
        }
        // Expressions, whose column types and scales come from the server.
        let exprs = "SELECT 1e15, 1e-16, 0.1e0 + 0.2e0, 1e0 / 3, ROUND(2.5e0, 2), CAST(1.5 AS DOUBLE),
                     TIMEDIFF('2024-01-02', '2024-01-01 00:00:00.5'), SEC_TO_TIME(3600.25),
                     CAST('2024-01-02 03:04:05.6' AS DATETIME(1)), CAST('2024-01-02' AS DATE),
                     18446744073709551615, -9223372036854775808, 1.5, CAST(1 AS UNSIGNED),
                     CAST(-1 AS SIGNED), 7 DIV 2, 7 / 2, PI(), SQRT(2), EXP(100), 1/0,
                     CAST(3.5 AS FLOAT), YEAR('2024-05-06'), MAKETIME(-1, 2, 3.25),
                     FROM_UNIXTIME(1e9), 'ünï' COLLATE utf8mb4_bin, x'41', NULL";
        let text = conn.query(exprs, &[], None, None).await.expect("text");
        let binary = conn
            .query(&format!("{exprs} FROM DUAL WHERE ? = 1"), &[Some("1")], None, None)
            .await
            .expect("binary");
        assert_eq!(text.columns(), binary.columns());
        for col in 0..text.column_count() {
            assert_eq!(
                binary.get(0, col),
                text.get(0, col),
                "{} (type {})",
                text.columns()[col].name,
                text.columns()[col].type_id
            );
        }
        assert!(text.warnings >= 1, "1/0 warns");
        // A _bin collation is still text; a hex literal is a binary string.
        let n = text.column_count();
        let flags: Vec<bool> = text.columns()[n - 3..].iter().map(|c| c.binary).collect();
        assert_eq!(flags, [false, true, false], "'ünï' COLLATE utf8mb4_bin, x'41', NULL");
        conn.execute("DROP TABLE dp_types", &[], None, None)
            .await
            .expect("drop");
    });
}

#[test]
fn affected_rows_last_insert_id_and_warnings() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        conn.execute(
            "CREATE OR REPLACE TABLE dp_ai (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20))",
            &[],
            None,
            None,
        )
        .await
        .expect("create");
        let r = conn
            .query(
                "INSERT INTO dp_ai (name) VALUES ('a'), ('b'), ('c')",
                &[],
                None,
                None,
            )
            .await
            .expect("insert");
        assert_eq!(r.affected_rows, 3);
        assert_eq!(r.last_insert_id, Some(1), "the first id of the batch");
        assert_eq!(r.column_count(), 0);
        let r = conn
            .query(
                "INSERT INTO dp_ai (name) VALUES (?)",
                &[Some("d")],
                None,
                None,
            )
            .await
            .expect("insert with a parameter");
        assert_eq!(r.affected_rows, 1);
        assert_eq!(r.last_insert_id, Some(4));
        let n = conn
            .execute(
                "UPDATE dp_ai SET name = ? WHERE id > ?",
                &[Some("x"), Some("2")],
                None,
                None,
            )
            .await
            .expect("update");
        assert_eq!(n, 2);
        let n = conn
            .execute("UPDATE dp_ai SET name = 'x' WHERE id > 2", &[], None, None)
            .await
            .expect("update");
        assert_eq!(n, 0, "MySQL counts changed rows, not matched ones");
        let r = conn
            .query("SELECT * FROM dp_ai", &[], None, None)
            .await
            .expect("select");
        assert_eq!(r.affected_rows, 4, "SELECT reports its row count");
        let r = conn
            .query(
                "INSERT INTO dp_ai (name) VALUES (REPEAT('y', 30))",
                &[],
                None,
                None,
            )
            .await;
        // Strict mode refuses the overlong value; without it, a warning.
        match r {
            Ok(r) => assert!(r.warnings >= 1),
            Err(e) => assert_eq!(e.code(), Code::ServerError, "{e}"),
        }
        let r = conn
            .query("SELECT 1/0", &[], None, None)
            .await
            .expect("division by zero");
        assert!(r.is_null(0, 0));
        assert_eq!(r.warnings, 1);
        conn.execute("DROP TABLE dp_ai", &[], None, None)
            .await
            .expect("drop");
    });
}

#[test]
fn server_errors_keep_the_session_usable() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        let e = conn
            .query("SELECT * FROM no_such_table", &[], None, None)
            .await
            .expect_err("1146");
        assert_eq!(e.code(), Code::ServerError);
        assert_eq!(e.layer(), Layer::Query);
        assert_eq!(e.sqlstate(), Some("42S02"));
        assert!(
            e.message()
                .starts_with("server error 1146: Table 'dialpool.no_such_table'"),
            "{e}"
        );
        assert!(!e.is_retryable());
        // A statement that cannot be prepared.
        let e = conn
            .query("SELEC ?", &[Some("1")], None, None)
            .await
            .expect_err("1064");
        assert_eq!(e.sqlstate(), Some("42000"), "{e}");
        assert!(e.message().contains("1064"), "{e}");
        // A prepared statement failing at execution.
        conn.execute(
            "CREATE OR REPLACE TABLE dp_uniq (v INT PRIMARY KEY)",
            &[],
            None,
            None,
        )
        .await
        .expect("create");
        conn.execute("INSERT INTO dp_uniq VALUES (?)", &[Some("1")], None, None)
            .await
            .expect("insert");
        let e = conn
            .execute("INSERT INTO dp_uniq VALUES (?)", &[Some("1")], None, None)
            .await
            .expect_err("duplicate");
        assert_eq!(e.sqlstate(), Some("23000"), "{e}");
        assert!(e.message().contains("1062"), "{e}");
        assert!(conn.is_clean());
        let r = conn
            .query("SELECT 2", &[], None, None)
            .await
            .expect("still usable");
        assert_eq!(r.get(0, 0), Some("2"));
        conn.execute("DROP TABLE dp_uniq", &[], None, None)
            .await
            .expect("drop");
    });
}

#[test]
fn multi_result_calls_are_read_to_the_end() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        conn.execute("DROP PROCEDURE IF EXISTS dp_two_sets", &[], None, None)
            .await
            .expect("drop");
        conn.execute(
            "CREATE PROCEDURE dp_two_sets(IN n INT)
             BEGIN SELECT 1 AS first; SELECT n AS b, n + 1 AS c UNION ALL SELECT n * 10, n * 10 + 1; END",
            &[],
            None,
            None,
        )
        .await
        .expect("create");
        for params in [vec![], vec![Some("5")]] {
            let sql = if params.is_empty() {
                "CALL dp_two_sets(5)"
            } else {
                "CALL dp_two_sets(?)"
            };
            let r = conn.query(sql, &params, None, None).await.expect("call");
            let names: Vec<&str> = r.columns().iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["b", "c"], "the last result set is kept");
            assert_eq!(r.row_count(), 2);
            assert_eq!(r.get(1, 1), Some("51"));
            assert!(conn.is_clean());
            assert_eq!(one(&mut conn, "SELECT 7", &[]).await.as_deref(), Some("7"));
        }
    });
}

#[test]
fn query_timeout_kills_on_the_server_and_keeps_the_connection() {
    rt().block_on(async {
        let mut admin = admin().await;
        let mut conn = connect("sslmode=disable&query_timeout=1s").await;
        let id = conn.connection_id();
        let start = Instant::now();
        let e = conn
            .query("SELECT SLEEP(5)", &[], None, None)
            .await
            .expect_err("timeout");
        let took = start.elapsed();
        let error_at = Instant::now();
        assert_eq!(e.code(), Code::QueryTimeout, "{e}");
        assert_eq!(e.layer(), Layer::Query);
        assert_eq!(e.limit(), Some("query_timeout"));
        assert_eq!(e.sqlstate(), Some("70100"), "{e}");
        assert!(e.cause().is_some_and(|c| c.contains("KILL QUERY")), "{e}");
        assert!(!e.is_retryable());
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_millis(1900),
            "{took:?}"
        );
        eprintln!(
            "query_timeout=1s: QUERY_TIMEOUT after {took:?} (kill and drain {:?})",
            took.saturating_sub(Duration::from_secs(1))
        );
        assert!(conn.is_clean(), "kept after a confirmed kill");
        // The server no longer runs it.
        assert_eq!(
            idle_within_100ms(&mut admin, id, error_at).await.as_deref(),
            Some("Sleep"),
            "idle within 100 ms of the error"
        );
        assert_eq!(one(&mut conn, "SELECT 3", &[]).await.as_deref(), Some("3"));
        // A prepared statement is killed the same way.
        let e = conn
            .query("SELECT SLEEP(?)", &[Some("5")], None, None)
            .await
            .expect_err("timeout");
        assert_eq!(e.code(), Code::QueryTimeout, "{e}");
        assert_eq!(e.sqlstate(), Some("70100"), "{e}");
        assert_eq!(
            idle_within_100ms(&mut admin, id, Instant::now())
                .await
                .as_deref(),
            Some("Sleep")
        );
        assert_eq!(
            one(&mut conn, "SELECT ? + 1", &[Some("3")])
                .await
                .as_deref(),
            Some("4")
        );
        // A caller deadline shorter than query_timeout is named.
        let start = Instant::now();
        let e = conn
            .query(
                "SELECT SLEEP(5)",
                &[],
                Some(Deadline::caller(Duration::from_millis(300))),
                None,
            )
            .await
            .expect_err("deadline");
        assert_eq!(e.limit(), Some("deadline"));
        assert!(
            start.elapsed() < Duration::from_millis(1200),
            "{:?}",
            start.elapsed()
        );
        assert!(conn.is_clean());
    });
}

#[test]
fn query_timeout_over_tls_kills_through_a_tls_connection() {
    let s = server();
    let ca = s.ca_file.expect("tls");
    let u = format!(
        "mysql://dialpool:dp-secret-pw@localhost:{}/dialpool?sslmode=verify-full&sslrootcert={}&query_timeout=500ms",
        s.port,
        ca.display()
    );
    rt().block_on(async {
        let mut conn = connector_for(&u).connect(None).await.expect("tls login");
        let e = conn
            .query("SELECT SLEEP(3)", &[], None, None)
            .await
            .expect_err("timeout");
        assert_eq!(e.code(), Code::QueryTimeout, "{e}");
        assert_eq!(e.sqlstate(), Some("70100"), "{e}");
        assert!(conn.is_clean());
        assert_eq!(one(&mut conn, "SELECT 1", &[]).await.as_deref(), Some("1"));
    });
}

#[test]
fn caller_cancel_kills_and_reports_cancelled() {
    rt().block_on(async {
        let mut admin = admin().await;
        let mut conn = connect("sslmode=disable").await;
        let id = conn.connection_id();
        let token = CancelToken::new();
        let t2 = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            t2.cancel();
        });
        let start = Instant::now();
        let e = conn
            .query("SELECT SLEEP(5)", &[], None, Some(&token))
            .await
            .expect_err("cancel");
        assert_eq!(e.code(), Code::Cancelled, "{e}");
        assert_eq!(e.sqlstate(), Some("70100"), "{e}");
        assert_eq!(e.limit(), None);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(conn.is_clean());
        assert_eq!(
            idle_within_100ms(&mut admin, id, Instant::now())
                .await
                .as_deref(),
            Some("Sleep")
        );
        // A token cancelled before the call: nothing is sent, nothing runs.
        let e = conn
            .query("SELECT SLEEP(5)", &[], None, Some(&token))
            .await
            .expect_err("already cancelled");
        assert_eq!(e.code(), Code::Cancelled);
        assert!(e.is_retryable(), "nothing reached the server");
        assert_eq!(one(&mut conn, "SELECT 5", &[]).await.as_deref(), Some("5"));
    });
}

#[test]
fn open_transaction_is_not_clean_until_reset() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        conn.execute(
            "CREATE OR REPLACE TABLE dp_tx (v INT) ENGINE=InnoDB",
            &[],
            None,
            None,
        )
        .await
        .expect("create");
        assert!(conn.is_clean());
        conn.execute("BEGIN", &[], None, None).await.expect("begin");
        assert!(conn.in_transaction());
        assert!(!conn.is_clean());
        assert!(conn.is_ready());
        conn.execute("INSERT INTO dp_tx VALUES (?)", &[Some("1")], None, None)
            .await
            .expect("insert");
        // An error inside the transaction does not make it look closed.
        let _ = conn
            .query("SELECT * FROM no_such_table", &[], None, None)
            .await
            .expect_err("error");
        assert!(!conn.is_clean());
        conn.reset().await.expect("rollback");
        assert!(conn.is_clean());
        assert_eq!(
            one(&mut conn, "SELECT COUNT(*) FROM dp_tx", &[])
                .await
                .as_deref(),
            Some("0")
        );
        // autocommit off: any statement may open one.
        conn.execute("SET autocommit = 0", &[], None, None)
            .await
            .expect("autocommit");
        conn.execute("INSERT INTO dp_tx VALUES (2)", &[], None, None)
            .await
            .expect("insert");
        assert!(!conn.is_clean());
        conn.reset().await.expect("rollback");
        assert!(conn.is_clean());
        // COM_RESET_CONNECTION: session state and prepared statements go.
        conn.execute("SET @dp_var = 5", &[], None, None)
            .await
            .expect("var");
        assert_eq!(
            one(&mut conn, "SELECT ? + 0", &[Some("1")])
                .await
                .as_deref(),
            Some("1")
        );
        conn.reset_session().await.expect("reset session");
        assert_eq!(one(&mut conn, "SELECT @dp_var", &[]).await, None);
        assert_eq!(
            one(&mut conn, "SELECT @@autocommit", &[]).await.as_deref(),
            Some("1")
        );
        assert_eq!(
            one(&mut conn, "SELECT ? + 0", &[Some("2")])
                .await
                .as_deref(),
            Some("2"),
            "the statement is prepared again"
        );
        conn.execute("DROP TABLE dp_tx", &[], None, None)
            .await
            .expect("drop");
    });
}

#[test]
fn hundred_thousand_rows() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        // MariaDB stops recursion after max_recursive_iterations (1000).
        conn.execute(
            "SET SESSION max_recursive_iterations = 200000",
            &[],
            None,
            None,
        )
        .await
        .expect("set");
        let sql = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100000)
                   SELECT n, CONCAT('row ', n), IF(n % 10 = 0, NULL, 'ünï') FROM s";
        let start = Instant::now();
        let r = conn.query(sql, &[], None, None).await.expect("100k rows");
        let text_took = start.elapsed();
        assert_eq!(r.row_count(), 100_000);
        assert_eq!(r.get(99_999, 0), Some("100000"));
        assert_eq!(r.get(99_999, 1), Some("row 100000"));
        assert!(r.is_null(9, 2));
        assert_eq!(r.get(0, 2), Some("ünï"));
        let start = Instant::now();
        let r = conn
            .query(&format!("{sql} WHERE n > ?"), &[Some("0")], None, None)
            .await
            .expect("100k binary rows");
        let binary_took = start.elapsed();
        assert_eq!(r.row_count(), 100_000);
        assert_eq!(r.get(99_999, 1), Some("row 100000"));
        eprintln!("100,000 rows: text {text_took:?}, binary {binary_took:?}");
        assert!(conn.is_clean());
    });
}

#[test]
fn probe_detects_a_server_side_kill_and_idle_cut() {
    rt().block_on(async {
        let mut admin = admin().await;
        let mut conn = connect("sslmode=disable").await;
        assert_eq!(conn.probe(), Liveness::Alive);
        admin
            .execute(
                &format!("KILL CONNECTION {}", conn.connection_id()),
                &[],
                None,
                None,
            )
            .await
            .expect("kill");
        let start = Instant::now();
        while conn.probe() == Liveness::Alive && start.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(conn.probe(), Liveness::Dead);
        let e = conn
            .query("SELECT 1", &[], None, None)
            .await
            .expect_err("gone");
        assert_eq!(e.code(), Code::ConnectionLost, "{e}");
        assert!(conn.is_broken());
        // The server's own idle cut (wait_timeout).
        let mut conn = connect("sslmode=disable").await;
        conn.execute("SET SESSION wait_timeout = 1", &[], None, None)
            .await
            .expect("set");
        let start = Instant::now();
        while conn.probe() == Liveness::Alive && start.elapsed() < Duration::from_secs(4) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(conn.probe(), Liveness::Dead, "cut after about 1 s");
        // A busy session killed mid-statement: CONNECTION_LOST.
        let mut conn = connect("sslmode=disable").await;
        let id = conn.connection_id();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            admin
                .execute(&format!("KILL CONNECTION {id}"), &[], None, None)
                .await
                .expect("kill");
        });
        let e = conn
            .query("SELECT SLEEP(5)", &[], None, None)
            .await
            .expect_err("killed");
        killer.await.expect("killer");
        assert_eq!(e.code(), Code::ConnectionLost, "{e}");
        assert!(!e.is_retryable());
        assert!(conn.is_broken());
        conn.close().await;
    });
}

#[test]
fn read_timeout_breaks_a_silent_session() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable&read_timeout=300ms&query_timeout=0").await;
        let start = Instant::now();
        let e = conn
            .query("SELECT SLEEP(2)", &[], None, None)
            .await
            .expect_err("read timeout");
        assert_eq!(e.code(), Code::ReadTimeout, "{e}");
        assert_eq!(e.limit(), Some("read_timeout"));
        assert!(start.elapsed() < Duration::from_millis(1200));
        assert!(conn.is_broken());
    });
}

#[test]
fn login_timeout_against_a_silent_server() {
    let silent = dialpool_testkit::fault::SilentPeer::new().expect("silent peer");
    let u = format!(
        "mysql://dialpool:pw@{}/dialpool?sslmode=disable&login_timeout=300ms",
        silent.addr
    );
    rt().block_on(async {
        let start = Instant::now();
        let e = connector_for(&u)
            .connect(None)
            .await
            .map(|_| ())
            .expect_err("no greeting");
        assert_eq!(e.code(), Code::LoginTimeout, "{e}");
        assert_eq!(e.limit(), Some("login_timeout"));
        assert!(e.is_retryable());
        assert!(
            start.elapsed() < Duration::from_millis(800),
            "{:?}",
            start.elapsed()
        );
        // The caller's deadline, when earlier, is the one named.
        let e = connector_for(&u)
            .connect(Some(Deadline::caller(Duration::from_millis(100))))
            .await
            .map(|_| ())
            .expect_err("no greeting");
        assert_eq!(e.limit(), Some("deadline"), "{e}");
    });
}

/// A private server without TLS: `require` refuses it at once, `prefer`
/// logs in without; its global wait_timeout is what the session reports.
#[test]
fn sslmode_against_a_server_without_tls() {
    let server = dialpool_testkit::MariaDbServer::start(dialpool_testkit::MariaDbOptions {
        tls: false,
        settings: vec![("wait_timeout".into(), "2".into())],
    })
    .expect("private MariaDB");
    rt().block_on(async {
        let e = connector_for(&format!("{}?sslmode=require", server.url()))
            .connect(None)
            .await
            .map(|_| ())
            .expect_err("no TLS");
        assert_eq!(e.code(), Code::TlsError, "{e}");
        assert!(!e.is_retryable());
        let mut conn = connector_for(&format!("{}?sslmode=prefer", server.url()))
            .connect(None)
            .await
            .expect("prefer falls back to plain");
        assert!(!conn.is_tls());
        assert_eq!(conn.server_idle_limit().await, Some(Duration::from_secs(2)));
        conn.close().await;
    });
}

/// A statement run again gets the last result set's parsed columns when the
/// server sends the same definitions, and new ones as soon as they differ
/// (another statement, or the same one after ALTER TABLE), over the text
/// and the binary protocol alike.
#[test]
fn repeated_column_definitions_are_parsed_once() {
    rt().block_on(async {
        let mut conn = connect("sslmode=disable").await;
        let t = format!("dp_cols_{}", std::process::id());
        conn.query(
            &format!("CREATE TEMPORARY TABLE {t} (a INT, b VARCHAR(10))"),
            &[],
            None,
            None,
        )
        .await
        .expect("create");
        conn.query(
            &format!("INSERT INTO {t} VALUES (1, 'x'), (2, NULL)"),
            &[],
            None,
            None,
        )
        .await
        .expect("insert");
        for params in [&[][..], &[Some("0")][..]] {
            let sql = if params.is_empty() {
                format!("SELECT a, b FROM {t} ORDER BY a")
            } else {
                format!("SELECT a, b FROM {t} WHERE a > ? ORDER BY a")
            };
            let first = conn.query(&sql, params, None, None).await.expect("first");
            let again = conn.query(&sql, params, None, None).await.expect("again");
            assert!(
                std::sync::Arc::ptr_eq(&first.shared_columns(), &again.shared_columns()),
                "the same definitions are parsed once ({} parameters)",
                params.len()
            );
            assert_eq!(again.get(1, 0), Some("2"));
            assert!(again.is_null(1, 1));

            let other = conn
                .query(&format!("SELECT b, a FROM {t} ORDER BY a"), &[], None, None)
                .await
                .expect("other");
            let names: Vec<&str> = other.columns().iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["b", "a"]);
            assert_eq!(other.get(0, 0), Some("x"));
        }

        let sql = format!("SELECT a, b FROM {t} ORDER BY a");
        let before = conn.query(&sql, &[], None, None).await.expect("before");
        assert_eq!(before.columns()[1].type_id, 253, "VARCHAR");
        conn.query(&format!("ALTER TABLE {t} MODIFY b TEXT"), &[], None, None)
            .await
            .expect("alter");
        let after = conn.query(&sql, &[], None, None).await.expect("after");
        assert_eq!(
            after.columns()[1].type_id,
            252,
            "TEXT (a BLOB type) after ALTER TABLE"
        );
        assert_eq!(after.get(0, 1), Some("x"));
        assert!(!std::sync::Arc::ptr_eq(
            &before.shared_columns(),
            &after.shared_columns()
        ));
    });
}
