//! What the running kernel offers: tracefs (tracepoint formats → field offsets), BTF (struct
//! member offsets), privileges and features.
pub mod btf;
pub mod tracefs;

/// For unit tests that read this machine's kernel (BTF, tracefs): one that cannot (no root, no
/// BTF) fails in CI (`CI=true`), where it would prove nothing, and elsewhere says SKIPPED
/// loudly. Returns whether the caller should go on.
#[cfg(test)]
pub(crate) fn can_read_kernel(what: &str, why_not: Option<String>) -> bool {
    let Some(why) = why_not else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but this test cannot read {what}: {why}"
    );
    eprintln!("\n*** SKIPPED: cannot read {what}: {why} (run as root on a kernel with it) ***\n");
    false
}
