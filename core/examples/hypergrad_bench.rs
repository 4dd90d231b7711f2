//! The core's side of `bench/hypergrad/run`: builds the benchmark instances from a seed, writes
//! them as `.npy` for the JAXopt/torchopt script, computes high-accuracy reference hypergradients,
//! runs our variants (CG, PCG-Jacobi, PCG-Nyström, warm-started/reused trajectories, deflated CG
//! recycling Ritz vectors along the trajectory, accuracy-driven stopping) and prints one JSON
//! document. The ridge operator splits its passes over `W` across `--threads` threads (2 by
//! default: JAX's and torch's BLAS use both cores too); the solvers' vector work is
//! single-threaded.
//!
//! Problems (float64, matrix-free):
//! * `ridge-d{d}`: `G(w, λ) = ‖Xw − y‖²/(2n) + ½e^λ‖w‖²`, `E(w) = ‖X_v w − y_v‖²/(2m)`, with the
//!   low-rank-plus-diagonal design `X = [Z Wᵀ; diag(c)]` (`Z`: 2000 × 64 with decaying column
//!   scales, `W`: d × 64, `c_j² = n (1 + j)^{−1.5}`), so `Hv = Xᵀ(Xv)/n + e^λ v` costs `O(d)`
//!   and `d = 10⁵` fits; `e^λ₀ = λ_max(XᵀX/n)/999` gives `κ(H) ≤ 10³`.
//! * `quadratic-k{κ}`: `G(w, λ) = ½wᵀ(L + e^λ I)w − bᵀw`, `E(w) = ½‖w − w_t‖²`, `L` the 2-D
//!   Laplacian (5-point stencil, Dirichlet) on a 100 × 100 grid, `e^λ₀ = 8/(κ − 1)`.
//!
//! The hypergradient is `df/dλ = −e^λ w*ᵀ v*` with `H v* = ∇_wE(w*)`; `w*(λ_t)` along the
//! trajectory `λ_t = λ₀ − 0.01 t` is computed here once to 1e-13 and shared with the anchors, so
//! every method times the same thing: one implicit hypergradient given the inner solution.
//!
//! Run: `cargo run --release -p ibau-core --example hypergrad_bench -- --out DIR [--seed 0]
//! [--sizes 1000,10000,100000] [--steps 20] [--reps 5]`

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ibau_core::precond::{gaussian_probes, Identity, Jacobi, Nystrom, Preconditioner};
use ibau_core::solve::deflated_cg::{self, RecycleSpace, Ritz};
use ibau_core::solve::{cg, pcg};
use ibau_core::warm::Extrapolation;
use ndarray::linalg::general_mat_vec_mul;
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr_free::normal;

