//! Sending one sequence on a raw connection and reading every answer to it.
//!
//! The test does not predict how many ReadyForQuery a sequence earns (COPY swallows
//! Syncs, errors skip to the next Sync): after the sequence it sends a terminator that
//! reaches a known state from anywhere — CopyFail (ends a COPY FROM STDIN; ignored
//! outside COPY), Sync (ends an extended group or the skip after an error), ROLLBACK,
//! Close of every valid statement and portal name, Sync, and a marker Query whose row
//! is unique — and reads until the marker's row and ReadyForQuery, or until the server
//! (or the proxy) closes the connection. The terminator also resets the session, so a
//! sequence replays the same way on a fresh connection.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::msg::{Msg, Target};
use super::pools::{valid_names, PORTALS, STATEMENTS};
use super::sequence::Sequence;
use crate::rawclient::{parse_error, read_frame, Next, Raw, LIMIT};

/// Where and as whom to log in.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
}

/// A logged-in raw connection.
pub struct Conn {
    raw: Raw,
    /// The backend's pid (through jitgate: the upstream backend's, from BackendKeyData).
    pub pid: i32,
    marks: u64,
}

/// How the exchange of one sequence ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The marker came back: the connection is ready for the next sequence.
    Answered,
    /// The connection closed (after this FATAL, if one came).
    Closed(Option<String>),
    /// Nothing came for [`LIMIT`].
    Hung,
}

/// The answers to one sequence, for reports.
pub struct Exchange {
    pub ending: Ending,
    /// One short word per backend message: `1` ParseComplete, `E:42601`, `Z:I`, …
    pub responses: Vec<String>,
}

/// The marker query's text for marker number `k`.
fn marker_sql(k: u64) -> String {
    format!("DELETE FROM t; SELECT 'jitgate-diff-mark-{k}'")
}

/// The messages that follow every sequence (see the module doc).
pub fn terminator(k: u64) -> Vec<Msg> {
    let mut msgs = vec![
        Msg::CopyFail("jitgate-diff terminator".into()),
        Msg::Sync,
        Msg::Query("ROLLBACK /*reset*/".into()),
    ];
    for name in valid_names(STATEMENTS) {
        msgs.push(Msg::Close(Target::Statement, name));
    }
    for name in valid_names(PORTALS) {
        msgs.push(Msg::Close(Target::Portal, name));
    }
    msgs.push(Msg::Sync);
    msgs.push(Msg::Query(marker_sql(k)));
    msgs
}

fn describe(tag: u8, body: &[u8]) -> String {
    match tag {
        b'E' | b'N' => {
            let e = parse_error(body);
            let kind = if tag == b'N' { "N" } else { "E" };
            if e.severity == "FATAL" || e.severity == "PANIC" {
                format!("{kind}:{}:{}", e.severity, e.code)
            } else {
                format!("{kind}:{}", e.code)
            }
        }
        b'Z' => format!("Z:{}", body.first().map(|b| *b as char).unwrap_or('?')),
        other => (other as char).to_string(),
    }
}

impl Conn {
    pub async fn open(to: &Endpoint) -> Conn {
        let (raw, session) = Raw::login_cached(to.port, &to.user, &to.password, &to.database).await;
        Conn {
            raw,
            pid: session.pid,
            marks: 0,
        }
    }

    /// Sends `seq` and the terminator, and reads the answers (see the module doc).
    pub async fn run(&mut self, seq: &Sequence) -> Exchange {
        self.marks += 1;
        let mark = self.marks;
        let token = format!("jitgate-diff-mark-{mark}");
        let mut tail = BytesMut::new();
        for m in terminator(mark) {
            m.encode(&mut tail);
        }
        let writes = seq.writes(&tail);
        let Raw { tcp, buf } = &mut self.raw;
        let (mut rd, mut wr) = tcp.split();
        let send = async {
            for (i, w) in writes.iter().enumerate() {
                if i > 0 {
                    // Give the proxy a chance to read a partial message on its own
                    // (whether it does is up to the scheduler, as on a real network).
                    for _ in 0..4 {
                        tokio::task::yield_now().await;
                    }
                }
                if wr.write_all(w).await.is_err() {
                    return; // closed by the other side: the reader sees why
                }
            }
        };
        let receive = async {
            let mut responses = Vec::new();
            let mut marked = false;
            loop {
                let next = match tokio::time::timeout(LIMIT, read_frame(&mut rd, buf)).await {
                    Ok(next) => next,
                    Err(_) => return (Ending::Hung, responses),
                };
                match next {
                    Next::Frame(tag, body) => {
                        let word = describe(tag, &body);
                        if tag == b'D' && contains(&body, token.as_bytes()) {
                            marked = true;
                        }
                        if tag == b'Z' && marked {
                            responses.push(word);
                            return (Ending::Answered, responses);
                        }
                        responses.push(word);
                    }
                    Next::Eof | Next::Reset(_) => {
                        let fatal = responses
                            .iter()
                            .rev()
                            .find(|w| w.starts_with("E:FATAL") || w.starts_with("E:PANIC"))
                            .cloned();
                        responses.push("closed".into());
                        return (Ending::Closed(fatal), responses);
                    }
                }
            }
        };
        let ((), (ending, responses)) = tokio::join!(send, receive);
        Exchange { ending, responses }
    }

    /// Says Terminate and waits (bounded) for the close.
    pub async fn close(mut self) {
        let _ = self.raw.tcp.write_all(b"X\0\0\0\x04").await;
        let _ = tokio::time::timeout(LIMIT, async {
            loop {
                match read_frame(&mut self.raw.tcp, &mut self.raw.buf).await {
                    Next::Frame(..) => {}
                    Next::Eof | Next::Reset(_) => return,
                }
            }
        })
        .await;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
