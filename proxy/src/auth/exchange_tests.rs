//! Full SCRAM exchanges between our server and a real client implementation
//! (`postgres_protocol::authentication::sasl::ScramSha256`), plus a recorded exchange.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rand::{Rng, SeedableRng};

use super::scram::{ScramServer, SERVER_NONCE_LEN};
use super::verifier::ScramVerifier;
use crate::error::AuthError;

fn nonce() -> [u8; SERVER_NONCE_LEN] {
    rand::thread_rng().gen()
}

/// Runs client ↔ server; `Ok(())` only if the server accepted the proof AND the client
/// accepted the server's signature.
fn exchange(
    verifier: ScramVerifier,
    password: &[u8],
    binding: ChannelBinding,
) -> Result<(), AuthError> {
    let mut client = ScramSha256::new(password, binding);
    let mut server = ScramServer::new(verifier, nonce());
    let server_first = server.handle_client_first(client.message())?;
    client
        .update(&server_first)
        .expect("client accepts server-first");
    let server_final = server.handle_client_final(client.message())?;
    assert!(server.is_authenticated());
    client
        .finish(&server_final)
        .expect("client verifies the server signature");
    Ok(())
}

#[test]
fn correct_password_authenticates_both_ways() {
    let v = ScramVerifier::from_password("correct horse");
    exchange(v.clone(), b"correct horse", ChannelBinding::unsupported()).unwrap();
    // gs2 flag "y": client supports channel binding but we did not offer it
    exchange(v, b"correct horse", ChannelBinding::unrequested()).unwrap();
}

#[test]
fn wrong_password_fails_with_28p01() {
    let v = ScramVerifier::from_password("correct horse");
    let err = exchange(v, b"battery staple", ChannelBinding::unsupported()).unwrap_err();
    assert_eq!(err, AuthError::AuthFailed);
    assert_eq!(err.sqlstate(), "28P01");
}

#[test]
fn verifier_from_postgres_protocol_authenticates() {
    let v = ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(b"pw")).unwrap();
    exchange(v.clone(), b"pw", ChannelBinding::unsupported()).unwrap();
    assert_eq!(
        exchange(v, b"pw2", ChannelBinding::unsupported()),
        Err(AuthError::AuthFailed)
    );
}

#[test]
fn non_ascii_password_is_saslprepped_like_clients_do() {
    // U+00A0 is mapped to a space by SASLprep on both sides.
    let v = ScramVerifier::from_password("pass\u{a0}word");
    exchange(
        v.clone(),
        "pass\u{a0}word".as_bytes(),
        ChannelBinding::unsupported(),
    )
    .unwrap();
    exchange(v, b"pass word", ChannelBinding::unsupported()).unwrap();
}

#[test]
fn unknown_identity_fails_exactly_like_a_wrong_password() {
    let secret = [42u8; 32];
    let mock = ScramVerifier::mock("mallory", &secret);
    let real = ScramVerifier::from_password("whatever");

    // Same shape of server-first-message: same nonce length, salt length and iterations.
    let shape = |v: ScramVerifier| {
        let mut client = ScramSha256::new(b"guess", ChannelBinding::unsupported());
        let mut server = ScramServer::new(v, [1; SERVER_NONCE_LEN]);
        let first =
            String::from_utf8(server.handle_client_first(client.message()).unwrap()).unwrap();
        client.update(first.as_bytes()).unwrap();
        let result = server.handle_client_final(client.message());
        let parts: Vec<usize> = first.split(',').map(str::len).collect();
        let iterations = first.rsplit_once("i=").unwrap().1.to_owned();
        (parts, iterations, result)
    };
    let (mock_parts, mock_iter, mock_result) = shape(mock.clone());
    let (real_parts, real_iter, real_result) = shape(real);
    assert_eq!(mock_parts, real_parts);
    assert_eq!(mock_iter, real_iter);
    assert_eq!(mock_result, Err(AuthError::AuthFailed));
    assert_eq!(mock_result, real_result);

    // Same salt every time for the same identity, so probing twice reveals nothing.
    let salt_of = |v: ScramVerifier| {
        let mut server = ScramServer::new(v, nonce());
        let first = server.handle_client_first(b"n,,n=,r=abc").unwrap();
        String::from_utf8(first)
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        salt_of(mock.clone()),
        salt_of(ScramVerifier::mock("mallory", &secret))
    );
    assert_ne!(
        salt_of(mock),
        salt_of(ScramVerifier::mock("trudy", &secret))
    );
}

