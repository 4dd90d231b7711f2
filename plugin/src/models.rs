//! The two architectures, adapted to 1×28×28 inputs:
//! * `cnn`: conv(1→16, 3×3) ReLU max-pool, conv(16→32, 3×3) ReLU max-pool, fc(1568→128) ReLU,
//!   fc(128→10) (≈ 206k parameters; small enough to train on 2 CPU cores in about a minute);
//! * `vgg`: the authors' small VGG — conv32×2–M–conv64×2–M–conv128×2–M, each conv followed by
//!   BatchNorm and ELU, then dropout(0.5) and fc(1152→10).
//!
//! Parameters live in a `VarStore`, saved and loaded as safetensors (names like `conv1.weight`).
//!
//! The CNN is piecewise linear in its input (convolutions, ReLU, max-pooling, affine layers):
//! [`Model::linearised_forward`] runs it while keeping what its input-Jacobian needs (the ReLU
//! masks and the pooling indices), so that `J v` costs one forward pass without biases
//! ([`Linearisation::tangent`]). The VGG is not (ELU), and has no linearisation.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, VarStore};
use tch::{Device, Tensor};

use crate::error::Result;
use crate::model_io;

/// The architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// Small CNN (≈ 206k parameters).
    Cnn,
    /// The authors' small VGG with BatchNorm, ELU and dropout.
    Vgg,
}

/// A classifier with its parameters.
pub struct Model {
    /// The parameters (trainable variables are the outer variables θ of I-BAU).
    pub vs: VarStore,
    net: Net,
    /// The architecture.
    pub arch: Arch,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

/// 2×2 max-pooling with stride 2, as `max_pool2d_default(2)`.
///
/// On the CPU the window maxima are found by libtorch's kernel for channels-last tensors, on a
/// channels-last copy without autograd history: its kernel for contiguous (NCHW) tensors took
/// 8.3 ms on a `[100, 16, 28, 28]` batch on one thread here, the channels-last one 1.0 ms plus
/// 0.7 ms for the copy. With autograd history the pooled values are then gathered from the NCHW
/// input at those indices, so that the backward pass (a scatter into the input's shape) and
/// every gradient stay NCHW: pooling and its backward pass took 5.6–6.1 ms that way against
/// 9.5–13.0 ms on `[100, 16, 28, 28]` (medians of 40 runs), and the CNN's forward and backward
/// pass 23.8–25.3 ms against 32.5–32.9 ms (31.0–34.8 ms pooling a channels-last copy with
/// autograd history, whose gradients are then channels-last; fastest of 30 alternating runs;
/// two runs of `bench/ibau/maxpool.py`, 2026-12-07). The values, the indices and the gradients
/// are identical either way: a maximum has no rounding, the 2×2 windows do not overlap (each
/// input entry receives at most one gradient entry), and the kernels pick the same index (tests
/// below). Other devices keep their own kernel (not measured there).
///
/// Infallible like the `nn::seq_t` layers it sits between (tch's infallible methods panic on a
/// libtorch error; this one does so with the error's message).
fn pool(x: &Tensor) -> Tensor {
    match max_pool2_with_indices(x, false) {
        Ok((values, _)) => values,
        Err(e) => panic!("max-pooling failed: {e}"),
    }
}

/// [`pool`], and with `keep_indices` its indices (flat positions in each input plane, as
/// `max_pool2d_with_indices`, contiguous).
fn max_pool2_with_indices(x: &Tensor, keep_indices: bool) -> Result<(Tensor, Option<Tensor>)> {
    let (k, s, p, d) = ([2, 2], [2, 2], [0, 0], [1, 1]);
    if x.device() != Device::Cpu {
        let (values, indices) = x.f_max_pool2d_with_indices(k, s, p, d, false)?;
        return Ok((values, keep_indices.then_some(indices)));
    }
    let (values, indices) = tch::no_grad(|| {
        x.f_permute([0, 2, 3, 1])?
            .f_contiguous()?
            .f_permute([0, 3, 1, 2])?
            .f_max_pool2d_with_indices(k, s, p, d, false)
    })?;
    if x.requires_grad() {
        let indices = indices.f_contiguous()?;
        let values = gather_pooled(x, &indices)?;
        Ok((values, keep_indices.then_some(indices)))
    } else {
        let indices = if keep_indices {
            Some(indices.f_contiguous()?)
        } else {
            None
        };
        Ok((values.f_contiguous()?, indices))
    }
}

/// Zero padding of every convolution of both models (3×3 kernels, stride 1: sizes are kept).
const CONV_PADDING: i64 = 1;

fn conv(p: nn::Path<'_>, i: i64, o: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        i,
        o,
        3,
        nn::ConvConfig {
            padding: CONV_PADDING,
            ..Default::default()
        },
    )
}

