//! The conformance suite (`facemark_core::testkit`) for the aarch64 kernel
//! tiers, run under `qemu-aarch64` by `tests/tests/kernel_tiers.rs`: with
//! `-cpu max` (SDOT present: both tiers run) and `-cpu cortex-a72` (the Pi
//! 4's core, no SDOT: plain NEON only, the SDOT tier reported as skipped).
//! Prints one line per tier and exits with status 1 if anything differed.
//!
//! ```text
//! tier-check [CASES] [SEED]
//! ```

use std::process::ExitCode;

use facemark_core::kernels::{Kernels, Neon, NeonDot, Tier, detected};
use facemark_core::testkit::{Report, Scratch, check, check_requant};

fn run<K: Kernels>(cases: usize, seed: u32, scratch: &mut Scratch) -> Report {
    let r = check::<K>(seed, cases, scratch);
    println!("tier-check: {r}");
    r
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let cases: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let seed: u32 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0x1234_5678);
    let mut scratch = Box::new(Scratch::new());
    println!("tier-check: detected {}", detected().name());
    let mut ok = run::<Neon>(cases, seed, &mut scratch).passed();
    if Tier::NeonDot.available() {
        ok &= run::<NeonDot>(cases, seed, &mut scratch).passed();
    } else {
        println!("tier-check: tier neon-sdot skipped: this CPU has no dot-product extension");
    }
    let (n, differed) = check_requant(seed, 200_000);
    println!("tier-check: to_int8 {n} differing {differed}");
    ok &= differed == 0;
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
