//! ERR packets → [`Error`], keeping the server's error number (in the
//! message) and SQLSTATE.

use crate::error::{Code, Error, Layer};

/// The fields of an ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFields {
    /// The server's error number (`1146` for an unknown table).
    pub errno: u16,
    pub sqlstate: String,
    pub message: String,
}

/// ER_QUERY_INTERRUPTED: what a statement stopped by `KILL QUERY` returns.
pub const ER_QUERY_INTERRUPTED: u16 = 1317;
/// The SQLSTATE that goes with it.
pub const SQLSTATE_INTERRUPTED: &str = "70100";

/// Errors after which the server closes the connection: the session is
/// gone, so they are reported as CONNECTION_LOST rather than as a statement
/// error.
fn ends_the_connection(f: &ServerFields) -> bool {
    // 1053 ER_SERVER_SHUTDOWN, 1927 ER_CONNECTION_KILLED (KILL CONNECTION),
    // 4031 MySQL's ER_CLIENT_INTERACTION_TIMEOUT (wait_timeout), 1152
    // ER_ABORTING_CONNECTION; SQLSTATE class 08 is "connection exception".
    matches!(f.errno, 1053 | 1152 | 1927 | 4031) || f.sqlstate.starts_with("08")
}

/// SERVER_ERROR for `layer`: `server error 1146: Table 'db.x' doesn't exist`.
pub fn server_error(f: &ServerFields, peer: &str, layer: Layer) -> Error {
    Error::new(
        Code::ServerError,
        format!("server error {}: {}", f.errno, f.message),
    )
    .with_layer(layer)
    .with_peer(peer)
    .with_sqlstate(f.sqlstate.clone())
    .with_retryable(false)
}

/// An ERR packet in answer to a statement. `broken` is set when the server
/// is closing the connection.
pub(super) fn query_error(f: &ServerFields, peer: &str, broken: &mut bool) -> Error {
    if ends_the_connection(f) {
        *broken = true;
        return Error::new(Code::ConnectionLost, format!("connection to {peer} lost"))
            .with_layer(Layer::Query)
            .with_peer(peer)
            .with_sqlstate(f.sqlstate.clone())
            .with_cause(format!("server error {}: {}", f.errno, f.message))
            .with_hint("the server ended the session (KILL, shutdown or its idle limit)")
            .with_retryable(false);
    }
    server_error(f, peer, Layer::Query)
}

/// Errors during the handshake: bad credentials are AUTH_FAILED; an unknown
/// database or a missing grant is a permanent login error with its SQLSTATE;
/// too many connections or a server shutting down may pass.
pub(super) fn login_error(f: &ServerFields, peer: &str) -> Error {
    match f.errno {
        // ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR,
        // ER_NOT_SUPPORTED_AUTH_MODE, ER_MUST_CHANGE_PASSWORD_LOGIN,
        // ER_ACCOUNT_HAS_BEEN_LOCKED (MariaDB 4151, MySQL 3118).
        1045 | 1698 | 1251 | 1862 | 3118 | 4151 => {
            let hint = match f.errno {
                1862 => "the password has expired: set a new one with the mariadb/mysql client",
                1251 => "the server wants an authentication method this client did not offer",
                3118 | 4151 => "the account is locked on the server",
                _ => "check the user name and password, and the host part of the account ('user'@'host')",
            };
            Error::new(
                Code::AuthFailed,
                format!("authentication failed: {} (error {})", f.message, f.errno),
            )
            .with_peer(peer)
            .with_sqlstate(f.sqlstate.clone())
            .with_hint(hint)
            .with_retryable(false)
        }
        // ER_CON_COUNT_ERROR, ER_TOO_MANY_USER_CONNECTIONS,
        // ER_USER_LIMIT_REACHED, ER_SERVER_SHUTDOWN: a later try may pass.
        1040 | 1203 | 1226 | 1053 => {
            let hint = if f.errno == 1053 {
                "the server is shutting down; try again shortly"
            } else {
                "the server is at max_connections (or the account's limit): lower max_open across pools"
            };
            server_error(f, peer, Layer::Login)
                .with_hint(hint)
                .with_retryable(true)
        }
        1049 => server_error(f, peer, Layer::Login)
            .with_hint("the database does not exist: check the URL's database name"),
        1044 => server_error(f, peer, Layer::Login)
            .with_hint("the user may not use this database: GRANT it, or check the URL's database name"),
        1129 => server_error(f, peer, Layer::Login).with_hint(
            "the server blocked this host after too many failed connects: run FLUSH HOSTS on the server",
        ),
        1130 => server_error(f, peer, Layer::Login)
            .with_hint("no account matches this client's address: check the account's host part"),
        _ => server_error(f, peer, Layer::Login),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errno: u16, sqlstate: &str, message: &str) -> ServerFields {
        ServerFields {
            errno,
            sqlstate: sqlstate.into(),
            message: message.into(),
        }
    }

    #[test]
    fn login_errors_by_number() {
        let e = login_error(
            &fields(
                1045,
                "28000",
                "Access denied for user 'u'@'h' (using password: YES)",
            ),
            "h:3306",
        );
        assert_eq!(e.code(), Code::AuthFailed);
        assert_eq!(e.layer(), Layer::Login);
        assert!(!e.is_retryable());
        assert_eq!(e.sqlstate(), Some("28000"));
        let e = login_error(&fields(1049, "42000", "Unknown database 'x'"), "h:3306");
        assert_eq!(e.code(), Code::ServerError);
        assert_eq!(e.layer(), Layer::Login);
        assert!(!e.is_retryable());
        assert!(
            e.to_string()
                .contains("server error 1049: Unknown database 'x'"),
            "{e}"
        );
        let e = login_error(&fields(1040, "08004", "Too many connections"), "h:3306");
        assert!(e.is_retryable());
    }

    #[test]
    fn query_errors_keep_the_number_and_spot_lost_sessions() {
        let mut broken = false;
        let e = query_error(
            &fields(1146, "42S02", "Table 'd.x' doesn't exist"),
            "h:3306",
            &mut broken,
        );
        assert_eq!(e.code(), Code::ServerError);
        assert_eq!(e.message(), "server error 1146: Table 'd.x' doesn't exist");
        assert!(!broken);
        let e = query_error(
            &fields(1927, "70100", "Connection was killed"),
            "h:3306",
            &mut broken,
        );
        assert_eq!(e.code(), Code::ConnectionLost);
        assert!(broken);
    }
}
