//! Authentication: trust, cleartext, MD5 and SCRAM-SHA-256, with channel
//! binding (SCRAM-SHA-256-PLUS, tls-server-end-point) when on TLS.

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::{error, PgConnection};
use crate::error::{Code, Error, Result};
use crate::stream::Stream;

fn auth_failed(conn: &PgConnection, what: &str, hint: &str) -> Error {
    Error::new(Code::AuthFailed, what.to_string())
        .with_peer(conn.wire.peer.clone())
        .with_hint(hint.to_string())
        .with_retryable(false)
}

fn need_password<'a>(conn: &PgConnection, password: Option<&'a str>) -> Result<&'a str> {
    password.ok_or_else(|| {
        auth_failed(
            conn,
            "the server asked for a password and none was given",
            "put the password in the URL (user:password@host) or the password option",
        )
    })
}

pub(super) async fn authenticate(
    conn: &mut PgConnection,
    user: &str,
    password: Option<&str>,
) -> Result<()> {
    loop {
        match conn.read_message().await? {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                let pw = need_password(conn, password)?;
                conn.auth_method = "password";
                frontend::password_message(pw.as_bytes(), &mut conn.wire.wbuf).map_err(encode)?;
                conn.wire.flush().await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let pw = need_password(conn, password)?;
                conn.auth_method = "md5";
                let hash =
                    postgres_protocol::authentication::md5_hash(user.as_bytes(), pw.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut conn.wire.wbuf).map_err(encode)?;
                conn.wire.flush().await?;
            }
            Message::AuthenticationSasl(body) => {
                let pw = need_password(conn, password)?;
                let mut plus = false;
                let mut plain = false;
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms.next().map_err(|e| conn.malformed(e))? {
                    match m {
                        sasl::SCRAM_SHA_256_PLUS => plus = true,
                        sasl::SCRAM_SHA_256 => plain = true,
                        _ => {}
                    }
                }
                let endpoint = server_end_point(&conn.wire.stream);
                let (mechanism, binding) = match (plus, endpoint) {
                    (true, Some(hash)) => (sasl::SCRAM_SHA_256_PLUS, ChannelBinding::tls_server_end_point(hash)),
                    _ if plain => (
                        sasl::SCRAM_SHA_256,
                        if conn.wire.stream.is_tls() {
                            ChannelBinding::unrequested()
                        } else {
                            ChannelBinding::unsupported()
                        },
                    ),
                    _ => {
                        return Err(auth_failed(
                            conn,
                            "the server offers no SASL mechanism dialpool supports",
                            "dialpool supports SCRAM-SHA-256 and SCRAM-SHA-256-PLUS",
                        ))
                    }
                };
                conn.auth_method = mechanism;
                let mut scram = ScramSha256::new(pw.as_bytes(), binding);
                frontend::sasl_initial_response(mechanism, scram.message(), &mut conn.wire.wbuf)
                    .map_err(encode)?;
                conn.wire.flush().await?;
                let data = match conn.read_message().await? {
                    Message::AuthenticationSaslContinue(b) => b.data().to_vec(),
                    Message::ErrorResponse(body) => return Err(error::login_error(&body, &conn.wire.peer)),
                    _ => return Err(conn.unexpected("during SCRAM")),
                };
                scram.update(&data).map_err(|e| scram_error(conn, e))?;
                frontend::sasl_response(scram.message(), &mut conn.wire.wbuf).map_err(encode)?;
                conn.wire.flush().await?;
                let data = match conn.read_message().await? {
                    Message::AuthenticationSaslFinal(b) => b.data().to_vec(),
                    Message::ErrorResponse(body) => return Err(error::login_error(&body, &conn.wire.peer)),
                    _ => return Err(conn.unexpected("during SCRAM")),
                };
                // Verifies the server's signature: the server knew the password too.
                scram.finish(&data).map_err(|e| scram_error(conn, e))?;
            }
            Message::ErrorResponse(body) => return Err(error::login_error(&body, &conn.wire.peer)),
            Message::NoticeResponse(_) => {}
            Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationGss
            | Message::AuthenticationSspi
            | Message::AuthenticationGssContinue(_) => {
                return Err(auth_failed(
                    conn,
                    "the server asks for GSSAPI/SSPI/Kerberos authentication, which dialpool does not support",
                    "use password or SCRAM authentication for this user in pg_hba.conf",
                ))
            }
            _ => return Err(conn.unexpected("during authentication")),
        }
    }
}

fn encode(e: std::io::Error) -> Error {
    Error::invalid_argument(format!("cannot encode the login message: {e}"))
}

fn scram_error(conn: &PgConnection, e: std::io::Error) -> Error {
    Error::new(Code::AuthFailed, format!("SCRAM exchange failed: {e}"))
        .with_peer(conn.wire.peer.clone())
        .with_hint(
            "the server's SCRAM proof did not verify; is something between us and the server?",
        )
        .with_retryable(false)
}

/// tls-server-end-point (RFC 5929): the hash of the server's certificate,
/// with the certificate's own signature hash (SHA-256 for MD5 and SHA-1).
fn server_end_point(stream: &Stream) -> Option<Vec<u8>> {
    let Stream::Tls(tls) = stream else {
        return None;
    };
    let cert = tls.get_ref().1.peer_certificates()?.first()?;
    let der: &[u8] = cert.as_ref();
    let algorithm = match signature_oid(der)? {
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03] => &ring::digest::SHA384,
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04] => &ring::digest::SHA512,
        // Ed25519/Ed448 have no hash of their own: no channel binding.
        [0x2b, 0x65, 0x70] | [0x2b, 0x65, 0x71] => return None,
        _ => &ring::digest::SHA256,
    };
    Some(ring::digest::digest(algorithm, der).as_ref().to_vec())
}

/// The signatureAlgorithm OID of an X.509 certificate:
/// `SEQUENCE { tbsCertificate, SEQUENCE { OID, ... }, BIT STRING }`.
fn signature_oid(der: &[u8]) -> Option<&[u8]> {
    let (_, cert, _) = der_element(der, 0x30)?;
    let (_, _, after_tbs) = der_element(cert, 0x30)?;
    let (_, alg, _) = der_element(after_tbs, 0x30)?;
    let (_, oid, _) = der_element(alg, 0x06)?;
    Some(oid)
}

/// Splits one DER element with tag `tag`: (header, content, rest).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((
        input.get(..header)?,
        input.get(header..end)?,
        input.get(end..)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walk_finds_the_signature_algorithm() {
        // SEQ { SEQ {02 01 01}, SEQ { OID 2a864886f70d01010b, NULL }, BITSTRING }
        let der = [
            0x30, 0x15, 0x30, 0x03, 0x02, 0x01, 0x01, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48,
            0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00, 0x03, 0x01, 0x00,
        ];
        assert_eq!(
            signature_oid(&der),
            Some(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b][..])
        );
        assert_eq!(signature_oid(&der[..10]), None);
        assert_eq!(signature_oid(&[]), None);
    }
}
