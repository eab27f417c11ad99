//! ReLU then MaxPool 2x2 (stride 2, no padding) as one burn backend
//! extension: the tail of every conv block of the seed network.
//!
//! Why: flex's `max_pool2d_with_indices` is a general 3-D pool with bounds
//! checks per window element and `i64` indices; in `perf` of a training
//! batch it was 18% of the samples, as much as the conv's whole backward
//! pass after [`super::conv3x3`]'s weight gradient (one batch: 0.12 s before,
//! 0.10 s after, same session). Fused with the ReLU (`relu(max(a..d)) =
//! max(0, a..d)`), one pass writes the pooled value and which of the four
//! won, as one byte (none when all four are <= 0, so no gradient flows), and
//! the backward pass scatters the output gradient through those bytes; the
//! separate ReLU pass and its backward mask go away too.
//!
//! [`ReluPoolKernels`] has two tiers: burn's own ops (the default, every
//! backend; the reference) and flex's fused kernel, both tested against
//! burn's `relu` + `max_pool2d` and their gradients.

// See conv3x3.rs: burn-ndarray is deprecated but still the host's second
// CPU backend, named by burn's extension macro outside any item.
#![allow(deprecated)]

use burn::backend::NdArray;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Bytes, DType, Flex, IntDType, Shape, TensorMetadata, backend_extension,
};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::conv3x3::flex_f32;

const KERNEL: [usize; 2] = [2, 2];

/// Which of a window's four inputs (row-major) won; [`NONE`] when none is
/// above zero, so the ReLU passes no gradient.
const NONE: u8 = 4;

/// The fused op, routed by burn's dispatch to the tensor's backend.
#[backend_extension(Flex, NdArray, Autodiff)]
pub trait ReluPoolBackend: Backend {
    /// `[N, C, H, W]` to `[N, C, H/2, W/2]` (a last odd row or column is
    /// dropped, as burn's pool does).
    fn relu_max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        reference_forward::<Self>(x).0
    }
}

impl ReluPoolBackend for NdArray {}

impl ReluPoolBackend for Flex {
    fn relu_max_pool2x2(x: FlexTensor) -> FlexTensor {
        Flex::relu_pool_forward(x).0
    }
}

/// The op's forward pass with what its backward pass needs, and that pass.
/// The defaults are burn's own ops (the reference).
pub trait ReluPoolKernels: Backend {
    /// The pooled output and a tensor kept for the backward pass; what it
    /// holds is the tier's own business (the reference keeps `relu(x)`).
    fn relu_pool_forward(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        reference_forward::<Self>(x)
    }

    /// The input's gradient (shape `x_shape`) from the output's.
    fn relu_pool_backward(
        saved: FloatTensor<Self>,
        x_shape: Shape,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference_backward::<Self>(saved, x_shape, output_grad)
    }
}

/// burn's `relu` then `max_pool2d`; keeps `relu(x)` for the backward pass.
pub fn reference_forward<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let y = B::relu(x);
    let out = B::max_pool2d(y.clone(), KERNEL, KERNEL, [0, 0], [1, 1], false);
    (out, y)
}

/// burn's pool and ReLU backward passes, from `relu(x)`.
pub fn reference_backward<B: Backend>(
    relu_x: FloatTensor<B>,
    x_shape: Shape,
    output_grad: FloatTensor<B>,
) -> FloatTensor<B> {
    assert_eq!(
        relu_x.shape(),
        x_shape,
        "relu_max_pool2x2: saved input's shape"
    );
    let pool =
        |t| B::max_pool2d_with_indices(t, KERNEL, KERNEL, [0, 0], [1, 1], false, IntDType::I64);
    let indices = pool(relu_x.clone()).indices;
    let dy = B::max_pool2d_with_indices_backward(
        relu_x.clone(),
        KERNEL,
        KERNEL,
        [0, 0],
        [1, 1],
        false,
        output_grad,
        indices,
    )
    .x_grad;
    B::relu_backward(relu_x, dy)
}

impl ReluPoolKernels for NdArray {}