/// Standard normal numbers from `rand` without the `rand_distr` crate (Box–Muller).
mod rand_distr_free {
    use rand::Rng;
    pub fn normal<R: Rng>(rng: &mut R) -> f64 {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

const RANK: usize = 64;
const N_LOWRANK: usize = 2000;
const N_VAL: usize = 500;
const GRID: usize = 100;
const REL_TOL: f64 = 1e-8;
/// The ridge operator splits its passes over `W` across threads from this dimension on
/// (`--parallel-min-d`). Below it the split costs more than it saves: on this 2-vCPU machine,
/// 2026-12-03, the 20 CG solves of the trajectory at d = 10⁴ took 0.37–0.39 s on one thread,
/// 0.79 s split in two with spawned threads (`std::thread::scope`) and 0.55–0.59 s split with
/// a pool of spinning workers (rayon, tried and removed) — the split does not pay at 10⁴.
static PARALLEL_MIN_D: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(20_000);

// ---------------------------------------------------------------------------------------------
// Instances

/// A problem at one λ: `H = A₀ + μI` applied matrix-free, the inner solution, `∇_wE`.
trait Instance {
    fn name(&self) -> String;
    fn dim(&self) -> usize;
    /// `out ← A₀ x` (without the `μ` term).
    fn apply_a0(&self, x: &Array1<f64>, out: &mut Array1<f64>, work: &mut Work);
    /// `diag(A₀)`.
    fn diag_a0(&self) -> Vec<f64>;
    /// The right-hand side of the inner problem: `H w* = rhs` (`Xᵀy/n` or `b`).
    fn inner_rhs(&self) -> Array1<f64>;
    /// `∇_wE(w)`.
    fn grad_w(&self, w: &Array1<f64>, work: &mut Work) -> Array1<f64>;
    /// The arrays the anchors need.
    fn export(&self, dir: &Path) -> std::io::Result<()>;
    /// `μ₀ = e^{λ₀}`.
    fn mu0(&self) -> f64;
    /// An upper bound on κ(H) at λ₀ (by construction of μ₀).
    fn kappa(&self) -> f64;
    /// Whether a Nyström preconditioner helps the reference solves (fast spectral decay).
    fn low_rank_dominated(&self) -> bool {
        true
    }
}

#[derive(Default)]
struct Work {
    r1: Array1<f64>,
    r2: Array1<f64>,
    n1: Array1<f64>,
}

struct Ridge {
    d: usize,
    z: Array2<f64>,
    w: Array2<f64>,
    c: Array1<f64>,
    y1: Array1<f64>,
    y2: Array1<f64>,
    zv: Array2<f64>,
    yv: Array1<f64>,
    n: f64,
    mu0: f64,
    threads: usize,
}

impl Ridge {
    fn new(d: usize, seed: u64, threads: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (d as u64).wrapping_mul(0x9E37));
        let n = (N_LOWRANK + d) as f64;
        let sigma: Vec<f64> = (1..=RANK).map(|k| (4.0 / k as f64).sqrt()).collect();
        let zscale = (n / N_LOWRANK as f64).sqrt();
        let z = Array2::from_shape_fn((N_LOWRANK, RANK), |(_, k)| {
            zscale * sigma[k] * normal(&mut rng)
        });
        let w = Array2::from_shape_fn((d, RANK), |_| normal(&mut rng) / (d as f64).sqrt());
        let c = Array1::from_shape_fn(d, |j| (n * (1.0 + j as f64).powf(-1.5)).sqrt());
        let w_true = Array1::from_shape_fn(d, |_| normal(&mut rng));
        let mut work = Work::default();
        let mut y1 = Array1::zeros(N_LOWRANK);
        let mut y2 = Array1::zeros(d);
        let mut inst = Ridge {
            d,
            z,
            w,
            c,
            y1: Array1::zeros(N_LOWRANK),
            y2: Array1::zeros(d),
            zv: Array2::from_shape_fn((N_VAL, RANK), |(_, k)| sigma[k] * normal(&mut rng)),
            yv: Array1::zeros(N_VAL),
            n,
            mu0: 1.0,
            threads,
        };
        inst.x_apply(&w_true, &mut y1, &mut y2, &mut work);
        y1.mapv_inplace(|v| v + 0.5 * normal(&mut rng));
        y2.mapv_inplace(|v| v + 0.5 * normal(&mut rng));
        inst.y1 = y1;
        inst.y2 = y2;
        let mut t = Array1::zeros(RANK);
        general_mat_vec_mul(1.0, &inst.w.t(), &w_true, 0.0, &mut t);
        let mut yv = inst.zv.dot(&t);
        yv.mapv_inplace(|v| v + 0.5 * normal(&mut rng));
        inst.yv = yv;
        // λ_max(A₀) by power iteration (an under-estimate; 1.01× margin), μ₀ = λ_max/999.
        let lmax = power_iteration(&inst, 60, seed);
        inst.mu0 = 1.01 * lmax / 999.0;
        inst
    }
    /// `[u1; u2] = X v = [Z (Wᵀv); c ⊙ v]`.
    fn x_apply(&self, v: &Array1<f64>, u1: &mut Array1<f64>, u2: &mut Array1<f64>, wk: &mut Work) {
        if wk.r1.len() != RANK {
            wk.r1 = Array1::zeros(RANK);
            wk.r2 = Array1::zeros(RANK);
            wk.n1 = Array1::zeros(N_LOWRANK);
        }
        general_mat_vec_mul(1.0, &self.w.t(), v, 0.0, &mut wk.r1);
        general_mat_vec_mul(1.0, &self.z, &wk.r1, 0.0, u1);
        ndarray::Zip::from(u2)
            .and(&self.c)
            .and(v)
            .for_each(|o, &c, &x| *o = c * x);
    }
}

impl Instance for Ridge {
    fn name(&self) -> String {
        format!("ridge-d{}", self.d)
    }
    fn dim(&self) -> usize {
        self.d
    }
    fn apply_a0(&self, x: &Array1<f64>, out: &mut Array1<f64>, wk: &mut Work) {
        if wk.r1.len() != RANK {
            wk.r1 = Array1::zeros(RANK);
            wk.r2 = Array1::zeros(RANK);
            wk.n1 = Array1::zeros(N_LOWRANK);
        }
        // Xᵀ(Xx)/n = (W Zᵀ Z Wᵀ x + c² ⊙ x)/n, in the order the anchors' autodiff uses; the
        // loops run along rows of the row-major W and Z (contiguous, vectorised). The two passes
        // over W (d × 64, the memory-bound part) are split by rows over `threads` threads
        // (std::thread::scope) when d is large enough for that to pay; the 2000 × 64 products
        // with Z stay on one thread.
        let (w, z) = (self.w.as_slice().unwrap(), self.z.as_slice().unwrap());
        let xs = x.as_slice().unwrap();
        let parts = if self.d >= PARALLEL_MIN_D.load(std::sync::atomic::Ordering::Relaxed) {
            self.threads.max(1)
        } else {
            1
        };
        let rows = self.d.div_ceil(parts);
        let r1 = wk.r1.as_slice_mut().unwrap();
        r1.fill(0.0);
        let wtx = |w: &[f64], xs: &[f64], acc: &mut [f64]| {
            for (row, &xj) in w.chunks_exact(RANK).zip(xs) {
                for (a, &wjk) in acc.iter_mut().zip(row) {
                    *a += wjk * xj;
                }
            }
        };
        if parts == 1 {
            wtx(w, xs, r1);
        } else {
            let mut partial = vec![[0.0f64; RANK]; parts];
            std::thread::scope(|sc| {
                let mut chunks = w
                    .chunks(rows * RANK)
                    .zip(xs.chunks(rows))
                    .zip(partial.iter_mut());
                let first = chunks.next();
                for ((wc, xc), acc) in chunks {
                    sc.spawn(move || wtx(wc, xc, acc));
                }
                if let Some(((wc, xc), acc)) = first {
                    wtx(wc, xc, acc);
                }
            });
            for acc in &partial {
                for (o, a) in r1.iter_mut().zip(acc) {
                    *o += a;
                }
            }
        }
        let n1 = wk.n1.as_slice_mut().unwrap();
        for (o, row) in n1.iter_mut().zip(z.chunks_exact(RANK)) {
            *o = dot8(row, r1);
        }
        let r2 = wk.r2.as_slice_mut().unwrap();
        r2.fill(0.0);
        for (row, &ui) in z.chunks_exact(RANK).zip(n1.iter()) {
            for (acc, &zik) in r2.iter_mut().zip(row) {
                *acc += zik * ui;
            }
        }
        let r2: &[f64] = r2;
        let inv_n = 1.0 / self.n;
        let os = out.as_slice_mut().unwrap();
        let cs = self.c.as_slice().unwrap();
        let wr = |os: &mut [f64], w: &[f64], cs: &[f64], xs: &[f64]| {
            for (((o, row), &c), &xj) in os.iter_mut().zip(w.chunks_exact(RANK)).zip(cs).zip(xs) {
                let lowrank = dot8(row, r2);
                *o = (lowrank + c * c * xj) * inv_n;
            }
        };
        if parts == 1 {
            wr(os, w, cs, xs);
        } else {
            std::thread::scope(|sc| {
                let mut chunks = os
                    .chunks_mut(rows)
                    .zip(w.chunks(rows * RANK))
                    .zip(cs.chunks(rows))
                    .zip(xs.chunks(rows));
                let first = chunks.next();
                for (((oc, wc), cc), xc) in chunks {
                    sc.spawn(move || wr(oc, wc, cc, xc));
                }
                if let Some((((oc, wc), cc), xc)) = first {
                    wr(oc, wc, cc, xc);
                }
            });
        }
    }
    fn diag_a0(&self) -> Vec<f64> {
        // diag(W ZᵀZ Wᵀ)/n + c²/n.
        // Row by row (no d × r temporary): w_jᵀ (ZᵀZ) w_j.
        let ztz = self.z.t().dot(&self.z);
        let g = ztz.as_slice().unwrap();
        let w = self.w.as_slice().unwrap();
        let mut gw = vec![0.0; RANK];
        (0..self.d)
            .map(|j| {
                let wj = &w[j * RANK..(j + 1) * RANK];
                for (o, grow) in gw.iter_mut().zip(g.chunks_exact(RANK)) {
                    *o = dot8(grow, wj);
                }
                (dot8(wj, &gw) + self.c[j] * self.c[j]) / self.n
            })
            .collect()
    }
    fn inner_rhs(&self) -> Array1<f64> {
        let t = self.z.t().dot(&self.y1);
        let mut out = self.w.dot(&t);
        out += &(&self.c * &self.y2);
        out / self.n
    }
    fn grad_w(&self, w: &Array1<f64>, _wk: &mut Work) -> Array1<f64> {
        let t = self.w.t().dot(w);
        let resid = self.zv.dot(&t) - &self.yv;
        let s = self.zv.t().dot(&resid);
        self.w.dot(&s) / N_VAL as f64
    }
    fn export(&self, dir: &Path) -> std::io::Result<()> {
        write_npy(
            &dir.join("Z.npy"),
            &[N_LOWRANK, RANK],
            self.z.as_slice().unwrap(),
        )?;
        write_npy(
            &dir.join("W.npy"),
            &[self.d, RANK],
            self.w.as_slice().unwrap(),
        )?;
        write_npy(&dir.join("c.npy"), &[self.d], self.c.as_slice().unwrap())?;
        write_npy(
            &dir.join("y1.npy"),
            &[N_LOWRANK],
            self.y1.as_slice().unwrap(),
        )?;
        write_npy(&dir.join("y2.npy"), &[self.d], self.y2.as_slice().unwrap())?;
        write_npy(
            &dir.join("Zv.npy"),
            &[N_VAL, RANK],
            self.zv.as_slice().unwrap(),
        )?;
        write_npy(&dir.join("yv.npy"), &[N_VAL], self.yv.as_slice().unwrap())?;
        write_npy(&dir.join("n.npy"), &[1], &[self.n])
    }
    fn mu0(&self) -> f64 {
        self.mu0
    }
    fn kappa(&self) -> f64 {
        1000.0
    }
}

struct Quadratic {
    kappa: f64,
    b: Array1<f64>,
    w_t: Array1<f64>,
}

impl Quadratic {
    fn new(kappa: f64, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5151);
        let d = GRID * GRID;
        Quadratic {
            kappa,
            b: Array1::from_shape_fn(d, |_| normal(&mut rng)),
            w_t: Array1::from_shape_fn(d, |_| normal(&mut rng)),
        }
    }
}

