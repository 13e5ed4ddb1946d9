//! Streaming scan of server → client bytes: finds message boundaries across reads
//! without buffering whole messages, so a 100 MB result is forwarded chunk by chunk.
//!
//! Only the 5-byte header of each message is looked at; the body is captured only for the
//! few message types whose content the tracker reads (small messages). For DataRow and
//! CopyData (the bytes a query returned) and for the replies whose type alone says what
//! they answer (ParseComplete, BindComplete, CloseComplete, RowDescription,
//! ParameterDescription, NoData) only the header is reported.

use crate::protocol::tags;

/// Bodies of interesting messages larger than this are not captured (treated as empty).
const MAX_CAPTURE: usize = 1 << 20;

/// A message seen in the stream: its tag, body length, and body if it was captured.
pub struct ServerMessage<'a> {
    pub tag: u8,
    pub len: usize,
    pub body: Option<&'a [u8]>,
}

fn interesting(tag: u8) -> bool {
    matches!(
        tag,
        tags::COMMAND_COMPLETE
            | tags::EMPTY_QUERY
            | tags::PORTAL_SUSPENDED
            | tags::FUNCTION_CALL_RESPONSE
            | tags::ERROR_RESPONSE
            | tags::COPY_IN_RESPONSE
            | tags::COPY_OUT_RESPONSE
            | tags::COPY_BOTH_RESPONSE
            | tags::READY_FOR_QUERY
    )
}

/// Messages reported by header alone (`body: None`).
fn header_only(tag: u8) -> bool {
    matches!(
        tag,
        tags::COPY_DATA
            | tags::DATA_ROW
            | tags::PARSE_COMPLETE
            | tags::BIND_COMPLETE
            | tags::CLOSE_COMPLETE
            | tags::ROW_DESCRIPTION
            | tags::PARAMETER_DESCRIPTION
            | tags::NO_DATA
    )
}

/// The upstream sent a header whose length field is invalid.
#[derive(Debug, PartialEq, Eq)]
pub struct BadLength(pub i32);

/// Position in the server's message stream.
#[derive(Debug, Default)]
pub struct BackendScanner {
    header: [u8; 5],
    header_len: usize,
    tag: u8,
    body_len: usize,
    remaining: usize,
    capture: bool,
    body: Vec<u8>,
}

