//! Hypergradients through tch autograd against the dense oracle and finite differences, in f64.

use ibau_core::solve::{cg, fixed_point};
use ibau_core::{dense, IdentityMinus, Method, Params};
use ibau_plugin::autograd::{outer_gradients, GradientDescentMap, LinearisedMap};
use ibau_plugin::{Result, TensorList};
use ndarray::{Array1, Array2};
use tch::{Device, Kind, Tensor};

/// A bilevel problem on tensors: inner variables `w` (one tensor), outer variables `λ`.
trait Bilevel {
    fn lambda(&self) -> &[Tensor];
    fn w_init(&self) -> Tensor;
    fn inner(&self, w: &[Tensor], lambda: &[Tensor]) -> Result<Tensor>;
    fn outer(&self, w: &[Tensor], lambda: &[Tensor]) -> Result<Tensor>;
}

fn softplus(t: &Tensor) -> Tensor {
    // log(1 + e^t), stable.
    t.clamp_min(0.0) + (-t.abs()).exp().log1p()
}

fn data(rows: i64, cols: i64, seed: i64, device: Device) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let x = Tensor::randn([rows, cols], (Kind::Double, device));
    let y = Tensor::randn([rows], (Kind::Double, device)).sign();
    (x, y)
}

/// L2-regularised logistic regression; λ = log of the regularisation.
struct Logistic {
    x: Tensor,
    y: Tensor,
    xv: Tensor,
    yv: Tensor,
    lambda: Vec<Tensor>,
}

impl Logistic {
    fn new(device: Device) -> Self {
        let (x, y) = data(40, 6, 1, device);
        let (xv, yv) = data(30, 6, 2, device);
        let lambda = vec![Tensor::from_slice(&[-1.5f64])
            .to_device(device)
            .set_requires_grad(true)];
        Logistic {
            x,
            y,
            xv,
            yv,
            lambda,
        }
    }
}

impl Bilevel for Logistic {
    fn lambda(&self) -> &[Tensor] {
        &self.lambda
    }
    fn w_init(&self) -> Tensor {
        Tensor::zeros([6], (Kind::Double, self.x.device()))
    }
    fn inner(&self, w: &[Tensor], l: &[Tensor]) -> Result<Tensor> {
        let margins = -(&self.y * self.x.matmul(&w[0]));
        Ok(softplus(&margins).mean(Kind::Double)
            + 0.5 * l[0].exp().sum(Kind::Double) * w[0].square().sum(Kind::Double))
    }
    fn outer(&self, w: &[Tensor], _l: &[Tensor]) -> Result<Tensor> {
        let margins = -(&self.yv * self.xv.matmul(&w[0]));
        Ok(softplus(&margins).mean(Kind::Double))
    }
}

/// A small MLP feature extractor (the outer variables, like a model's parameters) with a
/// logistic head `w` fitted in the inner problem — the shape of I-BAU's bilevel problem.
struct MlpHead {
    x: Tensor,
    y: Tensor,
    xv: Tensor,
    yv: Tensor,
    lambda: Vec<Tensor>,
}

impl MlpHead {
    fn new(device: Device) -> Self {
        let (x, y) = data(50, 3, 3, device);
        let (xv, yv) = data(40, 3, 4, device);
        tch::manual_seed(5);
        let w1 = (Tensor::randn([4, 3], (Kind::Double, device)) * 0.8).set_requires_grad(true);
        let b1 = (Tensor::randn([4], (Kind::Double, device)) * 0.3).set_requires_grad(true);
        MlpHead {
            x,
            y,
            xv,
            yv,
            lambda: vec![w1, b1],
        }
    }
    fn features(x: &Tensor, l: &[Tensor]) -> Tensor {
        x.linear(&l[0], Some(&l[1])).tanh()
    }
}

impl Bilevel for MlpHead {
    fn lambda(&self) -> &[Tensor] {
        &self.lambda
    }
    fn w_init(&self) -> Tensor {
        Tensor::zeros([4], (Kind::Double, self.x.device()))
    }
    fn inner(&self, w: &[Tensor], l: &[Tensor]) -> Result<Tensor> {
        let margins = -(&self.y * Self::features(&self.x, l).matmul(&w[0]));
        Ok(softplus(&margins).mean(Kind::Double) + 0.05 * w[0].square().sum(Kind::Double))
    }
    fn outer(&self, w: &[Tensor], l: &[Tensor]) -> Result<Tensor> {
        let margins = -(&self.yv * Self::features(&self.xv, l).matmul(&w[0]));
        Ok(softplus(&margins).mean(Kind::Double))
    }
}

