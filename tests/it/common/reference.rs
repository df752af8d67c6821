//! Independent f64 reference solvers for the mllib tests: normal equations, Newton's method, proximal gradient.
//!
//! Every solver here is written from the mathematical definition of its objective, with no
//! shared code with the engine under test, and is driven to (near) machine precision so that
//! its output can serve as ground truth for the iterative, distributed mllib optimisers.
//!
//! Conventions shared by all solvers:
//!
//! * `x` is a dense row-major design matrix: `x[i]` is row `i`, all rows have the same length
//!   `d`; `n = x.len()` must be at least 1.
//! * Losses are averaged over the `n` rows (weights are all 1).
//! * The intercept (when `fit_intercept` is true) is never penalised.
//! * Invalid input (ragged rows, non-finite values, labels out of range, negative penalties)
//!   and failure to converge make the solvers panic with a message; they never return NaN or
//!   infinity silently. A problem without a unique minimiser (e.g. separable data with no
//!   penalty, or collinear columns with `l2 = 0`) therefore panics instead of returning an
//!   arbitrary answer.
//! * Linear systems are solved by Cholesky factorisation with two rounds of iterative
//!   refinement; sums over rows use Neumaier-compensated summation.
//!
//! For best accuracy feed standardised (or at least well-scaled) features: the attainable
//! gradient norm is roughly `1e-16 * ||H|| * ||coefficients||`.

// When this file is used as `tests/it/common/reference.rs`, each integration test binary uses only
// some of these functions.
#![allow(dead_code)]

/// Gradient-norm tolerance of [`logistic_newton`].
const LOGISTIC_TOL: f64 = 1e-12;
/// Gradient-norm tolerance of [`multinomial_newton`].
const MULTINOMIAL_TOL: f64 = 1e-11;
/// Tolerance of [`elastic_net_logistic`] on the unit-step proximal-gradient residual
/// `||theta - prox(theta - grad f(theta))||_inf`, i.e. the change a proximal-gradient step
/// would still make.
const ELASTIC_NET_TOL: f64 = 1e-12;
const MAX_OUTER_ITER: usize = 500;

// ---------------------------------------------------------------------------------------------
// Public solvers
// ---------------------------------------------------------------------------------------------

/// Ridge / ordinary least squares via the normal equations.
///
/// Minimises `(1/(2n)) * sum_i (y_i - x_i.w - b)^2 + (l2/2) * ||w||^2` (the intercept `b` is not
/// penalised; `b = 0` when `fit_intercept` is false).
///
/// The intercept is handled exactly by centring: with column means `xbar` and `ybar`, `w`
/// solves `(Xc^T Xc / n + l2 I) w = Xc^T yc / n` and `b = ybar - xbar.w`. The system is solved
/// by Cholesky factorisation plus iterative refinement.
///
/// Returns the `d` coefficients followed by the intercept when `fit_intercept` (length `d + 1`,
/// otherwise `d`). Panics if `l2 < 0` or if the system is not numerically positive definite
/// (e.g. collinear columns with `l2 = 0`).
pub fn normal_equations(x: &[Vec<f64>], y: &[f64], l2: f64, fit_intercept: bool) -> Vec<f64> {
    let d = check_design(x, y.len());
    check_finite(y, "normal_equations: y");
    check_penalty(l2, "l2");
    let n = x.len() as f64;

    let (x_mean, y_mean) = if fit_intercept {
        let mut cols = vec![Sum::default(); d];
        let mut ys = Sum::default();
        for (row, &yi) in x.iter().zip(y) {
            for (c, &v) in cols.iter_mut().zip(row) {
                c.add(v);
            }
            ys.add(yi);
        }
        (
            cols.iter().map(|c| c.value() / n).collect::<Vec<_>>(),
            ys.value() / n,
        )
    } else {
        (vec![0.0; d], 0.0)
    };

    let mut gram = vec![vec![Sum::default(); d]; d];
    let mut rhs = vec![Sum::default(); d];
    let mut xc = vec![0.0; d];
    for (row, &yi) in x.iter().zip(y) {
        for ((c, &v), &m) in xc.iter_mut().zip(row).zip(&x_mean) {
            *c = v - m;
        }
        let yc = yi - y_mean;
        for (j, &xj) in xc.iter().enumerate() {
            rhs[j].add(xj * yc);
            for (g, &xk) in gram[j][..=j].iter_mut().zip(&xc) {
                g.add(xj * xk);
            }
        }
    }
    let mut a = vec![vec![0.0; d]; d];
    for j in 0..d {
        for k in 0..=j {
            let v = gram[j][k].value() / n;
            a[j][k] = v;
            a[k][j] = v;
        }
        a[j][j] += l2;
    }
    let b: Vec<f64> = rhs.iter().map(|s| s.value() / n).collect();
    let mut w = solve_spd(&a, &b, "normal_equations");
    if fit_intercept {
        let intercept = y_mean - dot(&x_mean, &w);
        w.push(intercept);
    }
    check_finite(&w, "normal_equations: result");
    w
}

/// L2-regularised binary logistic regression by Newton's method with a backtracking line search.
///
/// Labels must be exactly `0.0` or `1.0`. Minimises
/// `(1/n) * sum_i [log(1 + exp(z_i)) - y_i z_i] + (l2/2) * ||w||^2`, `z_i = x_i.w + b`
/// (intercept not penalised), until the Euclidean norm of the gradient is below `1e-12` and the
/// Newton step is negligible (`<= 1e-8 * (1 + ||theta||_inf)`).
///
/// Returns the `d` coefficients followed by the intercept when `fit_intercept`. Panics if the
/// iteration cannot reach the tolerance (e.g. separable data with `l2 = 0`, which has no
/// minimiser, or features so badly scaled that rounding dominates).
pub fn logistic_newton(x: &[Vec<f64>], y: &[f64], l2: f64, fit_intercept: bool) -> Vec<f64> {
    let problem = Binary::new(x, y, l2, fit_intercept, "logistic_newton");
    let theta = newton(
        &problem,
        vec![0.0; problem.dim()],
        LOGISTIC_TOL,
        "logistic_newton",
    );
    check_finite(&theta, "logistic_newton: result");
    theta
}

