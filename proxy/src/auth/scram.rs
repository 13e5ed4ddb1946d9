//! The server side of one SCRAM-SHA-256 exchange (RFC 5802, RFC 7677), as a state
//! machine without I/O.
//!
//! The session drives it: AuthenticationSASL → client-first (SASLInitialResponse) →
//! [`ScramServer::handle_client_first`] → AuthenticationSASLContinue → client-final
//! (SASLResponse) → [`ScramServer::handle_client_final`] → AuthenticationSASLFinal +
//! AuthenticationOk, or an ErrorResponse with the error's SQLSTATE.
//!
//! Only `SCRAM-SHA-256` is offered (no `-PLUS`): a client may send GS2 flag `n` (no
//! channel binding support) or `y` (supports it, but we did not offer it); `p` is refused.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::keys::{self, Key};
use super::messages::{parse_client_final, parse_client_first};
use super::verifier::ScramVerifier;
use crate::error::AuthError;

/// The SASL mechanism name we offer and accept.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Length of the server's share of the nonce; Postgres uses 18 random bytes too
/// (`SCRAM_RAW_NONCE_LEN`), which base64-encode to 24 characters without padding.
pub const SERVER_NONCE_LEN: usize = 18;

/// Where the exchange is.
enum State {
    /// Waiting for client-first-message.
    Initial,
    /// server-first-message sent; waiting for client-final-message.
    SentServerFirst {
        gs2_header: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: String,
        nonce: String,
    },
    /// The client's proof verified.
    Authenticated,
    /// An error ended the exchange; every further message is refused.
    Failed,
}

/// The server side of one SCRAM-SHA-256 exchange for one identity.
pub struct ScramServer {
    verifier: ScramVerifier,
    server_nonce: [u8; SERVER_NONCE_LEN],
    state: State,
}

impl ScramServer {
    /// Starts an exchange against `verifier` (the identity's, or
    /// [`ScramVerifier::mock`] for an unknown identity). `server_nonce` must be fresh
    /// random bytes in production; tests pass a fixed one to replay recorded exchanges.
    pub fn new(verifier: ScramVerifier, server_nonce: [u8; SERVER_NONCE_LEN]) -> Self {
        ScramServer {
            verifier,
            server_nonce,
            state: State::Initial,
        }
    }

    /// Takes client-first-message (the data of SASLInitialResponse) and returns the
    /// server-first-message to send in AuthenticationSASLContinue.
    ///
    /// The username in the message is ignored, as Postgres ignores it: the identity is
    /// the startup packet's `user`.
    pub fn handle_client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::Initial) {
            self.state = State::Failed;
            return Err(AuthError::OutOfOrder);
        }
        self.state = State::Failed;
        let first = parse_client_first(data)?;
        let nonce = format!("{}{}", first.nonce, STANDARD.encode(self.server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::SentServerFirst {
            gs2_header: first.gs2_header.to_vec(),
            client_first_bare: first.bare.to_vec(),
            server_first,
            nonce,
        };
        Ok(reply)
    }

    /// Takes client-final-message (the data of SASLResponse) and returns the
    /// server-final-message (`v=<ServerSignature>`) to send in AuthenticationSASLFinal if
    /// the client's proof verifies; [`AuthError::AuthFailed`] if it does not (compared in
    /// constant time).
    pub fn handle_client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::SentServerFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(AuthError::OutOfOrder);
        };
        let fin = parse_client_final(data)?;
        // The client must repeat its GS2 header, and carries no channel-binding data.
        if fin.channel_binding != gs2_header {
            return Err(AuthError::ChannelBindingMismatch);
        }
        if fin.nonce != nonce.as_bytes() {
            return Err(AuthError::NonceMismatch);
        }
        let auth_message: [&[u8]; 5] = [
            &client_first_bare,
            b",",
            server_first.as_bytes(),
            b",",
            fin.without_proof,
        ];
        let client_signature = keys::hmac(&self.verifier.stored_key, &auth_message);
        let client_key: Key = std::array::from_fn(|i| fin.proof[i] ^ client_signature[i]);
        if !keys::ct_eq(&keys::sha256(&client_key), &self.verifier.stored_key) {
            return Err(AuthError::AuthFailed);
        }
        let server_signature = keys::hmac(&self.verifier.server_key, &auth_message);
        self.state = State::Authenticated;
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }

    /// Whether the exchange completed with a verified proof.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated)
    }
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::SentServerFirst { .. } => "sent server-first",
            State::Authenticated => "authenticated",
            State::Failed => "failed",
        };
        f.debug_struct("ScramServer")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
