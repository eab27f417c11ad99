//! An exponential moving average of the weights (`--ema DECAY`, issue 14):
//! the model a run with `--ema` validates, keeps as `best.bpk` and returns.
//! The training steps themselves are unchanged, so a run with `--ema` also
//! reports the raw weights' score and the two can be compared on the same
//! trajectory.
//!
//! After step `t` (1-based) the average moves towards the weights by
//! `1 - d_t`, with `d_t = min(decay, (1 + t) / (10 + t))`: TensorFlow's
//! warm-up, so the early average is not dominated by the random
//! initialisation.

use anyhow::{Result, ensure};
use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::float::net::Net;

/// The averaged weights and their decay.
pub struct WeightAverage {
    /// The average: a network whose tensors never record a graph
    /// (`no_grad`, and every update detached).
    pub net: Net,
    pub decay: f64,
}

/// `avg * d + w * (1 - d)`, detached.
fn blend<const D: usize>(avg: Param<Tensor<D>>, w: &Param<Tensor<D>>, d: f64) -> Param<Tensor<D>> {
    let w = w.val().detach();
    avg.map(|a| (a.detach().mul_scalar(d) + w.mul_scalar(1.0 - d)).detach())
}

fn blend_bias<const D: usize>(
    avg: Option<Param<Tensor<D>>>,
    w: &Option<Param<Tensor<D>>>,
    d: f64,
) -> Option<Param<Tensor<D>>> {
    match (avg, w) {
        (Some(a), Some(w)) => Some(blend(a, w, d)),
        (a, _) => a,
    }
}

impl WeightAverage {
    /// An average starting at `net`'s weights.
    pub fn new(net: &Net, decay: f64) -> WeightAverage {
        WeightAverage {
            net: net.clone().no_grad(),
            decay,
        }
    }

    /// The average loaded from a checkpoint (a resumed run's).
    pub fn from_net(net: Net, decay: f64) -> WeightAverage {
        WeightAverage {
            net: net.no_grad(),
            decay,
        }
    }

    /// The decay used after step `step` (1-based).
    pub fn decay_at(&self, step: usize) -> f64 {
        let t = step as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Moves the average towards `net`'s weights after step `step` (1-based).
    pub fn update(&mut self, net: &Net, step: usize) -> Result<()> {
        ensure!(
            net.convs.len() == self.net.convs.len() && net.dense.len() == self.net.dense.len(),
            "the averaged network has another shape than the trained one"
        );
        let d = self.decay_at(step);
        let avg = std::mem::replace(
            &mut self.net,
            Net {
                convs: Vec::new(),
                dense: Vec::new(),
            },
        );
        let convs = avg
            .convs
            .into_iter()
            .zip(&net.convs)
            .map(|(mut a, w)| {
                a.weight = blend(a.weight, &w.weight, d);
                a.bias = blend_bias(a.bias, &w.bias, d);
                a
            })
            .collect();
        let dense = avg
            .dense
            .into_iter()
            .zip(&net.dense)
            .map(|(mut a, w)| {
                a.weight = blend(a.weight, &w.weight, d);
                a.bias = blend_bias(a.bias, &w.bias, d);
                a
            })
            .collect();
        self.net = Net { convs, dense };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float::net::Backend;

    #[test]
    fn the_average_moves_by_one_minus_the_decay_and_warms_up() {
        let device = Backend::Flex.autodiff_device();
        let a = Net::new(&device, 1);
        let b = Net::new(&device, 2);
        let mut avg = WeightAverage::new(&a, 0.999);
        // Warm-up: step 1 uses 2/11, step 1000 0.9901, and from step 8991 on the decay.
        assert_eq!(avg.decay_at(1), 2.0 / 11.0);
        assert!((avg.decay_at(1000) - 1001.0 / 1010.0).abs() < 1e-15);
        assert_eq!(avg.decay_at(100_000), 0.999);
        avg.update(&b, 1).unwrap();
        avg.update(&b, 2).unwrap();
        let (wa, wb, got) = (
            a.to_float_weights(),
            b.to_float_weights(),
            avg.net.to_float_weights(),
        );
        let (d1, d2) = (avg.decay_at(1), avg.decay_at(2));
        let mut worst = 0.0f64;
        for ((la, lb), lg) in wa.layers.iter().zip(&wb.layers).zip(&got.layers) {
            for (k, g) in lg.weight.iter().enumerate() {
                let (x, y) = (la.weight[k] as f64, lb.weight[k] as f64);
                let want = (x * d1 + y * (1.0 - d1)) * d2 + y * (1.0 - d2);
                worst = worst.max((*g as f64 - want).abs());
            }
        }
        assert!(worst < 1e-6, "largest deviation {worst}");
        // The trained network is untouched, and the average records no graph.
        assert_eq!(a.to_float_weights(), wa);
        assert!(!avg.net.convs[0].weight.val().is_require_grad());
    }
}