/// The layers: the CNN's written out (its forward pass is [`CnnLayers::run`], which also
/// records the linearisation), the VGG's as a sequence.
enum Net {
    Cnn(Box<CnnLayers>),
    Vgg(nn::SequentialT),
}

/// The CNN's layers (names `conv1`, `conv2`, `fc1`, `fc2` in the `VarStore`).
struct CnnLayers {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl CnnLayers {
    /// The logits for `xs` and, with `record`, the linearisation at `xs`: the one definition of
    /// the CNN's forward pass, for [`Model::forward_t`] and [`Model::linearised_forward`]. The
    /// operations are those of tch's `Conv2D` and `Linear` modules.
    fn run(&self, xs: &Tensor, record: bool) -> Result<(Tensor, Option<Linearisation>)> {
        let conv = |x: &Tensor, c: &nn::Conv2D| -> Result<Tensor> {
            let pad = [CONV_PADDING; 2];
            Ok(x.f_conv2d(&c.ws, c.bs.as_ref(), [1, 1], pad, [1, 1], 1)?)
        };
        let z1 = conv(xs, &self.conv1)?;
        let (p1, i1) = max_pool2_with_indices(&z1.f_relu()?, record)?;
        let z2 = conv(&p1, &self.conv2)?;
        let (p2, i2) = max_pool2_with_indices(&z2.f_relu()?, record)?;
        let z3 = p2
            .f_flatten(1, -1)?
            .f_linear(&self.fc1.ws, self.fc1.bs.as_ref())?;
        let logits = z3.f_relu()?.f_linear(&self.fc2.ws, self.fc2.bs.as_ref())?;
        let (true, Some(i1), Some(i2)) = (record, i1, i2) else {
            return Ok((logits, None));
        };
        let mask = |z: &Tensor| -> Result<Tensor> { Ok(z.f_gt(0.0)?.f_to_kind(z.kind())?) };
        let lin = Linearisation {
            masks: [mask(&z1)?, mask(&z2)?, mask(&z3)?],
            pools: [i1, i2],
            weights: [&self.conv1.ws, &self.conv2.ws, &self.fc1.ws, &self.fc2.ws]
                .map(Tensor::shallow_clone),
        };
        Ok((logits, Some(lin)))
    }
}

impl Model {
    /// A freshly initialised model (seed libtorch first for reproducibility).
    pub fn new(arch: Arch, device: Device) -> Self {
        let vs = VarStore::new(device);
        let root = vs.root();
        let net = match arch {
            Arch::Cnn => Net::Cnn(Box::new(CnnLayers {
                conv1: conv(&root / "conv1", 1, 16),
                conv2: conv(&root / "conv2", 16, 32),
                fc1: nn::linear(&root / "fc1", 32 * 7 * 7, 128, Default::default()),
                fc2: nn::linear(&root / "fc2", 128, 10, Default::default()),
            })),
            Arch::Vgg => {
                let mut s = nn::seq_t();
                let chans = [(1, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)];
                for (i, (ci, co)) in chans.iter().enumerate() {
                    s = s
                        .add(conv(&root / format!("conv{}", i + 1), *ci, *co))
                        .add(nn::batch_norm2d(
                            &root / format!("bn{}", i + 1),
                            *co,
                            Default::default(),
                        ))
                        .add_fn(|x| x.elu());
                    if i % 2 == 1 {
                        s = s.add_fn(pool);
                    }
                }
                Net::Vgg(
                    s.add_fn(|x| x.flatten(1, -1))
                        .add_fn_t(|x, train| x.dropout(0.5, train))
                        .add(nn::linear(
                            &root / "fc",
                            128 * 3 * 3,
                            10,
                            Default::default(),
                        )),
                )
            }
        };
        Model { vs, net, arch }
    }

