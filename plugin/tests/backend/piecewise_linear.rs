//! The closed-form operators of `PiecewiseLinearMap` against double backward through autograd
//! (`GradientDescentMap`) on the CNN, in f64: `∇_δG`, `Jᵀv` and `(∂_θΦ)ᵀv` of the authors' G
//! must agree to rounding, for one perturbation and for several (the class search's case).

use ibau_core::{Operator, Vector};
use ibau_plugin::autograd::{GradientDescentMap, LinearisedMap};
use ibau_plugin::models::{Arch, Model};
use ibau_plugin::piecewise_linear::{PiecewiseLinearMap, FLUSH_BELOW};
use ibau_plugin::{Result, TensorList};
use tch::{Device, Kind, Tensor};

const REG: f64 = 1e-3;
const ALPHA: f64 = 0.1;

/// The authors' G averaged over the perturbations, as `ibau::ibau_gradient` builds it.
fn authors_g(model: &Model, x: &Tensor, y: &Tensor, w: &[Tensor]) -> Result<Tensor> {
    let kind = x.kind();
    let terms = w
        .iter()
        .map(|wj| {
            let ce = model
                .forward_t(&(x + wj), false)
                .log_softmax(-1, kind)
                .nll_loss(y);
            -ce + REG * wj.square().sum(kind)
        })
        .collect::<Vec<_>>();
    Ok(Tensor::stack(&terms, 0).mean(kind))
}

fn relative(a: &TensorList, b: &TensorList) -> f64 {
    let mut d = a.clone();
    d.axpy(-1.0, b);
    d.norm() / b.norm()
}

fn random_like(tensors: &[Tensor]) -> TensorList {
    TensorList::new(tensors.iter().map(|t| t.randn_like()).collect())
}

/// Compares the two maps in f64 (to 1e-10, relative); returns the smallest softmax entry at
/// the perturbed inputs.
fn check(device: Device, perturbations: usize, seed: i64, scale: f64) -> f64 {
    check_in(Kind::Double, 1e-10, device, perturbations, seed, scale)
}

fn check_in(kind: Kind, tol: f64, device: Device, m: usize, seed: i64, scale: f64) -> f64 {
    let perturbations = m;
    tch::manual_seed(seed);
    let mut model = Model::new(Arch::Cnn, device);
    if kind == Kind::Double {
        model.vs.double();
    }
    let params = model.parameters();
    let x = Tensor::rand([24, 1, 28, 28], (kind, device));
    let y = Tensor::randint(10, [24], (Kind::Int64, device));
    let w: Vec<Tensor> = (0..perturbations)
        .map(|_| scale * Tensor::randn([1, 1, 28, 28], (kind, device)))
        .collect();
    let autograd =
        GradientDescentMap::new(|w, _| authors_g(&model, &x, &y, w), &w, &params, ALPHA).unwrap();
    let closed = PiecewiseLinearMap::new(&model, &x, &y, &w, &params, REG, ALPHA)
        .unwrap()
        .expect("the CNN is piecewise linear");

    let (ga, gc) = (
        autograd.inner_gradient().unwrap(),
        closed.inner_gradient().unwrap(),
    );
    let e = relative(&gc, &ga);
    assert!(e <= tol, "∇_δG: relative difference {e:e}");

    for _ in 0..3 {
        let v = random_like(&w);
        let (mut ja, mut jc) = (v.zeros_like(), v.zeros_like());
        autograd.jt().apply(&v, &mut ja).unwrap();
        closed.jt().apply(&v, &mut jc).unwrap();
        // Compare the Hessian parts (Jᵀv − v), not v plus a small correction.
        ja.axpy(-1.0, &v);
        jc.axpy(-1.0, &v);
        let e = relative(&jc, &ja);
        assert!(e <= tol, "Jᵀv: relative difference {e:e}");

        let mut ca = random_like(&params);
        let mut cc = ca.zeros_like();
        autograd.cross_t().apply(&v, &mut ca).unwrap();
        closed.cross_t().apply(&v, &mut cc).unwrap();
        let e = relative(&cc, &ca);
        assert!(e <= tol, "(∂_θΦ)ᵀv: relative difference {e:e}");
        assert!(ca.norm() > 0.0);
    }
    assert_eq!(closed.applications(), 6);
    let logits = model.forward_t(&(&x + &w[0]), false);
    logits.softmax(-1, kind).min().double_value(&[])
}