/// L2-regularised multinomial (softmax) logistic regression by Newton's method.
///
/// Labels are class indices `0..classes`. With `z_ik = w_k.x_i + b_k`, minimises
/// `(1/n) * sum_i [log(sum_k exp(z_ik)) - z_{i,y_i}] + (l2/2) * sum_k ||w_k||^2`
/// over all `classes` coefficient vectors (no reference class for the coefficients).
///
/// `l2 > 0` is required: it makes the coefficients unique (and forces `sum_k w_k = 0` at the
/// optimum). The unpenalised intercepts are only determined up to a common constant. They are
/// pinned exactly, without any extra ridge: Newton runs with `b_{K-1}` fixed at 0 (which
/// removes the single null direction of the Hessian), and after convergence the intercepts are
/// centred to sum to 0. The full Hessian of size `K(d+1)` is formed, so keep `d` small. Iterates
/// until the Euclidean norm of the full gradient (all `K(d+1)` parameters) is below `1e-11`
/// and the Newton step is negligible.
///
/// Returns `(coefficients, intercepts)` with `coefficients[k][j]` and `intercepts[k]`
/// (all zero when `fit_intercept` is false).
pub fn multinomial_newton(
    x: &[Vec<f64>],
    y: &[usize],
    classes: usize,
    l2: f64,
    fit_intercept: bool,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let problem = Multinomial::new(x, y, classes, l2, fit_intercept);
    // With b_{K-1} pinned, the dropped gradient entry equals minus the sum of the other
    // intercept entries, so ||full grad|| <= sqrt(K) * ||reduced grad||.
    let tol = if fit_intercept {
        MULTINOMIAL_TOL / (classes as f64).sqrt()
    } else {
        MULTINOMIAL_TOL
    };
    let theta = newton(
        &problem,
        vec![0.0; problem.dim()],
        tol,
        "multinomial_newton",
    );
    check_finite(&theta, "multinomial_newton: result");
    let d = problem.d;
    let p = problem.params_per_class();
    let coefficients: Vec<Vec<f64>> = (0..classes)
        .map(|k| theta[k * p..k * p + d].to_vec())
        .collect();
    let mut intercepts = vec![0.0; classes];
    if fit_intercept {
        for (k, b) in intercepts.iter_mut().enumerate().take(classes - 1) {
            *b = theta[k * p + d];
        }
        let mean = intercepts.iter().sum::<f64>() / classes as f64;
        for b in &mut intercepts {
            *b -= mean;
        }
    }
    (coefficients, intercepts)
}

/// Elastic-net regularised binary logistic regression (Spark ML's convention) by proximal
/// Newton.
///
/// Labels must be exactly `0.0` or `1.0`. Minimises
/// `(1/n) * sum_i logloss_i + reg_param * (alpha * ||w||_1 + (1 - alpha)/2 * ||w||_2^2)`
/// with `reg_param` = lambda >= 0 and `alpha` in `[0, 1]` (`alpha = 1` is the lasso); the
/// intercept is not penalised.
///
/// Each outer step minimises the quadratic model of the smooth part plus the exact L1 term by
/// cyclic coordinate descent (soft-thresholding), followed by a backtracking line search on the
/// full objective. Iteration stops when the unit-step proximal-gradient residual
/// `||theta - prox(theta - grad)||_inf` is below `1e-12` (and the proximal Newton step is
/// negligible, `<= 1e-8 * (1 + ||theta||_inf)`, which rejects problems without a minimiser).
/// On return, every coefficient that the soft-threshold maps to zero is exactly `0.0`.
///
/// Returns the `d` coefficients followed by the intercept when `fit_intercept`.
pub fn elastic_net_logistic(
    x: &[Vec<f64>],
    y: &[f64],
    reg_param: f64,
    alpha: f64,
    fit_intercept: bool,
) -> Vec<f64> {
    const WHAT: &str = "elastic_net_logistic";
    check_penalty(reg_param, "reg_param");
    assert!(
        (0.0..=1.0).contains(&alpha),
        "{WHAT}: alpha must be in [0, 1], got {alpha}"
    );
    let smooth = Binary::new(x, y, reg_param * (1.0 - alpha), fit_intercept, WHAT);
    let l1 = reg_param * alpha;
    let d = smooth.d;
    let m = smooth.dim();
    // L1 weight of each parameter: the intercept (last, when present) is not penalised.
    let l1w: Vec<f64> = (0..m).map(|j| if j < d { l1 } else { 0.0 }).collect();
    let objective = |theta: &[f64]| -> f64 {
        smooth.value(theta) + l1w.iter().zip(theta).map(|(w, t)| w * t.abs()).sum::<f64>()
    };

    let mut theta = vec![0.0; m];
    let mut f = objective(&theta);
    let mut g = smooth.gradient(&theta);
    for _ in 0..MAX_OUTER_ITER {
        let res = prox_residual(&theta, &g, &l1w);
        let h = smooth.hessian(&theta);
        let u = prox_newton_subproblem(&theta, &g, &h, &l1w, WHAT);
        let step: Vec<f64> = u.iter().zip(&theta).map(|(a, b)| a - b).collect();
        // As in `newton`: also require a negligible step (no minimiser => steps stay large).
        if res < ELASTIC_NET_TOL && small_step(&step, &theta) {
            // Snap to the soft-threshold's exact zeros (each changes by at most `res`).
            for ((t, gj), w) in theta.iter_mut().zip(&g).zip(&l1w) {
                if *w > 0.0 && soft_threshold(*t - gj, *w) == 0.0 {
                    *t = 0.0;
                }
            }
            check_finite(&theta, "elastic_net_logistic: result");
            return theta;
        }
        // Predicted decrease (Tseng & Yun): grad.d + l1(||u||_1 - ||theta||_1) <= -d^T H d.
        let delta = dot(&g, &step)
            + l1w
                .iter()
                .zip(u.iter().zip(&theta))
                .map(|(w, (a, b))| w * (a.abs() - b.abs()))
                .sum::<f64>();
        let mut t = 1.0;
        loop {
            let cand: Vec<f64> = if t == 1.0 {
                u.clone()
            } else {
                theta.iter().zip(&step).map(|(a, s)| a + t * s).collect()
            };
            let fc = objective(&cand);
            let gc = smooth.gradient(&cand);
            let armijo = fc <= f + 1e-4 * t * delta.min(0.0);
            // Close to the optimum, objective differences drown in rounding; accept a step
            // that does not measurably increase the objective and reduces the residual.
            let near = fc <= f + 8.0 * f64::EPSILON * (1.0 + f.abs())
                && prox_residual(&cand, &gc, &l1w) < res;
            if armijo || near {
                theta = cand;
                f = fc;
                g = gc;
                break;
            }
            t *= 0.5;
            assert!(
                t > 1e-12,
                "{WHAT}: line search failed at proximal residual {res:e} (tolerance \
                 {ELASTIC_NET_TOL:e}); rescale the features"
            );
        }
    }
    panic!("{WHAT}: no convergence in {MAX_OUTER_ITER} proximal Newton iterations");
}