impl Instance for Quadratic {
    fn name(&self) -> String {
        format!("quadratic-k{:.0e}", self.kappa)
    }
    fn dim(&self) -> usize {
        GRID * GRID
    }
    fn apply_a0(&self, x: &Array1<f64>, out: &mut Array1<f64>, _wk: &mut Work) {
        // 5-point Laplacian with zero Dirichlet boundary, row-major GRID × GRID.
        let (xs, os) = (x.as_slice().unwrap(), out.as_slice_mut().unwrap());
        let m = GRID;
        for i in 0..m {
            for j in 0..m {
                let k = i * m + j;
                let mut v = 4.0 * xs[k];
                if i > 0 {
                    v -= xs[k - m];
                }
                if i + 1 < m {
                    v -= xs[k + m];
                }
                if j > 0 {
                    v -= xs[k - 1];
                }
                if j + 1 < m {
                    v -= xs[k + 1];
                }
                os[k] = v;
            }
        }
    }
    fn diag_a0(&self) -> Vec<f64> {
        vec![4.0; self.dim()]
    }
    fn low_rank_dominated(&self) -> bool {
        false
    }
    fn kappa(&self) -> f64 {
        self.kappa
    }
    fn inner_rhs(&self) -> Array1<f64> {
        self.b.clone()
    }
    fn grad_w(&self, w: &Array1<f64>, _wk: &mut Work) -> Array1<f64> {
        w - &self.w_t
    }
    fn export(&self, dir: &Path) -> std::io::Result<()> {
        write_npy(
            &dir.join("b.npy"),
            &[self.dim()],
            self.b.as_slice().unwrap(),
        )?;
        write_npy(
            &dir.join("w_t.npy"),
            &[self.dim()],
            self.w_t.as_slice().unwrap(),
        )?;
        write_npy(&dir.join("grid.npy"), &[1], &[GRID as f64])
    }
    fn mu0(&self) -> f64 {
        // λ(L) ⊂ (0, 8): κ(L + μI) < (8 + μ)/μ = κ.
        8.0 / (self.kappa - 1.0)
    }
}

/// Dot product with eight independent accumulators (vectorises; RANK is a multiple of 8).
fn dot8(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f64 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f64>() + tail
}

fn power_iteration(inst: &dyn Instance, iters: usize, seed: u64) -> f64 {
    let d = inst.dim();
    let mut v = Array1::from(gaussian_probes(d, 1, seed).remove(0));
    let mut av = Array1::zeros(d);
    let mut wk = Work::default();
    let mut lambda = 0.0;
    for _ in 0..iters {
        let nv = v.dot(&v).sqrt();
        v /= nv;
        inst.apply_a0(&v, &mut av, &mut wk);
        lambda = v.dot(&av);
        std::mem::swap(&mut v, &mut av);
    }
    lambda
}

// ---------------------------------------------------------------------------------------------
// .npy and JSON

/// Writes a C-order little-endian float64 `.npy` (format version 1.0).
fn write_npy(path: &Path, shape: &[usize], data: &[f64]) -> std::io::Result<()> {
    assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    let shape_str = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape_str}, }}");
    // magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    for v in data {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()
}

