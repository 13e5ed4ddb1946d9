//! SCRAM-SHA-256 verifiers in Postgres's `SCRAM-SHA-256$iter:salt$StoredKey:ServerKey` format.

/// A parsed SCRAM-SHA-256 verifier (placeholder until the SCRAM module lands).
#[derive(Clone, Debug)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}