// ---------------------------------------------------------------------------------------------
// Smooth objectives
// ---------------------------------------------------------------------------------------------

/// A twice-differentiable objective for [`newton`].
trait Smooth {
    fn dim(&self) -> usize;
    fn value(&self, theta: &[f64]) -> f64;
    fn gradient(&self, theta: &[f64]) -> Vec<f64>;
    fn hessian(&self, theta: &[f64]) -> Vec<Vec<f64>>;
}

/// Binary logistic loss plus `(l2/2)||w||^2`; parameters are `[w..., b]` (b only with intercept).
struct Binary<'a> {
    x: &'a [Vec<f64>],
    y: &'a [f64],
    d: usize,
    l2: f64,
    fit_intercept: bool,
}

impl<'a> Binary<'a> {
    fn new(x: &'a [Vec<f64>], y: &'a [f64], l2: f64, fit_intercept: bool, what: &str) -> Self {
        let d = check_design(x, y.len());
        check_penalty(l2, "l2");
        for (i, &v) in y.iter().enumerate() {
            assert!(
                v == 0.0 || v == 1.0,
                "{what}: label y[{i}] = {v} is not 0 or 1"
            );
        }
        Binary {
            x,
            y,
            d,
            l2,
            fit_intercept,
        }
    }

    fn margin(&self, theta: &[f64], row: &[f64]) -> f64 {
        let z = dot(row, &theta[..self.d]);
        if self.fit_intercept {
            z + theta[self.d]
        } else {
            z
        }
    }

    fn penalty(&self, theta: &[f64]) -> f64 {
        0.5 * self.l2 * theta[..self.d].iter().map(|w| w * w).sum::<f64>()
    }
}

impl Smooth for Binary<'_> {
    fn dim(&self) -> usize {
        self.d + usize::from(self.fit_intercept)
    }

    fn value(&self, theta: &[f64]) -> f64 {
        let mut loss = Sum::default();
        for (row, &yi) in self.x.iter().zip(self.y) {
            let z = self.margin(theta, row);
            loss.add(softplus(z) - yi * z);
        }
        loss.value() / self.x.len() as f64 + self.penalty(theta)
    }

    fn gradient(&self, theta: &[f64]) -> Vec<f64> {
        let mut acc = vec![Sum::default(); self.dim()];
        for (row, &yi) in self.x.iter().zip(self.y) {
            let r = sigmoid(self.margin(theta, row)) - yi;
            for (a, &v) in acc.iter_mut().zip(row) {
                a.add(r * v);
            }
            if self.fit_intercept {
                acc[self.d].add(r);
            }
        }
        let n = self.x.len() as f64;
        let mut g: Vec<f64> = acc.iter().map(|a| a.value() / n).collect();
        for (gj, &wj) in g.iter_mut().zip(&theta[..self.d]) {
            *gj += self.l2 * wj;
        }
        g
    }

    fn hessian(&self, theta: &[f64]) -> Vec<Vec<f64>> {
        let m = self.dim();
        let mut h = vec![vec![0.0; m]; m];
        let mut xt = vec![1.0; m];
        for row in self.x {
            xt[..self.d].copy_from_slice(row);
            let p = sigmoid(self.margin(theta, row));
            let s = p * (1.0 - p);
            for (j, hj) in h.iter_mut().enumerate() {
                let sj = s * xt[j];
                for (hjk, &xk) in hj[..=j].iter_mut().zip(&xt) {
                    *hjk += sj * xk;
                }
            }
        }
        finish_hessian(&mut h, self.x.len() as f64, self.l2, |j| j < self.d);
        h
    }
}

/// Softmax loss plus `(l2/2) sum_k ||w_k||^2`. Parameter layout: class `k` owns
/// `theta[k*p .. k*p + d]` (coefficients) and, with an intercept, `theta[k*p + d]`, where
/// `p = d + 1` (or `d`). The last class's intercept is pinned to 0 and not part of `theta`.
struct Multinomial<'a> {
    x: &'a [Vec<f64>],
    y: &'a [usize],
    classes: usize,
    d: usize,
    l2: f64,
    fit_intercept: bool,
}

impl<'a> Multinomial<'a> {
    fn new(
        x: &'a [Vec<f64>],
        y: &'a [usize],
        classes: usize,
        l2: f64,
        fit_intercept: bool,
    ) -> Self {
        let d = check_design(x, y.len());
        assert!(
            classes >= 2,
            "multinomial_newton: need at least 2 classes, got {classes}"
        );
        assert!(
            l2.is_finite() && l2 > 0.0,
            "multinomial_newton: l2 must be > 0 for unique coefficients, got {l2}"
        );
        for (i, &c) in y.iter().enumerate() {
            assert!(
                c < classes,
                "multinomial_newton: label y[{i}] = {c} is not below classes = {classes}"
            );
        }
        Multinomial {
            x,
            y,
            classes,
            d,
            l2,
            fit_intercept,
        }
    }

    fn params_per_class(&self) -> usize {
        self.d + usize::from(self.fit_intercept)
    }