/// Reads a float64 `.npy` written by [`write_npy`] (C order, little-endian), flattened.
fn read_npy(path: &Path) -> std::io::Result<Vec<f64>> {
    let bytes = fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a float64 .npy");
    if bytes.len() < 10 || &bytes[..8] != b"\x93NUMPY\x01\x00" {
        return Err(bad());
    }
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).map_err(|_| bad())?;
    if !header.contains("'<f8'") || !header.contains("'fortran_order': False") {
        return Err(bad());
    }
    Ok(bytes[10 + header_len..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

/// `problem scenario relative-error` per line: the accuracy the faster anchor achieved, which
/// the accuracy-driven variants then guarantee (certified) for the same problem and scenario.
fn read_targets(path: &Path) -> Result<Vec<(String, String, f64)>, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [name, scenario, rel] => rel
                    .parse::<f64>()
                    .map_err(|e| format!("{l}: {e}"))
                    .and_then(|r| {
                        if r.is_finite() && r > 0.0 {
                            Ok((name.to_string(), scenario.to_string(), r))
                        } else {
                            Err(format!("{l}: the target must be finite and > 0"))
                        }
                    }),
                _ => Err(format!("malformed line {l:?}")),
            }
        })
        .collect()
}

impl Setup {
    /// This setup with the target of (`name`, `scenario`) from `targets`, if one is given, but
    /// never below the resolution `1e-14·κ` of the reference (an anchor's error below it is
    /// rounding noise, and a certified target below it would ask for a residual under the
    /// rounding floor).
    fn with_target(
        &self,
        targets: &[(String, String, f64)],
        name: &str,
        scenario: &str,
        kappa: f64,
    ) -> Setup {
        let mut s = self.clone();
        if let Some((_, _, r)) = targets
            .iter()
            .find(|(n, sc, _)| n == name && sc == scenario)
        {
            s.target_rel = r.max(1e-14 * kappa);
        }
        s
    }
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:e}")
    } else {
        "null".into()
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// The operator `A = H = A₀ + μI` with an application counter and a clock.
struct HOp<'a> {
    inst: &'a dyn Instance,
    mu: f64,
    work: Work,
    count: usize,
    time: Duration,
}

impl<'a> HOp<'a> {
    fn new(inst: &'a dyn Instance, mu: f64) -> Self {
        HOp {
            inst,
            mu,
            work: Work::default(),
            count: 0,
            time: Duration::ZERO,
        }
    }
    fn apply(&mut self, x: &Array1<f64>, out: &mut Array1<f64>) {
        let t = Instant::now();
        self.inst.apply_a0(x, out, &mut self.work);
        out.scaled_add(self.mu, x);
        self.count += 1;
        self.time += t.elapsed();
    }
}

/// The result of one method on one problem and scenario.
#[derive(Default, Clone)]
struct Outcome {
    time: f64,
    applications: usize,
    build_applications: usize,
    operator_time: f64,
    precond_time: f64,
    max_rel_error: f64,
    max_cert_rel_bound: f64,
    precond_bytes: usize,
    warm: bool,
    reused: bool,
    termination: String,
    /// Time spent on the recycle space (refresh and extraction; deflated variants only).
    recycle_time: f64,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Cg,
    PcgIdentityTarget,
    PcgJacobi,
    PcgJacobiTarget,
    PcgNystrom,
    PcgNystromTarget,
    /// Deflated CG recycling Ritz vectors between the steps of a trajectory (M = I).
    Dcg,
    DcgTarget,
    /// Deflated CG with the Jacobi preconditioner.
    DcgJacobi,
    DcgJacobiTarget,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Cg => "cg",
            Variant::PcgIdentityTarget => "cg-target",
            Variant::PcgJacobi => "pcg-jacobi",
            Variant::PcgJacobiTarget => "pcg-jacobi-target",
            Variant::PcgNystrom => "pcg-nystrom",
            Variant::PcgNystromTarget => "pcg-nystrom-target",
            Variant::Dcg => "dcg",
            Variant::DcgTarget => "dcg-target",
            Variant::DcgJacobi => "dcg-jacobi",
            Variant::DcgJacobiTarget => "dcg-jacobi-target",
        }
    }
}

/// Everything the solves along one trajectory share.
struct Trajectory {
    mus: Vec<f64>,
    w_star: Vec<Array1<f64>>,
    reference: Vec<f64>,
}

fn reference_trajectory(inst: &dyn Instance, steps: usize, seed: u64) -> Trajectory {
    let d = inst.dim();
    let mus: Vec<f64> = (0..steps)
        .map(|t| inst.mu0() * (-0.01 * t as f64).exp())
        .collect();
    let rhs = inst.inner_rhs();
    let sketch = if inst.low_rank_dominated() {
        96.min(d)
    } else {
        1
    };
    let mut a0 = HOp::new(inst, 0.0);
    let mut a0_apply = |x: &Array1<f64>, o: &mut Array1<f64>| a0.apply(x, o);
    let probes: Vec<Array1<f64>> = gaussian_probes(d, sketch, seed ^ 0xABCD)
        .into_iter()
        .map(Array1::from)
        .collect();
    let mut ny = Nystrom::build(&mut a0_apply, probes, 0.0).expect("reference Nyström");
    let mut w_star = Vec::new();
    let mut reference = Vec::new();
    let mut work = Work::default();
    for &mu in &mus {
        ny.set_shift(mu).unwrap();
        let mut h = HOp::new(inst, mu);
        let mut h_apply = |x: &Array1<f64>, o: &mut Array1<f64>| h.apply(x, o);
        let p = pcg::Params {
            rel_tol: 1e-14,
            lambda_min: Some(mu),
            max_iter: 20_000,
            require_convergence: false,
            max_restarts: 10,
            ..Default::default()
        };
        let mut w = Array1::zeros(d);
        pcg::solve(&mut h_apply, &mut ny, &rhs, &mut w, &p, &mut ()).expect("inner solve");
        let gw = inst.grad_w(&w, &mut work);
        let mut v = Array1::zeros(d);
        pcg::solve(&mut h_apply, &mut ny, &gw, &mut v, &p, &mut ()).expect("reference solve");
        reference.push(-mu * w.dot(&v));
        w_star.push(w);
    }
    Trajectory {
        mus,
        w_star,
        reference,
    }
}

/// Settings of our variants.
#[derive(Clone)]
struct Setup {
    /// Nyström sketch size for a single cold solve (its cost is paid once per solve).
    sketch_cold: usize,
    /// Nyström sketch size along a trajectory (paid once, reused by every step).
    sketch: usize,
    target_rel: f64,
    seed: u64,
    /// Recycle-space size `k` and stored directions `m` of the deflated variants.
    recycle: usize,
    stored: usize,
    /// Which Ritz vectors the deflated variants keep on ridge (`smallest` on the Laplacian).
    keep_ridge: Ritz,
    /// Steps of a trajectory after which the recycle space is extracted anew (then kept).
    refine_steps: usize,
    /// Project only the initial guess onto the recycle space (init-CG) instead of every direction.
    init_cg: bool,
}