impl ReluPoolKernels for Flex {
    fn relu_pool_forward(x: FlexTensor) -> (FlexTensor, FlexTensor) {
        if x.dtype() != DType::F32 {
            return reference_forward::<Flex>(x);
        }
        let x = x.to_contiguous();
        let s = x.layout().shape();
        let dims = [s[0], s[1], s[2], s[3]];
        let (out, winners) = pool_forward_f32(x.storage::<f32>(), dims);
        let out_shape = Shape::new([dims[0], dims[1], dims[2] / 2, dims[3] / 2]);
        (
            flex_f32(out, out_shape.clone()),
            FlexTensor::new(
                Bytes::from_elems(winners),
                Layout::contiguous(out_shape),
                DType::U8,
            ),
        )
    }

    fn relu_pool_backward(
        saved: FlexTensor,
        x_shape: Shape,
        output_grad: FlexTensor,
    ) -> FlexTensor {
        if saved.dtype() != DType::U8 {
            // The forward pass took the reference path (not f32).
            return reference_backward::<Flex>(saved, x_shape, output_grad);
        }
        let g = output_grad.to_contiguous();
        let dims = [x_shape[0], x_shape[1], x_shape[2], x_shape[3]];
        let dx = pool_backward_f32(saved.storage::<u8>(), g.storage::<f32>(), dims);
        flex_f32(dx, x_shape)
    }
}

/// Pooled values and winners (`0..4` row-major in the window, or `NONE`)
/// of `x [N, C, H, W]`. NaN wins its window, as in burn's pool, so a
/// diverging run still shows NaN.
pub fn pool_forward_f32(x: &[f32], [n, c, h, w]: [usize; 4]) -> (Vec<f32>, Vec<u8>) {
    assert_eq!(x.len(), n * c * h * w, "relu_max_pool2x2: input length");
    let (oh, ow) = (h / 2, w / 2);
    let out_plane = oh * ow;
    let mut out = vec![0.0f32; n * c * out_plane];
    let mut winners = vec![NONE; n * c * out_plane];
    if out_plane == 0 {
        return (out, winners);
    }
    out.par_chunks_mut(out_plane)
        .zip(winners.par_chunks_mut(out_plane))
        .zip(x.par_chunks(h * w))
        .for_each(|((out, winners), x)| {
            for oy in 0..oh {
                let top = &x[2 * oy * w..];
                let bottom = &x[(2 * oy + 1) * w..];
                for ox in 0..ow {
                    let window = [
                        top[2 * ox],
                        top[2 * ox + 1],
                        bottom[2 * ox],
                        bottom[2 * ox + 1],
                    ];
                    let (mut best, mut winner) = (0.0f32, NONE);
                    for (k, &v) in window.iter().enumerate() {
                        if v > best || v.is_nan() {
                            (best, winner) = (v, k as u8);
                        }
                    }
                    out[oy * ow + ox] = best;
                    winners[oy * ow + ox] = winner;
                }
            }
        });
    (out, winners)
}

/// The input gradient `[N, C, H, W]` from the winners and the output
/// gradient `[N, C, H/2, W/2]`.
pub fn pool_backward_f32(winners: &[u8], dy: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let out_plane = oh * ow;
    assert!(
        winners.len() == n * c * out_plane && dy.len() == winners.len(),
        "relu_max_pool2x2: gradient length"
    );
    let mut dx = vec![0.0f32; n * c * h * w];
    if out_plane == 0 {
        return dx;
    }
    dx.par_chunks_mut(h * w)
        .zip(winners.par_chunks(out_plane))
        .zip(dy.par_chunks(out_plane))
        .for_each(|((dx, winners), dy)| {
            for (i, (&k, &g)) in winners.iter().zip(dy).enumerate() {
                if k < NONE {
                    let (oy, ox) = (i / ow, i % ow);
                    let (y, x) = (2 * oy + (k as usize >> 1), 2 * ox + (k as usize & 1));
                    dx[y * w + x] = g;
                }
            }
        });
    dx
}

