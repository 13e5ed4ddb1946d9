//! Criterion microbenches of SCRAM-SHA-256: the server steps jitgate runs for every client
//! login (against the identity's stored verifier), and the client-side key derivation
//! (PBKDF2, 4096 rounds) that the proxy → upstream login costs when its keys are not cached,
//! against the whole client side with the keys cached (what every upstream login after the
//! first costs).
//!
//! Run: `cargo bench -p jitgate-proxy --bench scram`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use jitgate_proxy::auth::{ScramClient, ScramKeyCache, ScramKeys, ScramServer, ScramVerifier};
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
    g.bench_function(
        "upstream keys derived (PBKDF2 4096 rounds, cache miss)",
        |b| b.iter(|| ScramKeys::derive(PASSWORD, b"sixteen byte slt", 4096)),
    );
    g.bench_function("verifier from password (PBKDF2 4096 rounds)", |b| {
        b.iter(|| ScramVerifier::from_password_with_salt(PASSWORD, b"sixteen byte slt", 4096))
    });
    g.finish();
}

/// The proxy's client side of one upstream login with the keys cached: client-first,
/// server-first parsed, cache hit, client-final, server signature verified. The server's
/// messages are computed in the setup (not measured).
fn client_steps(c: &mut Criterion) {
    let verifier = ScramVerifier::from_password_with_salt(PASSWORD, b"sixteen byte slt", 4096);
    let cache = ScramKeyCache::default();
    cache.insert(
        PASSWORD,
        &verifier.salt,
        verifier.iterations,
        ScramKeys::derive(PASSWORD, &verifier.salt, verifier.iterations),
    );
    // Records one exchange per nonce so the measured client sees real server messages.
    let transcript = |nonce: &str| -> Option<(ScramClient, Vec<u8>, Vec<u8>)> {
        let mut probe = ScramClient::with_nonce(nonce.to_owned());
        let mut server = ScramServer::new(verifier.clone(), NONCE);
        let server_first = server.handle_client_first(&probe.client_first()).ok()?;
        let p = probe.handle_server_first(&server_first).ok()?;
        let keys = cache.get(PASSWORD, &p.salt, p.iterations)?;
        let server_final = server
            .handle_client_final(&probe.client_final(&keys).ok()?)
            .ok()?;
        Some((
            ScramClient::with_nonce(nonce.to_owned()),
            server_first,
            server_final,
        ))
    };
    if transcript("probe").is_none() {
        eprintln!("scram bench: the client exchange did not verify; nothing to measure");
        return;
    }
    let mut g = c.benchmark_group("scram upstream client");
    g.bench_function("whole login, keys cached (no PBKDF2)", |b| {
        b.iter_batched(
            || transcript("rOprNGfwEbeRWgbNEkqO").unwrap_or_else(|| unreachable!()),
            |(mut client, server_first, server_final)| {
                let first = client.client_first();
                let Ok(p) = client.handle_server_first(&server_first) else {
                    return (first.len(), false);
                };
                let Some(keys) = cache.get(PASSWORD, &p.salt, p.iterations) else {
                    return (first.len(), false);
                };
                let ok = client.client_final(&keys).is_ok()
                    && client.verify_server_final(&server_final).is_ok();
                (first.len(), ok)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, server_steps, client_steps);
criterion_main!(benches);
