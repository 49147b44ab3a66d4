//! Debian packages the tasks need, installed through apt-get when missing.
use std::process::{Command, Stdio};

use anyhow::bail;

/// Whether dpkg knows `pkg` as installed.
pub fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// `apt-get install -y` of `missing` (nothing when empty); the package lists are refreshed
/// (`apt-get update`) only when the first attempt cannot find something.
pub fn install(missing: &[&str]) -> anyhow::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let apt_install = || {
        Command::new("apt-get")
            // Another apt-get (an engineer's, unattended-upgrades) may hold the lock a while.
            .args(["-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !apt_install()?.success() {
        let st = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300", "update", "-qq"])
            .status()?;
        if !st.success() || !apt_install()?.success() {
            bail!("apt-get install {} failed", missing.join(" "));
        }
    }
    Ok(())
}
