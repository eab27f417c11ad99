//! A model of the bytes the Pico 2 reads from its QSPI flash per inference
//! (issue 13): QEMU does not model the RP2350's memory system, so the
//! kernels' reads of the model file are replayed, in their order, through a
//! set-associative LRU cache the size of its XIP cache. Activations live in
//! SRAM and are not counted; weights, biases and factors are read from the
//! embedded `.fmq` unless the build copies them to SRAM at boot.
//!
//! The access patterns, per conv layer (`shared/src/kernels/cortex_m.rs`):
//! - direct convolution: for each pair of pool windows, every output
//!   channel's `9 * cin` weights, bias and factor;
//! - Winograd: for each group of tile pairs a row's free memory holds
//!   (`winograd::plan`, with `infer::conv_scratch_len`), every output
//!   channel pair's weights, biases and factors;
//! - the one-channel conv 1: every channel's 9 weights once per row, its
//!   bias and factor per pool output.
//!
//! Dense layers read each weight once (4 rows interleaved by words), their
//! bias and factor once per output.

use facemark_core::kernels::winograd;
use facemark_core::model::{ALL_INT8, Layout};
use facemark_core::network::{CONV_LAYERS, LAYER_COUNT, LAYERS};

/// A set-associative cache with LRU replacement.
pub struct Cache {
    line: usize,
    sets: usize,
    /// Per set, the tags held, most recently used last.
    ways: Vec<Vec<usize>>,
    assoc: usize,
    /// Bytes fetched from flash.
    pub fetched: u64,
}

impl Cache {
    /// `bytes` of `assoc`-way cache with `line`-byte lines (both powers of
    /// two, `bytes` a multiple of `assoc * line`).
    pub fn new(bytes: usize, assoc: usize, line: usize) -> anyhow::Result<Cache> {
        anyhow::ensure!(
            line.is_power_of_two() && assoc > 0 && bytes > 0 && bytes.is_multiple_of(assoc * line),
            "a cache of {bytes} bytes cannot have {assoc} ways of {line}-byte lines (the line a power of two, the size a multiple of ways x line)"
        );
        let sets = bytes / (assoc * line);
        Ok(Cache {
            line,
            sets,
            ways: vec![Vec::with_capacity(assoc); sets],
            assoc,
            fetched: 0,
        })
    }

    /// Reads `len` bytes from flash offset `at`.
    pub fn read(&mut self, at: usize, len: usize) {
        if len == 0 {
            return;
        }
        for l in at / self.line..=(at + len - 1) / self.line {
            let set = &mut self.ways[l % self.sets];
            if let Some(k) = set.iter().position(|&t| t == l) {
                let t = set.remove(k);
                set.push(t);
            } else {
                if set.len() == self.assoc {
                    set.remove(0);
                }
                set.push(l);
                self.fetched += self.line as u64;
            }
        }
    }
}

/// How the conv layers run and where their weights live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Direct convolution, weights in flash (before issue 13).
    Direct,
    /// Winograd convolution, weights in flash.
    WinogradFlash,
    /// Winograd convolution, the conv layers' weights copied to SRAM at
    /// boot (the Pico 2 build): only their biases and factors stay in flash.
    WinogradSram,
}

impl Scheme {
    pub const ALL: [Scheme; 3] = [Scheme::Direct, Scheme::WinogradFlash, Scheme::WinogradSram];

    pub fn describe(self) -> &'static str {
        match self {
            Scheme::Direct => "direct conv, weights in flash",
            Scheme::WinogradFlash => "Winograd, weights in flash",
            Scheme::WinogradSram => "Winograd, conv weights in SRAM",
        }
    }
}

/// Weight passes of Winograd conv layer `i` per inference: one per group of
/// tile pairs, summed over its rows (`None`: the layer runs direct).
pub fn winograd_passes(i: usize) -> Option<usize> {
    let l = LAYERS[i];
    if !winograd::fits(&l) || l.in_ch == 1 {
        return None;
    }
    let block = winograd::block_words(l.in_ch);
    let pairs = l.in_side / 4;
    (0..l.out_side())
        .map(|py| {
            // The kernel aligns the free bytes to words: up to 3 are lost.
            let arena = facemark_core::infer::conv_scratch_len(i, py).saturating_sub(3) / 4;
            let (_, _, group) = winograd::plan(block, pairs, arena, winograd::STACK_WORDS)?;
            Some(pairs.div_ceil(group))
        })
        .sum()
}

/// Bytes fetched from flash per inference, per layer, under `scheme`, for
/// the int8 model's layout; the cache is warm from a first inference.
pub fn flash_bytes(scheme: Scheme, cache: &mut Cache) -> [u64; LAYER_COUNT] {
    let layout = Layout::new(ALL_INT8);
    let mut per_layer = [0u64; LAYER_COUNT];
    // Two inferences: the second one's misses are the steady state.
    for round in 0..2 {
        for (i, fetched) in per_layer.iter_mut().enumerate() {
            let before = cache.fetched;
            replay(i, scheme, &layout, cache);
            if round == 1 {
                *fetched = cache.fetched - before;
            }
        }
    }
    per_layer
}

