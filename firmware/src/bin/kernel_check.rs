//! On-target run of the kernel conformance suite (`facemark_core::testkit`,
//! the one every tier runs): random layers of every input channel count the
//! network has and others, random parameters including the edges, each run
//! through the portable reference and the Cortex-M DSP kernels, which must
//! agree bit for bit. Also the requantization's short path against its
//! definition, compiled for the board.
//!
//! Runs under QEMU (MPS2 AN386) with semihosting: prints a summary and
//! exits with status 0 only when nothing differed.
//! `tests/tests/qemu_kernels.rs` builds and runs it:
//! `cargo build --release --features kernel-check --bin kernel-check`.
#![no_std]
#![no_main]

#[cfg(not(board = "an386"))]
compile_error!("kernel-check runs on the MPS2 AN386 (QEMU) only: build for thumbv7em-none-eabihf");

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use facemark_core::kernels::CortexMDsp;
use facemark_core::testkit::{Scratch, check, check_requant};

/// Random layers per conv input channel count, and dense layers.
const CASES: usize = 120;
const REQUANT_CASES: usize = 1_000_000;
const SEED: u32 = 0x1234_5678;

static mut SCRATCH: Scratch = Scratch::new();

#[entry]
fn main() -> ! {
    // SAFETY: the only reference to the static, made once here.
    let scratch = unsafe { &mut *core::ptr::addr_of_mut!(SCRATCH) };
    let r = check::<CortexMDsp>(SEED, CASES, scratch);
    let (requant, requant_differed) = check_requant(SEED, REQUANT_CASES);
    hprintln!("kernel-check: {}", r);
    hprintln!(
        "kernel-check: conv rows {} differing {}; dense layers {} differing {}; to_int8 {} differing {}",
        r.conv_rows,
        r.conv_differed + r.refused,
        r.dense_layers,
        r.dense_differed,
        requant,
        requant_differed
    );
    let ok = r.passed() && requant_differed == 0 && r.conv_specialised > 0;
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("kernel-check: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