    /// Class scores `z_k` for one row (pinned last intercept = 0).
    fn scores(&self, theta: &[f64], row: &[f64]) -> Vec<f64> {
        let p = self.params_per_class();
        (0..self.classes)
            .map(|k| {
                let z = dot(row, &theta[k * p..k * p + self.d]);
                if self.fit_intercept && k + 1 < self.classes {
                    z + theta[k * p + self.d]
                } else {
                    z
                }
            })
            .collect()
    }
}

impl Smooth for Multinomial<'_> {
    fn dim(&self) -> usize {
        self.classes * self.params_per_class() - usize::from(self.fit_intercept)
    }

    fn value(&self, theta: &[f64]) -> f64 {
        let mut loss = Sum::default();
        for (row, &yi) in self.x.iter().zip(self.y) {
            let z = self.scores(theta, row);
            loss.add(log_sum_exp(&z) - z[yi]);
        }
        let p = self.params_per_class();
        let penalty: f64 = (0..self.classes)
            .map(|k| {
                theta[k * p..k * p + self.d]
                    .iter()
                    .map(|w| w * w)
                    .sum::<f64>()
            })
            .sum();
        loss.value() / self.x.len() as f64 + 0.5 * self.l2 * penalty
    }

    fn gradient(&self, theta: &[f64]) -> Vec<f64> {
        let p = self.params_per_class();
        let m = self.dim();
        let mut acc = vec![Sum::default(); self.classes * p];
        for (row, &yi) in self.x.iter().zip(self.y) {
            let prob = softmax(&self.scores(theta, row));
            for (k, &pk) in prob.iter().enumerate() {
                let r = pk - if k == yi { 1.0 } else { 0.0 };
                let block = &mut acc[k * p..(k + 1) * p];
                for (a, &v) in block.iter_mut().zip(row) {
                    a.add(r * v);
                }
                if self.fit_intercept {
                    block[self.d].add(r);
                }
            }
        }
        let n = self.x.len() as f64;
        let mut g: Vec<f64> = acc[..m].iter().map(|a| a.value() / n).collect();
        for k in 0..self.classes {
            for j in k * p..k * p + self.d {
                g[j] += self.l2 * theta[j];
            }
        }
        g
    }

    fn hessian(&self, theta: &[f64]) -> Vec<Vec<f64>> {
        let p = self.params_per_class();
        let full = self.classes * p;
        let mut h = vec![vec![0.0; full]; full];
        let mut xt = vec![1.0; p];
        for row in self.x {
            xt[..self.d].copy_from_slice(row);
            let prob = softmax(&self.scores(theta, row));
            for k in 0..self.classes {
                for l in 0..=k {
                    let c = prob[k] * (if k == l { 1.0 } else { 0.0 } - prob[l]);
                    for a in 0..p {
                        let ca = c * xt[a];
                        let hr = &mut h[k * p + a];
                        for (hv, &xb) in hr[l * p..(l + 1) * p].iter_mut().zip(&xt) {
                            *hv += ca * xb;
                        }
                    }
                }
            }
        }
        // Every entry on or below the diagonal has been accumulated (block rows k >= l).
        finish_hessian(&mut h, self.x.len() as f64, self.l2, |j| j % p < self.d);
        // Drop the pinned last intercept.
        let m = self.dim();
        h.truncate(m);
        for r in &mut h {
            r.truncate(m);
        }
        h
    }
}

