//! ErrorResponse → [`Error`], keeping the server's SQLSTATE, message,
//! detail, hint and position.

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorFields, ErrorResponseBody};

use crate::error::{Code, Error, Layer};

/// The fields of an ErrorResponse that a reader acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServerFields {
    pub severity: String,
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    pub position: Option<String>,
}

pub fn fields(body: &ErrorResponseBody) -> ServerFields {
    fields_of(body.fields())
}

/// The fields of an ErrorResponse or a NoticeResponse (same layout).
pub fn fields_of(mut it: ErrorFields<'_>) -> ServerFields {
    let mut f = ServerFields::default();
    while let Ok(Some(field)) = it.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => f.severity = value,
            b'S' if f.severity.is_empty() => f.severity = value,
            b'C' => f.sqlstate = value,
            b'M' => f.message = value,
            b'D' => f.detail = Some(value),
            b'H' => f.hint = Some(value),
            b'P' => f.position = Some(value),
            _ => {}
        }
    }
    f
}

pub fn sqlstate_of(body: &ErrorResponseBody) -> Option<String> {
    let f = fields(body);
    (!f.sqlstate.is_empty()).then_some(f.sqlstate)
}

/// SERVER_ERROR for `layer` from the server's fields.
pub fn server_error(f: &ServerFields, peer: &str, layer: Layer) -> Error {
    let mut message = format!("server error: {}", f.message);
    if let Some(p) = &f.position {
        message.push_str(&format!(" (at character {p})"));
    }
    let mut e = Error::new(Code::ServerError, message)
        .with_layer(layer)
        .with_peer(peer)
        .with_sqlstate(f.sqlstate.clone())
        .with_retryable(false);
    if let Some(d) = &f.detail {
        e = e.with_cause(d.clone());
    }
    if let Some(h) = &f.hint {
        e = e.with_hint(h.clone());
    }
    e
}

pub(super) fn query_error(body: &ErrorResponseBody, peer: &str) -> Error {
    server_error(&fields(body), peer, Layer::Query)
}

/// Errors during startup: bad credentials are AUTH_FAILED; an unknown
/// database or role is a permanent login error with its SQLSTATE; too many
/// connections or a starting server may pass.
pub(super) fn login_error(body: &ErrorResponseBody, peer: &str) -> Error {
    let f = fields(body);
    match f.sqlstate.as_str() {
        "28P01" | "28000" => Error::new(
            Code::AuthFailed,
            format!("authentication failed: {}", f.message),
        )
        .with_peer(peer)
        .with_sqlstate(f.sqlstate.clone())
        .with_hint("check the user name and password, and pg_hba.conf on the server")
        .with_retryable(false),
        "53300" | "57P03" | "53000" => {
            let hint = if f.sqlstate == "53300" {
                "the server is at max_connections: lower max_open across pools, or put PgBouncer in front"
            } else {
                "the server is starting up or shutting down; try again shortly"
            };
            server_error(&f, peer, Layer::Login)
                .with_hint(hint)
                .with_retryable(true)
        }
        _ => {
            let e = server_error(&f, peer, Layer::Login);
            if f.sqlstate == "3D000" {
                e.with_hint("the database does not exist: check the URL's database name")
            } else {
                e
            }
        }
    }
}
