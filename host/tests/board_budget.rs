//! The emulated AN386's budgets (issue 13), measured by the installed CLI
//! as a user runs it (`facemark bench board --json`): at most 0.7
//! instructions per MAC for the whole inference, peak RAM at most 44 KiB,
//! flash at most 1.4 MB with the int8 model.

#[path = "../../tests/tests/qemu_common/mod.rs"]
mod qemu_common;

#[test]
fn the_an386_firmware_keeps_its_speed_ram_and_flash_budgets() {
    if !qemu_common::have_tool("qemu-system-arm", "qemu-system-arm") {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facemark"))
        .args(["bench", "board", "--json", "--images", "2"])
        .output()
        .expect("run facemark bench board");
    assert!(
        out.status.success(),
        "bench board failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
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
