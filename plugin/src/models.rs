//! The two architectures, adapted to 1×28×28 inputs:
//! * `cnn`: conv(1→16, 3×3) ReLU max-pool, conv(16→32, 3×3) ReLU max-pool, fc(1568→128) ReLU,
//!   fc(128→10) (≈ 206k parameters; small enough to train on 2 CPU cores in about a minute);
//! * `vgg`: the authors' small VGG — conv32×2–M–conv64×2–M–conv128×2–M, each conv followed by
//!   BatchNorm and ELU, then dropout(0.5) and fc(1152→10).
//!
//! Parameters live in a `VarStore`, saved and loaded as safetensors (names like `conv1.weight`).

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
    net: nn::SequentialT,
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

fn conv(p: nn::Path<'_>, i: i64, o: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        i,
        o,
        3,
        nn::ConvConfig {
            padding: 1,
            ..Default::default()
        },
    )
}

impl Model {
    /// A freshly initialised model (seed libtorch first for reproducibility).
    pub fn new(arch: Arch, device: Device) -> Self {
        let vs = VarStore::new(device);
        let root = vs.root();
        let net = match arch {
            Arch::Cnn => nn::seq_t()
                .add(conv(&root / "conv1", 1, 16))
                .add_fn(|x| x.relu().max_pool2d_default(2))
                .add(conv(&root / "conv2", 16, 32))
                .add_fn(|x| x.relu().max_pool2d_default(2).flatten(1, -1))
                .add(nn::linear(
                    &root / "fc1",
                    32 * 7 * 7,
                    128,
                    Default::default(),
                ))
                .add_fn(|x| x.relu())
                .add(nn::linear(&root / "fc2", 128, 10, Default::default())),
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
                        s = s.add_fn(|x| x.max_pool2d_default(2));
                    }
                }
                s.add_fn(|x| x.flatten(1, -1))
                    .add_fn_t(|x, train| x.dropout(0.5, train))
                    .add(nn::linear(
                        &root / "fc",
                        128 * 3 * 3,
                        10,
                        Default::default(),
                    ))
            }
        };
        Model { vs, net, arch }
    }

    /// Logits for `xs` (`train = false`: BatchNorm running statistics, dropout off).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.net.forward_t(xs, train)
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
