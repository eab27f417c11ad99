//! The Cortex-M DSP kernels against the portable reference, on the target:
//! builds a board's `kernel-check` binary (random layers of every shape
//! the kernels specialise, int8 and int4, random parameters and edge cases,
//! and the requantization's short path against its definition; see
//! `firmware/app/src/kernel_check.rs`), runs it in qemu-system-arm and
//! requires that nothing differed: on the AN386's Cortex-M4
//! (thumbv7em) and on the AN505's Cortex-M33, the Pico 2's core and code
//! path (thumbv8m.main, `-C target-cpu=cortex-m33`).
//!
//! Skips (loudly) only when qemu-system-arm is missing and `CI` is not set.

mod qemu_common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use facemark::board::qemu::{firmware_dir, run_cargo};

const TARGET_DIR: &str = "target/kernel-check";
const TIMEOUT: Duration = Duration::from_secs(300);

/// The numbers after each "differing" and before it ("conv rows N
/// differing M; ...") from the summary line.
fn counts(summary: &str) -> Vec<(usize, usize)> {
    summary
        .split(';')
        .filter_map(|part| {
            let words: Vec<&str> = part.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "differing")?;
            let checked = words.get(at.checked_sub(1)?)?.parse().ok()?;
            let differed = words.get(at + 1)?.parse().ok()?;
            Some((checked, differed))
        })
        .collect()
}

#[test]
fn dsp_kernels_equal_the_portable_reference_on_the_board() {
    kernel_check(
        "an386",
        &["--features", "kernel-check"],
        "thumbv7em-none-eabihf",
        "mps2-an386",
    );
}

#[test]
fn dsp_kernels_equal_the_portable_reference_on_the_pico_2s_core() {
    kernel_check("an505", &[], "thumbv8m.main-none-eabihf", "mps2-an505");
}

/// Builds `boards/<board>`'s kernel-check and runs it on `machine`.
fn kernel_check(board: &str, features: &[&str], target: &str, machine: &str) {
    if !qemu_common::have_tool("qemu-system-arm", "qemu-system-arm") {
        return;
    }
    let target_dir = firmware_dir().join(TARGET_DIR);
    let target_dir = target_dir.to_string_lossy();
    let mut args = vec!["build", "--release", "--bin", "kernel-check"];
    args.extend_from_slice(features);
    args.extend_from_slice(&["--target-dir", &target_dir]);
    run_cargo(&firmware_dir().join("boards").join(board), &args, None)
        .expect("building the kernel-check firmware");
    let elf = firmware_dir()
        .join(TARGET_DIR)
        .join(target)
        .join("release/kernel-check");
    let machine_args = facemark::board::qemu::qemu_machine_args(machine)
        .unwrap_or_else(|| panic!("{machine} is not in firmware/qemu-machines"));
    let mut child = Command::new("qemu-system-arm")
        .args(machine_args)
        .args(["-serial", "null"])
        .arg("-kernel")
        .arg(&elf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting qemu-system-arm");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for qemu") {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("kernel-check did not finish in {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)
        .expect("reading qemu's output");
    let mut err = String::new();
    let _ = child.stderr.take().expect("piped").read_to_string(&mut err);
    println!("{out}");
    let summary = out
        .lines()
        .find(|l| l.starts_with("kernel-check: conv rows"))
        .unwrap_or_else(|| panic!("no summary from kernel-check on {machine}:\n{out}\n{err}"));
    let c = counts(summary);
    assert_eq!(c.len(), 3, "conv, dense and to_int8 counts in {summary:?}");
    for (checked, differed) in c {
        assert!(checked > 0, "nothing checked: {summary}");
        assert_eq!(differed, 0, "the DSP kernels differ on {machine}: {out}");
    }
    assert!(
        out.contains(" int4)") && !out.contains("(0 int4)"),
        "int4 dense layers were not checked on {machine}: {out}"
    );
    assert!(
        status.success(),
        "kernel-check failed on {machine} ({status}):\n{out}\n{err}"
    );
}

#[test]
fn the_summary_parser_reads_every_count() {
    let c = counts(
        "kernel-check: conv rows 3840 differing 2; dense layers 1000 differing 0; to_int8 5 differing 1",
    );
    assert_eq!(c, [(3840, 2), (1000, 0), (5, 1)]);
}