/// One hypergradient at step `t` with `variant`; `state` carries the warm start and the
/// preconditioner between steps of a trajectory.
struct State {
    history: Extrapolation<Array1<f64>>,
    /// The Jacobi preconditioner and the μ it was built or last shifted for (it holds only the
    /// inverse diagonal; along a trajectory it is shifted in place).
    jacobi: Option<(Jacobi, f64)>,
    nystrom: Option<Nystrom<Array1<f64>>>,
    /// The recycle space of the deflated variants and the μ of its last solve.
    space: RecycleSpace<Array1<f64>>,
    space_mu: Option<f64>,
}

impl State {
    fn new() -> Self {
        State {
            history: Extrapolation::with_order(2),
            jacobi: None,
            nystrom: None,
            space: RecycleSpace::new(),
            space_mu: None,
        }
    }
    /// The Jacobi preconditioner for `diag(A₀) + μ`: built (its cost in the time) unless one is
    /// kept from the last step, which is then shifted in place.
    fn jacobi(&mut self, inst: &dyn Instance, mu: f64, reuse: bool) -> &mut Jacobi {
        match &mut self.jacobi {
            Some((m, mu_m)) if reuse => {
                m.shift(mu - *mu_m).expect("jacobi shift");
                *mu_m = mu;
            }
            _ => {
                self.jacobi = None;
                let m = Jacobi::from_diagonal_vec(inst.diag_a0(), mu).expect("jacobi");
                self.jacobi = Some((m, mu));
            }
        }
        &mut self.jacobi.as_mut().unwrap().0
    }
}

