//! tracer's kernel side: one small program per tracepoint, grouped by family. Every program
//! returns early unless its family is enabled and the event's subject passes the filters, and
//! writes one fixed-size record (tracer_common::Header + payload) into the critical or the bulk
//! ring buffer.
#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

mod common;
mod fd;
mod memory;
mod oom;
mod process;
mod signal;
mod sockets;
mod tcp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