    /// Logits for `xs` (`train = false`: BatchNorm running statistics, dropout off).
    ///
    /// # Panics
    /// On a libtorch error (an input of the wrong shape), with its message, as tch's modules do.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match &self.net {
            Net::Cnn(layers) => match layers.run(xs, false) {
                Ok((logits, _)) => logits,
                Err(e) => panic!("the CNN's forward pass failed: {e}"),
            },
            Net::Vgg(seq) => seq.forward_t(xs, train),
        }
    }

    /// Whether the model is piecewise linear in its input, so that its input-Hessian is zero
    /// almost everywhere and [`Model::linearised_forward`] is available: the CNN (convolutions,
    /// ReLU, max-pooling, affine layers), not the VGG (ELU).
    pub fn is_piecewise_linear(&self) -> bool {
        matches!(self.net, Net::Cnn(_))
    }

    /// The logits for `xs` (eval mode) and the model's linearisation at `xs`, for a piecewise
    /// linear model ([`Model::is_piecewise_linear`]); `None` for another. The logits are those
    /// of [`Model::forward_t`] (one function runs both), with the autograd history of the
    /// caller's grad mode.
    ///
    /// # Errors
    /// If libtorch fails (an input of the wrong shape).
    pub fn linearised_forward(&self, xs: &Tensor) -> Result<Option<(Tensor, Linearisation)>> {
        match &self.net {
            Net::Cnn(layers) => {
                let (logits, lin) = layers.run(xs, true)?;
                Ok(lin.map(|lin| (logits, lin)))
            }
            Net::Vgg(_) => Ok(None),
        }
    }

    /// The trainable parameters θ, in a fixed order (sorted by name).
    pub fn parameters(&self) -> Vec<Tensor> {
        let mut named: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named.into_iter().map(|(_, t)| t).collect()
    }

    /// The bias of the last layer (`C` entries, one per class), a handle on the variable.
    ///
    /// # Errors
    /// [`crate::Error::Config`] if the variable store has no such bias (cannot happen for a
    /// model built by [`Model::new`]).
    pub fn output_bias(&self) -> Result<Tensor> {
        let name = match self.arch {
            Arch::Cnn => "fc2.bias",
            Arch::Vgg => "fc.bias",
        };
        self.vs
            .variables()
            .remove(name)
            .ok_or_else(|| crate::Error::Config(format!("the {:?} has no {name}", self.arch)))
    }

    /// Loads parameters (and BatchNorm statistics) from a safetensors file.
    ///
    /// # Errors
    /// [`crate::Error::File`] for a missing file or mismatched names/shapes.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        model_io::load_safetensors(&mut self.vs, path)
    }

    /// Saves parameters (and BatchNorm statistics) as safetensors.
    ///
    /// # Errors
    /// [`crate::Error::File`] on I/O failure.
    pub fn save(&self, path: &Path) -> Result<()> {
        model_io::save_safetensors(&self.vs, path)
    }
}

/// A piecewise-linear model's input-Jacobian `J` at a batch of inputs: the ReLU masks and the
/// max-pooling indices of [`Model::linearised_forward`], and handles on the weights.
///
/// For a model built from convolutions, ReLU, max-pooling and affine layers the logits are
/// `f(x) = J(x)·x + c(x)` with `J` and `c` constant on the cells where no pre-activation
/// changes sign and no pooling window changes its maximum, so the input-Hessian of each logit is
/// zero there (almost everywhere) and every second derivative in the input is carried by the
/// loss on the logits: `∇²ₓ L(f(x)) = Jᵀ ∇²L J` (the Gauss–Newton matrix is exact). This is
/// also what double backward through libtorch's autograd computes, which differentiates ReLU
/// and max-pooling as these masks and indices do.
#[derive(Debug)]
pub struct Linearisation {
    masks: [Tensor; 3],
    pools: [Tensor; 2],
    weights: [Tensor; 4],
}

/// Picks the pooled elements of `t` (`[N, C, H, W]`) at max-pooling `indices` (`[N, C, h, w]`,
/// flat positions in each `H × W` plane).
fn gather_pooled(t: &Tensor, indices: &Tensor) -> Result<Tensor> {
    let shape = indices.size();
    Ok(t.f_flatten(2, -1)?
        .f_gather(2, &indices.f_flatten(2, -1)?, false)?
        .f_view(shape.as_slice())?)
}