/// Solves the inner problem to machine precision by Newton's method, each Newton system solved
/// by the core's CG on Hessian-vector products from autograd.
fn solve_inner<P: Bilevel>(p: &P) -> Tensor {
    let mut w = p.w_init();
    for _ in 0..50 {
        let map =
            GradientDescentMap::new(|w, l| p.inner(w, l), &[w.shallow_clone()], p.lambda(), 1.0)
                .unwrap();
        let g = map.inner_gradient().unwrap();
        if ibau_core::Vector::norm(&g) <= 1e-14 {
            break;
        }
        let mut step = map.zeros_w().unwrap();
        let mut jt = map.jt();
        // With α = 1, I − Jᵀ = H.
        cg::solve(
            &mut IdentityMinus(&mut jt),
            &g,
            &mut step,
            &cg::Params {
                rel_tol: 1e-15,
                abs_tol: 1e-300,
                require_convergence: false,
                ..Default::default()
            },
            &mut (),
        )
        .unwrap();
        w = tch::no_grad(|| &w - &step.tensors()[0]);
    }
    w
}

fn to_array(v: &TensorList) -> Array1<f64> {
    Array1::from(v.to_f64_vec().unwrap())
}

fn unit(like: &TensorList, j: usize) -> TensorList {
    let mut e = vec![0.0; ibau_core::Vector::dim(like)];
    e[j] = 1.0;
    let mut out = Vec::new();
    let mut off = 0;
    for t in like.tensors() {
        let n = t.numel();
        out.push(
            Tensor::from_slice(&e[off..off + n])
                .reshape(t.size())
                .to_device(t.device()),
        );
        off += n;
    }
    TensorList::new(out)
}

/// Assembles the matrix of an operator on tensor lists, column by column.
fn assemble(
    op: &mut dyn ibau_core::Operator<TensorList>,
    input: &TensorList,
    output: &TensorList,
) -> Array2<f64> {
    let (n_in, n_out) = (
        ibau_core::Vector::dim(input),
        ibau_core::Vector::dim(output),
    );
    let mut m = Array2::zeros((n_out, n_in));
    let mut out = ibau_core::Vector::zeros_like(output);
    for j in 0..n_in {
        op.apply(&unit(input, j), &mut out).unwrap();
        m.column_mut(j).assign(&to_array(&out));
    }
    m
}

/// f(λ) = E(w*(λ), λ) with λ's flat entry `i` shifted by `h`.
fn objective_shifted<P: Bilevel>(p: &P, i: usize, h: f64) -> f64 {
    let shift = |s: f64| {
        let mut off = 0;
        for t in p.lambda() {
            let n = t.numel();
            if i >= off && i < off + n {
                tch::no_grad(|| {
                    let mut e = t.view([-1]).get((i - off) as i64);
                    let _ = e.f_add_scalar_(s).unwrap();
                });
            }
            off += n;
        }
    };
    shift(h);
    let w = solve_inner(p);
    let f = p.outer(&[w], p.lambda()).unwrap().double_value(&[]);
    shift(-h);
    f
}

