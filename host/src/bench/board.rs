//! The firmware measured on the emulated board (MPS2 AN386 in
//! `qemu-system-arm -icount shift=0`): instructions per inference, per layer
//! and per MAC, and the firmware's flash and RAM footprint (from the ELF's
//! section headers and the stack high-water mark it logs).
//!
//! Under `-icount shift=0` QEMU executes one instruction per virtual
//! nanosecond, so SysTick (25 MHz) counts instructions, 40 per tick, and the
//! counts repeat exactly. They are instructions, not cycles: a real
//! Cortex-M4 takes more cycles (loads, multiplies, branches) than it
//! executes instructions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use facemark_core::network::{INPUT_LEN, INPUT_SIDE, LAYER_COUNT, LAYERS, MACS};
use serde::Serialize;

use crate::board::qemu::{Machine, Qemu, QemuOptions};

/// One ELF section's header fields that matter here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Section {
    pub name: String,
    pub kind: u32,
    pub flags: u32,
    pub addr: u32,
    pub size: u32,
}

const SHT_NOBITS: u32 = 8;
const SHF_WRITE: u32 = 1;
const SHF_ALLOC: u32 = 2;

impl Section {
    pub fn alloc(&self) -> bool {
        self.flags & SHF_ALLOC != 0
    }
    /// Occupies bytes in the image (not `.bss`-like).
    pub fn has_bits(&self) -> bool {
        self.kind != SHT_NOBITS
    }
}

/// The section headers of an ELF32 file (read with `object`, as
/// defmt-decoder reads the log's symbols).
pub fn elf32_sections(b: &[u8]) -> Result<Vec<Section>> {
    use object::read::elf::{FileHeader, SectionHeader};
    let header = object::elf::FileHeader32::<object::Endianness>::parse(b)
        .map_err(|e| anyhow::anyhow!("not a 32-bit ELF file: {e}"))?;
    let endian = header
        .endian()
        .map_err(|e| anyhow::anyhow!("bad ELF header: {e}"))?;
    let table = header
        .sections(endian, b)
        .map_err(|e| anyhow::anyhow!("bad ELF section headers: {e}"))?;
    Ok(table
        .iter()
        .map(|h| Section {
            name: table
                .section_name(endian, h)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default(),
            kind: h.sh_type(endian),
            flags: h.sh_flags(endian),
            addr: h.sh_addr(endian),
            size: h.sh_size(endian),
        })
        .collect())
}

/// Flash and static RAM from the section headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Footprint {
    /// Allocated sections with contents (`.vector_table`, `.text`,
    /// `.rodata`, the `.data` load image, ...).
    pub flash_bytes: u64,
    /// `.data` + `.bss` + `.uninit` (writable allocated sections).
    pub static_ram_bytes: u64,
    /// (name, bytes) of every allocated, non-empty section.
    pub sections: Vec<(String, u64)>,
}

