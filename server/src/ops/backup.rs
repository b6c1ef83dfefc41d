//! Backup and restore of a data directory.
//!
//! `qpq-server backup --to DIR` asks the running server, over its control socket
//! (`<data-dir>/control.sock`, mode 0600), to copy itself: the database from one consistent
//! snapshot (see the store's backup module), then the other files of the data directory
//! (certificate and key, OPAQUE setup, log keys, blob files). With no server running it opens
//! the data directory itself and does the same. `qpq-server restore --from DIR` copies a
//! backup into an empty data directory while no server runs there.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use std::sync::Arc;

use crate::store::{BackupStats, StorageEngine};

/// The control socket's file name inside the data directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// The database's directory name inside the data directory.
pub const DB_DIR: &str = "db";

/// What a backup wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// The database part.
    pub database: BackupStats,
    /// Other files copied.
    pub files: u64,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} keyspaces, {} entries, {} bytes of database; {} other files",
            self.database.keyspaces, self.database.entries, self.database.bytes, self.files
        )
    }
}

fn check_empty_target(target: &Path) -> anyhow::Result<()> {
    if let Ok(mut entries) = fs::read_dir(target)
        && entries.next().is_some()
    {
        bail!(
            "backup target {} is not empty; choose a new directory",
            target.display()
        );
    }
    fs::create_dir_all(target).with_context(|| format!("could not create {}", target.display()))?;
    Ok(())
}

/// Copies `from` into `to` recursively (files synced), skipping the database, the control
/// socket and temporary files. Returns the number of files copied.
fn copy_tree(from: &Path, to: &Path, top: bool) -> anyhow::Result<u64> {
    fs::create_dir_all(to).with_context(|| format!("could not create {}", to.display()))?;
    let mut files = 0;
    for entry in fs::read_dir(from).with_context(|| format!("could not read {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if top && (name_text == DB_DIR || name_text == CONTROL_SOCKET) {
            continue;
        }
        if name_text.ends_with(".tmp") {
            continue;
        }
        let kind = entry.file_type()?;
        let source = entry.path();
        let destination = to.join(&name);
        if kind.is_dir() {
            files += copy_tree(&source, &destination, false)?;
        } else if kind.is_file() {
            fs::copy(&source, &destination).with_context(|| {
                format!(
                    "could not copy {} to {}",
                    source.display(),
                    destination.display()
                )
            })?;
            fs::File::open(&destination)?.sync_all()?;
            files += 1;
        }
    }
    fs::File::open(to)?.sync_all()?;
    Ok(files)
}

/// Backs up a data directory whose store is open in this process.
pub async fn backup_open_store(
    store: &dyn StorageEngine,
    data_dir: &Path,
    target: &Path,
) -> anyhow::Result<BackupReport> {
    check_empty_target(target)?;
    let database = store
        .backup_to(&target.join(DB_DIR))
        .await
        .context("database copy failed")?;
    let (data_dir, target_dir) = (data_dir.to_owned(), target.to_owned());
    let files = tokio::task::spawn_blocking(move || copy_tree(&data_dir, &target_dir, true))
        .await
        .context("file copy task failed")??;
    Ok(BackupReport { database, files })
}

/// `qpq-server backup`: through the running server's control socket, or directly when no
/// server runs on `data_dir`.
pub async fn backup(data_dir: &Path, target: &Path) -> anyhow::Result<String> {
    let target = std::path::absolute(target)?;
    let socket = data_dir.join(CONTROL_SOCKET);
    match UnixStream::connect(&socket).await {
        Ok(mut stream) => {
            let request = format!("backup {}\n", target.display());
            stream.write_all(request.as_bytes()).await?;
            let mut answer = String::new();
            BufReader::new(stream).read_line(&mut answer).await?;
            match answer.trim_end().split_once(' ') {
                Some(("ok", report)) => Ok(format!("online backup: {report}")),
                Some(("error", message)) => bail!("the server could not back up: {message}"),
                _ => bail!("unexpected answer from the server's control socket: {answer:?}"),
            }
        }
        Err(_) => {
            let db = data_dir.join(DB_DIR);
            if !db.exists() {
                bail!(
                    "{} holds no database and no server answers on {}; check --data-dir",
                    data_dir.display(),
                    socket.display()
                );
            }
            let store = crate::store::open_embedded_engine(&db).with_context(|| {
                format!(
                    "could not open {} (if a server runs there, its control socket {} is missing)",
                    db.display(),
                    socket.display()
                )
            })?;
            let report = backup_open_store(&*store, data_dir, &target).await?;
            Ok(format!("offline backup: {report}"))
        }
    }
}

/// `qpq-server restore`: copies the backup in `from` into `data_dir`, which must hold no
/// database (stop the server and move the old directory away first).
pub fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<String> {
    if !from.join(DB_DIR).is_dir() {
        bail!(
            "{} is not a qpq-server backup (it has no {DB_DIR}/ directory)",
            from.display()
        );
    }
    if data_dir.join(DB_DIR).exists() {
        bail!(
            "{} already holds a database; stop the server and move that directory away, or restore into an empty --data-dir",
            data_dir.display()
        );
    }
    // Open the copy once, read-only in spirit, to be sure it is a database before copying.
    crate::store::open_embedded_engine(&from.join(DB_DIR))
        .with_context(|| format!("the backup in {} does not open", from.display()))?;
    let files = copy_tree_all(from, data_dir)?;
    Ok(format!(
        "restored {files} files from {} into {}",
        from.display(),
        data_dir.display()
    ))
}

/// Like [`copy_tree`] but including the database directory.
fn copy_tree_all(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let mut files = copy_tree(from, to, true)?;
    files += copy_tree(&from.join(DB_DIR), &to.join(DB_DIR), false)?;
    Ok(files)
}

/// Serves the control socket: one command per connection, `backup <absolute dir>`.
pub(crate) async fn serve_control(
    listener: UnixListener,
    store: Arc<dyn StorageEngine>,
    data_dir: PathBuf,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let store = store.clone();
        let data_dir = data_dir.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                reader.read_line(&mut line),
            )
            .await;
            let answer = match (read, line.trim_end().split_once(' ')) {
                (Ok(Ok(_)), Some(("backup", target))) => {
                    tracing::info!(%target, "backup requested");
                    match backup_open_store(&*store, &data_dir, Path::new(target)).await {
                        Ok(report) => {
                            tracing::info!(%target, %report, "backup written");
                            format!("ok {report}\n")
                        }
                        Err(error) => {
                            tracing::warn!(%target, error = format!("{error:#}"), "backup failed");
                            format!("error {error:#}\n")
                        }
                    }
                }
                _ => "error unknown command; the control socket takes `backup <dir>`\n".to_owned(),
            };
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
}

/// Binds the control socket with mode 0600, replacing a stale one.
pub(crate) fn bind_control(data_dir: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(CONTROL_SOCKET);
    if path.exists() {
        // Only one server can hold the database lock, so a socket left here is stale.
        fs::remove_file(&path).with_context(|| format!("could not remove {}", path.display()))?;
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("could not bind the control socket {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
