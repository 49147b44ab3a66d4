//! Builds the eBPF object (tracer-ebpf) with aya-build and hands its path to the crate, which
//! embeds it with `include_bytes_aligned!`.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // The programs are built from tracer-common's record types too: a change there must
    // rebuild them (cargo cannot see through the nested build).
    if let Some(common) = packages_dir(root.as_str()) {
        println!("cargo::rerun-if-changed={common}");
    }
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root.as_str(),
        ..Default::default()
    };
    // The eBPF crate needs `-Z build-std=core`; the pinned stable toolchain accepts it with
    // RUSTC_BOOTSTRAP=1 (aya-build passes the flag when it sees that variable). Nightly is not
    // needed, and a plain `cargo build` works without extra environment.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "1.98.0".to_owned());
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain))
}

/// tracer-common's directory, beside tracer-ebpf's.
fn packages_dir(ebpf_root: &str) -> Option<String> {
    let p = std::path::Path::new(ebpf_root)
        .parent()?
        .join("tracer-common");
    p.is_dir().then(|| p.display().to_string())
}
