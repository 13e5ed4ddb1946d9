//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) for jitgate's own login to an
//! upstream database, with the password-derived keys cached.
//!
//! PBKDF2 (4096 rounds by default, ~1 ms of CPU) dominates a SCRAM login. Its output
//! depends only on (password, salt, iterations), and an upstream role's salt and
//! iteration count only change when its password is set again, so [`ScramKeyCache`]
//! keeps `ClientKey`/`StoredKey`/`ServerKey` per (credential, salt, iterations): every
//! login after the first skips PBKDF2 and costs a few HMACs. Because the cached value is a
//! pure function of its key, a server cannot poison the cache; the server's signature is
//! verified on every login all the same ([`ScramClient::verify_server_final`]).
//!
//! ```text
//! client-first  n,,n=,r=<client nonce>             (no channel binding, as before)
//! server-first  r=<client+server nonce>,s=<salt>,i=<iterations>
//! client-final  c=biws,r=<nonce>,p=<ClientKey XOR HMAC(StoredKey, AuthMessage)>
//! server-final  v=<HMAC(ServerKey, AuthMessage)>   (checked in constant time)
//! ```

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use super::keys::{self, Key};

/// GS2 header of a client that does not support channel binding (what the proxy sent
/// before keys were cached: `ChannelBinding::unsupported()`).
const GS2_HEADER: &str = "n,,";
/// `base64("n,,")`, the `c=` attribute of client-final-message.
const GS2_HEADER_B64: &str = "biws";
/// Raw bytes of the client nonce (base64: 24 printable characters, as libpq sends).
const CLIENT_NONCE_LEN: usize = 18;

/// Why the SCRAM exchange with the upstream failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramClientError {
    /// The server's message does not follow RFC 5802.
    Malformed(&'static str),
    /// The server's nonce does not extend ours.
    Nonce,
    /// The server reported an error (`e=…`) in server-final-message.
    ServerError(String),
    /// The server's signature did not verify: it does not know the role's secret.
    Signature,
    /// A message arrived out of order.
    OutOfOrder,
}

impl std::fmt::Display for ScramClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramClientError::Malformed(what) => write!(f, "invalid SCRAM message: {what}"),
            ScramClientError::Nonce => f.write_str("the server's SCRAM nonce does not match ours"),
            ScramClientError::ServerError(e) => write!(f, "the server ended SCRAM: {e}"),
            ScramClientError::Signature => {
                f.write_str("the server's SCRAM signature did not verify")
            }
            ScramClientError::OutOfOrder => f.write_str("SCRAM message out of order"),
        }
    }
}

impl std::error::Error for ScramClientError {}

/// The keys derived from a password, a salt and an iteration count.
#[derive(Clone, Copy)]
pub struct ScramKeys {
    client_key: Key,
    stored_key: Key,
    server_key: Key,
}

impl ScramKeys {
    /// Runs PBKDF2 (`iterations` rounds of HMAC-SHA-256): call off the async workers.
    /// The password is SASLprep-normalized the way libpq and Postgres do it.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let normalized = keys::normalize_password(password);
        let salted = keys::salted_password(&normalized, salt, iterations);
        let client_key = keys::hmac(&salted, &[b"Client Key"]);
        ScramKeys {
            client_key,
            stored_key: keys::sha256(&client_key),
            server_key: keys::hmac(&salted, &[b"Server Key"]),
        }
    }

    /// The verifier a server stores for the password these keys were derived from with
    /// `salt` and `iterations` (so a role jitgate creates costs one PBKDF2, not two).
    pub fn verifier(&self, salt: &[u8], iterations: u32) -> crate::auth::ScramVerifier {
        crate::auth::ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: self.stored_key,
            server_key: self.server_key,
        }
    }
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(***)")
    }
}

/// Bounded cache of [`ScramKeys`] per (password, salt, iterations).
///
/// Entries are found by an HMAC of the inputs under a random per-process key, so the cache
/// holds no password and no unsalted password hash. Normally it holds one entry per
/// upstream role; the bound only matters against an upstream that sends a fresh salt every
/// time (then an arbitrary entry is dropped to make room).
pub struct ScramKeyCache {
    lookup_key: Key,
    capacity: usize,
    entries: Mutex<HashMap<Key, ScramKeys>>,
}

impl ScramKeyCache {
    /// Default bound on entries (each is ~130 bytes).
    pub const DEFAULT_CAPACITY: usize = 1024;