#[allow(clippy::too_many_arguments)]
fn one_hypergradient(
    inst: &dyn Instance,
    traj: &Trajectory,
    t: usize,
    variant: Variant,
    setup: &Setup,
    state: &mut State,
    reuse: bool,
    out: &mut Outcome,
) {
    let start = Instant::now();
    let mu = traj.mus[t];
    let w = &traj.w_star[t];
    let mut work = Work::default();
    let grad_w = inst.grad_w(w, &mut work);
    let w_norm = w.dot(w).sqrt();
    let mut h = HOp::new(inst, mu);
    // The solvers run on H v = ∇_wE directly (the HVP is the operator, as in JAXopt/torchopt);
    // df/dλ = ∇_λE + (∂_λΦ)ᵀv = −e^λ wᵀv for Φ = w − ∇_wG, with ‖∂_λΦ‖ = e^λ‖w‖.
    let cross_norm = mu * w_norm;
    let lambda = mu.ln();
    let mut v = match (reuse, state.history.guess(lambda)) {
        (true, Some(v0)) => v0,
        _ => Array1::zeros(inst.dim()),
    };
    let target = setup.target_rel * traj.reference[t].abs();
    let mut pcg_params = pcg::Params {
        rel_tol: REL_TOL,
        lambda_min: Some(mu),
        max_iter: 100_000,
        ..Default::default()
    };
    let mut build_time = 0.0;
    let (info, precond_info, precond_time) = {
        let mut a = |x: &Array1<f64>, o: &mut Array1<f64>| h.apply(x, o);
        match variant {
            Variant::Cg => {
                let p = cg::Params {
                    rel_tol: REL_TOL,
                    lambda_min: Some(mu),
                    max_iter: 100_000,
                    ..Default::default()
                };
                let info = cg::solve(&mut a, &grad_w, &mut v, &p, &mut ()).expect("cg");
                (
                    info,
                    <Identity as Preconditioner<Array1<f64>>>::info(&Identity),
                    0.0,
                )
            }
            Variant::PcgIdentityTarget => {
                // Plain CG (M = I) with accuracy-driven stopping.
                pcg_params.target_error = Some(target);
                pcg_params.error_scale = cross_norm;
                let info = pcg::solve(&mut a, &mut Identity, &grad_w, &mut v, &pcg_params, &mut ())
                    .expect("cg-target");
                let pt = info.timing.map_or(0.0, |t| t.preconditioner.as_secs_f64());
                (
                    info,
                    <Identity as Preconditioner<Array1<f64>>>::info(&Identity),
                    pt,
                )
            }
            Variant::PcgJacobi | Variant::PcgJacobiTarget => {
                if variant == Variant::PcgJacobiTarget {
                    pcg_params.target_error = Some(target);
                    pcg_params.error_scale = cross_norm;
                }
                // diag(A₀) does not depend on μ: along a trajectory it is computed once and the
                // preconditioner shifted.
                let m = state.jacobi(inst, mu, reuse);
                let info = pcg::solve(&mut a, m, &grad_w, &mut v, &pcg_params, &mut ())
                    .expect("pcg-jacobi");
                let pt = info.timing.map_or(0.0, |t| t.preconditioner.as_secs_f64());
                (info, <Jacobi as Preconditioner<Array1<f64>>>::info(m), pt)
            }
            Variant::Dcg | Variant::DcgTarget | Variant::DcgJacobi | Variant::DcgJacobiTarget => {
                let mut p = deflated_cg::Params {
                    rel_tol: REL_TOL,
                    lambda_min: Some(mu),
                    max_iter: 100_000,
                    recycle: setup.recycle,
                    stored_directions: setup.stored,
                    keep: if inst.low_rank_dominated() {
                        setup.keep_ridge
                    } else {
                        Ritz::Smallest
                    },
                    refine: t < setup.refine_steps,
                    deflate_directions: !setup.init_cg,
                    ..Default::default()
                };
                if matches!(variant, Variant::DcgTarget | Variant::DcgJacobiTarget) {
                    p.target_error = Some(target);
                    p.error_scale = cross_norm;
                }
                // H_t = H_{t−1} + (μ_t − μ_{t−1})I: the space is shifted, no application.
                match (reuse, state.space_mu) {
                    (true, Some(prev)) => state.space.shift(mu - prev).expect("shift"),
                    _ => state.space = RecycleSpace::new(),
                }
                state.space_mu = Some(mu);
                let jacobi = matches!(variant, Variant::DcgJacobi | Variant::DcgJacobiTarget);
                let (info, pinfo) = if jacobi {
                    let State { jacobi, space, .. } = &mut *state;
                    let m = match jacobi {
                        Some((m, mu_m)) if reuse => {
                            m.shift(mu - *mu_m).expect("jacobi shift");
                            *mu_m = mu;
                            m
                        }
                        _ => {
                            let m = Jacobi::from_diagonal_vec(inst.diag_a0(), mu).expect("jacobi");
                            &mut jacobi.insert((m, mu)).0
                        }
                    };
                    let info = deflated_cg::solve(&mut a, m, &grad_w, &mut v, space, &p, &mut ())
                        .expect("dcg-jacobi");
                    (info, <Jacobi as Preconditioner<Array1<f64>>>::info(m))
                } else {
                    let info = deflated_cg::solve(
                        &mut a,
                        &mut Identity,
                        &grad_w,
                        &mut v,
                        &mut state.space,
                        &p,
                        &mut (),
                    )
                    .expect("dcg");
                    (
                        info,
                        <Identity as Preconditioner<Array1<f64>>>::info(&Identity),
                    )
                };
                let pt = info.timing.map_or(0.0, |t| t.preconditioner.as_secs_f64());
                out.recycle_time += state.space.report().time.as_secs_f64();
                // The recycle space is memory like a preconditioner's: report it with it.
                let mut pinfo = pinfo;
                pinfo.bytes += (state.space.report().vectors as usize) * 8 * inst.dim();
                (info, pinfo, pt)
            }
            Variant::PcgNystrom | Variant::PcgNystromTarget => {
                if variant == Variant::PcgNystromTarget {
                    // Accuracy-driven: stop once the certified hypergradient bound
                    // e^λ‖w‖·‖r‖/e^λ meets the target.
                    pcg_params.target_error = Some(target);
                    pcg_params.error_scale = cross_norm;
                }
                let mut build_apps = 0;
                if !(reuse && state.nystrom.is_some()) {
                    // Sketch A₀ = H − μI, so that the sketch serves every μ along a trajectory.
                    let d = inst.dim();
                    let probes: Vec<Array1<f64>> = gaussian_probes(
                        d,
                        if reuse {
                            setup.sketch
                        } else {
                            setup.sketch_cold
                        }
                        .min(d),
                        setup.seed,
                    )
                    .into_iter()
                    .map(Array1::from)
                    .collect();
                    let mut a0 = HOp::new(inst, mu);
                    let mut ab = |x: &Array1<f64>, o: &mut Array1<f64>| a0.apply(x, o);
                    state.nystrom = Some(Nystrom::build(&mut ab, probes, mu).expect("nystrom"));
                    build_apps = a0.count;
                    build_time = a0.time.as_secs_f64();
                }
                let ny = state.nystrom.as_mut().unwrap();
                if build_apps == 0 {
                    ny.set_shift(mu).unwrap();
                }
                let info = pcg::solve(&mut a, ny, &grad_w, &mut v, &pcg_params, &mut ())
                    .expect("pcg-nystrom");
                let pt = info.timing.map_or(0.0, |t| t.preconditioner.as_secs_f64());
                let mut pinfo = <Nystrom<Array1<f64>> as Preconditioner<Array1<f64>>>::info(ny);
                pinfo.build_applications = build_apps;
                (info, pinfo, pt)
            }
        }
    };
    let g = -mu * w.dot(&v);
    let elapsed = start.elapsed().as_secs_f64();
    let rel_err = (g - traj.reference[t]).abs() / traj.reference[t].abs();
    let cert = info
        .error_bound
        .filter(|b| b.is_certified())
        .map_or(f64::INFINITY, |b| {
            cross_norm * b.value / traj.reference[t].abs()
        });
    out.time += elapsed;
    out.applications += info.operator_applications + precond_info.build_applications;
    out.build_applications += precond_info.build_applications;
    out.operator_time += h.time.as_secs_f64() + build_time;
    out.precond_time += precond_time;
    out.max_rel_error = out.max_rel_error.max(rel_err);
    out.max_cert_rel_bound = out.max_cert_rel_bound.max(cert);
    out.precond_bytes = out.precond_bytes.max(precond_info.bytes);
    out.warm |= info.warm_started;
    out.reused |= precond_info.reused
        || (reuse
            && precond_info.build_applications == 0
            && variant != Variant::Cg
            && variant != Variant::PcgJacobi);
    out.termination = info.termination.to_string();
    state.history.push(lambda, &v);
}

fn cold(
    inst: &dyn Instance,
    traj: &Trajectory,
    variant: Variant,
    setup: &Setup,
    reps: usize,
) -> Outcome {
    let mut runs = Vec::new();
    for _ in 0..reps + 1 {
        let mut state = State::new();
        let mut o = Outcome::default();
        one_hypergradient(inst, traj, 0, variant, setup, &mut state, false, &mut o);
        runs.push(o);
    }
    // Drop the warm-up run; report the run with the median time.
    runs.remove(0);
    runs.sort_by(|a, b| a.time.total_cmp(&b.time));
    runs[runs.len() / 2].clone()
}

fn trajectory(
    inst: &dyn Instance,
    traj: &Trajectory,
    variant: Variant,
    setup: &Setup,
    reuse: bool,
) -> Outcome {
    let mut state = State::new();
    let mut o = Outcome::default();
    for t in 0..traj.mus.len() {
        one_hypergradient(inst, traj, t, variant, setup, &mut state, reuse, &mut o);
    }
    o
}

/// Peak resident memory above the level before one cold hypergradient, in bytes, measured by
/// resetting the kernel's high-water mark (`/proc/self/clear_refs`, Linux ≥ 4.0) and reading
/// `VmHWM`. `None` where that is not available.
fn peak_extra_memory(
    inst: &dyn Instance,
    traj: &Trajectory,
    variant: Variant,
    setup: &Setup,
) -> Option<u64> {
    // Build the preconditioner first: its size is reported separately.
    let mut state = State::new();
    let mut o = Outcome::default();
    one_hypergradient(inst, traj, 0, variant, setup, &mut state, false, &mut o);
    state.history = Extrapolation::with_order(2);
    fs::write("/proc/self/clear_refs", "5").ok()?;
    let before = proc_status_kb("VmRSS")?;
    let mut o = Outcome::default();
    one_hypergradient(inst, traj, 0, variant, setup, &mut state, true, &mut o);
    let peak = proc_status_kb("VmHWM")?;
    Some(peak.saturating_sub(before) * 1024)
}