impl BackendScanner {
    /// True when the stream is at a message boundary.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.remaining == 0
    }

    /// How many more bytes the scanner can take without passing the end of the current
    /// message (0 at a boundary): the rest of a split header, or of the body.
    pub fn needed(&self) -> usize {
        if self.header_len > 0 {
            5 - self.header_len
        } else {
            self.remaining
        }
    }

    /// Feeds the next chunk; `on` is called for every message of an interesting type
    /// (with its body) and for the header-only ones (length only, `body: None`).
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut on: impl FnMut(ServerMessage<'_>),
    ) -> Result<(), BadLength> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let (part, rest) = data.split_at(self.remaining.min(data.len()));
                if self.capture {
                    self.body.extend_from_slice(part);
                }
                data = rest;
                self.remaining -= part.len();
                if self.remaining == 0 && self.capture {
                    on(ServerMessage {
                        tag: self.tag,
                        len: self.body_len,
                        body: Some(&self.body),
                    });
                    self.body.clear();
                }
                continue;
            }
            // Fast path: a whole header in this chunk.
            let header: [u8; 5] = match data.split_first_chunk::<5>() {
                Some((h, rest)) if self.header_len == 0 => {
                    data = rest;
                    *h
                }
                _ => {
                    let (part, rest) = data.split_at((5 - self.header_len).min(data.len()));
                    let into = self
                        .header
                        .get_mut(self.header_len..self.header_len + part.len());
                    if let Some(into) = into {
                        into.copy_from_slice(part);
                    }
                    self.header_len += part.len();
                    data = rest;
                    if self.header_len < 5 {
                        return Ok(());
                    }
                    self.header_len = 0;
                    self.header
                }
            };
            let [tag, a, b, c, d] = header;
            let raw = i32::from_be_bytes([a, b, c, d]);
            let body_len = usize::try_from(raw)
                .ok()
                .and_then(|l| l.checked_sub(4))
                .ok_or(BadLength(raw))?;
            if header_only(tag) {
                on(ServerMessage {
                    tag,
                    len: body_len,
                    body: None,
                });
                self.remaining = body_len;
                self.capture = false;
                continue;
            }
            if !interesting(tag) {
                self.remaining = body_len;
                self.capture = false;
                continue;
            }
            if body_len > MAX_CAPTURE {
                on(ServerMessage {
                    tag,
                    len: body_len,
                    body: Some(&[]),
                });
                self.remaining = body_len;
                self.capture = false;
                continue;
            }
            if let Some((body, rest)) = data.split_at_checked(body_len) {
                // Whole body in this chunk: no copy.
                on(ServerMessage {
                    tag,
                    len: body_len,
                    body: Some(body),
                });
                data = rest;
                continue;
            }
            self.tag = tag;
            self.body_len = body_len;
            self.remaining = body_len;
            self.capture = true;
            self.body.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(msg(b'T', b"rowdesc"));
        for _ in 0..3 {
            s.extend(msg(b'D', &[7u8; 300]));
        }
        s.extend(msg(b'C', b"SELECT 3\0"));
        s.extend(msg(b'd', &[1u8; 10]));
        s.extend(msg(b'Z', b"I"));
        s
    }

    fn collect(chunks: &[&[u8]]) -> Vec<(u8, usize, Option<Vec<u8>>)> {
        let mut scanner = BackendScanner::default();
        let mut seen = Vec::new();
        for c in chunks {
            scanner
                .feed(c, |m| seen.push((m.tag, m.len, m.body.map(|b| b.to_vec()))))
                .unwrap();
        }
        assert!(scanner.at_boundary());
        seen
    }

    #[test]
    fn finds_interesting_messages_whatever_the_chunking() {
        let s = stream();
        let expected = collect(&[&s]);
        assert_eq!(
            expected,
            vec![
                (b'T', 7, None),
                (b'D', 300, None),
                (b'D', 300, None),
                (b'D', 300, None),
                (b'C', 9, Some(b"SELECT 3\0".to_vec())),
                (b'd', 10, None),
                (b'Z', 1, Some(b"I".to_vec())),
            ]
        );
        for size in [1, 2, 3, 4, 5, 6, 7, 13, 64, 301] {
            let chunks: Vec<&[u8]> = s.chunks(size).collect();
            assert_eq!(collect(&chunks), expected, "chunk size {size}");
        }
    }

    #[test]
    fn fed_what_it_needs_it_stops_exactly_at_the_end_of_the_message() {
        let all = stream();
        for split in 1..all.len() {
            let mut scanner = BackendScanner::default();
            scanner.feed(&all[..split], |_| {}).unwrap();
            let mut at = split;
            while !scanner.at_boundary() {
                let n = scanner.needed();
                assert!(
                    n > 0 && at + n <= all.len(),
                    "split {split}: needs {n} at {at}"
                );
                scanner.feed(&all[at..at + n], |_| {}).unwrap();
                at += n;
            }
            // `at` is the end of a message: the next one starts there.
            let mut rest = BackendScanner::default();
            rest.feed(&all[at..], |_| {}).unwrap();
            assert!(
                rest.at_boundary(),
                "split {split}: {at} is a message boundary"
            );
        }
    }

    #[test]
    fn bad_length_is_reported() {
        let mut scanner = BackendScanner::default();
        let err = scanner.feed(&[b'C', 0, 0, 0, 2], |_| {}).unwrap_err();
        assert_eq!(err, BadLength(2));
    }
}