    pub fn new(capacity: usize) -> Self {
        let mut lookup_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut lookup_key);
        ScramKeyCache {
            lookup_key,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn id(&self, password: &[u8], salt: &[u8], iterations: u32) -> Key {
        let pw_len = (password.len() as u64).to_be_bytes();
        let salt_len = (salt.len() as u64).to_be_bytes();
        keys::hmac(
            &self.lookup_key,
            &[
                &pw_len,
                password,
                &salt_len,
                salt,
                &iterations.to_be_bytes(),
            ],
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, ScramKeys>> {
        // The map is always consistent (single inserts/removes), so a poisoned lock
        // is still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached keys, if any.
    pub fn get(&self, password: &[u8], salt: &[u8], iterations: u32) -> Option<ScramKeys> {
        let id = self.id(password, salt, iterations);
        self.lock().get(&id).copied()
    }

    /// Remembers `keys` (which must be [`ScramKeys::derive`] of the same inputs).
    pub fn insert(&self, password: &[u8], salt: &[u8], iterations: u32, keys: ScramKeys) {
        let id = self.id(password, salt, iterations);
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&id) {
            if let Some(victim) = map.keys().next().copied() {
                map.remove(&victim);
            }
        }
        map.insert(id, keys);
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys for (password, salt, iterations): from the cache, or derived on a
    /// blocking thread (PBKDF2 is too long for an async worker) and cached.
    pub async fn keys(
        &self,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> std::io::Result<ScramKeys> {
        if let Some(k) = self.get(password, salt, iterations) {
            return Ok(k);
        }
        let (pw, s) = (password.to_vec(), salt.to_vec());
        let derived = tokio::task::spawn_blocking(move || ScramKeys::derive(&pw, &s, iterations))
            .await
            .map_err(std::io::Error::other)?;
        self.insert(password, salt, iterations, derived);
        Ok(derived)
    }
}

impl Default for ScramKeyCache {
    fn default() -> Self {
        ScramKeyCache::new(Self::DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for ScramKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeyCache")
            .field("entries", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// What server-first-message tells the client.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFirst {
    pub salt: Vec<u8>,
    pub iterations: u32,
}

enum State {
    /// client-first sent; waiting for server-first.
    SentFirst,
    /// server-first parsed; waiting for the keys to build client-final.
    GotServerFirst {
        server_first: String,
        nonce: String,
    },
    /// client-final sent; waiting for server-final.
    SentFinal {
        server_key: Key,
        auth_message: Vec<u8>,
    },
    /// The server's signature verified.
    Done,
    Failed,
}

/// One client-side SCRAM-SHA-256 exchange, without I/O.
pub struct ScramClient {
    client_nonce: String,
    state: State,
}

impl ScramClient {
    /// Starts an exchange with a fresh random nonce.
    pub fn new() -> Self {
        let mut raw = [0u8; CLIENT_NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut raw);
        Self::with_nonce(STANDARD.encode(raw))
    }

    /// Starts an exchange with a given nonce (printable ASCII without ','); for tests.
    pub fn with_nonce(client_nonce: String) -> Self {
        ScramClient {
            client_nonce,
            state: State::SentFirst,
        }
    }

    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.client_nonce)
    }

    /// client-first-message, the data of SASLInitialResponse. The user name is empty:
    /// Postgres takes the role from the startup packet.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare()).into_bytes()
    }

    /// Takes server-first-message (AuthenticationSASLContinue) and says which salt and
    /// iteration count the keys must be derived for.
    pub fn handle_server_first(&mut self, data: &[u8]) -> Result<ServerFirst, ScramClientError> {
        if !matches!(self.state, State::SentFirst) {
            self.state = State::Failed;
            return Err(ScramClientError::OutOfOrder);
        }
        self.state = State::Failed;
        let text = std::str::from_utf8(data)
            .map_err(|_| ScramClientError::Malformed("server-first-message is not UTF-8"))?;
        let mut attrs = text.split(',');
        let nonce =
            attrs
                .next()
                .and_then(|a| a.strip_prefix("r="))
                .ok_or(ScramClientError::Malformed(
                    "server-first-message: no nonce",
                ))?;
        let salt = attrs
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .ok_or(ScramClientError::Malformed("server-first-message: no salt"))?;
        let iterations =
            attrs
                .next()
                .and_then(|a| a.strip_prefix("i="))
                .ok_or(ScramClientError::Malformed(
                    "server-first-message: no iteration count",
                ))?;
        if !nonce.starts_with(&self.client_nonce)
            || !nonce
                .bytes()
                .all(|b| matches!(b, 0x21..=0x2b | 0x2d..=0x7e))
        {
            return Err(ScramClientError::Nonce);
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| ScramClientError::Malformed("server-first-message: salt"))?;
        let iterations = match iterations.parse::<u32>() {
            Ok(n) if n > 0 && !iterations.starts_with('+') => n,
            _ => {
                return Err(ScramClientError::Malformed(
                    "server-first-message: iteration count",
                ))
            }
        };
        self.state = State::GotServerFirst {
            server_first: text.to_owned(),
            nonce: nonce.to_owned(),
        };
        Ok(ServerFirst { salt, iterations })
    }

    /// client-final-message (the data of SASLResponse), proving knowledge of `keys`.
    pub fn client_final(&mut self, keys: &ScramKeys) -> Result<Vec<u8>, ScramClientError> {
        let State::GotServerFirst {
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(ScramClientError::OutOfOrder);
        };
        let without_proof = format!("c={GS2_HEADER_B64},r={nonce}");
        let mut auth_message = self.client_first_bare().into_bytes();
        auth_message.push(b',');
        auth_message.extend_from_slice(server_first.as_bytes());
        auth_message.push(b',');
        auth_message.extend_from_slice(without_proof.as_bytes());
        let signature = keys::hmac(&keys.stored_key, &[&auth_message]);
        let proof: Key = std::array::from_fn(|i| keys.client_key[i] ^ signature[i]);
        let message = format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes();
        self.state = State::SentFinal {
            server_key: keys.server_key,
            auth_message,
        };
        Ok(message)
    }

    /// Takes server-final-message (AuthenticationSASLFinal) and checks the server's
    /// signature in constant time.
    pub fn verify_server_final(&mut self, data: &[u8]) -> Result<(), ScramClientError> {
        let State::SentFinal {
            server_key,
            auth_message,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(ScramClientError::OutOfOrder);
        };
        let first = data.split(|&b| b == b',').next().unwrap_or_default();
        if let Some(e) = first.strip_prefix(b"e=") {
            return Err(ScramClientError::ServerError(
                String::from_utf8_lossy(e).into_owned(),
            ));
        }
        let signature: Key = first
            .strip_prefix(b"v=")
            .and_then(|v| STANDARD.decode(v).ok())
            .and_then(|v| v.try_into().ok())
            .ok_or(ScramClientError::Malformed("server-final-message"))?;
        let expected = keys::hmac(&server_key, &[&auth_message]);
        if !keys::ct_eq(&signature, &expected) {
            return Err(ScramClientError::Signature);
        }
        self.state = State::Done;
        Ok(())
    }

    /// Whether the server's signature verified.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

impl Default for ScramClient {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::SentFirst => "sent client-first",
            State::GotServerFirst { .. } => "got server-first",
            State::SentFinal { .. } => "sent client-final",
            State::Done => "done",
            State::Failed => "failed",
        };
        f.debug_struct("ScramClient")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    use super::*;
    use crate::auth::{ScramServer, ScramVerifier};

    const PASSWORD: &[u8] = b"pencil \xc2\xa0secret";

    fn exchange(cache: &ScramKeyCache, verifier: &ScramVerifier) -> Result<(), ScramClientError> {
        let mut client = ScramClient::new();
        let mut server = ScramServer::new(verifier.clone(), [9; 18]);
        let sf = server.handle_client_first(&client.client_first()).unwrap();
        let parsed = client.handle_server_first(&sf)?;
        let keys = cache
            .get(PASSWORD, &parsed.salt, parsed.iterations)
            .unwrap_or_else(|| {
                let k = ScramKeys::derive(PASSWORD, &parsed.salt, parsed.iterations);
                cache.insert(PASSWORD, &parsed.salt, parsed.iterations, k);
                k
            });
        let cf = client.client_final(&keys)?;
        let fin = server.handle_client_final(&cf).unwrap();
        client.verify_server_final(&fin)?;
        assert!(client.is_done());
        Ok(())
    }

    #[test]
    fn logs_in_against_our_server_and_reuses_keys() {
        let cache = ScramKeyCache::new(4);
        let verifier = ScramVerifier::from_password_with_salt(PASSWORD, b"salt-salt-salt!!", 4096);
        exchange(&cache, &verifier).unwrap();
        assert_eq!(cache.len(), 1);
        exchange(&cache, &verifier).unwrap();
        assert_eq!(cache.len(), 1);
    }

    /// The messages match what postgres-protocol's client (used before) computes for
    /// the same nonce: our proof is accepted by a transcript built by it, byte for byte.
    #[test]
    fn same_messages_as_postgres_protocol() {
        let mut reference = ScramSha256::new(PASSWORD, ChannelBinding::unsupported());
        let first = reference.message().to_vec();
        let nonce = std::str::from_utf8(&first)
            .unwrap()
            .strip_prefix("n,,n=,r=")
            .unwrap()
            .to_owned();
        let mut ours = ScramClient::with_nonce(nonce.clone());
        assert_eq!(ours.client_first(), first);
        let server_first = format!(
            "r={nonce}SERVERPART,s={},i=4096",
            STANDARD.encode(b"0123456789abcdef")
        );
        reference.update(server_first.as_bytes()).unwrap();
        let parsed = ours.handle_server_first(server_first.as_bytes()).unwrap();
        assert_eq!(parsed.iterations, 4096);
        let keys = ScramKeys::derive(PASSWORD, &parsed.salt, parsed.iterations);
        assert_eq!(ours.client_final(&keys).unwrap(), reference.message());
    }

    #[test]
    fn wrong_server_signature_is_refused() {
        let mut client = ScramClient::with_nonce("abc".into());
        let sf = format!("r=abcdef,s={},i=10", STANDARD.encode(b"salt"));
        let p = client.handle_server_first(sf.as_bytes()).unwrap();
        let keys = ScramKeys::derive(PASSWORD, &p.salt, p.iterations);
        client.client_final(&keys).unwrap();
        let bad = format!("v={}", STANDARD.encode([0u8; 32]));
        assert_eq!(
            client.verify_server_final(bad.as_bytes()),
            Err(ScramClientError::Signature)
        );
        assert!(!client.is_done());
    }

    #[test]
    fn server_first_rejections() {
        let cases: [&[u8]; 7] = [
            b"r=xyz,s=c2FsdA==,i=4096",
            b"r=abcdef,s=c2FsdA==",
            b"r=abcdef,s=!!,i=4096",
            b"r=abcdef,s=c2FsdA==,i=0",
            b"r=abcdef,s=c2FsdA==,i=+5",
            b"m=ext,r=abcdef,s=c2FsdA==,i=4096",
            b"\xff",
        ];
        for case in cases {
            let mut client = ScramClient::with_nonce("abc".into());
            assert!(
                client.handle_server_first(case).is_err(),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
        let mut client = ScramClient::with_nonce("abc".into());
        assert!(client.verify_server_final(b"v=AAAA").is_err());
    }

    #[test]
    fn server_error_is_reported() {
        let mut client = ScramClient::with_nonce("abc".into());
        let sf = format!("r=abcdef,s={},i=1", STANDARD.encode(b"salt"));
        let p = client.handle_server_first(sf.as_bytes()).unwrap();
        let keys = ScramKeys::derive(PASSWORD, &p.salt, p.iterations);
        client.client_final(&keys).unwrap();
        assert_eq!(
            client.verify_server_final(b"e=invalid-proof"),
            Err(ScramClientError::ServerError("invalid-proof".into()))
        );
    }

    #[test]
    fn cache_is_bounded_and_keyed_by_every_input() {
        let cache = ScramKeyCache::new(2);
        let k = ScramKeys::derive(b"pw", b"s1", 1);
        cache.insert(b"pw", b"s1", 1, k);
        assert!(cache.get(b"pw", b"s1", 1).is_some());
        assert!(cache.get(b"pw2", b"s1", 1).is_none());
        assert!(cache.get(b"pw", b"s2", 1).is_none());
        assert!(cache.get(b"pw", b"s1", 2).is_none());
        // length-prefixed: moving a byte between password and salt is another entry
        assert!(cache.get(b"pws", b"1", 1).is_none());
        cache.insert(b"pw", b"s2", 1, k);
        cache.insert(b"pw", b"s3", 1, k);
        assert_eq!(cache.len(), 2);
    }
}