fn check<P: Bilevel>(p: &P, name: &str) {
    let w = solve_inner(p);
    let alpha_probe =
        GradientDescentMap::new(|w, l| p.inner(w, l), &[w.shallow_clone()], p.lambda(), 1.0)
            .unwrap();
    let zero_w = alpha_probe.zeros_w().unwrap();
    // H = I − Jᵀ at α = 1; its spectrum fixes α and the certified q of the test map.
    let h = Array2::eye(ibau_core::Vector::dim(&zero_w))
        - assemble(&mut alpha_probe.jt(), &zero_w, &zero_w);
    let ev = dense::symmetric_eigenvalues(&((&h + &h.t()) * 0.5)).unwrap();
    let (mu, l) = (ev[0], ev[ev.len() - 1]);
    assert!(mu > 0.0, "{name}: inner Hessian not positive definite");
    let alpha = 1.0 / l;
    let q = 1.0 - alpha * mu;

    let map = GradientDescentMap::new(
        |w, l| p.inner(w, l),
        &[w.shallow_clone()],
        p.lambda(),
        alpha,
    )
    .unwrap();
    let outer = outer_gradients(|w, l| p.outer(w, l), &[w.shallow_clone()], p.lambda()).unwrap();
    let lam_zero = TensorList::zeros_like_tensors(p.lambda()).unwrap();
    let jt = assemble(&mut map.jt(), &zero_w, &zero_w);
    let cross = assemble(&mut map.cross_t(), &zero_w, &lam_zero);
    let (exact, _) = dense::hypergradient(
        &jt,
        &cross,
        &to_array(&outer.grad_w),
        &to_array(&outer.grad_lambda),
    )
    .unwrap();
    let scale = exact.dot(&exact).sqrt().max(1e-12);

    for (solver, method) in [
        (
            "fixed point",
            Method::FixedPoint(fixed_point::Params {
                rel_tol: 1e-13,
                max_iter: 100_000,
                ..Default::default()
            }),
        ),
        (
            "CG",
            Method::ConjugateGradient(cg::Params {
                rel_tol: 1e-13,
                ..Default::default()
            }),
        ),
    ] {
        let before = map.applications();
        let params = Params {
            method,
            contraction: Some(q),
            symmetric: true,
            cross_norm: None,
        };
        let hg = map
            .hypergradient(outer.clone(), &params, None, &mut ())
            .unwrap();
        let got = to_array(&hg.gradient);
        let err = (&got - &exact).mapv(|x| x * x).sum().sqrt();
        assert!(
            err <= 1e-8 * scale,
            "{name}/{solver}: {err:e} vs dense (scale {scale:e})\n{}",
            hg.info
        );
        // Every operator application is one autograd pass: the core's count plus the cross VJP.
        assert_eq!(
            map.applications() - before,
            hg.info.operator_applications + 1,
            "{name}/{solver}"
        );

        // Central finite differences of f(λ) = E(w*(λ), λ), the inner problem re-solved each time.
        let step = 1e-5;
        for i in 0..got.len() {
            let fd =
                (objective_shifted(p, i, step) - objective_shifted(p, i, -step)) / (2.0 * step);
            let d = (fd - got[i]).abs();
            assert!(
                d <= 1e-7 * scale.max(1.0),
                "{name}/{solver}: ∂f/∂λ_{i}: finite difference {fd:e} vs {:e}",
                got[i]
            );
        }
    }
}

#[test]
fn logistic_hypergradient_matches_dense_and_finite_differences_cpu() {
    check(&Logistic::new(Device::Cpu), "logistic/cpu");
}

#[test]
fn mlp_hypergradient_matches_dense_and_finite_differences_cpu() {
    check(&MlpHead::new(Device::Cpu), "mlp/cpu");
}

#[test]
fn hypergradients_match_on_cuda() {
    if let Some(dev) = crate::cuda_or_notice("hypergradients_match_on_cuda") {
        check(&Logistic::new(dev), "logistic/cuda");
        check(&MlpHead::new(dev), "mlp/cuda");
    }
}

#[test]
fn mismatched_vectors_are_errors_not_aborts() {
    let p = Logistic::new(Device::Cpu);
    let w = p.w_init();
    let map = GradientDescentMap::new(|w, l| p.inner(w, l), &[w.shallow_clone()], p.lambda(), 0.1)
        .unwrap();
    let outer = outer_gradients(|w, l| p.outer(w, l), &[w.shallow_clone()], p.lambda()).unwrap();
    // A warm start of the wrong shape, then the wrong dtype.
    for bad in [
        Tensor::zeros([5], (Kind::Double, Device::Cpu)),
        Tensor::zeros([6], (Kind::Float, Device::Cpu)),
    ] {
        let v0 = TensorList::new(vec![bad]);
        let res = map.hypergradient(outer.clone(), &Params::default(), Some(&v0), &mut ());
        assert!(
            matches!(res, Err(ibau_plugin::Error::Mismatch { .. })),
            "{res:?}"
        );
    }
    // Outer variables that do not require gradients.
    let frozen = vec![Tensor::from_slice(&[0.0f64])];
    let res = GradientDescentMap::new(|w, l| p.inner(w, l), &[w.shallow_clone()], &frozen, 0.1);
    assert!(matches!(res, Err(ibau_plugin::Error::NoGrad(_))), "{res:?}");
    // A non-scalar loss.
    let res = GradientDescentMap::new(
        |w, _| Ok(w[0].shallow_clone() * 2.0),
        &[w.shallow_clone()],
        p.lambda(),
        0.1,
    );
    assert!(
        matches!(res, Err(ibau_plugin::Error::NotScalar { .. })),
        "{res:?}"
    );
}