/// `--memory-only`: the peak extra memory of one cold hypergradient per problem and variant, as
/// JSON. Run it with `MALLOC_MMAP_THRESHOLD_=4096` so that every vector of the solve is its own
/// mapping, returned on free (glibc), and the resident-set high-water mark sees each of them.
fn memory_report(instances: &[Box<dyn Instance>], setup: &Setup) {
    let mut json = String::from("{\"memory\": [");
    let mut first = true;
    for inst in instances {
        let inst: &dyn Instance = inst.as_ref();
        let w = inst.inner_rhs();
        let traj = Trajectory {
            mus: vec![inst.mu0()],
            w_star: vec![w],
            reference: vec![1.0],
        };
        for variant in [
            Variant::Cg,
            Variant::PcgJacobi,
            Variant::PcgNystrom,
            Variant::PcgNystromTarget,
        ] {
            let mem = peak_extra_memory(inst, &traj, variant, setup);
            if !first {
                json.push(',');
            }
            first = false;
            let _ = write!(
                json,
                "\n {{\"name\": \"{}\", \"method\": \"{}\", \"d\": {}, \"peak_extra_bytes\": {}}}",
                inst.name(),
                variant.name(),
                inst.dim(),
                mem.map_or("null".to_string(), |m| m.to_string())
            );
        }
    }
    json.push_str("\n]}\n");
    print!("{json}");
}

fn proc_status_kb(key: &str) -> Option<u64> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------

