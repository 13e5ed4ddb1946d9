//! The files of the set being verified: listed so that a rotation while verifying
//! neither hides nor repeats lines, and opened one by one for reading.

use std::fs::File;
use std::io::{self, BufRead};
use std::path::Path;

use crate::error::AuditError;
use crate::fileset::{self, LogFile};

/// The files to verify, oldest first.
pub(super) struct Set {
    pub(super) files: Vec<LogFile>,
    /// The live file, opened before the closed files were listed (`None`: there is none).
    pub(super) live: Option<File>,
}

/// Lists the set whose live file is `live`. Errs when there is no log at all.
pub(super) fn list(live: &Path) -> Result<Set, AuditError> {
    // The live file is opened before the closed ones are listed, and a closed file that
    // is that same file (a rotation in between) is skipped, so a rotation while
    // verifying neither hides nor repeats lines.
    let live_file = match File::open(live) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(AuditError::Io {
                path: live.to_path_buf(),
                source,
            })
        }
    };
    let live_id = live_file.as_ref().and_then(fileset::file_id);
    let mut files = fileset::Naming::new(live)
        .closed_files()
        .map_err(|source| AuditError::Io {
            path: live.parent().unwrap_or(Path::new(".")).to_path_buf(),
            source,
        })?;
    if live_id.is_some() {
        files.retain(|f| {
            File::open(&f.path)
                .ok()
                .and_then(|opened| fileset::file_id(&opened))
                != live_id
        });
    }
    if live_file.is_some() {
        files.push(LogFile::live(live));
    }
    if files.is_empty() {
        return Err(AuditError::Io {
            path: live.to_path_buf(),
            source: io::ErrorKind::NotFound.into(),
        });
    }
    Ok(Set {
        files,
        live: live_file,
    })
}

/// A reader over one listed file (`opened`: the file, when already open) and the file
/// as found (a closed file may have been compressed since it was listed); `Ok(None)`
/// when it is gone.
pub(super) fn open(
    listed: &LogFile,
    opened: Option<File>,
) -> io::Result<Option<(Box<dyn BufRead + Send>, LogFile)>> {
    let found = match opened {
        Some(file) => Some((file, listed.clone())),
        None => fileset::open(listed)?,
    };
    match found {
        Some((file, found)) => Ok(Some((fileset::reader(file, found.compressed)?, found))),
        None => Ok(None),
    }
}
