//! Reading a file line by line for verification, telling a complete line from a torn
//! tail (bytes after the last `\n`, which a crash can leave behind).

use std::io::{self, BufRead};

/// What the next read found.
pub(super) enum Next<'b> {
    /// A complete line: its 1-based number and its bytes without the `\n`.
    Line(u64, &'b [u8]),
    /// The last line has no `\n`: its number and its length in bytes.
    Torn(u64, usize),
    /// Nothing more.
    End,
}

/// The lines of one file, read into one reused buffer.
pub(super) struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    /// Lines read so far.
    count: u64,
}

impl<R: BufRead> Lines<R> {
    pub(super) fn new(reader: R) -> Lines<R> {
        Lines {
            reader,
            buf: Vec::with_capacity(4096),
            count: 0,
        }
    }

    /// The next line; a read error comes with the number of the line it hit.
    pub(super) fn next_line(&mut self) -> Result<Next<'_>, (u64, io::Error)> {
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => return Ok(Next::End),
            Ok(_) => {}
            Err(e) => return Err((self.count + 1, e)),
        }
        self.count += 1;
        Ok(match self.buf.split_last() {
            Some((b'\n', line)) => Next::Line(self.count, line),
            _ => Next::Torn(self.count, self.buf.len()),
        })
    }
}