/// Scale the lower triangle (diagonal included) by `1/n`, mirror it into the upper triangle,
/// and add `l2` to the diagonal entries of the penalised parameters.
fn finish_hessian(h: &mut [Vec<f64>], n: f64, l2: f64, penalised: impl Fn(usize) -> bool) {
    for r in 0..h.len() {
        let (above, rest) = h.split_at_mut(r);
        let row = &mut rest[0];
        for (c, upper_row) in above.iter_mut().enumerate() {
            row[c] /= n;
            upper_row[r] = row[c];
        }
        row[r] /= n;
        if penalised(r) {
            row[r] += l2;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Optimisers
// ---------------------------------------------------------------------------------------------

/// Damped Newton's method: full Newton step with Armijo backtracking, until `||grad|| < tol`.
fn newton<P: Smooth>(problem: &P, mut theta: Vec<f64>, tol: f64, what: &str) -> Vec<f64> {
    let mut f = problem.value(&theta);
    let mut g = problem.gradient(&theta);
    for _ in 0..MAX_OUTER_ITER {
        let gnorm = norm2(&g);
        assert!(gnorm.is_finite(), "{what}: non-finite gradient");
        let h = problem.hessian(&theta);
        let neg_g: Vec<f64> = g.iter().map(|v| -v).collect();
        let step = solve_spd(&h, &neg_g, what);
        // Converged only if the Newton step is negligible too: on separable data without a
        // penalty the gradient decays towards 0 while the steps stay O(1) (no minimiser).
        if gnorm < tol && small_step(&step, &theta) {
            return theta;
        }
        let slope = dot(&g, &step); // = -step^T H step < 0
        let mut t = 1.0;
        loop {
            let cand: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a + t * s).collect();
            let fc = problem.value(&cand);
            let gc = problem.gradient(&cand);
            let armijo = fc <= f + 1e-4 * t * slope.min(0.0);
            // Near the optimum the decrease (~ gnorm^2) is below the rounding of f; accept a
            // step that does not measurably increase f and reduces the gradient.
            let near = fc <= f + 8.0 * f64::EPSILON * (1.0 + f.abs()) && norm2(&gc) < gnorm;
            if armijo || near {
                theta = cand;
                f = fc;
                g = gc;
                break;
            }
            t *= 0.5;
            assert!(
                t > 1e-12,
                "{what}: line search failed at gradient norm {gnorm:e} (tolerance {tol:e}); \
                 the problem may have no minimiser or be badly scaled"
            );
        }
    }
    panic!(
        "{what}: no convergence in {MAX_OUTER_ITER} Newton iterations (gradient norm {:e})",
        norm2(&g)
    );
}

/// Minimise `g.(u - theta) + 1/2 (u - theta)^T H (u - theta) + sum_j l1w_j |u_j|` over `u` by
/// cyclic coordinate descent with soft-thresholding.
fn prox_newton_subproblem(
    theta: &[f64],
    g: &[f64],
    h: &[Vec<f64>],
    l1w: &[f64],
    what: &str,
) -> Vec<f64> {
    let m = theta.len();
    let mut u = theta.to_vec();
    let mut hd = vec![0.0; m]; // H (u - theta)
    for _sweep in 0..10_000 {
        let mut max_change: f64 = 0.0;
        for j in 0..m {
            let a = h[j][j];
            assert!(
                a > 0.0 && a.is_finite(),
                "{what}: zero curvature in coordinate {j} (constant-zero feature?)"
            );
            let dj = u[j] - theta[j];
            // Model restricted to coordinate j, as a function of u_j:
            // 1/2 a (u_j - theta_j)^2 + c (u_j - theta_j) + l1w_j |u_j|.
            let c = g[j] + hd[j] - a * dj;
            let new_u = soft_threshold(a * theta[j] - c, l1w[j]) / a;
            let change = new_u - u[j];
            if change != 0.0 {
                for (hdi, row) in hd.iter_mut().zip(h) {
                    *hdi += row[j] * change;
                }
                u[j] = new_u;
                max_change = max_change.max(change.abs());
            }
        }
        let scale = 1.0 + u.iter().fold(0.0_f64, |acc, v| acc.max(v.abs()));
        if max_change <= 1e-15 * scale {
            break;
        }
    }
    u
}

/// `||step||_inf <= 1e-8 * (1 + ||theta||_inf)`.
fn small_step(step: &[f64], theta: &[f64]) -> bool {
    let inf = |v: &[f64]| v.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
    inf(step) <= 1e-8 * (1.0 + inf(theta))
}

/// `||theta - prox(theta - grad)||_inf` for the weighted L1 prox with unit step.
fn prox_residual(theta: &[f64], grad: &[f64], l1w: &[f64]) -> f64 {
    theta
        .iter()
        .zip(grad)
        .zip(l1w)
        .map(|((t, g), w)| (t - soft_threshold(t - g, *w)).abs())
        .fold(0.0, f64::max)
}

// ---------------------------------------------------------------------------------------------
// Linear algebra and numerics
// ---------------------------------------------------------------------------------------------

/// Solve `a x = b` for symmetric positive definite `a` (Cholesky + 2 refinement rounds).
fn solve_spd(a: &[Vec<f64>], b: &[f64], what: &str) -> Vec<f64> {
    let l = cholesky(a, what);
    let mut x = cholesky_substitute(&l, b);
    for _ in 0..2 {
        let r: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(row, &bi)| {
                let mut s = Sum::default();
                s.add(bi);
                for (aij, xj) in row.iter().zip(&x) {
                    s.add(-aij * xj);
                }
                s.value()
            })
            .collect();
        let dx = cholesky_substitute(&l, &r);
        for (xi, di) in x.iter_mut().zip(&dx) {
            *xi += di;
        }
    }
    check_finite(&x, what);
    x
}

/// Lower-triangular Cholesky factor; panics unless the matrix is numerically positive definite.
fn cholesky(a: &[Vec<f64>], what: &str) -> Vec<Vec<f64>> {
    let m = a.len();
    let mut l = vec![vec![0.0; m]; m];
    for j in 0..m {
        assert_eq!(a[j].len(), m, "{what}: matrix is not square");
        let pivot = a[j][j] - l[j][..j].iter().map(|v| v * v).sum::<f64>();
        assert!(
            pivot.is_finite() && pivot > 1e-13 * a[j][j].abs() && pivot > 0.0,
            "{what}: matrix not numerically positive definite (pivot {j} = {pivot:e}); \
             collinear features, or separable classes, without a penalty?"
        );
        let ljj = pivot.sqrt();
        l[j][j] = ljj;
        for i in j + 1..m {
            let s = a[i][j] - dot(&l[i][..j], &l[j][..j]);
            l[i][j] = s / ljj;
        }
    }
    l
}

/// Solve `L L^T x = b` given the Cholesky factor `L`.
fn cholesky_substitute(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let m = b.len();
    let mut z = vec![0.0; m];
    for i in 0..m {
        z[i] = (b[i] - dot(&l[i][..i], &z[..i])) / l[i][i];
    }
    let mut x = vec![0.0; m];
    for i in (0..m).rev() {
        let s: f64 = (i + 1..m).map(|k| l[k][i] * x[k]).sum();
        x[i] = (z[i] - s) / l[i][i];
    }
    x
}

/// Neumaier-compensated running sum.
#[derive(Clone, Copy, Default)]
struct Sum {
    sum: f64,
    comp: f64,
}

impl Sum {
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.comp += (self.sum - t) + v;
        } else {
            self.comp += (v - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(self) -> f64 {
        self.sum + self.comp
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm2(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `log(1 + exp(z))` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// `1 / (1 + exp(-z))` without overflow.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn log_sum_exp(z: &[f64]) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn soft_threshold(v: f64, t: f64) -> f64 {
    if v > t {
        v - t
    } else if v < -t {
        v + t
    } else {
        0.0
    }
}

/// Validate a design matrix against the label count; returns the number of features.
fn check_design(x: &[Vec<f64>], n_labels: usize) -> usize {
    assert!(!x.is_empty(), "design matrix has no rows");
    assert_eq!(
        x.len(),
        n_labels,
        "design matrix has {} rows but there are {n_labels} labels",
        x.len()
    );
    let d = x[0].len();
    for (i, row) in x.iter().enumerate() {
        assert_eq!(
            row.len(),
            d,
            "row {i} has {} features, expected {d}",
            row.len()
        );
        check_finite(row, "design matrix");
    }
    d
}

fn check_finite(v: &[f64], what: &str) {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        panic!("{what}: non-finite value {} at index {i}", v[i]);
    }
}

fn check_penalty(v: f64, name: &str) {
    assert!(
        v.is_finite() && v >= 0.0,
        "{name} must be finite and >= 0, got {v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: a tiny deterministic generator for test data.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in (0, 1).
        fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    /// `n x d` design with non-centred, differently scaled Gaussian columns.
    fn design(rng: &mut Rng, n: usize, d: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| {
                (0..d)
                    .map(|j| 0.5 * j as f64 + (1.0 + 0.3 * j as f64) * rng.normal())
                    .collect()
            })
            .collect()
    }

    /// Binary labels drawn from a logistic model (so the data are not separable).
    fn binary_labels(rng: &mut Rng, x: &[Vec<f64>], w: &[f64], b: f64) -> Vec<f64> {
        x.iter()
            .map(|row| {
                let p = sigmoid(dot(row, w) + b);
                if rng.uniform() < p {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn multiclass_labels(rng: &mut Rng, x: &[Vec<f64>], w: &[Vec<f64>], b: &[f64]) -> Vec<usize> {
        x.iter()
            .map(|row| {
                let z: Vec<f64> = w.iter().zip(b).map(|(wk, bk)| dot(row, wk) + bk).collect();
                let p = softmax(&z);
                let u = rng.uniform();
                let mut cum = 0.0;
                for (k, pk) in p.iter().enumerate() {
                    cum += pk;
                    if u < cum {
                        return k;
                    }
                }
                p.len() - 1
            })
            .collect()
    }

    /// Split `[w..., b]` into coefficients and intercept (0 without intercept).
    fn split(theta: &[f64], d: usize) -> (&[f64], f64) {
        (&theta[..d], theta.get(d).copied().unwrap_or(0.0))
    }

    /// Straightforward (uncompensated) logistic gradient: loss part (d entries) and intercept part.
    fn naive_logistic_loss_gradient(
        x: &[Vec<f64>],
        y: &[f64],
        w: &[f64],
        b: f64,
    ) -> (Vec<f64>, f64) {
        let n = x.len() as f64;
        let mut gw = vec![0.0; w.len()];
        let mut gb = 0.0;
        for (row, yi) in x.iter().zip(y) {
            let z: f64 = row.iter().zip(w).map(|(a, c)| a * c).sum::<f64>() + b;
            let r = 1.0 / (1.0 + (-z).exp()) - yi;
            for (g, v) in gw.iter_mut().zip(row) {
                *g += r * v / n;
            }
            gb += r / n;
        }
        (gw, gb)
    }

    fn naive_logistic_objective(x: &[Vec<f64>], y: &[f64], w: &[f64], b: f64, l2: f64) -> f64 {
        let n = x.len() as f64;
        let loss: f64 = x
            .iter()
            .zip(y)
            .map(|(row, yi)| {
                let z: f64 = row.iter().zip(w).map(|(a, c)| a * c).sum::<f64>() + b;
                (1.0 + z.exp()).ln() - yi * z
            })
            .sum::<f64>()
            / n;
        loss + 0.5 * l2 * w.iter().map(|v| v * v).sum::<f64>()
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    // ----- normal equations ------------------------------------------------------------------

    #[test]
    fn normal_equations_recover_exact_coefficients_with_intercept() {
        let mut rng = Rng(1);
        let x = design(&mut rng, 40, 3);
        let w = [1.5, -2.0, 0.25];
        let b = 3.0;
        let y: Vec<f64> = x.iter().map(|r| dot(r, &w) + b).collect();
        let theta = normal_equations(&x, &y, 0.0, true);
        assert_eq!(theta.len(), 4);
        assert!(
            max_abs_diff(&theta, &[1.5, -2.0, 0.25, 3.0]) < 1e-12,
            "{theta:?}"
        );
    }

    #[test]
    fn normal_equations_recover_exact_coefficients_without_intercept() {
        let mut rng = Rng(2);
        let x = design(&mut rng, 25, 4);
        let w = [-0.5, 4.0, 0.0, 1.0 / 3.0];
        let y: Vec<f64> = x.iter().map(|r| dot(r, &w)).collect();
        let theta = normal_equations(&x, &y, 0.0, false);
        assert_eq!(theta.len(), 4);
        assert!(max_abs_diff(&theta, &w) < 1e-12, "{theta:?}");
        // Fitting an intercept on data without one must give a zero intercept.
        let with_b = normal_equations(&x, &y, 0.0, true);
        assert!(max_abs_diff(&with_b[..4], &w) < 1e-12 && with_b[4].abs() < 1e-12);
    }

    #[test]
    fn ridge_gradient_vanishes() {
        let mut rng = Rng(3);
        let x = design(&mut rng, 60, 5);
        let y: Vec<f64> = x
            .iter()
            .map(|r| 2.0 - r[0] + 0.5 * r[3] + rng.normal())
            .collect();
        for &(l2, fit_intercept) in &[(0.3, true), (0.3, false), (0.0, true), (2.5, true)] {
            let theta = normal_equations(&x, &y, l2, fit_intercept);
            let (w, b) = split(&theta, 5);
            let n = x.len() as f64;
            let mut gw: Vec<f64> = w.iter().map(|v| l2 * v).collect();
            let mut gb = 0.0;
            for (row, yi) in x.iter().zip(&y) {
                let r = yi - dot(row, w) - b;
                for (g, v) in gw.iter_mut().zip(row) {
                    *g -= r * v / n;
                }
                gb -= r / n;
            }
            assert!(norm2(&gw) < 1e-12, "l2={l2}: {gw:?}");
            if fit_intercept {
                assert!(gb.abs() < 1e-12, "l2={l2}: {gb}");
            }
        }
    }

    #[test]
    fn ridge_one_feature_matches_closed_form() {
        let x: Vec<Vec<f64>> = [1.0, 2.0, 4.0, 7.0, 11.0]
            .iter()
            .map(|&v| vec![v])
            .collect();
        let y = [3.0, 1.0, 4.0, 1.0, 5.0];
        let l2 = 0.7;
        // Centred: xbar = 5, ybar = 2.8; Sxx = 66, Sxy = 13; n = 5.
        let w = 13.0 / (66.0 + 5.0 * l2);
        let b = 2.8 - 5.0 * w;
        let theta = normal_equations(&x, &y, l2, true);
        assert!(max_abs_diff(&theta, &[w, b]) < 1e-14, "{theta:?}");
    }

    #[test]
    #[should_panic(expected = "positive definite")]
    fn normal_equations_reject_collinear_columns_without_penalty() {
        let x: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64, 2.0 * i as f64]).collect();
        let y: Vec<f64> = (0..10).map(|i| i as f64).collect();
        normal_equations(&x, &y, 0.0, true);
    }

    // ----- binary logistic -------------------------------------------------------------------

    #[test]
    fn logistic_gradient_vanishes_and_point_is_a_minimum() {
        let mut rng = Rng(4);
        let x = design(&mut rng, 200, 4);
        let y = binary_labels(&mut rng, &x, &[1.0, -0.5, 0.3, 0.0], -0.4);
        for &(l2, fit_intercept) in &[(0.0, true), (0.05, true), (0.05, false), (1.0, true)] {
            let theta = logistic_newton(&x, &y, l2, fit_intercept);
            let (w, b) = split(&theta, 4);
            let (mut gw, gb) = naive_logistic_loss_gradient(&x, &y, w, b);
            for (g, v) in gw.iter_mut().zip(w) {
                *g += l2 * v;
            }
            let mut full = gw.clone();
            if fit_intercept {
                full.push(gb);
            }
            assert!(norm2(&full) < 1e-9, "l2={l2} grad={full:?}");
            let f0 = naive_logistic_objective(&x, &y, w, b, l2);
            for j in 0..theta.len() {
                for delta in [1e-3, -1e-3] {
                    let mut t = theta.clone();
                    t[j] += delta;
                    let (tw, tb) = split(&t, 4);
                    assert!(naive_logistic_objective(&x, &y, tw, tb, l2) > f0);
                }
            }
        }
    }

    #[test]
    fn logistic_constant_feature_gives_log_odds() {
        // One constant feature and no intercept: w = logit(mean y) exactly when l2 = 0.
        let x: Vec<Vec<f64>> = vec![vec![1.0]; 10];
        let y = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0];
        let theta = logistic_newton(&x, &y, 0.0, false);
        assert!((theta[0] - (7.0_f64 / 3.0).ln()).abs() < 1e-14, "{theta:?}");
        // No features, intercept only.
        let empty: Vec<Vec<f64>> = vec![vec![]; 10];
        let theta = logistic_newton(&empty, &y, 0.0, true);
        assert!((theta[0] - (7.0_f64 / 3.0).ln()).abs() < 1e-14, "{theta:?}");
    }

    #[test]
    #[should_panic(expected = "logistic_newton")]
    fn logistic_separable_without_penalty_panics() {
        let x: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64 - 4.5]).collect();
        let y: Vec<f64> = (0..10).map(|i| if i < 5 { 0.0 } else { 1.0 }).collect();
        logistic_newton(&x, &y, 0.0, true);
    }

    #[test]
    #[should_panic(expected = "is not 0 or 1")]
    fn logistic_rejects_bad_labels() {
        logistic_newton(&[vec![1.0], vec![2.0]], &[0.0, -1.0], 0.1, true);
    }

    // ----- multinomial -----------------------------------------------------------------------

    /// Full gradient over all K(d+1) parameters, computed naively.
    fn naive_multinomial_gradient(
        x: &[Vec<f64>],
        y: &[usize],
        w: &[Vec<f64>],
        b: &[f64],
        l2: f64,
    ) -> Vec<f64> {
        let n = x.len() as f64;
        let k = w.len();
        let d = w[0].len();
        let mut gw: Vec<Vec<f64>> = w
            .iter()
            .map(|wk| wk.iter().map(|v| l2 * v).collect())
            .collect();
        let mut gb = vec![0.0; k];
        for (row, &yi) in x.iter().zip(y) {
            let z: Vec<f64> = w.iter().zip(b).map(|(wk, bk)| dot(row, wk) + bk).collect();
            let e: Vec<f64> = z.iter().map(|v| v.exp()).collect();
            let s: f64 = e.iter().sum();
            for c in 0..k {
                let r = e[c] / s - if c == yi { 1.0 } else { 0.0 };
                for j in 0..d {
                    gw[c][j] += r * row[j] / n;
                }
                gb[c] += r / n;
            }
        }
        let mut all: Vec<f64> = gw.concat();
        all.extend(gb);
        all
    }

    #[test]
    fn multinomial_gradient_vanishes_and_intercepts_are_centred() {
        let mut rng = Rng(5);
        let x = design(&mut rng, 300, 3);
        let w_true = vec![
            vec![1.0, 0.0, -0.5],
            vec![-0.5, 0.8, 0.0],
            vec![0.0, -0.3, 0.6],
        ];
        let y = multiclass_labels(&mut rng, &x, &w_true, &[0.5, -0.2, 0.1]);
        for &(l2, fit_intercept) in &[(0.01, true), (0.5, true), (0.1, false)] {
            let (w, b) = multinomial_newton(&x, &y, 3, l2, fit_intercept);
            assert_eq!((w.len(), w[0].len(), b.len()), (3, 3, 3));
            let g = naive_multinomial_gradient(&x, &y, &w, &b, l2);
            let g = if fit_intercept { g } else { g[..9].to_vec() };
            assert!(norm2(&g) < 1e-9, "l2={l2}: {g:?}");
            assert!(b.iter().sum::<f64>().abs() < 1e-14, "{b:?}");
            if !fit_intercept {
                assert!(b.iter().all(|&v| v == 0.0));
            }
            // Optimality in the common-shift direction forces sum_k w_k = 0.
            for j in 0..3 {
                let s: f64 = w.iter().map(|wk| wk[j]).sum();
                assert!(s.abs() < 1e-10, "sum of w[.][{j}] = {s}");
            }
        }
    }

    #[test]
    fn multinomial_with_two_classes_matches_binary_logistic() {
        // With K = 2 the optimum has w_1 = -w_0, and the penalty (l2/2)(|w_0|^2 + |w_1|^2)
        // equals (l2/4)|w_1 - w_0|^2, so beta = w_1 - w_0 solves binary logistic with l2/2;
        // the binary intercept is b_1 - b_0 (and centring gives b_1 = -b_0).
        let mut rng = Rng(6);
        let x = design(&mut rng, 150, 3);
        let yb = binary_labels(&mut rng, &x, &[0.7, -0.4, 0.2], 0.3);
        let yk: Vec<usize> = yb.iter().map(|&v| v as usize).collect();
        let l2 = 0.2;
        for fit_intercept in [true, false] {
            let (w, b) = multinomial_newton(&x, &yk, 2, l2, fit_intercept);
            let beta = logistic_newton(&x, &yb, l2 / 2.0, fit_intercept);
            let diff: Vec<f64> = w[1].iter().zip(&w[0]).map(|(a, c)| a - c).collect();
            assert!(
                max_abs_diff(&diff, &beta[..3]) < 1e-10,
                "{diff:?} vs {beta:?}"
            );
            let sum: Vec<f64> = w[1].iter().zip(&w[0]).map(|(a, c)| a + c).collect();
            assert!(norm2(&sum) < 1e-12);
            if fit_intercept {
                assert!((b[1] - b[0] - beta[3]).abs() < 1e-10);
                assert!((b[1] + b[0]).abs() < 1e-15);
            }
        }
    }

    #[test]
    #[should_panic(expected = "l2 must be > 0")]
    fn multinomial_requires_positive_l2() {
        multinomial_newton(&[vec![1.0], vec![2.0]], &[0, 1], 2, 0.0, true);
    }

    // ----- elastic net -----------------------------------------------------------------------

    /// Check the elastic-net KKT conditions; returns the number of exact zeros.
    fn assert_elastic_net_kkt(
        x: &[Vec<f64>],
        y: &[f64],
        lambda: f64,
        alpha: f64,
        theta: &[f64],
        d: usize,
    ) -> usize {
        let (w, b) = split(theta, d);
        let (mut g, gb) = naive_logistic_loss_gradient(x, y, w, b);
        for (gj, wj) in g.iter_mut().zip(w) {
            *gj += lambda * (1.0 - alpha) * wj;
        }
        if theta.len() > d {
            assert!(gb.abs() < 1e-8, "intercept gradient {gb}");
        }
        let l1 = lambda * alpha;
        let mut zeros = 0;
        for (j, (&gj, &wj)) in g.iter().zip(w).enumerate() {
            if wj == 0.0 {
                zeros += 1;
                assert!(
                    gj.abs() <= l1 + 1e-8,
                    "coord {j}: |grad| {} > {l1}",
                    gj.abs()
                );
            } else {
                let r = gj + l1 * wj.signum();
                assert!(r.abs() < 1e-8, "coord {j}: w={wj} grad={gj} residual {r}");
            }
        }
        zeros
    }

    #[test]
    fn elastic_net_satisfies_kkt_with_exact_zeros() {
        let mut rng = Rng(7);
        let d = 8;
        let x = design(&mut rng, 250, d);
        let y = binary_labels(
            &mut rng,
            &x,
            &[1.2, 0.0, -0.8, 0.0, 0.0, 0.3, 0.0, 0.05],
            -0.5,
        );
        let mut saw_sparse = false;
        for &(lambda, alpha, fit_intercept) in &[
            (0.02, 1.0, true),
            (0.05, 0.5, true),
            (0.01, 0.9, false),
            (0.1, 0.2, true),
            (0.0, 1.0, true),
        ] {
            let theta = elastic_net_logistic(&x, &y, lambda, alpha, fit_intercept);
            assert_eq!(theta.len(), d + usize::from(fit_intercept));
            let zeros = assert_elastic_net_kkt(&x, &y, lambda, alpha, &theta, d);
            if zeros > 0 && zeros < d {
                saw_sparse = true;
            }
        }
        assert!(saw_sparse, "expected a partly sparse solution");
    }

    #[test]
    fn elastic_net_without_l1_matches_ridge_logistic() {
        let mut rng = Rng(8);
        let x = design(&mut rng, 120, 3);
        let y = binary_labels(&mut rng, &x, &[0.5, -1.0, 0.25], 0.2);
        let a = elastic_net_logistic(&x, &y, 0.3, 0.0, true);
        let b = logistic_newton(&x, &y, 0.3, true);
        assert!(max_abs_diff(&a, &b) < 1e-11, "{a:?} vs {b:?}");
    }

    #[test]
    fn elastic_net_large_lambda_gives_all_zero_coefficients() {
        let mut rng = Rng(9);
        let x = design(&mut rng, 100, 4);
        let y = binary_labels(&mut rng, &x, &[0.5, -0.5, 0.5, 0.0], 0.0);
        let ybar = y.iter().sum::<f64>() / y.len() as f64;
        // At w = 0, b = logit(ybar): grad_j = (1/n) sum (ybar - y_i) x_ij.
        let (g0, _) = naive_logistic_loss_gradient(&x, &y, &[0.0; 4], (ybar / (1.0 - ybar)).ln());
        let lambda_max = g0.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        let theta = elastic_net_logistic(&x, &y, lambda_max * 1.001, 1.0, true);
        assert!(theta[..4].iter().all(|&v| v == 0.0), "{theta:?}");
        assert!((theta[4] - (ybar / (1.0 - ybar)).ln()).abs() < 1e-12);
        // Just below lambda_max exactly one coefficient enters.
        let theta = elastic_net_logistic(&x, &y, lambda_max * 0.98, 1.0, true);
        assert_eq!(
            theta[..4].iter().filter(|&&v| v != 0.0).count(),
            1,
            "{theta:?}"
        );
    }

    #[test]
    #[should_panic(expected = "alpha must be in [0, 1]")]
    fn elastic_net_rejects_bad_alpha() {
        elastic_net_logistic(&[vec![1.0], vec![2.0]], &[0.0, 1.0], 0.1, 1.5, true);
    }

    #[test]
    fn helpers_are_accurate() {
        let mut s = Sum::default();
        for v in [1e16, 1.0, -1e16, 1.0] {
            s.add(v);
        }
        assert_eq!(s.value(), 2.0);
        assert_eq!(soft_threshold(0.5, 0.5), 0.0);
        assert_eq!(soft_threshold(-2.0, 0.5), -1.5);
        assert!((softplus(800.0) - 800.0).abs() < 1e-12 && softplus(-800.0) >= 0.0);
        assert!(sigmoid(-800.0) >= 0.0 && sigmoid(800.0) == 1.0);
        let x = solve_spd(&[vec![4.0, 2.0], vec![2.0, 3.0]], &[2.0, 1.0], "test");
        assert!(max_abs_diff(&x, &[0.5, 0.0]) < 1e-15, "{x:?}");
    }
}
