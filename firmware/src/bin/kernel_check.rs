//! On-target property test of the DSP kernels: random layers of every shape
//! the kernels specialise (1, 16, 32 and 64 input channels, several sides
//! and channel counts, dense layers of many lengths), random parameters
//! including the edges (extreme weights and inputs, every zero point,
//! shifts that take each requantization path), each run through the
//! portable reference and the Cortex-M DSP kernels, which must agree bit
//! for bit. Also the requantization's short path against its definition,
//! compiled for the board.
//!
//! Runs under QEMU (MPS2 AN386) with semihosting: prints a summary and
//! exits with status 0 only when nothing differed.
//! `tests/tests/qemu_kernels.rs` builds and runs it:
//! `cargo build --release --features kernel-check --bin kernel-check`.
#![no_std]
#![no_main]

#[cfg(not(board = "an386"))]
compile_error!("kernel-check runs on the MPS2 AN386 (QEMU) only: build for thumbv7em-none-eabihf");

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use facemark_core::kernels::{CortexMDsp, Kernels, Portable};
use facemark_core::model::LayerView;
use facemark_core::network::Layer;
use facemark_core::requant::{Multiplier, to_int8, to_int8_reference};

/// Random cases per conv shape and dense layers in all.
const CONV_CASES: usize = 120;
const DENSE_CASES: usize = 1000;
const REQUANT_CASES: usize = 1_000_000;

const MAX_SIDE: usize = 12;
const MAX_CIN: usize = 64;
const MAX_COUT: usize = 12;
const MAX_DENSE_IN: usize = 512;

/// xorshift32: small, seeded, enough for test data.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
    fn i8(&mut self) -> i8 {
        self.next() as i8
    }
    /// Mostly uniform int8, sometimes pinned to an extreme or to `zp`.
    fn fill(&mut self, buf: &mut [i8], zp: i8) {
        let mode = self.below(8);
        for v in buf.iter_mut() {
            *v = match mode {
                0 => -128,
                1 => 127,
                2 => zp,
                3 if self.below(2) == 0 => zp,
                _ => self.i8(),
            };
        }
    }
    /// A valid multiplier whose shift lands on every requantization path.
    fn multiplier(&mut self) -> Multiplier {
        let mult = ((1u32 << 30) | (self.next() & 0x3fff_ff80)) as i32;
        let shift = match self.below(8) {
            0 => self.below(4) as i32 - 2,   // the exact path (shift < 2)
            1 => 30 + self.below(12) as i32, // tiny factors
            _ => 2 + self.below(16) as i32,  // typical
        };
        Multiplier { mult, shift }
    }
}

/// One layer's parameters as the model file lays them out.
struct Params {
    bias: [u8; 4 * MAX_COUT],
    mult: [u8; 4 * MAX_COUT],
    shift: [u8; 4 * MAX_COUT],
}

impl Params {
    fn random(rng: &mut Rng, cout: usize, bias_bits: u32) -> Self {
        let mut p = Self {
            bias: [0; 4 * MAX_COUT],
            mult: [0; 4 * MAX_COUT],
            shift: [0; 4 * MAX_COUT],
        };
        for c in 0..cout {
            let half = 1i32 << (bias_bits - 1);
            let b = (rng.next() & ((1 << bias_bits) - 1)) as i32 - half;
            let m = rng.multiplier();
            p.bias[4 * c..4 * c + 4].copy_from_slice(&b.to_le_bytes());
            p.mult[4 * c..4 * c + 4].copy_from_slice(&m.mult.to_le_bytes());
            p.shift[4 * c..4 * c + 4].copy_from_slice(&m.shift.to_le_bytes());
        }
        p
    }
}

struct Tally {
    checked: usize,
    differed: usize,
}

impl Tally {
    fn check<T: PartialEq>(&mut self, a: &[T], b: &[T]) -> bool {
        self.checked += 1;
        let same = a == b;
        if !same {
            self.differed += 1;
        }
        same
    }
}

static mut INPUT: [i8; MAX_SIDE * MAX_SIDE * MAX_CIN] = [0; MAX_SIDE * MAX_SIDE * MAX_CIN];
static mut WEIGHTS: [i8; 9 * MAX_CIN * MAX_COUT] = [0; 9 * MAX_CIN * MAX_COUT];
static mut DENSE_WEIGHTS: [i8; MAX_DENSE_IN * MAX_COUT] = [0; MAX_DENSE_IN * MAX_COUT];

