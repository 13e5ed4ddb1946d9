//! Following a growing text file (the server log, the audit log): each poll returns the
//! whole lines appended since the last one; a line still being written waits for its
//! newline.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    /// Follows `path` from `offset` on.
    pub fn new(path: PathBuf, offset: u64) -> Tail {
        Tail {
            path,
            offset,
            partial: Vec::new(),
        }
    }

    /// Follows `path` from its current end: earlier lines are not read.
    pub fn at_end(path: PathBuf) -> Tail {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Tail::new(path, offset)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole lines appended since the last call, each with its `\n`; empty when
    /// there are none (or the file cannot be read yet).
    pub fn poll(&mut self) -> Vec<u8> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut fresh = Vec::new();
        if file.read_to_end(&mut fresh).is_err() {
            return Vec::new();
        }
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        match self.partial.iter().rposition(|b| *b == b'\n') {
            Some(end) => self.partial.drain(..=end).collect(),
            None => Vec::new(),
        }
    }
}