#[test]
fn closed_form_operators_match_double_backward_on_the_cnn() {
    assert!(check(Device::Cpu, 1, 3, 0.5) > FLUSH_BELOW);
}

#[test]
fn closed_form_operators_match_double_backward_for_several_perturbations() {
    check(Device::Cpu, 3, 4, 0.5);
}

/// At ‖δ‖ ≈ 800 (the authors' unprojected search ends near 1.4·10³) the logits saturate and the
/// softmax has entries below `FLUSH_BELOW`, which the closed form drops.
#[test]
fn closed_form_operators_match_double_backward_at_a_saturating_perturbation() {
    let smallest = check(Device::Cpu, 2, 8, 30.0);
    assert!(
        smallest < FLUSH_BELOW,
        "not saturated: smallest softmax entry {smallest:e}"
    );
}

/// The same in f32, where the flushed entries would be subnormal: what the flush drops does
/// not show at f32 precision (tolerance 1e-4 relative).
#[test]
fn closed_form_operators_match_double_backward_at_a_saturating_perturbation_in_f32() {
    let smallest = check_in(Kind::Float, 1e-4, Device::Cpu, 2, 8, 30.0);
    assert!(
        smallest < FLUSH_BELOW,
        "not saturated: smallest softmax entry {smallest:e}"
    );
}

#[test]
fn closed_form_operators_match_double_backward_on_cuda() {
    if let Some(device) = crate::cuda_or_notice("closed_form_operators_match_double_backward") {
        check(device, 2, 5, 0.5);
    }
}

#[test]
fn the_vgg_has_no_closed_form() {
    tch::manual_seed(6);
    let model = Model::new(Arch::Vgg, Device::Cpu);
    assert!(!model.is_piecewise_linear());
    let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    let y = Tensor::zeros([4], (Kind::Int64, Device::Cpu));
    let w = [Tensor::zeros([1, 1, 28, 28], (Kind::Float, Device::Cpu))];
    let map = PiecewiseLinearMap::new(&model, &x, &y, &w, &model.parameters(), REG, ALPHA);
    assert!(map.unwrap().is_none());
    assert!(model.linearised_forward(&x).unwrap().is_none());
}

#[test]
fn the_linearised_forward_gives_the_models_logits_and_its_jacobian() {
    tch::manual_seed(7);
    let mut model = Model::new(Arch::Cnn, Device::Cpu);
    model.vs.double();
    let x = Tensor::rand([5, 1, 28, 28], (Kind::Double, Device::Cpu));
    let (logits, lin) = model.linearised_forward(&x).unwrap().unwrap();
    // Both against the architecture written out with libtorch's own layers (plain NCHW
    // max-pooling), an oracle independent of the model's forward pass.
    let vars = model.vs.variables();
    let p = |name: &str| vars[name].shallow_clone();
    let conv = |x: &Tensor, l: &str| {
        x.conv2d(
            &p(&format!("{l}.weight")),
            Some(p(&format!("{l}.bias"))),
            [1, 1],
            [1, 1],
            [1, 1],
            1,
        )
    };
    let h = conv(&x, "conv1").relu().max_pool2d_default(2);
    let h = conv(&h, "conv2")
        .relu()
        .max_pool2d_default(2)
        .flatten(1, -1);
    let h = h.linear(&p("fc1.weight"), Some(p("fc1.bias"))).relu();
    let oracle = h.linear(&p("fc2.weight"), Some(p("fc2.bias")));
    for (name, out) in [
        ("linearised_forward", &logits),
        ("forward_t", &model.forward_t(&x, false)),
    ] {
        let e = (out - &oracle).abs().max().double_value(&[]);
        assert!(
            e <= 1e-12,
            "{name}'s logits differ from the oracle by {e:e}"
        );
    }
    // J v against a central difference (f is linear on the cell around x for a small step).
    let v = Tensor::randn([1, 1, 28, 28], (Kind::Double, Device::Cpu));
    let h = 1e-7;
    let fd = (model.forward_t(&(&x + h * &v), false) - model.forward_t(&(&x - h * &v), false))
        / (2.0 * h);
    let jv = lin.tangent(&v).unwrap();
    let e = ((&jv - &fd).norm().double_value(&[])) / fd.norm().double_value(&[]);
    assert!(
        e <= 1e-6,
        "J v differs from the central difference by {e:e}"
    );
}