/// Sums the sections: flash holds every allocated section with contents
/// (the `.data` initial values are stored there too); static RAM is
/// `.data`, `.bss` and `.uninit` (and any other writable allocated section).
pub fn footprint(sections: &[Section]) -> Footprint {
    let mut f = Footprint::default();
    for s in sections.iter().filter(|s| s.alloc()) {
        let n = s.name.as_str();
        let ram = s.flags & SHF_WRITE != 0 || matches!(n, ".data" | ".bss" | ".uninit");
        if s.has_bits() {
            f.flash_bytes += u64::from(s.size);
        }
        if ram {
            f.static_ram_bytes += u64::from(s.size);
        }
        if s.size > 0 {
            f.sections.push((s.name.clone(), u64::from(s.size)));
        }
    }
    f
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerCost {
    pub layer: usize,
    pub instructions: u32,
    pub macs: usize,
    pub instructions_per_mac: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BoardReport {
    pub elf: String,
    pub board: String,
    pub firmware_version: String,
    pub cost_unit: String,
    pub note: String,
    pub inferences: usize,
    /// Every inference's total (they differ by a few thousand: the
    /// requantization's short paths depend on the data).
    pub totals: Vec<u64>,
    pub instructions_per_inference: u64,
    pub layers: Vec<LayerCost>,
    pub macs: usize,
    pub instructions_per_mac: f64,
    pub footprint: Footprint,
    pub model_bytes: Option<u64>,
    pub stack_high_water_bytes: Option<usize>,
    pub peak_ram_bytes: Option<u64>,
}

/// A synthetic input: a diagonal gradient, shifted per image.
fn gradient(k: usize) -> Box<[u8; INPUT_LEN]> {
    let mut img = Box::new([0u8; INPUT_LEN]);
    for y in 0..INPUT_SIDE {
        for x in 0..INPUT_SIDE {
            img[y * INPUT_SIDE + x] = ((x + y + 17 * k) * 255 / (2 * INPUT_SIDE)) as u8;
        }
    }
    img
}

/// The peers `bench board --peer` builds beside the board's own firmware:
/// each its cargo features and its own target directory (so the builds do
/// not rebuild each other).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// The DSP kernels with direct convolution only (issue 6's), which the
    /// Winograd convolution is measured against.
    DirectDsp,
    /// The portable reference kernels.
    Portable,
    /// The dual-core board's inference on core 0 alone.
    OneCore,
    /// Only core 0's part of the dual-core split, alone: its instructions.
    Core0Part,
    /// Only core 1's part, run alone on core 0 (the same code and data).
    Core1Part,
}

impl Peer {
    /// The peers measured for `machine`: the dual-core board's are its
    /// single-core run and each core's part; the others', the kernels'.
    pub const fn of(machine: Machine) -> &'static [Peer] {
        match machine {
            Machine::An386 | Machine::Netduinoplus2 => &[Peer::DirectDsp, Peer::Portable],
            Machine::An521 => &[Peer::OneCore, Peer::Core0Part, Peer::Core1Part],
        }
    }
    fn cargo_features(self) -> &'static [&'static str] {
        match self {
            Peer::DirectDsp => &["--no-default-features", "--features", "dsp-direct"],
            Peer::Portable => &["--no-default-features"],
            Peer::OneCore => &["--features", "one-core"],
            Peer::Core0Part => &["--features", "part0-only"],
            Peer::Core1Part => &["--features", "part1-only"],
        }
    }
    fn target_dir(self) -> &'static str {
        match self {
            Peer::DirectDsp => "target/direct-dsp-kernels",
            Peer::Portable => "target/portable-kernels",
            Peer::OneCore => "target/one-core",
            Peer::Core0Part => "target/core0-part",
            Peer::Core1Part => "target/core1-part",
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            Peer::DirectDsp => "the DSP kernels with direct convolution",
            Peer::Portable => "the portable reference kernels",
            Peer::OneCore => "the inference on core 0 alone",
            Peer::Core0Part => "only core 0's part of the split, alone",
            Peer::Core1Part => "only core 1's part of the split, alone",
        }
    }
}

/// Builds the board's firmware as `peer`; its ELF.
pub fn peer_elf(machine: Machine, peer: Peer) -> Result<PathBuf> {
    let dir = crate::board::qemu::firmware_dir().join(peer.target_dir());
    let dir = dir.to_string_lossy();
    let mut args = vec!["build", "--release"];
    args.extend_from_slice(peer.cargo_features());
    args.extend_from_slice(&["--target-dir", &dir]);
    crate::board::qemu::build_board(machine, &args, None)?;
    Ok(crate::board::qemu::firmware_dir()
        .join(peer.target_dir())
        .join(machine.target())
        .join("release")
        .join(format!("facemark-{}", machine.name())))
}

