//! instructions per inference of the Raspberry Pi
//! binary (`facemark-pi`, the kernel tier it detects) against tract running
//! the float and the int8 ONNX of the same model, both built for
//! `aarch64-unknown-linux-gnu` and run under `qemu-aarch64` on the same
//! image, for the Pi 4's core (`-cpu cortex-a72`: plain NEON) and the Pi 5's
//! (`-cpu cortex-a76`: SDOT). Times under user-mode QEMU mean nothing;
//! instruction counts do: a TCG plugin (`scripts/qemu-insn-count.c`,
//! compiled here with `cc`) counts every executed instruction, and each
//! engine runs once with 1 and once with `1 + runs` inferences, so that
//! loading (and tract's graph optimisation) cancels out.

use anyhow::{Context, Result, ensure};
use facemark_core::network::INPUT_LEN;
use std::path::Path;
use std::process::{Command, Stdio};

pub(crate) const TARGET: &str = "aarch64-unknown-linux-gnu";

/// The deterministic test image (gradients; the count does not depend on content).
pub(crate) fn image() -> Vec<u8> {
    (0..INPUT_LEN)
        .map(|i| ((i * 3 + (i / 96) * 7) % 256) as u8)
        .collect()
}

/// Instructions `qemu-aarch64 -cpu CPU` executes for `program args`,
/// with `stdin` as its standard input.
pub(crate) fn count(
    plugin: &Path,
    cpu: &str,
    program: &Path,
    args: &[&std::ffi::OsStr],
    stdin: Option<&Path>,
    work: &Path,
) -> Result<u64> {
    let out_file = work.join("count.txt");
    let _ = std::fs::remove_file(&out_file);
    let mut cmd = Command::new("qemu-aarch64");
    cmd.args(["-L", "/usr/aarch64-linux-gnu", "-cpu", cpu])
        .arg("-plugin")
        .arg(format!("{},out={}", plugin.display(), out_file.display()))
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match stdin {
        Some(p) => cmd.stdin(std::fs::File::open(p)?),
        None => cmd.stdin(Stdio::null()),
    };
    let out = cmd
        .output()
        .context("running qemu-aarch64 (apt-get install qemu-user)")?;
    ensure!(
        out.status.success(),
        "{} under qemu-aarch64 -cpu {cpu} failed ({}): {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = std::fs::read_to_string(&out_file)
        .with_context(|| format!("the counting plugin wrote no {}", out_file.display()))?;
    text.trim()
        .strip_prefix("instructions ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected plugin output {text:?}"))
}

/// The kernel tier facemark-pi picks on `cpu` (tier-check's detection line).
pub(crate) fn detected_tier(cpu: &str, tier_check: &Path) -> Result<String> {
    let out = Command::new("qemu-aarch64")
        .args(["-L", "/usr/aarch64-linux-gnu", "-cpu", cpu])
        .arg(tier_check)
        .arg("0")
        .output()
        .context("running tier-check under qemu-aarch64")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("tier-check: detected "))
        .map(str::to_string)
        .context("tier-check printed no detected tier")
}
