//! On-target run of the kernel conformance suite (`facemark_core::testkit`,
//! the one every tier runs): random layers of every input channel count the
//! network has and others, random parameters including the edges, each run
//! through the portable reference and the Cortex-M DSP kernels, which must
//! agree bit for bit. Also the requantization's short path against its
//! definition, compiled for the board.
//!
//! Runs under QEMU with semihosting (the AN386's Cortex-M4, `boards/an386`,
//! and the AN505's Cortex-M33, the Pico 2's core, `boards/an505`): prints a
//! summary and exits with status 0 only when nothing differed.
//! `tests/tests/qemu_kernels.rs` builds and runs it:
//! `cargo build --release --features kernel-check --bin kernel-check` in
//! `firmware/boards/an386`. The Pico 2's core (Cortex-M33) runs the same
//! suite on QEMU's `mps2-an505` (`boards/an505`).
use cortex_m_semihosting::{debug, hprintln};
use facemark_core::kernels::{CortexMDsp, CortexMDspDirect};
use facemark_core::testkit::{Scratch, check, check_requant};

/// Random layers per conv input channel count, and dense layers.
const CASES: usize = 120;
const REQUANT_CASES: usize = 1_000_000;
const SEED: u32 = 0x1234_5678;

static mut SCRATCH: Scratch = Scratch::new();

/// Runs the suite, prints its summary and ends QEMU: status 0 only when
/// nothing differed. Call once, from the board's entry point.
pub fn run(board: &str) -> ! {
    // SAFETY: the only reference to the static, made once here.
    let scratch = unsafe { &mut *core::ptr::addr_of_mut!(SCRATCH) };
    // The tier (Winograd convolution where it fits), then its direct
    // kernels alone, which it falls back to where it does not.
    let direct = check::<CortexMDspDirect>(SEED, CASES, scratch);
    hprintln!("kernel-check on {}: {}", board, direct);
    let r = check::<CortexMDsp>(SEED, CASES, scratch);
    let (requant, requant_differed) = check_requant(SEED, REQUANT_CASES);
    hprintln!("kernel-check on {}: {}", board, r);
    hprintln!(
        "kernel-check: conv rows {} differing {}; dense layers {} differing {}; to_int8 {} differing {}",
        r.conv_rows + direct.conv_rows,
        r.conv_differed + r.refused + direct.conv_differed + direct.refused,
        r.dense_layers + direct.dense_layers,
        r.dense_differed + direct.dense_differed,
        requant,
        requant_differed
    );
    let ok = r.passed()
        && direct.passed()
        && requant_differed == 0
        && r.conv_specialised > 0
        && r.int4_layers > 0;
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}

/// The kernel check's panic handler (the board's bin installs it).
pub fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("kernel-check: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
