//! Where a command writes: a temporary file or folder next to the final path, renamed
//! into place only when everything succeeded.
//!
//! An existing output path must be what the command would make: a regular file for a
//! file output, a folder for a folder output. Anything else (a symbolic link, a FIFO, a
//! device node such as `/dev/null`) is refused before anything is created: the rename
//! would replace the link or the node itself, not write through it.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a command writes: a temporary file or folder next to the final path, renamed into
/// place by [`Output::commit`]. Dropped without a commit, it removes the temporary.
#[derive(Debug)]
pub struct Output {
    final_path: PathBuf,
    tmp: Tmp,
    force: bool,
}

#[derive(Debug)]
enum Tmp {
    File(tempfile::NamedTempFile),
    Dir(tempfile::TempDir),
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn tmp_prefix(path: &Path) -> String {
    format!(
        ".{}.adpq-tmp-",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    )
}

fn check_parent(path: &Path) -> Result<PathBuf> {
    let parent = parent_of(path);
    match std::fs::metadata(&parent) {
        Ok(m) if m.is_dir() => Ok(parent),
        Ok(_) => Err(Error::invalid(&parent, "output folder is not a folder")),
        Err(e) => Err(Error::Io {
            path: parent,
            source: std::io::Error::new(
                e.kind(),
                format!("output folder does not exist or is not accessible: {e}"),
            ),
        }),
    }
}

fn cannot_create(folder: &Path, e: std::io::Error) -> Error {
    let kind = e.kind();
    // tempfile appends the path to the message; the folder is named by the error already.
    let msg = e.to_string();
    let msg = msg.split(" at path ").next().unwrap_or(&msg).to_string();
    Error::io(
        folder,
        std::io::Error::new(kind, format!("cannot write in the output folder: {msg}")),
    )
}

/// The error for an existing output `path` that is neither a regular file nor a folder.
fn not_replaceable(path: &Path, meta: &std::fs::Metadata) -> Error {
    Error::invalid(
        path,
        format!(
            "output exists and is {}, not a regular file or folder; adpq replaces its \
             outputs by renaming and never replaces such an entry: give another path",
            crate::checkpoint::kind_of(meta)
        ),
    )
}

/// The entry at `path` itself (a symbolic link is not followed), if there is one.
fn existing(path: &Path) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(path).ok()
}

impl Output {
    /// A single output file at `path` (an existing regular file is replaced on commit;
    /// any other existing entry is refused).
    pub fn file(path: &Path) -> Result<Output> {
        if let Some(m) = existing(path) {
            if m.is_dir() {
                return Err(Error::OutputPath {
                    path: path.to_path_buf(),
                    message: "is a folder; give a file name".into(),
                });
            }
            if !m.is_file() {
                return Err(not_replaceable(path, &m));
            }
        }
        let parent = check_parent(path)?;
        let prefix = tmp_prefix(path);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        // The usual mode of a new file (the umask applies), not tempfile's private 0600.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let tmp = builder
            .tempfile_in(&parent)
            .map_err(|e| cannot_create(&parent, e))?;
        Ok(Output {
            final_path: path.to_path_buf(),
            tmp: Tmp::File(tmp),
            force: true,
        })
    }

    /// An output folder at `path`; it must not exist (or be empty) unless `force`, which
    /// replaces it on commit.
    pub fn dir(path: &Path, force: bool) -> Result<Output> {
        if let Some(m) = existing(path) {
            if !m.is_dir() && !m.is_file() {
                return Err(not_replaceable(path, &m));
            }
            let empty = m.is_dir()
                && std::fs::read_dir(path)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
            if !m.is_dir() {
                return Err(Error::OutputPath {
                    path: path.to_path_buf(),
                    message: "exists and is not a folder".into(),
                });
            }
            if !empty && !force {
                return Err(Error::OutputPath {
                    path: path.to_path_buf(),
                    message: "output folder exists and is not empty (use --force to replace it)"
                        .into(),
                });
            }
        }
        let parent = check_parent(path)?;
        let tmp = tempfile::Builder::new()
            .prefix(&tmp_prefix(path))
            .tempdir_in(&parent)
            .map_err(|e| cannot_create(&parent, e))?;
        Ok(Output {
            final_path: path.to_path_buf(),
            tmp: Tmp::Dir(tmp),
            force,
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// The hidden temporary file or folder that [`Output::commit`] renames into place
    /// (for a caller that must be able to remove it itself, e.g. from a signal watcher).
    pub fn temp_path(&self) -> &Path {
        match &self.tmp {
            Tmp::File(f) => f.path(),
            Tmp::Dir(d) => d.path(),
        }
    }

    /// A writable handle for the file called `name` of the output (for a single-file
    /// output, `name` is ignored) and the path to name in messages.
    pub fn create(&self, name: &str) -> Result<(File, PathBuf)> {
        match &self.tmp {
            Tmp::File(f) => {
                let file = f.reopen().map_err(|e| Error::io(&self.final_path, e))?;
                Ok((file, self.final_path.clone()))
            }
            Tmp::Dir(d) => {
                let shown = self.final_path.join(name);
                let file = File::create(d.path().join(name)).map_err(|e| Error::io(&shown, e))?;
                Ok((file, shown))
            }
        }
    }

    /// Copies a file into an output folder (no-op for a file output).
    pub fn copy_in(&self, from: &Path, name: &str) -> Result<()> {
        if let Tmp::Dir(d) = &self.tmp {
            std::fs::copy(from, d.path().join(name)).map_err(|e| {
                // Name the output (a full disk is not the input's fault) and the source.
                Error::io(
                    self.final_path.join(name),
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot copy {} here: {e}", from.display()),
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// Renames the temporary into place.
    pub fn commit(self) -> Result<()> {
        let path = self.final_path;
        // Checked again: something may have appeared there while we worked.
        if let Some(m) = existing(&path).filter(|m| !m.is_file() && !m.is_dir()) {
            return Err(not_replaceable(&path, &m));
        }
        match self.tmp {
            Tmp::File(f) => {
                f.persist(&path).map_err(|e| Error::io(&path, e.error))?;
            }
            Tmp::Dir(d) => {
                let tmp = d.keep();
                let result = (|| {
                    if path.exists() && self.force {
                        // Move the old folder aside first, so a failure leaves one of the two.
                        let old = tempfile::Builder::new()
                            .prefix(&tmp_prefix(&path))
                            .tempdir_in(parent_of(&path))
                            .map_err(|e| Error::io(&path, e))?;
                        let aside = old.path().join("old");
                        std::fs::rename(&path, &aside).map_err(|e| Error::io(&path, e))?;
                        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
                        drop(old); // removes the old folder
                    } else {
                        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
                    }
                    Ok(())
                })();
                if result.is_err() {
                    let _ = std::fs::remove_dir_all(&tmp);
                }
                result?;
            }
        }
        Ok(())
    }
}