/// A psql ↔ Postgres exchange recorded on the wire (the same one rust-postgres uses to
/// test its client): password "foobar", salt and both nonces fixed. Our server must
/// produce byte-identical server messages.
#[test]
fn recorded_psql_exchange_replays_byte_for_byte() {
    let client_first = "n,,n=,r=9IZ2O01zb9IgiIZ1WJ/zgpJB";
    let server_first =
        "r=9IZ2O01zb9IgiIZ1WJ/zgpJBjx/oIRLs02gGSHcw1KEty3eY,s=fs3IXBy7U7+IvVjZ,i=4096";
    let client_final = "c=biws,r=9IZ2O01zb9IgiIZ1WJ/zgpJBjx/oIRLs02gGSHcw1KEty3eY,\
                        p=AmNKosjJzS31NTlQYNs5BTeQjdHdk7lOflDo5re2an8=";
    let server_final = "v=U+ppxD5XUKtradnv8e2MkeupiA8FU87Sg8CXzXHDAzw=";

    let server_nonce: [u8; SERVER_NONCE_LEN] = STANDARD
        .decode("jx/oIRLs02gGSHcw1KEty3eY")
        .unwrap()
        .try_into()
        .unwrap();
    let salt = STANDARD.decode("fs3IXBy7U7+IvVjZ").unwrap();
    let verifier = ScramVerifier::from_password_with_salt(b"foobar", &salt, 4096);

    let mut server = ScramServer::new(verifier.clone(), server_nonce);
    assert_eq!(
        server.handle_client_first(client_first.as_bytes()).unwrap(),
        server_first.as_bytes()
    );
    assert_eq!(
        server.handle_client_final(client_final.as_bytes()).unwrap(),
        server_final.as_bytes()
    );
    assert!(server.is_authenticated());

    // One flipped bit in the proof: rejected.
    let mut server = ScramServer::new(verifier, server_nonce);
    server.handle_client_first(client_first.as_bytes()).unwrap();
    let tampered = client_final.replace("p=Am", "p=An");
    assert_eq!(
        server.handle_client_final(tampered.as_bytes()),
        Err(AuthError::AuthFailed)
    );
    assert!(!server.is_authenticated());
}

#[test]
fn channel_binding_and_nonce_are_checked() {
    let v = ScramVerifier::from_password("pw");
    let run = |client_first: &str, tweak: &dyn Fn(String) -> String| {
        let mut server = ScramServer::new(v.clone(), nonce());
        let first = server.handle_client_first(client_first.as_bytes())?;
        let first = String::from_utf8(first).unwrap();
        let combined = first
            .split(',')
            .next()
            .unwrap()
            .trim_start_matches("r=")
            .to_owned();
        let final_msg = tweak(format!(
            "c=biws,r={combined},p={}",
            STANDARD.encode([0u8; 32])
        ));
        server.handle_client_final(final_msg.as_bytes())
    };
    // correct framing but garbage proof → AuthFailed
    assert_eq!(run("n,,n=,r=abc", &|m| m), Err(AuthError::AuthFailed));
    // "y,," header repeated as "n,," → mismatch
    assert_eq!(
        run("y,,n=,r=abc", &|m| m),
        Err(AuthError::ChannelBindingMismatch)
    );
    // wrong nonce
    assert_eq!(
        run("n,,n=,r=abc", &|m| m.replace("r=abc", "r=abd")),
        Err(AuthError::NonceMismatch)
    );
    // a client asking for channel binding is refused at the first message
    let mut server = ScramServer::new(v.clone(), nonce());
    let client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(vec![1, 2, 3]));
    assert_eq!(
        server.handle_client_first(client.message()),
        Err(AuthError::ChannelBindingNotOffered)
    );
}

#[test]
fn messages_out_of_order_are_refused() {
    let v = ScramVerifier::from_password("pw");
    let mut server = ScramServer::new(v.clone(), nonce());
    assert_eq!(
        server.handle_client_final(b"c=biws,r=x,p=AAAA"),
        Err(AuthError::OutOfOrder)
    );
    assert_eq!(
        server.handle_client_first(b"n,,n=,r=abc"),
        Err(AuthError::OutOfOrder),
        "a failed exchange stays failed"
    );

    let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
    let mut server = ScramServer::new(v, nonce());
    let first = server.handle_client_first(client.message()).unwrap();
    assert_eq!(
        server.handle_client_first(client.message()),
        Err(AuthError::OutOfOrder)
    );
    client.update(&first).unwrap();
    // the repeated client-first failed the exchange: even a valid final is refused
    assert_eq!(
        server.handle_client_final(client.message()),
        Err(AuthError::OutOfOrder)
    );
    assert!(!server.is_authenticated());
}

#[test]
fn random_input_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5c4a);
    let v = ScramVerifier::from_password_with_salt(b"pw", b"salt", 1);
    let alphabet = b"nyp,=arcmn/+0123456789abcXYZ\0\xff";
    for round in 0..5_000 {
        let len = rng.gen_range(0..64);
        let data: Vec<u8> = if round % 2 == 0 {
            (0..len).map(|_| rng.gen()).collect()
        } else {
            (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect()
        };
        let mut server = ScramServer::new(v.clone(), [0; SERVER_NONCE_LEN]);
        let _ = server.handle_client_first(&data);

        let mut prefixed = b"c=biws,r=abcAAAAAAAAAAAAAAAAAAAAAAAA".to_vec();
        prefixed.extend_from_slice(&data);
        for client_final in [&data, &prefixed] {
            let mut server = ScramServer::new(v.clone(), [0; SERVER_NONCE_LEN]);
            server.handle_client_first(b"n,,n=,r=abc").unwrap();
            assert!(server.handle_client_final(client_final).is_err());
        }
    }
}
