//! Criterion microbenches of SCRAM-SHA-256: the server steps jitgate runs for every client
//! login (against the identity's stored verifier), and the client-side key derivation
//! (PBKDF2, 4096 rounds) that the proxy → upstream login costs when its keys are not cached.
//!
//! Run: `cargo bench -p jitgate-proxy --bench scram`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use jitgate_proxy::auth::{ScramServer, ScramVerifier};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

const PASSWORD: &[u8] = b"correct horse battery staple";
const NONCE: [u8; 18] = *b"fixed-server-nonce";

/// One recorded exchange: client-first, client-final (valid for `NONCE`), the verifier.
struct Recorded {
    verifier: ScramVerifier,
    client_first: Vec<u8>,
    client_final: Vec<u8>,
}

fn record() -> Option<Recorded> {
    let verifier = ScramVerifier::from_password_with_salt(PASSWORD, b"sixteen byte slt", 4096);
    let mut client = ScramSha256::new(PASSWORD, ChannelBinding::unsupported());
    let client_first = client.message().to_vec();
    let mut server = ScramServer::new(verifier.clone(), NONCE);
    let server_first = server.handle_client_first(&client_first).ok()?;
    client.update(&server_first).ok()?;
    let client_final = client.message().to_vec();
    let server_final = server.handle_client_final(&client_final).ok()?;
    client.finish(&server_final).ok()?;
    Some(Recorded {
        verifier,
        client_first,
        client_final,
    })
}

fn server_steps(c: &mut Criterion) {
    let Some(rec) = record() else {
        eprintln!("scram bench: the recorded exchange did not verify; nothing to measure");
        return;
    };
    let mut g = c.benchmark_group("scram server");
    g.bench_function("client-first → server-first", |b| {
        b.iter_batched(
            || ScramServer::new(rec.verifier.clone(), NONCE),
            |mut s| s.handle_client_first(&rec.client_first).map(|v| v.len()),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("whole exchange (first + final with proof check)", |b| {
        b.iter_batched(
            || ScramServer::new(rec.verifier.clone(), NONCE),
            |mut s| {
                let first = s.handle_client_first(&rec.client_first).map(|v| v.len());
                let fin = s.handle_client_final(&rec.client_final).map(|v| v.len());
                (first.is_ok(), fin.is_ok(), s.is_authenticated())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("scram keys");
    g.sample_size(20);
    g.bench_function(
        "client PBKDF2 4096 rounds (upstream login, uncached)",
        |b| {
            let server_first = {
                let mut s = ScramServer::new(rec.verifier.clone(), NONCE);
                s.handle_client_first(&rec.client_first).unwrap_or_default()
            };
            b.iter_batched(
                || {
                    // A fresh client whose first message matches the recorded one is not
                    // possible (its nonce is random), so answer its own first message.
                    let client = ScramSha256::new(PASSWORD, ChannelBinding::unsupported());
                    let mut s = ScramServer::new(rec.verifier.clone(), NONCE);
                    let sf = s
                        .handle_client_first(client.message())
                        .unwrap_or_else(|_| server_first.clone());
                    (client, sf)
                },
                |(mut client, sf)| client.update(&sf).is_ok(),
                BatchSize::SmallInput,
            )
        },
    );
    g.bench_function("verifier from password (PBKDF2 4096 rounds)", |b| {
        b.iter(|| ScramVerifier::from_password_with_salt(PASSWORD, b"sixteen byte slt", 4096))
    });
    g.finish();
}

criterion_group!(benches, server_steps);
criterion_main!(benches);
