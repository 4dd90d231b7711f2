//! Hypergradient of a ridge-regression validation loss with respect to the log-regularisation,
//! with the full solver report — the core's worked example.
//!
//! Inner: `G(w, λ) = ‖Xw − y‖²/(2n) + ½e^λ‖w‖²`, solved here by the core's own CG.
//! Fixed-point map: `Φ(w, λ) = w − α∇_wG`, `J = I − αH`, `H = XᵀX/n + e^λI`.
//! Outer: `E(w) = ‖X_v w − y_v‖²/(2m)`; hypergradient `df/dλ`.
//!
//! Every constant the bounds need is certified cheaply: `μ = e^λ ≤ λ_min(H)`,
//! `L = ‖X‖_F²/n + e^λ ≥ λ_max(H)`, so `α = 1/L` gives `‖J‖ ≤ q = 1 − μ/L`, and
//! `‖∂_λΦ‖ = α e^λ ‖w‖` exactly.
//!
//! Run: `cargo run --release -p ibau-core --example ridge [-- --lambda -2 --dim 200 --seed 7]`

use ibau_core::solve::{cg, fixed_point};
use ibau_core::{dense, hypergradient, Method, Params, Problem};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Args {
    lambda: f64,
    dim: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        lambda: -2.0,
        dim: 200,
        seed: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--lambda" => {
                args.lambda = value("--lambda")?
                    .parse()
                    .map_err(|e| format!("--lambda: {e}"))?
            }
            "--dim" => args.dim = value("--dim")?.parse().map_err(|e| format!("--dim: {e}"))?,
            "--seed" => {
                args.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "-h" | "--help" => {
                println!("usage: ridge [--lambda LOG_REG] [--dim D] [--seed S]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.dim == 0 {
        return Err("--dim must be ≥ 1".into());
    }
    Ok(args)
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller.
    let u: f64 = rng.random::<f64>().max(1e-300);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn matvec_h(x: &Array2<f64>, reg: f64, v: &Array1<f64>) -> Array1<f64> {
    let n = x.nrows() as f64;
    x.t().dot(&x.dot(v)) / n + v * reg
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let (d, n, m) = (args.dim, 3 * args.dim, args.dim);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let w_true: Array1<f64> = (0..d).map(|_| gaussian(&mut rng)).collect();
    let mut data = |rows: usize| {
        let x = Array2::from_shape_fn((rows, d), |_| gaussian(&mut rng));
        let noise: Array1<f64> = (0..rows).map(|_| 2.0 * gaussian(&mut rng)).collect();
        let y = x.dot(&w_true) + noise;
        (x, y)
    };
    let (x, y) = data(n);
    let (xv, yv) = data(m);
    let reg = args.lambda.exp();

    // Certified constants.
    let mu = reg;
    let l = x.iter().map(|v| v * v).sum::<f64>() / n as f64 + reg;
    let alpha = 1.0 / l;
    let q = 1.0 - mu / l;

    // Inner problem H w = Xᵀy/n by the core's CG (H is SPD with λ_min ≥ μ).
    let rhs = x.t().dot(&y) / n as f64;
    let mut w = Array1::zeros(d);
    let inner = cg::solve(
        &mut |v: &Array1<f64>, out: &mut Array1<f64>| out.assign(&matvec_h(&x, reg, v)),
        &rhs,
        &mut w,
        &cg::Params {
            rel_tol: 1e-14,
            lambda_min: Some(mu),
            ..Default::default()
        },
        &mut (),
    )
    .expect("inner ridge solve");
    println!(
        "ridge: d = {d}, n_train = {n}, n_val = {m}, λ = {} (e^λ = {reg:.4}), seed {}",
        args.lambda, args.seed
    );
    println!(
        "inner solve (CG on H w = Xᵀy/n): {} iterations, residual {:.2e}, ‖w − w*‖ ≤ {}",
        inner.iterations,
        inner.residual,
        inner.error_bound.unwrap()
    );
    println!("certified: μ = {mu:.4e} ≤ λ_min(H), L = {l:.4e} ≥ λ_max(H), α = 1/L, q = 1 − μ/L = {q:.6}\n");

    let grad_w = xv.t().dot(&(xv.dot(&w) - &yv)) / m as f64;
    let cross_norm = alpha * reg * w.dot(&w).sqrt();
    let make_problem = || Problem {
        jt: |v: &Array1<f64>, out: &mut Array1<f64>| {
            out.assign(&(v - &(matvec_h(&x, reg, v) * alpha)))
        },
        cross_t: |v: &Array1<f64>, out: &mut Array1<f64>| out[0] = -alpha * reg * w.dot(v),
        grad_w: grad_w.clone(),
        grad_lambda: Array1::zeros(1),
    };

    // The dense oracle: ∇f = −e^λ wᵀ H⁻¹ ∇_wE.
    let h = x.t().dot(&x) / n as f64 + Array2::<f64>::eye(d) * reg;
    let exact = -reg * w.dot(&dense::solve(&h, &grad_w).expect("dense solve"));

    let methods = [
        (
            "conjugate gradient",
            Method::ConjugateGradient(cg::Params {
                rel_tol: 1e-10,
                ..Default::default()
            }),
        ),
        (
            "fixed point",
            Method::FixedPoint(fixed_point::Params {
                rel_tol: 1e-10,
                max_iter: 200_000,
                ..Default::default()
            }),
        ),
    ];
    for (name, method) in methods {
        let params = Params {
            method,
            contraction: Some(q),
            symmetric: true,
            cross_norm: Some(cross_norm),
        };
        let mut problem = make_problem();
        match hypergradient(&mut problem, &params, None, &mut ()) {
            Ok(hg) => {
                println!("== {name} ==");
                println!("hypergradient df/dλ:    {:.12e}", hg.gradient[0]);
                println!("dense oracle:           {exact:.12e}");
                println!(
                    "actual error:           {:.3e}",
                    (hg.gradient[0] - exact).abs()
                );
                match hg.error_bound {
                    Some(b) => println!("hypergradient bound:    {b}"),
                    None => println!("hypergradient bound:    none"),
                }
                println!("{}\n", hg.info);
            }
            Err(e) => {
                eprintln!("{name} failed: {e}");
                std::process::exit(1);
            }
        }
    }
}