impl<B: Backend + ReluPoolKernels, C: CheckpointStrategy> ReluPoolBackend for Autodiff<B, C> {
    fn relu_max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ReluPoolStep;

        impl<B: Backend + ReluPoolKernels> Backward<B, 1> for ReluPoolStep {
            type State = (B::FloatTensorPrimitive, Shape);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (saved, x_shape) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::relu_pool_backward(saved, x_shape, grad)
                });
            }
        }

        let x_shape = x.primitive().shape();
        match ReluPoolStep
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, saved) = B::relu_pool_forward(x.into_primitive());
                prep.finish((saved, x_shape), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::relu_pool_forward(x.into_primitive()).0),
        }
    }
}

/// ReLU then MaxPool 2x2 on a tensor `[N, C, H, W]`.
pub fn relu_max_pool2x2(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(
        <burn::backend::Dispatch as ReluPoolBackend>::relu_max_pool2x2(x.into_dispatch()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::relu;
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    use burn::tensor::{Device, Distribution, TensorData};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 tensor")
    }

    /// Odd sizes (a dropped last row/column), one-pixel planes, and inputs
    /// of small integers (ties and zeros everywhere) or uniform reals.
    fn inputs(device: &Device) -> Vec<Tensor<4>> {
        let shapes = [
            [2, 3, 6, 8],
            [1, 2, 5, 7],
            [3, 1, 1, 1],
            [2, 4, 2, 3],
            [4, 8, 12, 12],
        ];
        let mut out = Vec::new();
        for shape in shapes {
            let len: usize = shape.iter().product();
            let ints: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 + 13) % 5) as f32 - 2.0)
                .collect();
            out.push(Tensor::from_data(TensorData::new(ints, shape), device));
            out.push(Tensor::random(
                shape,
                Distribution::Uniform(-1.0, 1.0),
                device,
            ));
        }
        out
    }

    /// Outputs and input gradients through the extension against burn's
    /// `relu` + `max_pool2d`, exactly (a pool only moves values).
    fn check_autodiff(device: Device, min_side: usize) {
        for x in inputs(&device) {
            if x.dims()[2].min(x.dims()[3]) < min_side {
                continue;
            }
            let r = Tensor::random(
                {
                    let [n, c, h, w] = x.dims();
                    [n, c, h / 2, w / 2]
                },
                Distribution::Uniform(-1.0, 1.0),
                &device,
            );
            let run = |ours: bool| {
                let x = x.clone().require_grad();
                let y = if ours {
                    relu_max_pool2x2(x.clone())
                } else {
                    max_pool2d(relu(x.clone()), MaxPoolOptions::new(KERNEL))
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                (values(y), values(x.grad(&grads).expect("dx")))
            };
            assert_eq!(run(true), run(false), "input {:?}", x.dims());
        }
    }

    #[test]
    fn autodiff_flex_matches_burns_relu_and_pool() {
        check_autodiff(Device::flex().autodiff(), 0);
    }

    #[test]
    fn autodiff_ndarray_matches_burns_relu_and_pool() {
        // burn-ndarray's own pool overflows on an empty output (a 1x1 input).
        check_autodiff(Device::ndarray().autodiff(), 2);
    }

    #[test]
    fn plain_flex_forward_matches_burns() {
        let device = Device::flex();
        for x in inputs(&device) {
            let ours = values(relu_max_pool2x2(x.clone()));
            let burns = values(max_pool2d(relu(x), MaxPoolOptions::new(KERNEL)));
            assert_eq!(ours, burns);
        }
    }

    #[test]
    fn nan_wins_its_window_and_all_negative_passes_no_gradient() {
        let x = [1.0, f32::NAN, 3.0, 2.0, -1.0, -2.0, -3.0, -0.5];
        let (out, winners) = pool_forward_f32(&x, [1, 2, 2, 2]);
        assert!(out[0].is_nan() && winners[0] == 1);
        assert_eq!((out[1], winners[1]), (0.0, NONE));
        let dx = pool_backward_f32(&winners, &[5.0, 7.0], [1, 2, 2, 2]);
        assert_eq!(dx, [0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
