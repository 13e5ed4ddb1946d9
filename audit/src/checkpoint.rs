//! Signed checkpoints: every so often jitgate signs "the log holds events up to `seq` N,
//! and the line of N hashes to H", and appends that to a file of its own.
//!
//! The hash chain alone shows that the lines fit together, but someone who can write
//! the log could rewrite a whole tail and recompute the chain, or cut the tail off. A
//! checkpoint signed with a key the writer of the log does not need to share pins the
//! log's state at that moment: a rewritten or missing event at or before a checkpointed
//! `seq` is detected. Checkpoints chain to each other the same way events do (`prev` =
//! SHA-256 of the previous checkpoint line), so deleting or reordering checkpoints is
//! detected too.
//!
//! # Encoding
//!
//! One JSON object per line. The signature covers the exact bytes of the line from its
//! first byte up to (not including) the final `,"sig":"`, preceded by the ASCII text
//! [`SIGNATURE_DOMAIN`]. The line must end with `,"sig":"<base64 of 64 bytes>"}`. So the
//! signed bytes are the stored bytes: nothing is re-serialized before checking.

use base64::Engine as _;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::chain::LineHash;
use crate::keys::{PublicKey, SigningKey};

/// Version of the checkpoint line format.
pub const CHECKPOINT_VERSION: u32 = 1;
/// Prefix of the signed message, so a checkpoint signature can never be mistaken for a
/// signature over anything else made with the same key.
pub const SIGNATURE_DOMAIN: &[u8] = b"jitgate audit checkpoint v1\n";
/// What separates the signed part of a line from its signature.
const SIG_FIELD: &[u8] = b",\"sig\":\"";

/// Why a checkpoint was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointReason {
    /// `checkpoint_every` events since the previous checkpoint.
    Events,
    /// `checkpoint_interval` elapsed with events not yet covered.
    Interval,
    /// The live file was closed (rotated); `file` names the closed file.
    Rotation,
    /// jitgate shut down.
    Shutdown,
    /// The writer opened the log: pins what it found (the end of the log, or `last_seq`
    /// 0 for an empty log), so the checkpoints file is never empty while a key is
    /// configured, and events written just before a crash get covered.
    Start,
}

/// One checkpoint line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`CHECKPOINT_VERSION`].
    pub v: u32,
    /// When it was written (µs, UTC).
    #[serde(with = "crate::time::micros")]
    pub ts: Timestamp,
    /// Why it was written.
    pub reason: CheckpointReason,
    /// Base name of the file that held `last_seq` when the checkpoint was written (the
    /// live file's name, or for `rotation` the closed file's name).
    pub file: String,
    /// The oldest `seq` the log set is meant to hold: 1, or the first `seq` of the
    /// oldest file kept by retention. Files before it were deleted on purpose; a log
    /// that starts later than this is missing files.
    pub first_seq: u64,
    /// The last event the checkpoint covers.
    pub last_seq: u64,
    /// SHA-256 of the stored line of `last_seq`.
    pub last_hash: LineHash,
    /// SHA-256 of the previous checkpoint line ([`LineHash::GENESIS`] for the first).
    pub prev: LineHash,
    /// The public key (hex) whose private half signed this line.
    pub key: String,
    /// Ed25519 signature, standard base64 with padding.
    pub sig: String,
}

/// The fields of a checkpoint that the writer chooses (the rest is derived).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CheckpointFields {
    pub ts: Timestamp,
    pub reason: CheckpointReason,
    pub file: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: LineHash,
    pub prev: LineHash,
}

/// The signed part, in line order.
#[derive(Serialize)]
struct Unsigned<'a> {
    v: u32,
    #[serde(with = "crate::time::micros")]
    ts: Timestamp,
    reason: CheckpointReason,
    file: &'a str,
    first_seq: u64,
    last_seq: u64,
    last_hash: LineHash,
    prev: LineHash,
    key: &'a str,
}

/// Encodes and signs a checkpoint line (without its `\n`).
pub(crate) fn encode(
    fields: &CheckpointFields,
    key: &SigningKey,
) -> Result<Vec<u8>, serde_json::Error> {
    let key_hex = key.public().to_hex();
    let mut line = serde_json::to_vec(&Unsigned {
        v: CHECKPOINT_VERSION,
        ts: fields.ts,
        reason: fields.reason,
        file: &fields.file,
        first_seq: fields.first_seq,
        last_seq: fields.last_seq,
        last_hash: fields.last_hash,
        prev: fields.prev,
        key: &key_hex,
    })?;
    line.pop(); // the closing '}'
    let mut message = Vec::with_capacity(SIGNATURE_DOMAIN.len() + line.len());
    message.extend_from_slice(SIGNATURE_DOMAIN);
    message.extend_from_slice(&line);
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&message));
    line.extend_from_slice(SIG_FIELD);
    line.extend_from_slice(sig.as_bytes());
    line.extend_from_slice(b"\"}");
    Ok(line)
}

