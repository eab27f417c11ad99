//! The firmware's defmt log, decoded on the host with the ELF's format
//! tables (`defmt-decoder`), so no `defmt-print` needs to be installed.

use std::path::Path;

use anyhow::Context;
use defmt_decoder::{DecodeError, Table};

/// Decodes a raw defmt stream (`defmt-semihosting` output) into lines like
/// `INFO serving; stack in use 1234 of 4138800 bytes`.
pub fn decode(elf: &Path, raw: &[u8]) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let table = Table::parse(&bytes)
        .with_context(|| format!("cannot read the defmt tables of {}", elf.display()))?
        .with_context(|| format!("{} has no defmt tables", elf.display()))?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(raw);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => {
                let level = frame
                    .level()
                    .map(|l| l.as_str().to_ascii_uppercase())
                    .unwrap_or_else(|| "PRINT".into());
                lines.push(format!("{level:<5} {}", frame.display_message()));
            }
            Err(DecodeError::UnexpectedEof) => break,
            Err(DecodeError::Malformed) if table.encoding().can_recover() => {
                lines.push("(a malformed defmt frame was skipped)".into());
            }
            Err(DecodeError::Malformed) => {
                lines.push("(malformed defmt data; the rest is not decodable)".into());
                break;
            }
        }
    }
    Ok(lines)
}

/// The last stack high-water mark the firmware logged (bytes), if any.
pub fn stack_high_water(lines: &[String]) -> Option<usize> {
    lines.iter().rev().find_map(|l| {
        let (_, rest) = l.split_once("stack high-water ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}
