//! Printing to stdout without panicking when the reader went away (`jitgate … | head`).
//!
//! `println!` panics when stdout is a closed pipe (Rust ignores SIGPIPE, so the write
//! fails with `EPIPE`). The CLI prints through [`outln!`](crate::outln) and
//! [`out!`](crate::out) instead: a closed pipe means the reader has what it wanted, so
//! the process ends quietly with status 0; any other write error (a full disk behind a
//! redirect) is reported and ends it with status 1, never silently.

use std::io::{self, Write};

/// Writes `args` to stdout (flushed, so the next line cannot fail later unnoticed);
/// exits the process on a write error as described in the module docs.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        exit_on(&e);
    }
}

/// Ends the process after a failed write to stdout: quietly with 0 for a closed pipe,
/// with a message and 1 otherwise.
pub fn exit_on(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// `print!` that never panics on a closed pipe (see [`crate::stdout`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}

/// `println!` that never panics on a closed pipe (see [`crate::stdout`]).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::stdout::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
