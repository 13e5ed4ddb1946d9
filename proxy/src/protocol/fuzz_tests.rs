//! Seeded random and mutated input through every parser: none may panic, and the
//! framing parsers must keep their contracts (consume nothing when incomplete, never
//! more than the buffer holds).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::backend::{parse_command_complete, parse_error_fields, parse_ready_for_query};
use super::frame::{peek_header, split_frame};
use super::frontend::*;
use super::scan::BackendScanner;
use super::startup::parse_startup;

/// Valid bodies of every decoded frontend message, to mutate.
fn seeds() -> Vec<&'static [u8]> {
    vec![
        b"select 1\0",
        b"s1\0select $1\0\0\x01\0\0\0\x17",
        b"p\0s\0\0\x01\0\x01\0\x02\0\0\0\x02hi\xff\xff\xff\xff\0\x01\0\x01",
        b"p\0\0\0\0\x0a",
        b"Sname\0",
        b"\0\0\x06\x3e\0\x01\0\x01\0\x01\0\0\0\x01x\0\x01",
        b"oops\0",
        b"SCRAM-SHA-256\0\0\0\0\x03abc",
        b"SERROR\0VERROR\0C42501\0Mdenied\0\0",
        b"user\0u\0database\0d\0\0",
    ]
}

fn run_all_decoders(body: &[u8]) {
    let b = Bytes::copy_from_slice(body);
    let _ = parse_query(b.clone());
    let _ = parse_parse(b.clone());
    let _ = parse_bind(b.clone());
    let _ = parse_execute(b.clone());
    let _ = parse_close(b.clone());
    let _ = parse_describe(b.clone());
    let _ = parse_function_call(b.clone());
    let _ = parse_copy_fail(b.clone());
    let _ = parse_sasl_initial_response(b.clone());
    let _ = sasl_response(b);
    let _ = parse_command_complete(body);
    let _ = parse_error_fields(body);
    let _ = parse_ready_for_query(body);
}

fn check_framing(data: &[u8]) {
    let max = 1 << 12;
    let _ = peek_header(data, max);

    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match split_frame(&mut buf, max) {
            Ok(Some(f)) => {
                assert_eq!(before - buf.len(), 5 + f.body.len());
                run_all_decoders(&f.body);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "incomplete consumes nothing");
                break;
            }
            Err(_) => break,
        }
    }

    // The relay's streaming scan, fed whole and split at every point: the same messages.
    let whole = scanned(data, data.len().max(1));
    for at in 1..data.len() {
        assert_eq!(scanned(data, at), whole, "split at {at}");
    }

    // Startup: raw, and with a plausible length word in front.
    let mut buf = BytesMut::from(data);
    if let Ok(None) = parse_startup(&mut buf) {
        assert_eq!(buf.len(), data.len());
    }
    let mut framed = BytesMut::new();
    framed.extend_from_slice(&((data.len() + 4) as i32).to_be_bytes());
    framed.extend_from_slice(data);
    let _ = parse_startup(&mut framed);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x6a17_9a7e);
    for _ in 0..20_000 {
        let len = rng.gen_range(0..48);
        let data: Vec<u8> = (0..len)
            .map(|_| {
                // Bias towards the bytes that matter: NUL, small lengths, 0xff.
                match rng.gen_range(0..4) {
                    0 => 0,
                    1 => rng.gen_range(0..8),
                    2 => 0xff,
                    _ => rng.gen(),
                }
            })
            .collect();
        run_all_decoders(&data);
        check_framing(&data);
    }
}

#[test]
fn mutated_valid_messages_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x00c0_ffee);
    let seeds = seeds();
    for _ in 0..20_000 {
        let mut data = seeds[rng.gen_range(0..seeds.len())].to_vec();
        for _ in 0..rng.gen_range(1..4) {
            match rng.gen_range(0..4) {
                0 if !data.is_empty() => {
                    let i = rng.gen_range(0..data.len());
                    data[i] = rng.gen();
                }
                1 if !data.is_empty() => {
                    data.truncate(rng.gen_range(0..data.len()));
                }
                2 => {
                    let i = rng.gen_range(0..=data.len());
                    data.insert(i, rng.gen());
                }
                _ => {
                    if let Some(i) = (!data.is_empty()).then(|| rng.gen_range(0..data.len())) {
                        data[i] ^= 0x80;
                    }
                }
            }
        }
        run_all_decoders(&data);
        let mut framed = vec![b'B'];
        framed.extend_from_slice(&((data.len() + 4) as i32).to_be_bytes());
        framed.extend_from_slice(&data);
        check_framing(&framed);
    }
}

/// A message as the scanner reports it: tag, length, captured body.
type Seen = (u8, usize, Option<Vec<u8>>);

/// The messages the relay's scanner reports for `data` fed in pieces of `step` bytes,
/// and whether it stopped on a bad length.
fn scanned(data: &[u8], step: usize) -> (Vec<Seen>, bool) {
    let mut scanner = BackendScanner::default();
    let mut seen = Vec::new();
    for piece in data.chunks(step) {
        let fed = scanner.feed(piece, |m| {
            seen.push((m.tag, m.len, m.body.map(<[u8]>::to_vec)))
        });
        if fed.is_err() {
            return (seen, true);
        }
    }
    (seen, false)
}
