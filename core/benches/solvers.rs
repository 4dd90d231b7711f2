//! Fixed point and CG against the dense oracle for d = 10, 100, 1000, 4000.
//!
//! The system is `(I − Jᵀ) v = b` for the gradient-descent map `J = I − αH` with
//! `H = D + UUᵀ/r` (diagonal spread over [1, 100] plus a rank-8 term), applied matrix-free in
//! O(d·r) by the iterative solvers and assembled densely for the LU oracle. Operator-application
//! counts are printed next to criterion's times.
//!
//! Run: `cargo bench -p ibau-core --bench solvers`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ibau_core::solve::{cg, fixed_point};
use ibau_core::{dense, IdentityMinus};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

const RANK: usize = 8;

struct Instance {
    diag: Array1<f64>,
    u: Array2<f64>,
    alpha: f64,
    q: f64,
    b: Array1<f64>,
}

impl Instance {
    fn new(d: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let diag: Array1<f64> = (0..d)
            .map(|i| 100f64.powf(i as f64 / (d.max(2) - 1) as f64))
            .collect();
        let u = Array2::from_shape_fn((d, RANK), |_| rng.random::<f64>() - 0.5);
        // λ_min(H) ≥ 1; λ_max(H) ≤ 100 + ‖U‖_F²/r.
        let l = 100.0 + u.iter().map(|x| x * x).sum::<f64>() / RANK as f64;
        let alpha = 1.0 / l;
        let b: Array1<f64> = (0..d).map(|_| rng.random::<f64>() - 0.5).collect();
        Instance {
            diag,
            u,
            alpha,
            q: 1.0 - alpha,
            b,
        }
    }
    /// out ← Jᵀ v = v − αHv.
    fn jt(&self, v: &Array1<f64>, out: &mut Array1<f64>) {
        let t = self.u.t().dot(v) / RANK as f64;
        let hv = &self.diag * v + self.u.dot(&t);
        out.assign(&(v - &(hv * self.alpha)));
    }
    fn dense_jt(&self) -> Array2<f64> {
        let d = self.b.len();
        let h = Array2::from_diag(&self.diag) + self.u.dot(&self.u.t()) / RANK as f64;
        Array2::eye(d) - h * self.alpha
    }
}

fn solve_fp(inst: &Instance) -> ibau_core::Info {
    let mut v = Array1::zeros(inst.b.len());
    let mut op = |x: &Array1<f64>, o: &mut Array1<f64>| inst.jt(x, o);
    let p = fixed_point::Params {
        rel_tol: 1e-8,
        max_iter: 1_000_000,
        contraction: Some(inst.q),
        symmetric: true,
        ..Default::default()
    };
    fixed_point::solve(&mut op, &inst.b, &mut v, &p, &mut ()).expect("fixed point")
}

fn solve_cg(inst: &Instance) -> ibau_core::Info {
    let mut v = Array1::zeros(inst.b.len());
    let mut jt = |x: &Array1<f64>, o: &mut Array1<f64>| inst.jt(x, o);
    let p = cg::Params {
        rel_tol: 1e-8,
        lambda_min: Some(1.0 - inst.q),
        ..Default::default()
    };
    cg::solve(&mut IdentityMinus(&mut jt), &inst.b, &mut v, &p, &mut ()).expect("cg")
}

fn bench(c: &mut Criterion) {
    for d in [10usize, 100, 1000, 4000] {
        let inst = Instance::new(d, 42);
        let fp = solve_fp(&inst);
        let cgi = solve_cg(&inst);
        println!(
            "d = {d}: fixed point {} applications ({} iterations), CG {} applications ({} iterations); dense oracle: 1 LU of a {d}×{d} matrix",
            fp.operator_applications, fp.iterations, cgi.operator_applications, cgi.iterations
        );
        let mut group = c.benchmark_group(format!("solve_d{d}"));
        if d >= 1000 {
            group.sample_size(10);
        }
        group.bench_function(BenchmarkId::new("fixed_point", d), |bch| {
            bch.iter(|| black_box(solve_fp(&inst)))
        });
        group.bench_function(BenchmarkId::new("cg", d), |bch| {
            bch.iter(|| black_box(solve_cg(&inst)))
        });
        let jt = inst.dense_jt();
        group.bench_function(BenchmarkId::new("dense_lu_incl_assembly", d), |bch| {
            bch.iter(|| black_box(dense::solve_implicit(&inst.dense_jt(), &inst.b).expect("dense")))
        });
        group.bench_function(BenchmarkId::new("dense_lu", d), |bch| {
            bch.iter(|| black_box(dense::solve_implicit(&jt, &inst.b).expect("dense")))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