fn conv_cases(rng: &mut Rng, t: &mut Tally, input: &mut [i8], weights: &mut [i8]) {
    for cin in [1usize, 16, 32, 64] {
        for case in 0..CONV_CASES {
            let side = [4usize, 8, 12][case % 3];
            let cout = 1 + rng.below(MAX_COUT as u32) as usize;
            let layer = Layer::conv(side, cin, cout);
            let in_zp = rng.i8();
            let out_zp = rng.i8() as i32;
            let input = &mut input[..layer.in_len()];
            let weights = &mut weights[..layer.weight_len()];
            rng.fill(input, in_zp);
            rng.fill(weights, 0);
            let bias_bits = 1 + rng.below(24);
            let p = Params::random(rng, cout, bias_bits);
            let Some(view) = LayerView::from_parts(
                layer,
                in_zp as i32,
                out_zp,
                &p.bias[..4 * cout],
                &p.mult[..4 * cout],
                &p.shift[..4 * cout],
                weights,
            ) else {
                hprintln!("kernel-check: a generated layer was refused");
                t.differed += 1;
                continue;
            };
            let row = layer.out_side() * cout;
            let mut want = [0i8; MAX_SIDE / 2 * MAX_COUT];
            let mut got = [0i8; MAX_SIDE / 2 * MAX_COUT];
            for py in 0..layer.out_side() {
                Portable::conv_pool_row(&view, input, 0, py, &mut want[..row]);
                CortexMDsp::conv_pool_row(&view, input, 0, py, &mut got[..row]);
                if !t.check(&want[..row], &got[..row]) {
                    hprintln!(
                        "differs: conv cin {} side {} cout {} row {}",
                        cin,
                        side,
                        cout,
                        py
                    );
                }
                // The same row from a map whose rows above 2py - 1 are gone
                // (the top-down overlapped placement).
                let first = (2 * py).saturating_sub(1);
                let rows = &input[first * side * cin..];
                CortexMDsp::conv_pool_row(&view, rows, first, py, &mut got[..row]);
                if !t.check(&want[..row], &got[..row]) {
                    hprintln!(
                        "differs: conv cin {} side {} row {} from row {}",
                        cin,
                        side,
                        py,
                        first
                    );
                }
            }
        }
    }
}

fn dense_cases(rng: &mut Rng, t: &mut Tally, input: &mut [i8], weights: &mut [i8]) {
    for case in 0..DENSE_CASES {
        // Lengths the asm loop takes (multiples of 32) and ones it leaves
        // to the fallback (other multiples of 4, and not of 4).
        let n = match case % 3 {
            0 => 32 * (1 + rng.below((MAX_DENSE_IN / 32) as u32) as usize),
            1 => 4 * (1 + rng.below((MAX_DENSE_IN / 4) as u32) as usize),
            _ => 1 + rng.below(MAX_DENSE_IN as u32) as usize,
        };
        let m = 1 + rng.below(MAX_COUT as u32) as usize;
        let layer = Layer::dense(n, m, case % 2 == 0);
        let input = &mut input[..n];
        let weights = &mut weights[..n * m];
        rng.fill(input, 0);
        rng.fill(weights, 0);
        let bias_bits = 1 + rng.below(24);
        let p = Params::random(rng, m, bias_bits);
        let Some(view) = LayerView::from_parts(
            layer,
            rng.i8() as i32,
            rng.i8() as i32,
            &p.bias[..4 * m],
            &p.mult[..4 * m],
            &p.shift[..4 * m],
            weights,
        ) else {
            hprintln!("kernel-check: a generated layer was refused");
            t.differed += 1;
            continue;
        };
        let (mut want, mut got) = ([0i32; MAX_COUT], [0i32; MAX_COUT]);
        Portable::dense(&view, input, &mut want[..m]);
        CortexMDsp::dense(&view, input, &mut got[..m]);
        if !t.check(&want[..m], &got[..m]) {
            hprintln!("differs: dense {} -> {}", n, m);
        }
    }
}

fn requant_cases(rng: &mut Rng, t: &mut Tally) {
    let mut differed = 0;
    for _ in 0..REQUANT_CASES {
        let m = rng.multiplier();
        let acc = match rng.below(4) {
            0 => rng.next() as i32,
            1 => (rng.next() as i32) >> 8,
            _ => (rng.next() as i32) >> 14,
        };
        let zp = rng.i8() as i32;
        let floor = if rng.below(2) == 0 { zp } else { -128 };
        if to_int8(acc, m, zp, floor) != to_int8_reference(acc, m, zp, floor) {
            differed += 1;
            if differed <= 5 {
                hprintln!("differs: to_int8({}, {:?}, {}, {})", acc, m, zp, floor);
            }
        }
    }
    t.checked += REQUANT_CASES;
    t.differed += differed;
}

#[entry]
fn main() -> ! {
    // SAFETY: the only references to these statics, made once here.
    let (input, weights, dense_weights) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(INPUT),
            &mut *core::ptr::addr_of_mut!(WEIGHTS),
            &mut *core::ptr::addr_of_mut!(DENSE_WEIGHTS),
        )
    };
    let mut rng = Rng(0x1234_5678);
    let mut conv = Tally {
        checked: 0,
        differed: 0,
    };
    let mut dense = Tally {
        checked: 0,
        differed: 0,
    };
    let mut requant = Tally {
        checked: 0,
        differed: 0,
    };
    conv_cases(&mut rng, &mut conv, input, weights);
    dense_cases(&mut rng, &mut dense, input, dense_weights);
    requant_cases(&mut rng, &mut requant);
    hprintln!(
        "kernel-check: conv rows {} differing {}; dense layers {} differing {}; to_int8 {} differing {}",
        conv.checked,
        conv.differed,
        dense.checked,
        dense.differed,
        requant.checked,
        requant.differed
    );
    let ok = conv.differed + dense.differed + requant.differed == 0;
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("kernel-check: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
