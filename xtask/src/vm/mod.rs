//! `cargo xtask vm-test`: the kernel matrix. Boots the distribution's own kernels (Debian's 6.1
//! and 6.12) under qemu with a small initramfs holding tracer, the test workload and busybox,
//! runs `tracer doctor` and `tracer live --json` around a workload of every event kind and an
//! OOM kill in a memory cgroup, and checks per kernel what arrived against what the workload
//! did, and the known differences between kernels as such.
//!
//! Only the package archive is used (`apt-get download`); kernels are unpacked once into
//! `target/vm-cache` and reused. KVM does not work on our VMs, so boots use TCG.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;

mod check;
mod cpio;

/// The OOM test's memory cgroup limit (bytes).
pub const OOM_LIMIT: u64 = 32 << 20;

#[derive(Args, Debug, Clone)]
pub struct VmArgs {
    /// Kernel series to boot, comma separated (Debian's linux-image packages).
    #[arg(long, default_value = "6.1,6.12", value_delimiter = ',')]
    pub kernels: Vec<String>,
    /// Seconds a boot may take, from start to power-off (measured: 90-140 s on a quiet 2-core
    /// machine with both kernels at once, 226 s when it was loaded to 9).
    #[arg(long, default_value_t = 400)]
    pub timeout: u64,
    /// Use the release build of tracer (slower to build, faster under TCG).
    #[arg(long)]
    pub release: bool,
    /// Boot the kernels one after the other rather than at the same time.
    #[arg(long)]
    pub serial: bool,
    /// Skip building (use the binaries in the target directory).
    #[arg(long)]
    pub no_build: bool,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("\x1b[1mvm-test:\x1b[0m {}", msg.as_ref());
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

pub fn run(args: VmArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = crate::bench::workspace_root();
    let target = target_dir(&root);
    let cache = target.join("vm-cache");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let missing: Vec<&str> = ["qemu-system-x86", "busybox-static"]
        .into_iter()
        .filter(|p| !crate::apt::installed(p))
        .collect();
    if !missing.is_empty() {
        say(format!("installing {}", missing.join(" ")));
        crate::apt::install(&missing)?;
    }
    let profile = if args.release { "release" } else { "debug" };
    if !args.no_build {
        say(format!("building tracer and the workload ({profile})"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "tracer",
            "-p",
            "tracer-tests",
            "--bins",
        ]);
        if args.release {
            cmd.arg("--release");
        }
        if !cmd.current_dir(&root).status()?.success() {
            bail!("cargo build -p tracer -p tracer-tests failed");
        }
    }
    let bins = target.join(profile);
    let initrd = cache.join("initrd.gz");
    build_initramfs(&bins.join("tracer"), &bins.join("workload"), &initrd)?;
    let mut kernels = Vec::new();
    for series in &args.kernels {
        kernels.push(fetch_kernel(series, &cache)?);
    }
    say(format!(
        "prepared in {:.0} s; booting {} kernel(s) under qemu (TCG)",
        started.elapsed().as_secs_f64(),
        kernels.len()
    ));
    let timeout = Duration::from_secs(args.timeout);
    let boots: Vec<anyhow::Result<Boot>> = if args.serial {
        kernels
            .iter()
            .map(|k| boot(k, &initrd, &cache, timeout))
            .collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = kernels
                .iter()
                .map(|k| s.spawn(|| boot(k, &initrd, &cache, timeout)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a boot thread panicked"))
                .collect()
        })
    };
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for (k, b) in kernels.iter().zip(boots) {
        match b {
            Ok(b) => {
                let r = check::check(&k.package, &b.results, b.seconds);
                if !r.failures.is_empty() {
                    failed.push(k.package.clone());
                }
                reports.push(r);
            }
            Err(e) => {
                eprintln!("{e:#}");
                failed.push(k.package.clone());
            }
        }
    }
    check::print_table(&reports);
    say(format!(
        "{} kernel(s) in {:.0} s",
        kernels.len(),
        started.elapsed().as_secs_f64()
    ));
    if !failed.is_empty() {
        bail!("kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}

/// The shared libraries `ldd` lists for `bin`, the dynamic loader included.
fn libs_of(bin: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("cannot run ldd")?;
    if !out.status.success() {
        bail!("ldd {} failed", bin.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => l,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect())
}

fn build_initramfs(tracer: &Path, workload: &Path, out: &Path) -> anyhow::Result<()> {
    for b in [tracer, workload] {
        if !b.is_file() {
            bail!(
                "{} is missing: build it first (or drop --no-build)",
                b.display()
            );
        }
    }
    let busybox = Path::new("/bin/busybox");
    let mut a = cpio::Archive::new();
    for d in [
        "/bin", "/usr", "/usr/bin", "/dev", "/proc", "/sys", "/tmp", "/run", "/etc",
    ] {
        a.dir(d);
    }
    a.char_dev("/dev/console", 5, 1);
    a.copy(busybox, "/bin/busybox")?;
    // Without debug info the archive is a fifth of the size, and unpacks faster under TCG.
    for (bin, name) in [(tracer, "/usr/bin/tracer"), (workload, "/usr/bin/workload")] {
        let stripped = out.with_file_name(format!("{}.stripped", &name[9..]));
        let ok = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(bin)
            .arg(&stripped)
            .status()
            .is_ok_and(|s| s.success());
        a.copy(if ok { &stripped } else { bin }, name)?;
    }
    let mut libs = libs_of(tracer)?;
    libs.extend(libs_of(workload)?);
    libs.sort();
    libs.dedup();
    let mut dirs: Vec<String> = Vec::new();
    for l in &libs {
        let mut acc = String::new();
        for part in Path::new(l)
            .parent()
            .into_iter()
            .flat_map(|p| p.iter().skip(1))
        {
            acc.push('/');
            acc.push_str(&part.to_string_lossy());
            if !dirs.contains(&acc) && !["/bin", "/usr", "/usr/bin"].contains(&acc.as_str()) {
                a.dir(&acc);
                dirs.push(acc.clone());
            }
        }
        // The real file, under the path the binaries ask for.
        let real = std::fs::canonicalize(l).with_context(|| format!("resolving {l}"))?;
        a.copy(&real, l)?;
    }
    a.file("/etc/passwd", 0o644, b"root:x:0:0:root:/:/bin/sh\n");
    let init = include_str!("init.sh").replace("@OOM_LIMIT@", &OOM_LIMIT.to_string());
    a.file("/init", 0o755, init.as_bytes());
    a.write_gz(out)
}

pub struct Kernel {
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// The highest-versioned `linux-image-<series>...-amd64` kernel package the archive offers.
fn newest_package(series: &str) -> anyhow::Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args([
            "search",
            "--names-only",
            &format!("^linux-image-{series}\\."),
        ])
        .output()
        .context("cannot run apt-cache")?;
    Ok(pick_newest(series, &String::from_utf8_lossy(&out.stdout)))
}

/// From `apt-cache search` lines, the newest generic-flavour amd64 image of `series`.
fn pick_newest(series: &str, search: &str) -> Option<String> {
    let mut names: Vec<String> = search
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            let Some(rest) = n.strip_prefix("linux-image-") else {
                return false;
            };
            // The generic flavour only: not -cloud, -rt, -dbg.
            (rest.ends_with("-amd64") || rest.ends_with("-amd64-unsigned"))
                && !["-cloud-", "-rt-", "-dbg"].iter().any(|f| rest.contains(f))
                && rest
                    .strip_prefix(series)
                    .is_some_and(|r| r.starts_with('.'))
        })
        .map(str::to_owned)
        .collect();
    names.sort_by_key(|n| version_key(n));
    names.pop()
}

/// Numbers in a package name, for a version order (6.12.9 < 6.12.118; 6.1.0-9 < 6.1.0-57).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn fetch_kernel(series: &str, cache: &Path) -> anyhow::Result<Kernel> {
    let package = match newest_package(series)? {
        Some(p) => p,
        None => {
            say(format!(
                "no linux-image-{series} in the package lists: apt-get update"
            ));
            let st = Command::new("apt-get").args(["update", "-qq"]).status()?;
            if !st.success() {
                bail!("apt-get update failed");
            }
            newest_package(series)?.with_context(|| {
                format!("the package archive offers no linux-image-{series}.*-amd64")
            })?
        }
    };
    let dir = cache.join(&package);
    if let Some(v) = find_vmlinuz(&dir) {
        return Ok(Kernel {
            package,
            vmlinuz: v,
        });
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    say(format!("apt-get download {package}"));
    let st = Command::new("apt-get")
        .args(["download", "-qq", &package])
        .current_dir(&debs)
        .status()
        .context("cannot run apt-get")?;
    if !st.success() {
        bail!("apt-get download {package} failed");
    }
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| {
            format!(
                "apt-get download left no {package}_*.deb in {}",
                debs.display()
            )
        })?;
    let tmp = cache.join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tmp)
        .status()?;
    if !st.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    let _ = std::fs::remove_file(&deb);
    let vmlinuz =
        find_vmlinuz(&dir).with_context(|| format!("{package} holds no boot/vmlinuz-*"))?;
    Ok(Kernel { package, vmlinuz })
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

pub struct Boot {
    pub results: String,
    pub seconds: f64,
}

fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn boot(k: &Kernel, initrd: &Path, cache: &Path, timeout: Duration) -> anyhow::Result<Boot> {
    let console = cache.join(format!("{}.console.log", k.package));
    let results = cache.join(format!("{}.results.txt", k.package));
    let _ = std::fs::remove_file(&results);
    say(format!("booting {} ({})", k.package, k.vmlinuz.display()));
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .args([
            "-display",
            "none",
            "-nic",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let seconds = start.elapsed().as_secs_f64();
    let out = std::fs::read_to_string(&results).unwrap_or_default();
    let why = match status {
        None => Some(format!("did not power off within {} s", timeout.as_secs())),
        Some(st) if !st.success() => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            Some(format!("qemu exited with {st}: {}", err.trim()))
        }
        Some(_) if !out.contains("=== end") => {
            Some("powered off before writing its results".into())
        }
        Some(_) => None,
    };
    if let Some(why) = why {
        bail!(
            "{}: boot failed: {why} after {seconds:.0} s; console ({}) ends:\n{}",
            k.package,
            console.display(),
            tail(&console, 30)
        );
    }
    say(format!("{} powered off after {seconds:.0} s", k.package));
    Ok(Boot {
        results: out.replace('\r', ""),
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_generic_image_of_the_series_is_picked() {
        let search = "\
linux-image-6.1.0-9-amd64 - Linux 6.1 for 64-bit PCs (signed)
linux-image-6.1.0-57-amd64 - Linux 6.1 for 64-bit PCs (signed)
linux-image-6.1.0-57-amd64-dbg - Debug symbols
linux-image-6.1.0-57-cloud-amd64 - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-57-rt-amd64 - Linux 6.1 for 64-bit PCs, PREEMPT_RT
linux-image-6.12.9+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.118+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.118+deb12-rt-amd64-unsigned - Linux 6.12, PREEMPT_RT
";
        assert_eq!(
            pick_newest("6.1", search).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(
            pick_newest("6.12", search).as_deref(),
            Some("linux-image-6.12.118+deb12-amd64-unsigned")
        );
        assert_eq!(pick_newest("6.6", search), None);
    }
}
