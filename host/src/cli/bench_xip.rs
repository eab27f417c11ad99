//! `facemark bench xip`: the Pico 2's bytes read from flash per inference,
//! per layer and conv scheme (`bench::xip` holds the model).

use crate::bench::xip::{Cache, Scheme, flash_bytes, winograd_passes};
use crate::board::grouped;
use anyhow::Result;
use facemark_core::network::{CONV_LAYERS, CONV_WEIGHT_BYTES, LAYER_COUNT};

/// The RP2350's XIP cache, as its datasheet gives it; the flags let other
/// parts be modelled.
#[derive(clap::Args, Debug)]
pub struct BenchXipArgs {
    /// Cache size in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub cache_bytes: usize,
    /// Ways of associativity (LRU replacement).
    #[arg(long, default_value_t = 2)]
    pub ways: usize,
    /// Line size in bytes.
    #[arg(long, default_value_t = 8)]
    pub line_bytes: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &BenchXipArgs) -> Result<()> {
    let mut rows = Vec::new();
    for scheme in Scheme::ALL {
        let mut cache = Cache::new(a.cache_bytes, a.ways, a.line_bytes)?;
        rows.push((scheme, flash_bytes(scheme, &mut cache)));
    }
    if a.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(s, f)| {
                serde_json::json!({
                    "scheme": s.describe(),
                    "bytes_per_layer": f,
                    "bytes": f.iter().sum::<u64>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "bytes read from flash per inference (steady state), {} B {}-way cache, {} B lines, int8 model",
        grouped(a.cache_bytes as u64),
        a.ways,
        a.line_bytes
    );
    print!("{:<7} {:>9}", "layer", "passes");
    for (s, _) in &rows {
        print!(" {:>32}", s.describe());
    }
    println!();
    for i in 0..LAYER_COUNT {
        let passes = winograd_passes(i).map_or("-".to_string(), |p| p.to_string());
        print!("{i:<7} {passes:>9}");
        for (_, f) in &rows {
            print!(" {:>32}", grouped(f[i]));
        }
        println!();
    }
    print!("{:<7} {:>9}", "total", "");
    for (_, f) in &rows {
        print!(" {:>32}", grouped(f.iter().sum()));
    }
    println!();
    println!(
        "(passes: each Winograd conv layer's weight reads per inference, one per group of tile pairs a row's free memory holds; the Pico 2 build copies the {} conv layers' {} weight bytes to SRAM at boot)",
        CONV_LAYERS,
        grouped(CONV_WEIGHT_BYTES as u64)
    );
    Ok(())
}
