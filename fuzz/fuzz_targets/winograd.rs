//! The Winograd F(2x2, 3x3) convolution (`kernels::winograd`, the Cortex-M
//! tier's transforms and layouts, with the DSP instructions emulated)
//! against the portable kernels on arbitrary layers the model view admits:
//! any weights in [-127, 127], inputs, zero points, biases at the bound,
//! multipliers, and free memory split any way between the arena and the
//! stack. Overflow checks are on, so a value outside the ranges the
//! module's header proves is a crash, as is any output that differs.
#![no_main]

use arbitrary::Arbitrary;
use facemark_core::kernels::winograd::reference_row;
use facemark_core::kernels::{Kernels, Portable};
use facemark_core::model::{LayerView, max_abs_bias};
use facemark_core::network::Layer;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Case {
    side: u8,
    cin: u8,
    cout: u8,
    in_zp: i8,
    out_zp: i8,
    /// Per channel: bias (scaled to the bound), multiplier bits, shift.
    channels: Vec<(i32, u32, u8)>,
    weights: Vec<i8>,
    input: Vec<i8>,
    /// Free words in the arena and on the stack.
    arena_words: u16,
    stack_words: u16,
}

fuzz_target!(|c: Case| {
    let side = 4 * (1 + c.side as usize % 4);
    let cin = [4, 8, 16, 32, 64][c.cin as usize % 5];
    let cout = 2 * (1 + c.cout as usize % 4);
    if c.weights.is_empty() || c.input.is_empty() || c.channels.is_empty() {
        return;
    }
    let layer = Layer::conv(side, cin, cout);
    let weights: Vec<i8> = (0..layer.weight_len())
        .map(|k| c.weights[k % c.weights.len()].max(-127))
        .collect();
    let input: Vec<i8> = (0..layer.in_len())
        .map(|k| c.input[k % c.input.len()])
        .collect();
    let bound = max_abs_bias(layer.fan_in());
    let (mut bias, mut mult, mut shift) = (vec![], vec![], vec![]);
    for k in 0..cout {
        let (b, m, s) = c.channels[k % c.channels.len()];
        let b = (b as i64).clamp(-bound, bound) as i32;
        bias.extend_from_slice(&b.to_le_bytes());
        mult.extend_from_slice(&(((1u32 << 30) | (m & 0x3fff_ff80)) as i32).to_le_bytes());
        shift.extend_from_slice(&(s as i32 % 40 - 4).to_le_bytes());
    }
    let Some(view) = LayerView::from_parts(
        layer,
        c.in_zp as i32,
        c.out_zp as i32,
        &bias,
        &mult,
        &shift,
        &weights,
    ) else {
        return;
    };
    let mut arena = vec![0u32; c.arena_words as usize % 20_000];
    let mut stack = vec![0u32; c.stack_words as usize % 4_000];
    let row = layer.out_side() * cout;
    for py in 0..layer.out_side() {
        let mut want = vec![0i8; row];
        Portable::conv_pool_row(&view, &input, 0, py, &mut want, &mut []);
        let mut got = vec![0x55i8; row];
        let ran = reference_row(&view, &input, 0, py, &mut got, &mut arena, &mut stack);
        if ran {
            assert_eq!(want, got, "{layer:?} row {py}");
        } else {
            assert!(got.iter().all(|&x| x == 0x55), "a refused row wrote output");
        }
    }
});
