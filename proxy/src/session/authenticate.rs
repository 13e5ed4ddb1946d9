//! SCRAM-SHA-256 with the client, against the identity's stored verifier.
//!
//! An unknown identity runs the same exchange against a per-process mock verifier, so
//! it fails exactly like a wrong password: the client cannot probe for identity names.

use super::client::{ClientConn, ReadError};
use crate::auth::{ScramServer, ScramVerifier};
use crate::error::AuthError;
use crate::protocol::frontend::{parse_sasl_initial_response, sasl_response};
use crate::protocol::ProtocolError;
use crate::protocol::{backend, tags};

/// The SASL mechanism we offer.
const MECHANISM: &str = "SCRAM-SHA-256";

/// How authentication failed.
#[derive(Debug)]
pub enum AuthFailure {
    /// Wrong password, unknown identity or a broken exchange.
    Auth(AuthError),
    Read(ReadError),
    Io(std::io::Error),
}

impl From<ReadError> for AuthFailure {
    fn from(e: ReadError) -> Self {
        AuthFailure::Read(e)
    }
}

async fn expect_password(conn: &mut ClientConn) -> Result<bytes::Bytes, AuthFailure> {
    let frame = conn.read_frame().await?;
    if frame.tag != tags::PASSWORD {
        return Err(AuthFailure::Read(ReadError::Protocol(
            ProtocolError::UnexpectedMessage {
                expected: "SASL response",
                got: frame.tag as char,
            },
        )));
    }
    Ok(frame.body)
}

/// Runs the exchange; on success AuthenticationSASLFinal and AuthenticationOk are queued
/// in `conn.out` (not yet flushed).
pub async fn authenticate(
    conn: &mut ClientConn,
    verifier: Option<&ScramVerifier>,
    identity: &str,
    mock_secret: &[u8; 32],
) -> Result<(), AuthFailure> {
    let mock;
    let verifier = match verifier {
        Some(v) => v,
        None => {
            mock = ScramVerifier::mock(identity, mock_secret);
            &mock
        }
    };
    let nonce: [u8; 18] = rand::random();
    let mut server = ScramServer::new(verifier.clone(), nonce);

    backend::authentication_sasl(&mut conn.out, &[MECHANISM]);
    conn.flush().await.map_err(AuthFailure::Io)?;

    let body = expect_password(conn).await?;
    let initial =
        parse_sasl_initial_response(body).map_err(|e| AuthFailure::Read(ReadError::Protocol(e)))?;
    if initial.mechanism != MECHANISM {
        return Err(AuthFailure::Auth(AuthError::UnsupportedMechanism));
    }
    let server_first = server
        .handle_client_first(&initial.data)
        .map_err(AuthFailure::Auth)?;
    backend::authentication_sasl_continue(&mut conn.out, &server_first);
    conn.flush().await.map_err(AuthFailure::Io)?;

    let body = expect_password(conn).await?;
    let server_final = server
        .handle_client_final(&sasl_response(body))
        .map_err(AuthFailure::Auth)?;
    backend::authentication_sasl_final(&mut conn.out, &server_final);
    backend::authentication_ok(&mut conn.out);
    Ok(())
}