/// Layer `i`'s reads of the model file, in the kernels' order.
fn replay(i: usize, scheme: Scheme, layout: &Layout, cache: &mut Cache) {
    let l = LAYERS[i];
    let s = &layout.sections[i];
    let fan_in = l.fan_in();
    let in_sram = scheme == Scheme::WinogradSram && i < CONV_LAYERS;
    let channel = |cache: &mut Cache, c: usize, weights: bool| {
        if weights && !in_sram {
            cache.read(s.weights.start + c * fan_in, fan_in);
        }
        cache.read(s.bias.start + 4 * c, 4);
        cache.read(s.mult.start + 4 * c, 4);
        cache.read(s.shift.start + 4 * c, 4);
    };
    if !l.is_conv() {
        // Four rows a pass, word by word, then each output's parameters.
        for c0 in (0..l.out_ch).step_by(4) {
            let rows = (c0..l.out_ch.min(c0 + 4)).collect::<Vec<_>>();
            for w in (0..fan_in).step_by(4) {
                for &c in &rows {
                    cache.read(s.weights.start + c * fan_in + w, 4.min(fan_in - w));
                }
            }
        }
        for c in 0..l.out_ch {
            channel(cache, c, false);
        }
        return;
    }
    let pool_side = l.out_side();
    if l.in_ch == 1 {
        for _py in 0..pool_side {
            if !in_sram {
                cache.read(s.weights.start, s.weights.len());
            }
            for _px in 0..pool_side {
                for c in 0..l.out_ch {
                    channel(cache, c, false);
                }
            }
        }
        return;
    }
    match (scheme, winograd_passes(i)) {
        (Scheme::WinogradFlash | Scheme::WinogradSram, Some(passes)) => {
            for _ in 0..passes {
                for c in 0..l.out_ch {
                    channel(cache, c, true);
                }
            }
        }
        _ => {
            for _ in 0..pool_side * pool_side.div_ceil(2) {
                for c in 0..l.out_ch {
                    channel(cache, c, true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_what_fits_and_streams_what_does_not() {
        let mut c = Cache::new(16 * 1024, 2, 8).unwrap();
        for _ in 0..3 {
            c.read(0, 12 * 1024);
        }
        assert_eq!(c.fetched, 12 * 1024, "fits: only the first pass misses");
        let mut c = Cache::new(16 * 1024, 2, 8).unwrap();
        for _ in 0..3 {
            c.read(0, 24 * 1024);
        }
        assert_eq!(
            c.fetched,
            3 * 24 * 1024,
            "LRU over a sweep larger than the cache"
        );
        assert!(Cache::new(16 * 1024, 2, 12).is_err());
    }

    #[test]
    fn the_modelled_bytes_follow_the_access_patterns() {
        let layout = Layout::new(ALL_INT8);
        let run = |s| flash_bytes(s, &mut Cache::new(16 * 1024, 2, 8).unwrap());
        let (direct, flash, sram) = (
            run(Scheme::Direct),
            run(Scheme::WinogradFlash),
            run(Scheme::WinogradSram),
        );
        // Dense 1 streams its 1.18 MB of weights once, whatever the scheme.
        let dense1 = layout.sections[4].weights.len() as u64;
        for f in [direct, flash, sram] {
            assert!(f[4] >= dense1 && f[4] < dense1 + 4096, "{}", f[4]);
        }
        // Conv 4 (74 KB of weights, far more than the cache): direct reads
        // them all for each of its 18 pairs of pool windows, Winograd once a
        // group of tile pairs (once a row: its free arena holds a row).
        let conv4 = layout.sections[3].weights.len() as u64;
        assert!(direct[3] >= 18 * conv4, "{}", direct[3]);
        assert_eq!(winograd_passes(3), Some(6));
        assert!(
            flash[3] >= 6 * conv4 && flash[3] < direct[3] / 2,
            "{}",
            flash[3]
        );
        // Conv 3 (18 KB, a little more than the cache): part of it stays.
        let passes = winograd_passes(2).unwrap() as u64;
        assert!(
            passes >= 12 && flash[2] < direct[2] / 3,
            "{passes} {}",
            flash[2]
        );
        // Conv 2's 4.6 KB stay in the cache; in SRAM nothing of the convs'
        // weights is read, only a few hundred bytes of their parameters.
        assert!(flash[1] < 8 * 1024, "{}", flash[1]);
        for (i, &f) in sram.iter().enumerate().take(CONV_LAYERS) {
            assert!(f < 2048, "layer {i}: {f}");
        }
    }
}
