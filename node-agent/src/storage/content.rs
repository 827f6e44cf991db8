//! Task content: one file per task under `content/{id[..3]}/{id}`, written at
//! piece offsets and preallocated so a download cannot run out of disk halfway.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub struct Content {
    dir: PathBuf,
}

impl Content {
    pub fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, task_id: &str) -> PathBuf {
        self.dir
            .join(&task_id[..3.min(task_id.len())])
            .join(task_id)
    }

    /// Opens (creating when missing) a task's file; with a known length, makes
    /// sure the whole length is allocated on disk.
    pub fn open_for_write(&self, task_id: &str, length: Option<u64>) -> Result<File> {
        let path = self.path(task_id);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let file = break_hard_links(file, &path)?;
        if let Some(len) = length {
            let current = file
                .metadata()
                .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
                .len();
            if current > len {
                file.set_len(len)
                    .map_err(|e| Error::io(format!("cannot truncate {}", path.display()), e))?;
            }
            if len > 0 {
                match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len) {
                    Ok(()) => {}
                    // Filesystems without fallocate (e.g. some overlays): size it sparsely.
                    Err(rustix::io::Errno::OPNOTSUPP) => file
                        .set_len(len)
                        .map_err(|e| Error::io(format!("cannot size {}", path.display()), e))?,
                    Err(e) => {
                        return Err(Error::io(
                            format!("cannot allocate {len} bytes for {}", path.display()),
                            e.into(),
                        ));
                    }
                }
            }
        }
        Ok(file)
    }

    pub fn open_for_read(&self, task_id: &str) -> Result<File> {
        let path = self.path(task_id);
        File::open(&path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
    }

    /// Bytes the task's file occupies on disk (allocated blocks).
    pub fn allocated(&self, task_id: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.path(task_id))
            .map(|m| m.blocks() * 512)
            .unwrap_or(0)
    }

    pub fn remove(&self, task_id: &str) -> Result<()> {
        let path = self.path(task_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
        }
    }

    /// Puts the task's bytes at `output` atomically: a hard link when the output is
    /// on the same filesystem (no copy; the cache and the output share blocks, and
    /// a later change to the output is caught by the piece CRCs), else a copy.
    /// Either way a temp name in the output's directory is renamed into place.
    pub fn export(&self, task_id: &str, output: &Path) -> Result<()> {
        let src = self.path(task_id);
        let dir = match output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let tmp = dir.join(format!(".{name}.darter-{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let result = std::fs::hard_link(&src, &tmp)
            .or_else(|_| std::fs::copy(&src, &tmp).map(|_| ()))
            .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))
            .and_then(|()| {
                std::fs::rename(&tmp, output)
                    .map_err(|e| Error::io(format!("cannot write {}", output.display()), e))
            });
        // Renaming a link onto the file it already names (output exported before)
        // leaves the temp name in place; it goes either way.
        let _ = std::fs::remove_file(&tmp);
        result
    }
}

/// Before writing into a content file that was exported as a hard link, gives the
/// cache its own copy so a repair never changes a user's output behind their back.
fn break_hard_links(file: File, path: &Path) -> Result<File> {
    use std::os::unix::fs::MetadataExt;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
    if meta.nlink() <= 1 {
        return Ok(file);
    }
    drop(file);
    let tmp = path.with_extension("unlink");
    std::fs::copy(path, &tmp)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("cannot copy {}", path.display()), e))?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
}

/// Reads `len` bytes at `offset` in 1 MiB blocks, handing each to `f`.
pub fn for_each_block(
    file: &File,
    offset: u64,
    len: u64,
    mut f: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; (1usize << 20).min(len as usize).max(1)];
    let mut done = 0u64;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        file.read_exact_at(&mut buf[..n], offset + done)?;
        f(&buf[..n]);
        done += n as u64;
    }
    Ok(())
}

/// CRC-32C of `len` bytes at `offset`.
pub fn crc32c_of_range(file: &File, offset: u64, len: u64) -> std::io::Result<u32> {
    let mut crc = 0u32;
    for_each_block(file, offset, len, |b| crc = crc32c::crc32c_append(crc, b))?;
    Ok(crc)
}
