//! Everything the recorder does to the file system, behind one trait so tests can make it fail
//! on demand; [`DiskStorage`] is the real one.
use std::{
    io,
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::dump::SEGMENT_EXT;

/// Everything the writer does to the file system, so tests can make it fail on demand.
pub trait Storage: Send + 'static {
    /// Creates the directory (0700) if needed and takes an exclusive lock on it.
    fn prepare_dir(&mut self, dir: &Path) -> io::Result<()>;
    /// Segment files already in the directory: (path, length, modification time).
    fn list(&mut self, dir: &Path) -> io::Result<Vec<(PathBuf, u64, SystemTime)>>;
    /// Creates a new file (0600) and makes it the current one.
    fn create(&mut self, path: &Path) -> io::Result<()>;
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// fdatasync of the current file.
    fn sync(&mut self) -> io::Result<()>;
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    fn close(&mut self);
    fn remove(&mut self, path: &Path) -> io::Result<()>;
    /// fsync of the directory, so created and removed entries survive a power loss.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The real file system.
#[derive(Default)]
pub struct DiskStorage {
    file: Option<std::fs::File>,
    lock: Option<std::fs::File>,
}

impl Storage for DiskStorage {
    fn prepare_dir(&mut self, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        // Dumps hold command lines, which may hold secrets.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(".lock"))?;
        // SAFETY: valid fd; flock has no memory effects.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    e.kind(),
                    "another `tracer record` is writing to this directory",
                )
            } else {
                e
            });
        }
        self.lock = Some(lock);
        Ok(())
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<(PathBuf, u64, SystemTime)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            let md = e.metadata()?;
            if md.is_file() {
                out.push((
                    path,
                    md.len(),
                    md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
        Ok(out)
    }

    fn create(&mut self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        self.file = Some(
            std::fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?,
        );
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        self.file.as_mut().ok_or_else(no_file)?.write_all(data)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.as_ref().ok_or_else(no_file)?.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.as_ref().ok_or_else(no_file)?.set_len(len)
    }

    fn close(&mut self) {
        self.file = None;
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

fn no_file() -> io::Error {
    io::Error::other("no segment file open")
}