/// What is wrong with a checkpoint line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointDefect {
    /// Not a checkpoint line at all (damaged, or not JSON of this shape).
    Malformed(String),
    /// Signed by another key than the one given for verification.
    WrongKey {
        /// The key the line names.
        named: String,
    },
    /// The signature does not match the line: it was edited or forged.
    BadSignature,
}

/// Parses a checkpoint line (without its `\n`) and, when `key` is given, checks that it
/// names that key and that the signature over its stored bytes is valid.
pub fn parse_and_check(
    line: &[u8],
    key: Option<&PublicKey>,
) -> Result<Checkpoint, CheckpointDefect> {
    let malformed = |what: &str| CheckpointDefect::Malformed(what.to_owned());
    let at = line
        .windows(SIG_FIELD.len())
        .rposition(|w| w == SIG_FIELD)
        .ok_or_else(|| malformed("no \"sig\" field at the end of the line"))?;
    let (signed, rest) = line.split_at(at);
    let sig_text = rest[SIG_FIELD.len()..]
        .strip_suffix(b"\"}")
        .ok_or_else(|| malformed("the line does not end with the \"sig\" field"))?;
    let cp: Checkpoint = serde_json::from_slice(line)
        .map_err(|e| CheckpointDefect::Malformed(format!("not a checkpoint: {e}")))?;
    if cp.sig.as_bytes() != sig_text {
        return Err(malformed("the \"sig\" field appears more than once"));
    }
    if cp.v > CHECKPOINT_VERSION {
        return Err(CheckpointDefect::Malformed(format!(
            "checkpoint version {} is newer than supported version {CHECKPOINT_VERSION}",
            cp.v
        )));
    }
    let Some(key) = key else {
        return Ok(cp);
    };
    if cp.key != key.to_hex() {
        return Err(CheckpointDefect::WrongKey { named: cp.key });
    }
    let sig: [u8; 64] = base64::engine::general_purpose::STANDARD
        .decode(sig_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(CheckpointDefect::BadSignature)?;
    let mut message = Vec::with_capacity(SIGNATURE_DOMAIN.len() + signed.len());
    message.extend_from_slice(SIGNATURE_DOMAIN);
    message.extend_from_slice(signed);
    if key.verifies(&message, &sig) {
        Ok(cp)
    } else {
        Err(CheckpointDefect::BadSignature)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fields() -> CheckpointFields {
        CheckpointFields {
            ts: "2026-11-27T23:38:17.123456Z".parse().unwrap(),
            reason: CheckpointReason::Events,
            file: "audit.jsonl".into(),
            first_seq: 1,
            last_seq: 1000,
            last_hash: LineHash::of_line(b"x"),
            prev: LineHash::GENESIS,
        }
    }

    #[test]
    fn signed_line_round_trips_and_any_edit_breaks_it() {
        let key = SigningKey::generate();
        let line = encode(&fields(), &key).unwrap();
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.starts_with(r#"{"v":1,"ts":"2026-11-27T23:38:17.123456Z","reason":"events","file":"audit.jsonl","first_seq":1,"last_seq":1000,"last_hash":""#), "{text}");
        assert!(text.ends_with("\"}"));
        let cp = parse_and_check(&line, Some(&key.public())).unwrap();
        assert_eq!(cp.last_seq, 1000);
        assert_eq!(cp.key, key.public().to_hex());
        // Without a key the line still parses.
        assert_eq!(parse_and_check(&line, None).unwrap(), cp);

        let edited = text.replace("\"last_seq\":1000", "\"last_seq\":1001");
        assert_eq!(
            parse_and_check(edited.as_bytes(), Some(&key.public())),
            Err(CheckpointDefect::BadSignature)
        );
        let other = SigningKey::generate();
        assert!(matches!(
            parse_and_check(&line, Some(&other.public())),
            Err(CheckpointDefect::WrongKey { .. })
        ));
        // A forger who names the right key still cannot sign.
        let forged = encode(&fields(), &other).unwrap();
        let forged = String::from_utf8(forged)
            .unwrap()
            .replace(&other.public().to_hex(), &key.public().to_hex());
        assert_eq!(
            parse_and_check(forged.as_bytes(), Some(&key.public())),
            Err(CheckpointDefect::BadSignature)
        );
        let doubled = text.replacen("{", &format!("{{\"sig\":\"{}\",", cp.sig), 1);
        assert!(matches!(
            parse_and_check(doubled.as_bytes(), Some(&key.public())),
            Err(CheckpointDefect::Malformed(_))
        ));
        assert!(matches!(
            parse_and_check(b"garbage", None),
            Err(CheckpointDefect::Malformed(_))
        ));
    }
}
