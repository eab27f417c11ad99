//! Every kernel tier through the one conformance suite
//! (`facemark_core::testkit::check`) against the portable reference, bit for
//! bit: the x86-64 tiers here (a tier whose instructions this CPU lacks is
//! skipped with a message), the aarch64 tiers under `qemu-aarch64` on both
//! paths (`-cpu max`: SDOT; `-cpu cortex-a72`, the Pi 4's core: plain
//! NEON). The Cortex-M DSP tier runs the same suite on the emulated board
//! (`qemu_kernels.rs`).

mod qemu_common;

use std::process::Command;

use facemark::board::qemu::{build_in_firmware, firmware_dir};
use facemark_core::kernels::{Kernels, Portable, Tier};
use facemark_core::testkit::{Report, Scratch, check, check_requant};

const CASES: usize = 150;
const SEED: u32 = 0x5eed_0001;

fn assert_passes(r: &Report) {
    println!("{r}");
    assert!(r.passed(), "{r}");
    assert!(
        r.conv_specialised > 0 && r.dense_specialised > 0,
        "tier {} ran none of the generated layers with its own code: {r}",
        r.tier
    );
    assert!(r.int4_layers > 0, "no int4 dense layer was checked: {r}");
}

fn run_tier<K: Kernels>(tier: Tier) {
    if !tier.available() {
        println!(
            "SKIPPED: tier {}: this CPU lacks its instructions",
            tier.name()
        );
        return;
    }
    let mut s = Box::new(Scratch::new());
    assert_passes(&check::<K>(SEED, CASES, &mut s));
}

#[test]
fn the_reference_agrees_with_itself_and_the_requantization_short_path() {
    let mut s = Box::new(Scratch::new());
    assert_passes(&check::<Portable>(SEED, 20, &mut s));
    let (n, differed) = check_requant(SEED, 1_000_000);
    assert_eq!(differed, 0, "to_int8: {differed} of {n} differ");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_equals_the_portable_reference() {
    run_tier::<facemark_core::kernels::Avx2>(Tier::Avx2);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_vnni_equals_the_portable_reference() {
    run_tier::<facemark_core::kernels::Avx512Vnni>(Tier::Avx512Vnni);
}

const AARCH64: &str = "aarch64-unknown-linux-gnu";

#[test]
fn aarch64_tiers_equal_the_portable_reference_under_qemu() {
    if !qemu_common::have_tool("qemu-aarch64", "qemu-user") {
        return;
    }
    build_in_firmware(
        &[
            "build",
            "--release",
            "-p",
            "facemark-pi",
            "--bin",
            "tier-check",
            "--target",
            AARCH64,
        ],
        None,
    )
    .expect("build tier-check for aarch64 (needs gcc-aarch64-linux-gnu)");
    let bin = firmware_dir().join(format!("target/{AARCH64}/release/tier-check"));
    // (cpu, whether SDOT must run)
    for (cpu, sdot) in [("max", true), ("cortex-a76", true), ("cortex-a72", false)] {
        let out = Command::new("qemu-aarch64")
            .args(["-L", "/usr/aarch64-linux-gnu", "-cpu", cpu])
            .arg(&bin)
            .args([CASES.to_string(), SEED.to_string()])
            .output()
            .expect("run tier-check under qemu-aarch64");
        let text = String::from_utf8_lossy(&out.stdout);
        println!(
            "-cpu {cpu}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "tier-check failed on -cpu {cpu}:\n{text}"
        );
        let ran = |tier: &str| {
            text.lines().any(|l| {
                l.starts_with(&format!("tier-check: tier {tier}: conv rows"))
                    && l.contains(" differing 0 ")
            })
        };
        assert!(ran("neon"), "plain NEON did not pass on -cpu {cpu}");
        assert_eq!(ran("neon-sdot"), sdot, "SDOT tier on -cpu {cpu}");
        let detected = if sdot { "neon-sdot" } else { "neon" };
        assert!(
            text.contains(&format!("tier-check: detected {detected}\n")),
            "-cpu {cpu} should detect {detected}"
        );
    }
}
