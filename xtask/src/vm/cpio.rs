//! A gzip'd cpio "newc" archive, the format the kernel unpacks as an initramfs.
use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

pub struct Archive {
    buf: Vec<u8>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl Archive {
    pub fn new() -> Archive {
        Archive {
            buf: Vec::new(),
            ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let name = name.trim_start_matches('/');
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, S_IFREG | mode, (0, 0), data);
    }

    /// A host file, under the same name unless `name` is given; its parent directories are
    /// expected to have been added.
    pub fn copy(&mut self, host: &Path, name: &str) -> anyhow::Result<()> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(name, 0o755, &data);
        Ok(())
    }

    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | 0o600, (major, minor), &[]);
    }

    /// Writes the archive (with its trailer), compressed with the system's gzip.
    pub fn write_gz(mut self, out: &Path) -> anyhow::Result<()> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        let file =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut gz = Command::new("gzip")
            .args(["-1", "-c"])
            .stdin(Stdio::piped())
            .stdout(file)
            .spawn()
            .context("cannot run gzip")?;
        gz.stdin.take().expect("piped").write_all(&self.buf)?;
        if !gz.wait()?.success() {
            bail!("gzip failed writing {}", out.display());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_newc_headers_with_names_and_data_4_byte_aligned() {
        let mut a = Archive::new();
        a.dir("/bin");
        a.file("/bin/x", 0o755, b"hello");
        a.char_dev("/dev/console", 5, 1);
        let b = &a.buf;
        assert_eq!(&b[..6], b"070701");
        let field = |at: usize, i: usize| {
            u32::from_str_radix(
                std::str::from_utf8(&b[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap(),
                16,
            )
            .unwrap()
        };
        assert_eq!(field(0, 1), S_IFDIR | 0o755);
        // "bin\0" after the 110-byte header, padded to 116.
        assert_eq!(&b[110..114], b"bin\0");
        let second = 116;
        assert_eq!(&b[second..second + 6], b"070701");
        assert_eq!(field(second, 1), S_IFREG | 0o755);
        assert_eq!(field(second, 6), 5, "file size");
        assert_eq!(field(second, 11), 6, "name length with its NUL");
        let data = second + 110 + 6;
        let data = data.next_multiple_of(4);
        assert_eq!(&b[data..data + 5], b"hello");
        let third = (data + 5).next_multiple_of(4);
        assert_eq!(field(third, 1), S_IFCHR | 0o600);
        assert_eq!(
            (field(third, 9), field(third, 10)),
            (5, 1),
            "rdev major, minor"
        );
    }
}
