//! Splitting a byte stream into lines without a copy per line: large reads into one
//! reused buffer, `memchr` for the newlines, and only a line that straddles two reads is
//! moved to the front of the buffer.

use std::io::{self, Read};
use std::ops::ControlFlow;

/// Size of each read; large enough that syscalls and the straddling-line moves are noise.
const CHUNK: usize = 1 << 20;

/// Calls `f(line_number, line)` for every line of `reader` (without its `\n`). A last
/// line without `\n` is passed too when `partial_tail` (a closed file: a torn line there
/// should be reported), else left out (the live file: jitgate may be writing it). Line
/// numbers start at `first_line`. Stops early when `f` breaks. Returns the number of the
/// last line passed.
pub(crate) fn for_each_line<R, F>(
    mut reader: R,
    first_line: u64,
    partial_tail: bool,
    mut f: F,
) -> io::Result<u64>
where
    R: Read,
    F: FnMut(u64, &[u8]) -> ControlFlow<()>,
{
    let mut buf = vec![0u8; CHUNK];
    // buf[start..filled] holds bytes not yet split into lines.
    let mut start = 0;
    let mut filled = 0;
    let mut line = first_line.saturating_sub(1);
    loop {
        if filled == buf.len() {
            if start > 0 {
                buf.copy_within(start..filled, 0);
                filled -= start;
                start = 0;
            } else {
                // One line longer than the buffer: grow it.
                buf.resize(buf.len() * 2, 0);
            }
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if partial_tail && start < filled {
                line += 1;
                let _ = f(line, &buf[start..filled]);
            }
            return Ok(line);
        }
        let scan_from = filled;
        filled += n;
        let mut pos = scan_from;
        while let Some(nl) = memchr::memchr(b'\n', &buf[pos..filled]) {
            let end = pos + nl;
            line += 1;
            if f(line, &buf[start..end]).is_break() {
                return Ok(line);
            }
            start = end + 1;
            pos = start;
        }
        if start == filled {
            start = 0;
            filled = 0;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A reader that returns at most `step` bytes per read, to exercise straddling lines.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lines(data: &[u8], step: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        for_each_line(Trickle { data, step }, 1, true, |n, l| {
            out.push((n, l.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    #[test]
    fn splits_whatever_the_read_sizes() {
        let data = b"a\nbb\n\nccc\ntail";
        let expected = vec![
            (1, b"a".to_vec()),
            (2, b"bb".to_vec()),
            (3, b"".to_vec()),
            (4, b"ccc".to_vec()),
            (5, b"tail".to_vec()),
        ];
        for step in [1, 2, 3, 5, 100] {
            assert_eq!(lines(data, step), expected, "step {step}");
        }
    }

    #[test]
    fn lines_longer_than_the_buffer() {
        let long = vec![b'x'; CHUNK * 2 + 17];
        let mut data = long.clone();
        data.push(b'\n');
        data.extend_from_slice(b"short\n");
        let got = lines(&data, CHUNK / 3);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, long);
        assert_eq!(got[1].1, b"short");
    }

    #[test]
    fn the_unterminated_tail_of_a_live_file_is_left_out() {
        let mut seen = Vec::new();
        for_each_line(&b"a\nb"[..], 1, false, |_, l| {
            seen.push(l.to_vec());
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"a".to_vec()]);
    }

    #[test]
    fn stops_when_asked() {
        let mut seen = 0;
        let last = for_each_line(&b"1\n2\n3\n"[..], 10, true, |_, _| {
            seen += 1;
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!((seen, last), (1, 10));
    }
}
