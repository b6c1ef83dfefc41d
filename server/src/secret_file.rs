//! Secret files in the data directory (the transparency log key, the OPAQUE server setup):
//! read with a warning when others may read them, and created once, atomically.
//!
//! A crash never leaves a half-written secret under its real name: the bytes are written
//! and synced under a temporary name in the same directory, mode 0600 from the start, then
//! published with a hard link (as atomic as a rename, but it fails instead of replacing a
//! file another process created meanwhile), and the directory is synced so the new name is
//! durable too. What the bytes mean is the caller's business.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use rand::rngs::OsRng;

/// A secret file (or its temporary twin, or its directory) could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot access {path}: {source}")]
pub(crate) struct SecretFileError {
    /// The file or directory.
    pub(crate) path: PathBuf,
    /// The error.
    #[source]
    pub(crate) source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> SecretFileError + '_ {
    move |source| SecretFileError {
        path: path.to_owned(),
        source,
    }
}

/// What [`create`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// The file now holds the bytes given.
    New,
    /// The file existed already (another process won the race); it was left alone, read it.
    Existing,
}

/// The bytes of the secret file `path`, or `None` when it does not exist. Logs a warning,
/// naming it `what`, when its mode lets the group or others in.
pub(crate) fn read(path: &Path, what: &str) -> Result<Option<Vec<u8>>, SecretFileError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at(path)(e)),
    };
    let mode = fs::metadata(path).map_err(at(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            file = what,
            "a secret file is readable by others; it should be mode 0600"
        );
    }
    Ok(Some(bytes))
}

/// Creates `path` (mode 0600) holding `bytes` unless it exists (see the module doc). The
/// directory must exist.
pub(crate) fn create(path: &Path, bytes: &[u8]) -> Result<Created, SecretFileError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "secret".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", OsRng.next_u64()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(at(&tmp)(e));
    }
    let linked = fs::hard_link(&tmp, path);
    // The temporary name is garbage either way; failing to remove it is harmless.
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(at(dir))?;
            Ok(Created::New)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Created::Existing),
        Err(e) => Err(at(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn created_once_with_mode_0600_and_nothing_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.bin");
        assert_eq!(read(&path, "key").unwrap(), None);
        assert_eq!(create(&path, b"first").unwrap(), Created::New);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read(&path, "key").unwrap().as_deref(), Some(&b"first"[..]));
        // A second writer does not replace the first one's secret.
        assert_eq!(create(&path, b"second").unwrap(), Created::Existing);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(names(dir.path()), vec![std::ffi::OsString::from("key.bin")]);
    }

    #[test]
    fn a_readable_file_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.bin");
        fs::write(&path, b"open").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(&path, "key").unwrap().as_deref(), Some(&b"open"[..]));
    }

    #[test]
    fn failures_name_the_path_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent").join("key.bin");
        let e = create(&missing, b"x").unwrap_err();
        assert!(e.path.starts_with(dir.path().join("absent")), "{e}");
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);
        assert!(names(dir.path()).is_empty());
        // A directory where the file should be is an error, not a secret.
        let as_dir = dir.path().join("key.bin");
        fs::create_dir(&as_dir).unwrap();
        assert!(read(&as_dir, "key").is_err());
    }
}
