//! Work on closed files, on a thread of its own so it never delays an event:
//! compressing them with zstd and deleting those retention no longer keeps.
//!
//! Compression writes `X.zst.tmp`, checks that it decompresses to exactly the bytes of
//! `X` (same SHA-256), syncs it, renames it to `X.zst`, and only then removes `X`. A
//! crash at any point leaves either `X` or a complete `X.zst` (readers prefer `X` when
//! both exist); at the next start leftover `.tmp` files are removed and files that are
//! still plain are compressed.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::sync_parent_dir;
use crate::fileset::{self, Naming, TMP, ZST};

/// zstd level: level 3 (zstd's default) compresses JSON Lines about 8–10× at well
/// over 100 MB/s, so a 256 MiB file takes a couple of seconds of one core.
const LEVEL: i32 = 3;

/// What the housekeeping thread is asked to do, in order.
#[derive(Debug)]
pub(super) enum Job {
    /// Compress this closed file.
    Compress(PathBuf),
    /// Delete closed files whose first `seq` is below this.
    DeleteBefore(u64),
}

pub(super) struct Housekeeper {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Housekeeper {
    /// Starts the thread; with `compress` it first tidies up after an interrupted run
    /// (leftover `.tmp` files, closed files not yet compressed).
    pub(super) fn start(naming: Naming, compress: bool) -> io::Result<Housekeeper> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("jitgate-audit-housekeeping".into())
            .spawn(move || {
                if compress {
                    catch_up(&naming);
                }
                for job in rx {
                    match job {
                        Job::Compress(path) => compress_logged(&path),
                        Job::DeleteBefore(seq) => delete_before(&naming, seq),
                    }
                }
            })?;
        Ok(Housekeeper {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub(super) fn send(&self, job: Job) {
        if let Some(tx) = &self.tx {
            if tx.send(job).is_err() {
                tracing::error!(
                    "audit housekeeping thread is gone; closed files are left as they are"
                );
            }
        }
    }

    /// Lets queued jobs finish and joins the thread.
    pub(super) fn finish(mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("audit housekeeping thread panicked");
            }
        }
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        // Without `finish` the thread ends by itself once the queue is drained.
        self.tx = None;
    }
}

fn catch_up(naming: &Naming) {
    if let Ok(entries) = std::fs::read_dir(&naming.dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_ours = name
                .strip_suffix(TMP)
                .and_then(|n| naming.parse_closed(n))
                .is_some_and(|(_, compressed)| compressed);
            if is_ours {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    match naming.closed_files() {
        Ok(files) => {
            for file in files.iter().filter(|f| !f.compressed) {
                compress_logged(&file.path);
            }
        }
        Err(e) => {
            tracing::error!(dir = %naming.dir.display(), error = %e, "cannot list audit log files")
        }
    }
}

fn compress_logged(path: &Path) {
    match compress(path) {
        Ok(zst) => tracing::info!(path = %zst.display(), "compressed closed audit log file"),
        Err(e) => tracing::error!(
            path = %path.display(),
            error = %e,
            "could not compress closed audit log file; it stays uncompressed"
        ),
    }
}

/// Compresses `plain` into `plain.zst` (see the module docs) and removes `plain`.
pub(super) fn compress(plain: &Path) -> io::Result<PathBuf> {
    let zst = append(plain, ZST);
    let tmp = append(&zst, TMP);
    if zst.exists() {
        // An earlier run got as far as the rename: the .zst is complete.
        std::fs::remove_file(plain)?;
        return Ok(zst);
    }
    let result = write_verified(plain, &tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    std::fs::rename(&tmp, &zst)?;
    sync_parent_dir(&zst)?;
    std::fs::remove_file(plain)?;
    sync_parent_dir(plain)?;
    Ok(zst)
}

fn write_verified(plain: &Path, tmp: &Path) -> io::Result<()> {
    let mut input = BufReader::with_capacity(256 * 1024, File::open(plain)?);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut encoder = zstd::stream::write::Encoder::new(opts.open(tmp)?, LEVEL)?;
    let mut original = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        original.update(&buf[..n]);
        encoder.write_all(&buf[..n])?;
    }
    encoder.finish()?.sync_all()?;

    let mut decoded = Sha256::new();
    let mut reader = fileset::reader(File::open(tmp)?, true)?;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        decoded.update(&buf[..n]);
    }
    if decoded.finalize() != original.finalize() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the compressed copy does not decompress to the original",
        ));
    }
    Ok(())
}

fn append(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn delete_before(naming: &Naming, keep_from: u64) {
    let files = match naming.closed_files() {
        Ok(files) => files,
        Err(e) => {
            tracing::error!(dir = %naming.dir.display(), error = %e, "cannot list audit log files");
            return;
        }
    };
    for file in files {
        if file.first_seq.is_some_and(|s| s < keep_from) {
            // A plain and a compressed copy may both exist; remove both.
            let other = if file.compressed {
                file.path.with_extension("")
            } else {
                append(&file.path, ZST)
            };
            for path in [&file.path, &other] {
                match std::fs::remove_file(path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "deleted audit log file (retention)")
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "could not delete audit log file")
                    }
                }
            }
        }
    }
}
