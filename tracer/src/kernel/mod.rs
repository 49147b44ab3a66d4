//! What the running kernel offers: tracefs (tracepoint formats → field offsets), BTF (struct
//! member offsets), privileges and features.
pub mod btf;
pub mod tracefs;
