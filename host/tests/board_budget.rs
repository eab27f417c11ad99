//! The emulated boards' budgets (issue 13), measured by the installed CLI
//! as a user runs it (`facemark bench board --json`): at most 0.7
//! instructions per MAC for the whole inference, peak RAM at most 44 KiB,
//! flash at most 1.4 MB with the int8 model.

#[path = "../../tests/tests/qemu_common/mod.rs"]
mod qemu_common;

/// `facemark bench board --json` with `args`: its report.
fn bench_board(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facemark"))
        .args(["bench", "board", "--json"])
        .args(args)
        .output()
        .expect("run facemark bench board");
    assert!(
        out.status.success(),
        "bench board failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

#[test]
fn the_an386_firmware_keeps_its_speed_ram_and_flash_budgets() {
    if !qemu_common::have_tool("qemu-system-arm", "qemu-system-arm") {
        return;
    }
    let r = bench_board(&["--images", "2"]);
    let instr = r["instructions_per_inference"].as_u64().unwrap();
    let macs = r["macs"].as_u64().unwrap();
    let peak = r["peak_ram_bytes"]
        .as_u64()
        .expect("a stack high-water mark");
    let flash = r["footprint"]["flash_bytes"].as_u64().unwrap();
    eprintln!(
        "{instr} instructions ({:.3} per MAC), peak RAM {peak} B, flash {flash} B",
        instr as f64 / macs as f64
    );
    assert!(
        instr * 10 <= macs * 7,
        "{instr} instructions for {macs} MACs: above 0.7 per MAC"
    );
    assert!(peak <= 44 * 1024, "peak RAM {peak} bytes: above 44 KiB");
    assert!(flash <= 1_400_000, "flash {flash} bytes: above 1.4 MB");
}

/// The two-core split (issue 13 item 4) on the dual Cortex-M33 AN521, as
/// `facemark bench board --machine an521 --peer --json` measures it: the
/// expected latency on two cores (each layer's slower part, summed) at
/// most 0.6 of one core's (0.545 measured), the two parts within 1% of
/// each other, and each part's keypoints-free run cheaper than one core.
#[test]
fn the_two_core_split_keeps_its_expected_latency() {
    if !qemu_common::have_tool("qemu-system-arm", "qemu-system-arm") {
        return;
    }
    let r = bench_board(&["--machine", "an521", "--peer", "--images", "1"]);
    let total = |k: &str| r[k]["instructions_per_inference"].as_u64().unwrap();
    let (one, c0, c1) = (
        total("one_core_peer"),
        total("core0_part"),
        total("core1_part"),
    );
    let ratio = r["dual_core_latency_ratio"].as_f64().unwrap();
    eprintln!("one core {one}, core 0 {c0}, core 1 {c1}: expected latency {ratio:.3}x");
    assert!(ratio <= 0.6, "two cores expected at {ratio:.3}x one core's");
    assert!(
        c0.abs_diff(c1) * 100 <= c0.max(c1),
        "unbalanced parts: {c0} vs {c1}"
    );
    assert!(c0 < one && c1 < one);
}
