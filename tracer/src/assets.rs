//! Files the package ships that come from the command line's own definition: shell
//! completions (clap_complete) and man pages (clap_mangen), written by the hidden
//! `tracer generate-assets DIR` (run by scripts/package.sh before cargo-deb), so they always
//! match the binary. Also systemd's readiness notification.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Output directory: completions/ and man/ are created in it.
    pub dir: PathBuf,
}

pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let mut cmd = crate::cli::Cli::command();
    let comp = args.dir.join("completions");
    let man = args.dir.join("man");
    for d in [&comp, &man] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "tracer", &comp)
            .with_context(|| format!("writing {shell} completions to {}", comp.display()))?;
    }
    cmd.build();
    write_man(&cmd, &man, "tracer")?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_man(sub, &man, &format!("tracer-{}", sub.get_name()))?;
    }
    Ok(())
}

fn write_man(cmd: &clap::Command, dir: &Path, name: &str) -> anyhow::Result<()> {
    // A one-shot command: leaking a few names is simpler than clap's `string` feature.
    let cmd = cmd.clone().name(&*name.to_owned().leak());
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))
}

/// Tells systemd (Type=notify) that tracing has started, when run by it ($NOTIFY_SOCKET).
/// Anything else is a no-op; a failure is logged, never fatal.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = sd_notify(&path, "READY=1\nSTATUS=tracing") {
        tracing::warn!("cannot notify systemd of readiness: {e}");
    }
}

fn sd_notify(path: &std::ffi::OsStr, msg: &str) -> std::io::Result<()> {
    use std::os::{linux::net::SocketAddrExt, unix::net::UnixDatagram};
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
        None => std::os::unix::net::SocketAddr::from_pathname(path)?,
    };
    sock.send_to_addr(msg.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_man_pages_are_generated() {
        let dir = std::env::temp_dir().join(format!("tracer-assets-{}", std::process::id()));
        generate(&GenerateArgs { dir: dir.clone() }).unwrap();
        let bash = std::fs::read_to_string(dir.join("completions/tracer.bash")).unwrap();
        assert!(bash.contains("--metrics"), "completions know the new flags");
        assert!(dir.join("completions/_tracer").is_file());
        assert!(dir.join("completions/tracer.fish").is_file());
        let man = std::fs::read_to_string(dir.join("man/tracer-record.1")).unwrap();
        assert!(
            man.contains(".TH tracer-record"),
            "{}",
            &man[..200.min(man.len())]
        );
        assert!(dir.join("man/tracer.1").is_file());
        assert!(
            !dir.join("man/tracer-scenario.1").exists(),
            "hidden commands have no page"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn readiness_reaches_the_notify_socket() {
        use std::os::unix::net::UnixDatagram;
        let path = std::env::temp_dir().join(format!("tracer-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        sd_notify(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_file(&path).unwrap();
    }
}