impl Linearisation {
    /// `J v`: the derivative of the logits at the recorded inputs in the direction `v`, for
    /// every input (`[N, classes]`); `v` has the input's shape or a batch of 1 (a perturbation
    /// shared by the batch, as I-BAU's δ). Records autograd history for the weights when grad
    /// mode is on, so that `∇_θ⟨u, J v⟩` is one backward pass; the masks and indices are
    /// constants (as autograd differentiates them).
    ///
    /// # Errors
    /// If `v`'s shape does not fit or libtorch fails.
    pub fn tangent(&self, v: &Tensor) -> Result<Tensor> {
        let none = None::<Tensor>;
        let pad = [CONV_PADDING; 2];
        let t = v
            .f_conv2d(&self.weights[0], none.as_ref(), [1, 1], pad, [1, 1], 1)?
            .f_mul(&self.masks[0])?;
        let t = gather_pooled(&t, &self.pools[0])?;
        let t = t
            .f_conv2d(&self.weights[1], none.as_ref(), [1, 1], pad, [1, 1], 1)?
            .f_mul(&self.masks[1])?;
        let t = gather_pooled(&t, &self.pools[1])?.f_flatten(1, -1)?;
        let t = t
            .f_linear(&self.weights[2], none.as_ref())?
            .f_mul(&self.masks[2])?;
        Ok(t.f_linear(&self.weights[3], none.as_ref())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// A deterministic pattern with values in [-1, 1] (no random generator: the library's tests
    /// run in parallel and libtorch's generator is global).
    fn pattern(shape: [i64; 4], phase: f64) -> Tensor {
        let n: i64 = shape.iter().product();
        Tensor::arange(n, (Kind::Float, Device::Cpu))
            .g_mul_scalar(0.618_034)
            .g_add_scalar(phase)
            .sin()
            .view(shape)
    }

    /// Inputs as the CNN pools them: ReLU outputs, so with many tied zeros, and tied positive
    /// values (rounded to a coarse grid).
    fn relu_input(shape: [i64; 4], phase: f64) -> Tensor {
        pattern(shape, phase)
            .g_mul_scalar(4.0)
            .round()
            .g_div_scalar(4.0)
            .relu()
    }

    #[test]
    fn pooling_gives_libtorchs_values_indices_and_gradients() {
        for (phase, shape) in [
            (0.0, [3, 16, 28, 28]),
            (1.0, [5, 32, 14, 14]),
            (2.0, [2, 3, 7, 7]),
        ] {
            let x = relu_input(shape, phase);
            let (want_v, want_i) = x.max_pool2d_with_indices([2, 2], [2, 2], [0, 0], [1, 1], false);
            let (v, i) = max_pool2_with_indices(&x, true).unwrap();
            assert!(v.equal(&want_v), "values, shape {shape:?}");
            assert!(i.unwrap().equal(&want_i), "indices, shape {shape:?}");
            assert!(pool(&x).equal(&want_v));
            // Non-contiguous and channels-last inputs.
            let cl = x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
            assert!(pool(&cl).equal(&want_v));
            let wide = Tensor::cat(&[&x, &x], 3).slice(3, 0, shape[3], 1);
            assert!(!wide.is_contiguous());
            assert!(pool(&wide).equal(&want_v));

            // With autograd history: the same values, indices and gradient.
            let leaf = x.detach().set_requires_grad(true);
            let cot = pattern(want_v.size().try_into().unwrap(), 0.5);
            let (ours, i) = max_pool2_with_indices(&leaf, true).unwrap();
            assert!(ours.requires_grad());
            assert!(ours.equal(&want_v));
            assert!(i.unwrap().equal(&want_i));
            let g =
                Tensor::run_backward(&[(&ours * &cot).sum(Kind::Float)], &[&leaf], false, false);
            let theirs = leaf.max_pool2d_default(2);
            let want_g =
                Tensor::run_backward(&[(&theirs * &cot).sum(Kind::Float)], &[&leaf], false, false);
            assert!(g[0].equal(&want_g[0]), "gradient, shape {shape:?}");
        }
    }

    #[test]
    fn pooling_has_the_same_second_derivatives() {
        // Double backward through the pooling's backward pass (as the VGG's HVPs do):
        // s = ⟨c, pool(x)²⟩, ∇s = Pᵀ(2c ∘ P x), and d/dx ⟨∇s, u⟩ = Pᵀ(2c ∘ P u).
        let x = pattern([2, 4, 8, 8], 0.3);
        let c = pattern([2, 4, 4, 4], 1.7);
        let u = pattern([2, 4, 8, 8], 2.9);
        let second = |f: &dyn Fn(&Tensor) -> Tensor| -> Tensor {
            let leaf = x.detach().set_requires_grad(true);
            let s = (f(&leaf).square() * &c).sum(Kind::Float);
            let g = Tensor::run_backward(&[&s], &[&leaf], true, true);
            let t = (&g[0] * &u).sum(Kind::Float);
            Tensor::run_backward(&[&t], &[&leaf], false, false)
                .pop()
                .unwrap()
        };
        let ours = second(&|t: &Tensor| pool(t));
        let theirs = second(&|t: &Tensor| t.max_pool2d_default(2));
        assert!(ours.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        assert!(ours.equal(&theirs));
    }

    #[test]
    fn pooling_propagates_nan_as_libtorch_does() {
        let x = pattern([1, 2, 4, 4], 0.0);
        let _ = x.get(0).get(1).get(2).get(3).fill_(f64::NAN);
        let (want_v, want_i) = x.max_pool2d_with_indices([2, 2], [2, 2], [0, 0], [1, 1], false);
        let (v, i) = max_pool2_with_indices(&x, true).unwrap();
        assert!(v.isnan().equal(&want_v.isnan()));
        assert!(v
            .nan_to_num(0.0, None, None)
            .equal(&want_v.nan_to_num(0.0, None, None)));
        assert!(i.unwrap().equal(&want_i));
    }
}