/// Boots `elf` on `machine` under QEMU -icount, runs `images` inferences
/// and measures them; `model` is the file whose size is the model's share.
pub fn measure(
    elf: &Path,
    machine: Machine,
    images: usize,
    model: &Path,
    timeout: Duration,
) -> Result<BoardReport> {
    let bytes = std::fs::read(elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let fp =
        footprint(&elf32_sections(&bytes).with_context(|| format!("reading {}", elf.display()))?);
    let model_bytes = std::fs::metadata(model).ok().map(|m| m.len());

    let opts = QemuOptions {
        machine,
        ..QemuOptions::default()
    };
    let (qemu, mut client) = Qemu::boot(elf, &opts)?;
    client.timeout = timeout;
    let info = client.info()?;
    if let Some(e) = &info.model_error {
        bail!("the board refused its model: {e}");
    }
    let mut totals = Vec::new();
    let mut first = None;
    for k in 0..images {
        let inf = client.infer(&gradient(k))?;
        totals.push(inf.cost.total);
        first.get_or_insert(inf.cost);
    }
    let cost = first.expect("at least one image");
    if cost.layers.len() != LAYER_COUNT {
        bail!(
            "{}: the board reports {} layer costs, this host's network table has {} layers (board network hash {:016x}): build the host and the firmware from the same Facemark version",
            elf.display(),
            cost.layers.len(),
            LAYER_COUNT,
            info.network_hash
        );
    }
    let stack = wait_for_stack(&qemu);
    drop(client);
    drop(qemu);

    let layers: Vec<LayerCost> = (0..LAYER_COUNT)
        .map(|i| {
            let macs = LAYERS[i].macs();
            LayerCost {
                layer: i,
                instructions: cost.layers[i],
                macs,
                instructions_per_mac: f64::from(cost.layers[i]) / macs as f64,
            }
        })
        .collect();
    Ok(BoardReport {
        elf: elf.display().to_string(),
        board: info.board.clone(),
        firmware_version: info.firmware_version.clone(),
        cost_unit: info.cost_unit.clone(),
        note: match machine {
            Machine::An386 => {
                "instructions executed, counted by QEMU -icount shift=0 (SysTick at 25 MHz, \
                 40 instructions per tick); not cycles"
            }
            Machine::Netduinoplus2 => {
                "instructions executed, counted by QEMU -icount shift=0 (SysTick at 168 MHz, \
                 21 ticks per 125 instructions); not cycles"
            }
            Machine::An521 => {
                "instructions executed by both cores together (QEMU -icount shift=0 runs them in \
                 turn on one virtual clock; SysTick at 20 MHz, 50 instructions per tick); \
                 --peer gives each core's own count; not cycles"
            }
        }
        .into(),
        inferences: images,
        instructions_per_inference: cost.total,
        totals,
        instructions_per_mac: cost.total as f64 / MACS as f64,
        layers,
        macs: MACS,
        peak_ram_bytes: stack.map(|s| fp.static_ram_bytes + s as u64),
        footprint: fp,
        model_bytes,
        stack_high_water_bytes: stack,
    })
}

/// The stack high-water mark from the defmt log; QEMU's stdout is read on
/// another thread, so give it a moment to arrive.
fn wait_for_stack(q: &Qemu) -> Option<usize> {
    for _ in 0..50 {
        if let Ok(lines) = q.decoded_log()
            && let Some(s) = crate::board::log::stack_high_water(&lines)
        {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian ELF32 with sections: null, .text (AX, 0x100),
    /// .data (WA, 0x10), .bss (WA, NOBITS, 0x40), .shstrtab.
    fn tiny_elf() -> Vec<u8> {
        let names = b"\0.text\0.data\0.bss\0.shstrtab\0";
        let strtab_off = 52usize;
        let shoff = strtab_off + names.len().next_multiple_of(4);
        let mut b = vec![0u8; shoff];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 1; // ELFCLASS32
        b[5] = 1; // little-endian
        b[6] = 1; // EV_CURRENT
        b[0x20..0x24].copy_from_slice(&(shoff as u32).to_le_bytes());
        b[0x2e..0x30].copy_from_slice(&40u16.to_le_bytes());
        b[0x30..0x32].copy_from_slice(&5u16.to_le_bytes());
        b[0x32..0x34].copy_from_slice(&4u16.to_le_bytes());
        b[strtab_off..strtab_off + names.len()].copy_from_slice(names);
        let sh = |name: u32, kind: u32, flags: u32, addr: u32, off: u32, size: u32| {
            let mut h = Vec::new();
            for v in [name, kind, flags, addr, off, size, 0, 0, 4, 0] {
                h.extend_from_slice(&v.to_le_bytes());
            }
            h
        };
        b.extend(sh(0, 0, 0, 0, 0, 0));
        b.extend(sh(1, 1, 6, 0x400, 0, 0x100));
        b.extend(sh(7, 1, 3, 0x2000_0000, 0, 0x10));
        b.extend(sh(13, 8, 3, 0x2000_0010, 0, 0x40));
        b.extend(sh(18, 3, 0, 0, strtab_off as u32, names.len() as u32));
        b
    }

    #[test]
    fn parses_a_hand_made_elf32() {
        let s = elf32_sections(&tiny_elf()).unwrap();
        let names: Vec<_> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["", ".text", ".data", ".bss", ".shstrtab"]);
        assert_eq!(s[1].size, 0x100);
        assert_eq!(s[3].addr, 0x2000_0010);
        let f = footprint(&s);
        assert_eq!(f.flash_bytes, 0x110);
        assert_eq!(f.static_ram_bytes, 0x50);
    }

    #[test]
    fn rejects_non_elf32() {
        assert!(elf32_sections(b"not an elf").is_err());
        let mut e = tiny_elf();
        e[4] = 2;
        assert!(elf32_sections(&e).is_err());
    }

    #[test]
    fn firmware_elf_sections() {
        let elf = crate::board::qemu::default_elf();
        let Ok(bytes) = std::fs::read(&elf) else {
            eprintln!("skipped: no firmware ELF at {}", elf.display());
            return;
        };
        let s = elf32_sections(&bytes).unwrap();
        for name in [".vector_table", ".text", ".rodata", ".bss"] {
            assert!(s.iter().any(|s| s.name == name), "{name} missing");
        }
        let f = footprint(&s);
        let text = s.iter().find(|s| s.name == ".text").unwrap().size;
        assert!(f.flash_bytes > u64::from(text));
        assert!(f.static_ram_bytes > 0);
    }
}
