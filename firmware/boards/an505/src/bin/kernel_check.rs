//! The kernel conformance suite on the AN505's Cortex-M33, the Pico 2's core (see
//! `facemark_app::kernel_check`); run by `tests/tests/qemu_kernels.rs`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;

#[entry]
fn main() -> ! {
    facemark_app::kernel_check::run("mps2-an505 (cortex-m33)")
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    facemark_app::kernel_check::on_panic(info)
}