struct Args {
    out: PathBuf,
    seed: u64,
    sizes: Vec<usize>,
    steps: usize,
    reps: usize,
    sketch: usize,
    sketch_cold: usize,
    target_rel: f64,
    kappa_quadratic: f64,
    memory_only: bool,
    export_only: bool,
    reuse_references: bool,
    targets: Option<PathBuf>,
    recycle: usize,
    stored: usize,
    keep_ridge: Ritz,
    refine_steps: usize,
    init_cg: bool,
    threads: usize,
    /// Trajectory variants to run (all when empty; for tuning).
    only: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        out: PathBuf::new(),
        seed: 0,
        sizes: vec![1000, 10_000, 100_000],
        steps: 20,
        reps: 5,
        sketch: 32,
        sketch_cold: 16,
        target_rel: 1e-8,
        kappa_quadratic: 1e4,
        memory_only: false,
        export_only: false,
        reuse_references: false,
        targets: None,
        recycle: 8,
        stored: 16,
        // On ridge the bottom of the spectrum is a wide cluster just above e^λ (the diagonal
        // part), the top a few dozen outliers (the low-rank part): deflating the largest Ritz
        // vectors is what saves iterations there (260 vs 386 applications at d = 10⁵ in a tuning
        // run, against 369 for the smallest).
        keep_ridge: Ritz::Largest,
        refine_steps: usize::MAX,
        init_cg: false,
        threads: 2,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    let mut out = None;
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(val()?)),
            "--memory-only" => a.memory_only = true,
            "--export-only" => a.export_only = true,
            "--reuse-references" => a.reuse_references = true,
            "--targets" => a.targets = Some(PathBuf::from(val()?)),
            "--recycle" => a.recycle = val()?.parse().map_err(|e| format!("--recycle: {e}"))?,
            "--stored" => a.stored = val()?.parse().map_err(|e| format!("--stored: {e}"))?,
            "--init-cg" => a.init_cg = true,
            "--refine-steps" => {
                a.refine_steps = val()?.parse().map_err(|e| format!("--refine-steps: {e}"))?
            }
            "--threads" => a.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--parallel-min-d" => PARALLEL_MIN_D.store(
                val()?
                    .parse()
                    .map_err(|e| format!("--parallel-min-d: {e}"))?,
                std::sync::atomic::Ordering::Relaxed,
            ),
            "--only" => a.only = val()?.split(',').map(str::to_string).collect(),
            "--keep-ridge" => {
                a.keep_ridge = match val()?.as_str() {
                    "smallest" => Ritz::Smallest,
                    "largest" => Ritz::Largest,
                    other => return Err(format!("--keep-ridge: {other} (smallest or largest)")),
                }
            }
            "--seed" => a.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--steps" => a.steps = val()?.parse().map_err(|e| format!("--steps: {e}"))?,
            "--reps" => a.reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--sketch" => a.sketch = val()?.parse().map_err(|e| format!("--sketch: {e}"))?,
            "--sketch-cold" => {
                a.sketch_cold = val()?.parse().map_err(|e| format!("--sketch-cold: {e}"))?
            }
            "--target-rel" => {
                a.target_rel = val()?.parse().map_err(|e| format!("--target-rel: {e}"))?
            }
            "--kappa-quadratic" => {
                a.kappa_quadratic = val()?
                    .parse()
                    .map_err(|e| format!("--kappa-quadratic: {e}"))?
            }
            "--sizes" => {
                a.sizes = val()?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--sizes: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    a.out = match (out, a.memory_only) {
        (Some(o), _) => o,
        (None, true) => PathBuf::new(),
        (None, false) => return Err("--out DIR is required".into()),
    };
    if a.threads == 0 {
        return Err("--threads must be ≥ 1".into());
    }
    if a.steps == 0 || a.reps == 0 {
        return Err("--steps and --reps must be ≥ 1".into());
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hypergrad_bench: {e}");
            eprintln!("usage: hypergrad_bench --out DIR [--seed N] [--sizes 1000,10000,100000] [--steps 20] [--reps 5] [--sketch 32] [--sketch-cold 16] [--target-rel 1e-8] [--kappa-quadratic 1e4] [--recycle 8] [--stored 16] [--keep-ridge smallest|largest] [--threads 2] [--only NAME,...]");
            std::process::exit(2);
        }
    };
    let setup = Setup {
        sketch: args.sketch,
        sketch_cold: args.sketch_cold,
        target_rel: args.target_rel,
        seed: args.seed,
        recycle: args.recycle,
        stored: args.stored,
        keep_ridge: args.keep_ridge,
        refine_steps: args.refine_steps,
        init_cg: args.init_cg,
    };
    let mut instances: Vec<Box<dyn Instance>> = Vec::new();
    for &d in &args.sizes {
        instances.push(Box::new(Ridge::new(d, args.seed, args.threads)));
    }
    instances.push(Box::new(Quadratic::new(args.kappa_quadratic, args.seed)));

    if args.memory_only {
        memory_report(&instances, &setup);
        return;
    }
    let targets = match &args.targets {
        Some(path) => read_targets(path).unwrap_or_else(|e| {
            eprintln!("hypergrad_bench: --targets {}: {e}", path.display());
            std::process::exit(2)
        }),
        None => Vec::new(),
    };
    let mut json = format!("{{\"threads\": {}, \"problems\": [", args.threads);
    for (pi, inst) in instances.iter().enumerate() {
        let inst: &dyn Instance = inst.as_ref();
        let dir = args.out.join(inst.name());
        fs::create_dir_all(&dir).expect("create output directory");
        inst.export(&dir).expect("write .npy");
        let t0 = Instant::now();
        let d = inst.dim();
        let traj = if args.reuse_references {
            let mus = read_npy(&dir.join("mus.npy")).expect("mus.npy (run --export-only first)");
            let flat = read_npy(&dir.join("w_star.npy")).expect("w_star.npy");
            let reference = read_npy(&dir.join("reference.npy")).expect("reference.npy");
            assert_eq!(
                mus.len(),
                args.steps,
                "--steps differs from the exported data"
            );
            let w_star = flat
                .chunks_exact(d)
                .map(|c| Array1::from(c.to_vec()))
                .collect();
            Trajectory {
                mus,
                w_star,
                reference,
            }
        } else {
            let traj = reference_trajectory(inst, args.steps, args.seed);
            let flat: Vec<f64> = traj.w_star.iter().flat_map(|w| w.iter().copied()).collect();
            write_npy(&dir.join("w_star.npy"), &[args.steps, d], &flat).unwrap();
            write_npy(&dir.join("mus.npy"), &[args.steps], &traj.mus).unwrap();
            write_npy(&dir.join("reference.npy"), &[args.steps], &traj.reference).unwrap();
            traj
        };
        eprintln!(
            "{}: d = {d}, μ₀ = {:.3e}, references in {:.1} s",
            inst.name(),
            inst.mu0(),
            t0.elapsed().as_secs_f64()
        );
        if args.export_only {
            continue;
        }
        if pi > 0 {
            json.push(',');
        }
        let _ = write!(
            json,
            "\n {{\"name\": \"{}\", \"d\": {d}, \"mu0\": {}, \"kappa\": {}, \"steps\": {}, \"methods\": [",
            inst.name(),
            json_num(inst.mu0()),
            json_num(inst.kappa()),
            args.steps
        );
        let mut first = true;
        let mut emit = |json: &mut String,
                        scenario: &str,
                        method: &str,
                        o: &Outcome,
                        mem: Option<u64>| {
            if !first {
                json.push(',');
            }
            first = false;
            let _ = write!(
                json,
                "\n  {{\"scenario\": \"{scenario}\", \"method\": \"{method}\", \"time\": {}, \"applications\": {}, \"build_applications\": {}, \"operator_time\": {}, \"precond_time\": {}, \"max_rel_error\": {}, \"max_certified_rel_bound\": {}, \"precond_bytes\": {}, \"warm_start\": {}, \"reused\": {}, \"termination\": \"{}\", \"recycle_time\": {}, \"peak_extra_bytes\": {}}}",
                json_num(o.time),
                o.applications,
                o.build_applications,
                json_num(o.operator_time),
                json_num(o.precond_time),
                json_num(o.max_rel_error),
                json_num(o.max_cert_rel_bound),
                o.precond_bytes,
                o.warm,
                o.reused,
                o.termination,
                json_num(o.recycle_time),
                mem.map_or("null".to_string(), |m| m.to_string())
            );
        };
        for variant in [
            Variant::Cg,
            Variant::PcgIdentityTarget,
            Variant::PcgJacobi,
            Variant::PcgJacobiTarget,
            Variant::PcgNystrom,
            Variant::PcgNystromTarget,
        ] {
            if !args.only.is_empty() && !args.only.iter().any(|o| o == variant.name()) {
                continue;
            }
            let setup = setup.with_target(&targets, &inst.name(), "cold", inst.kappa());
            let o = cold(inst, &traj, variant, &setup, args.reps);
            let mem = None;
            eprintln!(
                "  cold {:<20} {:>9.4} s  {:>6} applications  rel. error {:.2e}",
                variant.name(),
                o.time,
                o.applications,
                o.max_rel_error
            );
            emit(&mut json, "cold", variant.name(), &o, mem);
        }
        let traj_variants: [(Variant, bool, &str); 11] = [
            (Variant::Cg, false, "cg"),
            (Variant::Cg, true, "cg-warm"),
            (Variant::PcgIdentityTarget, true, "cg-warm-target"),
            (Variant::PcgJacobi, true, "pcg-jacobi-warm"),
            (Variant::PcgJacobiTarget, true, "pcg-jacobi-warm-target"),
            (Variant::PcgNystrom, true, "pcg-nystrom-reuse-warm"),
            (
                Variant::PcgNystromTarget,
                true,
                "pcg-nystrom-reuse-warm-target",
            ),
            (Variant::Dcg, true, "dcg-recycle-warm"),
            (Variant::DcgTarget, true, "dcg-recycle-warm-target"),
            (Variant::DcgJacobi, true, "dcg-jacobi-recycle-warm"),
            (
                Variant::DcgJacobiTarget,
                true,
                "dcg-jacobi-recycle-warm-target",
            ),
        ];
        for (variant, reuse, name) in traj_variants {
            if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
                continue;
            }
            let setup = setup.with_target(&targets, &inst.name(), "trajectory", inst.kappa());
            let o = trajectory(inst, &traj, variant, &setup, reuse);
            eprintln!(
                "  traj {:<30} {:>9.4} s  {:>6} applications  max rel. error {:.2e}  (operator {:.4} s, recycle space {:.4} s)",
                name, o.time, o.applications, o.max_rel_error, o.operator_time, o.recycle_time
            );
            emit(&mut json, "trajectory", name, &o, None);
        }
        json.push_str("\n ]}");
    }
    json.push_str("\n]}\n");
    if !args.export_only {
        print!("{json}");
    }
}
