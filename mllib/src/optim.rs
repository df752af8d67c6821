//! Optimizers run on the driver: gradient descent, L-BFGS and OWL-QN over a fallible objective.
//!
//! The loss and gradient are computed on the cluster, so an evaluation can fail and is usually
//! `async`. Every optimizer is therefore a [`Minimizer`] state machine driven by the caller:
//! [`Minimizer::next_step`] returns the point to evaluate ([`Step::Evaluate`]) or the final
//! [`OptimResult`] ([`Step::Done`]), and [`Minimizer::tell`] reports the loss and gradient at that
//! point. Nothing is evaluated behind the caller's back, so an evaluation error is simply the
//! caller's own error; the minimizer is left unchanged by it and the same point can be retried.
//! Synchronous callers can implement [`Objective`] and call [`Minimizer::minimize`].
//!
//! # Convergence
//!
//! After every accepted step (and, for the gradient test only, at the starting point) the run
//! stops as converged when either
//! * the relative loss change is small: `|f_k - f_{k-1}| / max(|f_k|, |f_{k-1}|, 1e-10) <= tolerance`, or
//! * the gradient is small: `||g_k|| <= tolerance * max(|f_k|, 1)` (for OWL-QN `g_k` is the
//!   pseudo-gradient of the full objective and `f_k` includes the L1 part).
//!
//! It stops unconverged after `max_iterations` accepted steps, or when a line search cannot
//! decrease the loss even along the steepest-descent direction (typically at the limit of
//! floating-point precision); the best point found so far is returned either way.
//!
//! # Example
//!
//! ```
//! use ember_mllib::optim::{Minimizer, OptimConfig, OptimError, Step};
//!
//! // f(x) = sum_i (i + 1) * (x_i - i)^2, minimised at x_i = i.
//! let eval = |x: &[f64]| -> Result<(f64, Vec<f64>), OptimError> {
//!     let w = |i: usize| (i + 1) as f64;
//!     let loss = x.iter().enumerate().map(|(i, v)| w(i) * (v - i as f64).powi(2)).sum();
//!     let grad = x.iter().enumerate().map(|(i, v)| 2.0 * w(i) * (v - i as f64)).collect();
//!     Ok((loss, grad))
//! };
//! let config = OptimConfig { tolerance: 1e-12, ..OptimConfig::default() };
//! let mut opt = Minimizer::lbfgs(vec![0.0; 4], config)?;
//! let result = loop {
//!     match opt.next_step() {
//!         Step::Evaluate(x) => {
//!             let (loss, grad) = eval(&x)?; // `eval(&x).await?` in async code
//!             opt.tell(loss, grad)?;
//!         }
//!         Step::Done(result) => break result,
//!     }
//! };
//! assert!(result.converged);
//! assert!(result.x.iter().enumerate().all(|(i, v)| (v - i as f64).abs() < 1e-6));
//! # Ok::<(), OptimError>(())
//! ```

use std::collections::VecDeque;
use std::fmt;

/// Sufficient-decrease (Armijo) constant of all line searches.
const ARMIJO_C1: f64 = 1e-4;
/// Curvature constant of the strong Wolfe conditions (L-BFGS).
const WOLFE_C2: f64 = 0.9;
/// Evaluations one line search may spend before it gives up.
const MAX_LINE_SEARCH_EVALUATIONS: usize = 40;
/// Floor of the denominator of the relative loss change.
const LOSS_CHANGE_FLOOR: f64 = 1e-10;
/// A curvature pair is kept only when `s.y > CURVATURE_EPS * |s| |y|`.
const CURVATURE_EPS: f64 = 1e-10;

/// A differentiable objective evaluated synchronously (see [`Minimizer::minimize`]).
pub trait Objective {
    /// Error of a failed evaluation (for example a failed cluster job).
    type Error;
    /// Returns (loss, gradient) at x. The loss and gradient include any smooth (L2) penalty, not the L1 part.
    fn evaluate(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>), Self::Error>;
}

/// Settings shared by all optimizers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimConfig {
    /// Maximum number of accepted steps (iterations).
    pub max_iterations: usize,
    /// Convergence tolerance on the relative loss change and the gradient norm (module docs).
    pub tolerance: f64,
    /// Number of curvature pairs L-BFGS and OWL-QN remember (0 gives steepest descent).
    pub memory: usize,
    /// Step size of gradient descent, halved within an iteration while the loss increases.
    pub step_size: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            max_iterations: 100,
            tolerance: 1e-6,
            memory: 10,
            step_size: 1.0,
        }
    }
}

/// Outcome of a finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimResult {
    /// Best point found (the last accepted iterate).
    pub x: Vec<f64>,
    /// Objective at `x`, including the L1 part for OWL-QN.
    pub loss: f64,
    /// Number of accepted steps.
    pub iterations: usize,
    /// Whether a convergence test was met (false: iteration limit or line-search failure).
    pub converged: bool,
    /// Objective at the starting point and after every accepted step (`iterations + 1` entries).
    pub loss_history: Vec<f64>,
    /// Number of objective evaluations, including rejected line-search trials.
    pub evaluations: usize,
}

/// Errors reported by the optimizers themselves (not by the objective).
#[derive(Debug, Clone, PartialEq)]
pub enum OptimError {
    /// A configuration value, starting point or L1 weight is invalid.
    InvalidConfig(String),
    /// [`Minimizer::tell`] got a gradient of the wrong length; the minimizer is unchanged.
    GradientLength {
        /// Dimension of the problem.
        expected: usize,
        /// Length of the gradient received.
        actual: usize,
    },
    /// [`Minimizer::tell`] was called after the run had finished.
    NotRunning,
    /// The loss or gradient at the starting point is not finite; the run is finished.
    NonFiniteStart,
}

impl fmt::Display for OptimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptimError::InvalidConfig(msg) => write!(f, "invalid optimizer configuration: {msg}"),
            OptimError::GradientLength { expected, actual } => {
                write!(f, "gradient has length {actual}, expected {expected}")
            }
            OptimError::NotRunning => write!(f, "the optimizer has already finished"),
            OptimError::NonFiniteStart => {
                write!(f, "loss or gradient is not finite at the starting point")
            }
        }
    }
}

impl std::error::Error for OptimError {}

/// What the caller of a [`Minimizer`] has to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Evaluate loss and gradient at this point and pass them to [`Minimizer::tell`].
    Evaluate(Vec<f64>),
    /// The run is over.
    Done(OptimResult),
}

#[derive(Debug, Clone)]
enum Method {
    GradientDescent,
    Lbfgs,
    /// Per-coordinate L1 weights, at least one positive.
    OwlQn(Vec<f64>),
}

#[derive(Debug, Clone)]
struct Pair {
    s: Vec<f64>,
    y: Vec<f64>,
    rho: f64,
}

/// A point on the search line: step, smooth loss, directional derivative, point and gradient.
#[derive(Debug, Clone)]
struct Sample {
    alpha: f64,
    value: f64,
    slope: f64,
    x: Vec<f64>,
    g: Vec<f64>,
}

/// Strong Wolfe search (bracketing then zoom, Nocedal & Wright algorithms 3.5 and 3.6).
#[derive(Debug, Clone)]
enum Wolfe {
    /// Growing the step; `prev` is the previous trial (step 0 at first).
    Bracketing { prev: Sample },
    /// A bracket is known: `lo` is the best point satisfying sufficient decrease.
    Zoom { lo: Sample, hi: Sample },
}

#[derive(Debug, Clone)]
struct Search {
    dir: Vec<f64>,
    /// Gradient (pseudo-gradient for OWL-QN) at the current point.
    grad: Vec<f64>,
    /// OWL-QN orthant signs; empty for the other methods.
    orthant: Vec<f64>,
    dg0: f64,
    alpha: f64,
    trial: Vec<f64>,
    evals: usize,
    steepest: bool,
    /// `None`: backtracking (gradient descent and OWL-QN).
    wolfe: Option<Wolfe>,
}

#[derive(Debug, Clone)]
enum Phase {
    Start,
    Search(Box<Search>),
    Done(OptimResult),
}

/// An optimizer run as a state machine: gradient descent, L-BFGS or OWL-QN (module docs).
#[derive(Debug, Clone)]
pub struct Minimizer {
    method: Method,
    config: OptimConfig,
    x: Vec<f64>,
    f: f64,
    g: Vec<f64>,
    loss: f64,
    history: VecDeque<Pair>,
    phase: Phase,
    iterations: usize,
    evaluations: usize,
    loss_history: Vec<f64>,
}

impl Minimizer {
    /// Gradient descent with the fixed `config.step_size`; within an iteration the step is halved
    /// while the loss increases or is not finite (so a well-chosen step is never changed).
    pub fn gradient_descent(x0: Vec<f64>, config: OptimConfig) -> Result<Self, OptimError> {
        if !(config.step_size.is_finite() && config.step_size > 0.0) {
            return Err(OptimError::InvalidConfig(
                "step_size must be finite and positive".into(),
            ));
        }
        Self::new(Method::GradientDescent, x0, config)
    }

    /// L-BFGS with `config.memory` curvature pairs and a strong Wolfe line search.
    pub fn lbfgs(x0: Vec<f64>, config: OptimConfig) -> Result<Self, OptimError> {
        Self::new(Method::Lbfgs, x0, config)
    }

    /// OWL-QN (Andrew & Gao, 2007) for `f(x) + sum_i l1[i] * |x_i|`; `l1[i] == 0` leaves
    /// coordinate `i` unpenalised and unconstrained (e.g. the intercept). All-zero weights run
    /// L-BFGS.
    pub fn owlqn(x0: Vec<f64>, l1: Vec<f64>, config: OptimConfig) -> Result<Self, OptimError> {
        if l1.len() != x0.len() || !l1.iter().all(|w| w.is_finite() && *w >= 0.0) {
            return Err(OptimError::InvalidConfig(
                "need one finite, non-negative L1 weight per coordinate".into(),
            ));
        }
        let method = if l1.iter().any(|w| *w > 0.0) {
            Method::OwlQn(l1)
        } else {
            Method::Lbfgs
        };
        Self::new(method, x0, config)
    }

    fn new(method: Method, x0: Vec<f64>, config: OptimConfig) -> Result<Self, OptimError> {
        let tolerance_ok = config.tolerance.is_finite() && config.tolerance >= 0.0;
        if !tolerance_ok || !x0.iter().all(|v| v.is_finite()) {
            return Err(OptimError::InvalidConfig(
                "tolerance and starting point must be finite, tolerance non-negative".into(),
            ));
        }
        Ok(Minimizer {
            method,
            config,
            x: x0,
            f: f64::NAN,
            g: Vec::new(),
            loss: f64::NAN,
            history: VecDeque::new(),
            phase: Phase::Start,
            iterations: 0,
            evaluations: 0,
            loss_history: Vec::new(),
        })
    }

    /// The point to evaluate next, or the result once the run is over. Calling it again without
    /// [`Minimizer::tell`] returns the same step.
    pub fn next_step(&self) -> Step {
        match &self.phase {
            Phase::Start => Step::Evaluate(self.x.clone()),
            Phase::Search(search) => Step::Evaluate(search.trial.clone()),
            Phase::Done(result) => Step::Done(result.clone()),
        }
    }

    /// Reports the loss (without the L1 part) and gradient at the point of the last
    /// [`Step::Evaluate`]. A non-finite loss or gradient at a line-search trial makes the search
    /// back off; at the starting point it ends the run with [`OptimError::NonFiniteStart`].
    pub fn tell(&mut self, loss: f64, gradient: Vec<f64>) -> Result<(), OptimError> {
        if matches!(self.phase, Phase::Done(_)) {
            return Err(OptimError::NotRunning);
        }
        if gradient.len() != self.x.len() {
            return Err(OptimError::GradientLength {
                expected: self.x.len(),
                actual: gradient.len(),
            });
        }
        self.evaluations += 1;
        let valid = loss.is_finite() && gradient.iter().all(|v| v.is_finite());
        if let Phase::Search(search) = std::mem::replace(&mut self.phase, Phase::Start) {
            self.search_step(*search, loss, gradient, valid);
        } else if !valid {
            self.loss = loss;
            self.finish(false);
            return Err(OptimError::NonFiniteStart);
        } else {
            self.loss = loss + self.l1_penalty(&self.x);
            self.f = loss;
            self.g = gradient;
            self.loss_history.push(self.loss);
            if self.gradient_converged() {
                self.finish(true);
            } else if self.config.max_iterations == 0 {
                self.finish(false);
            } else {
                self.begin_iteration();
            }
        }
        Ok(())
    }

    /// Runs to completion, evaluating `objective` synchronously; the first evaluation error is
    /// returned as is.
    pub fn minimize<O>(mut self, objective: &mut O) -> Result<OptimResult, O::Error>
    where
        O: Objective,
        O::Error: From<OptimError>,
    {
        loop {
            match self.next_step() {
                Step::Evaluate(x) => {
                    let (loss, gradient) = objective.evaluate(&x)?;
                    self.tell(loss, gradient)?;
                }
                Step::Done(result) => return Ok(result),
            }
        }
    }

    /// Accepted steps so far.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// Evaluations reported through [`Minimizer::tell`] so far.
    pub fn evaluations(&self) -> usize {
        self.evaluations
    }

    fn l1_penalty(&self, x: &[f64]) -> f64 {
        match &self.method {
            Method::OwlQn(l1) => x.iter().zip(l1).map(|(v, w)| w * v.abs()).sum(),
            _ => 0.0,
        }
    }

    /// Gradient of the smooth objective, or OWL-QN's pseudo-gradient of the full objective.
    fn pseudo_gradient(&self) -> Vec<f64> {
        let Method::OwlQn(l1) = &self.method else {
            return self.g.clone();
        };
        // At x_i = 0 the one-sided derivatives are g - w and g + w; 0 lies between them at a kink.
        let pseudo = |((x, g), w): ((&f64, &f64), &f64)| {
            if *x == 0.0 {
                (g + w).min(0.0) + (g - w).max(0.0)
            } else {
                g + sign(*x) * w
            }
        };
        self.x.iter().zip(&self.g).zip(l1).map(pseudo).collect()
    }

    fn gradient_converged(&self) -> bool {
        norm(&self.pseudo_gradient()) <= self.config.tolerance * self.loss.abs().max(1.0)
    }

    /// L-BFGS two-loop recursion: returns `-H grad`.
    fn two_loop(&self, grad: &[f64]) -> Vec<f64> {
        let mut q = grad.to_vec();
        let mut coefs = Vec::with_capacity(self.history.len());
        for pair in self.history.iter().rev() {
            let a = pair.rho * dot(&pair.s, &q);
            axpy(-a, &pair.y, &mut q);
            coefs.push(a);
        }
        if let Some(last) = self.history.back() {
            let gamma = 1.0 / (last.rho * dot(&last.y, &last.y));
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for (pair, a) in self.history.iter().zip(coefs.iter().rev()) {
            let b = pair.rho * dot(&pair.y, &q);
            axpy(a - b, &pair.s, &mut q);
        }
        q.iter().map(|v| -v).collect()
    }

    /// Picks a direction and a first trial step; the current point is not converged.
    fn begin_iteration(&mut self) {
        let grad = self.pseudo_gradient();
        let steepest = |g: &[f64]| g.iter().map(|v| -v).collect::<Vec<f64>>();
        let mut is_steepest = self.history.is_empty() || self.config.memory == 0;
        let mut dir = match self.method {
            Method::GradientDescent => steepest(&grad),
            _ if is_steepest => steepest(&grad),
            _ => self.two_loop(&grad),
        };
        let mut orthant = Vec::new();
        if let Method::OwlQn(l1) = &self.method {
            for ((d, g), w) in dir.iter_mut().zip(&grad).zip(l1) {
                if *w > 0.0 && *d * g >= 0.0 {
                    *d = 0.0;
                }
            }
            let side = |(x, g): (&f64, &f64)| if *x != 0.0 { sign(*x) } else { -sign(*g) };
            orthant = self.x.iter().zip(&grad).map(side).collect();
        }
        let mut dg0 = dot(&dir, &grad);
        if !is_steepest && (dg0.is_nan() || dg0 >= 0.0) {
            // Not a descent direction (numerical trouble): forget the history.
            self.history.clear();
            is_steepest = true;
            dir = steepest(&grad);
            dg0 = dot(&dir, &grad);
        }
        if dg0.is_nan() || dg0 >= 0.0 {
            self.finish(false);
            return;
        }
        let alpha = match self.method {
            Method::GradientDescent => self.config.step_size,
            _ if is_steepest => (1.0 / norm(&dir)).min(1.0),
            _ => 1.0,
        };
        let wolfe = matches!(self.method, Method::Lbfgs).then(|| Wolfe::Bracketing {
            prev: Sample {
                alpha: 0.0,
                value: self.f,
                slope: dg0,
                x: self.x.clone(),
                g: self.g.clone(),
            },
        });
        let mut search = Search {
            dir,
            grad,
            orthant,
            dg0,
            alpha,
            trial: Vec::new(),
            evals: 0,
            steepest: is_steepest,
            wolfe,
        };
        search.trial = self.trial_point(&search, alpha);
        self.phase = Phase::Search(Box::new(search));
    }

    /// `x + alpha * dir`, projected onto the search orthant for OWL-QN.
    fn trial_point(&self, search: &Search, alpha: f64) -> Vec<f64> {
        let mut t: Vec<f64> = self
            .x
            .iter()
            .zip(&search.dir)
            .map(|(x, d)| x + alpha * d)
            .collect();
        if let Method::OwlQn(l1) = &self.method {
            for ((t, w), o) in t.iter_mut().zip(l1).zip(&search.orthant) {
                if *w > 0.0 && *t * o <= 0.0 {
                    *t = 0.0;
                }
            }
        }
        t
    }

    fn retry(&mut self, mut search: Search, alpha: f64) {
        search.alpha = alpha;
        search.trial = self.trial_point(&search, alpha);
        self.phase = Phase::Search(Box::new(search));
    }

    fn search_step(&mut self, mut search: Search, f: f64, g: Vec<f64>, valid: bool) {
        search.evals += 1;
        let x = std::mem::take(&mut search.trial);
        let out_of_evals = search.evals >= MAX_LINE_SEARCH_EVALUATIONS;
        let Some(wolfe) = search.wolfe.take() else {
            let loss = f + self.l1_penalty(&x);
            let accept = valid
                && match self.method {
                    Method::GradientDescent => loss <= self.loss,
                    _ => loss <= self.loss + ARMIJO_C1 * dot(&search.grad, &sub(&x, &self.x)),
                };
            if accept {
                self.accept(x, f, g, loss);
            } else if out_of_evals {
                self.search_failed(&search, None);
            } else {
                let alpha = 0.5 * search.alpha;
                self.retry(search, alpha);
            }
            return;
        };
        let sample = Sample {
            alpha: search.alpha,
            value: if valid { f } else { f64::INFINITY },
            slope: if valid {
                dot(&g, &search.dir)
            } else {
                f64::NAN
            },
            x,
            g,
        };
        let armijo = valid && f <= self.f + ARMIJO_C1 * search.alpha * search.dg0;
        let curvature = valid && sample.slope.abs() <= -WOLFE_C2 * search.dg0;
        let (lo, hi) = match wolfe {
            Wolfe::Bracketing { prev } => {
                if !armijo || (prev.alpha > 0.0 && sample.value >= prev.value) {
                    (prev, sample)
                } else if curvature {
                    self.accept(sample.x, sample.value, sample.g, sample.value);
                    return;
                } else if sample.slope >= 0.0 {
                    (sample, prev)
                } else if out_of_evals || sample.alpha > 1e10 {
                    self.search_failed(&search, Some(sample));
                    return;
                } else {
                    let next = 2.0 * sample.alpha;
                    search.wolfe = Some(Wolfe::Bracketing { prev: sample });
                    self.retry(search, next);
                    return;
                }
            }
            Wolfe::Zoom { lo, hi } => {
                if !armijo || sample.value >= lo.value {
                    (lo, sample)
                } else if curvature {
                    self.accept(sample.x, sample.value, sample.g, sample.value);
                    return;
                } else if sample.slope * (hi.alpha - lo.alpha) >= 0.0 {
                    (sample, lo)
                } else {
                    (sample, hi)
                }
            }
        };
        let width = (hi.alpha - lo.alpha).abs();
        if out_of_evals || width <= 1e-12 * lo.alpha.max(hi.alpha) {
            self.search_failed(&search, Some(lo));
            return;
        }
        let next = interpolate(&lo, &hi);
        search.wolfe = Some(Wolfe::Zoom { lo, hi });
        self.retry(search, next);
    }

    /// Accepts the best decreasing point if there is one; otherwise restarts from steepest
    /// descent once, and then gives up.
    fn search_failed(&mut self, search: &Search, best: Option<Sample>) {
        match best {
            Some(s) if s.alpha > 0.0 && s.value < self.f => self.accept(s.x, s.value, s.g, s.value),
            _ if !search.steepest => {
                self.history.clear();
                self.begin_iteration();
            }
            _ => self.finish(false),
        }
    }

    fn accept(&mut self, x: Vec<f64>, f: f64, g: Vec<f64>, loss: f64) {
        if !matches!(self.method, Method::GradientDescent) && self.config.memory > 0 {
            let (s, y) = (sub(&x, &self.x), sub(&g, &self.g));
            let sy = dot(&s, &y);
            if sy.is_finite() && sy > CURVATURE_EPS * norm(&s) * norm(&y) {
                self.history.push_back(Pair {
                    s,
                    y,
                    rho: 1.0 / sy,
                });
                while self.history.len() > self.config.memory {
                    self.history.pop_front();
                }
            }
        }
        let prev_loss = self.loss;
        self.x = x;
        self.f = f;
        self.g = g;
        self.loss = loss;
        self.iterations += 1;
        self.loss_history.push(loss);
        let denom = prev_loss.abs().max(loss.abs()).max(LOSS_CHANGE_FLOOR);
        let loss_converged = (prev_loss - loss).abs() / denom <= self.config.tolerance;
        if loss_converged || self.gradient_converged() {
            self.finish(true);
        } else if self.iterations >= self.config.max_iterations {
            self.finish(false);
        } else {
            self.begin_iteration();
        }
    }

    fn finish(&mut self, converged: bool) {
        self.phase = Phase::Done(OptimResult {
            x: self.x.clone(),
            loss: self.loss,
            iterations: self.iterations,
            converged,
            loss_history: self.loss_history.clone(),
            evaluations: self.evaluations,
        });
    }
}

/// Next step inside the bracket: safeguarded cubic interpolation, bisection as fallback.
fn interpolate(lo: &Sample, hi: &Sample) -> f64 {
    let (a, b) = (lo.alpha.min(hi.alpha), lo.alpha.max(hi.alpha));
    let width = b - a;
    let mid = a + 0.5 * width;
    if !(hi.value.is_finite() && hi.slope.is_finite()) {
        return mid;
    }
    let d1 = lo.slope + hi.slope - 3.0 * (lo.value - hi.value) / (lo.alpha - hi.alpha);
    let disc = d1 * d1 - lo.slope * hi.slope;
    if disc.is_nan() || disc < 0.0 {
        return mid;
    }
    let d2 = (hi.alpha - lo.alpha).signum() * disc.sqrt();
    let t =
        hi.alpha - (hi.alpha - lo.alpha) * (hi.slope + d2 - d1) / (hi.slope - lo.slope + 2.0 * d2);
    if t.is_finite() {
        t.max(a + 0.1 * width).min(b - 0.1 * width)
    } else {
        mid
    }
}

fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Eval = (f64, Vec<f64>);

    #[derive(Debug, PartialEq)]
    enum TestError {
        Cluster(&'static str),
        Optim(OptimError),
    }

    impl From<OptimError> for TestError {
        fn from(e: OptimError) -> Self {
            TestError::Optim(e)
        }
    }

    /// A closure as an [`Objective`] that counts its calls and fails at call `fail_at`.
    struct Counted<F> {
        f: F,
        calls: usize,
        fail_at: usize,
    }

    impl<F: FnMut(&[f64]) -> Eval> Objective for Counted<F> {
        type Error = TestError;
        fn evaluate(&mut self, x: &[f64]) -> Result<Eval, TestError> {
            self.calls += 1;
            if self.calls == self.fail_at {
                return Err(TestError::Cluster("executor lost"));
            }
            Ok((self.f)(x))
        }
    }

    fn counted<F: FnMut(&[f64]) -> Eval>(f: F, fail_at: usize) -> Counted<F> {
        Counted {
            f,
            calls: 0,
            fail_at,
        }
    }

    fn run(opt: Minimizer, f: impl FnMut(&[f64]) -> Eval) -> OptimResult {
        let mut objective = counted(f, 0);
        let result = opt.minimize(&mut objective).expect("objective never fails");
        assert_eq!(result.evaluations, objective.calls);
        assert_eq!(result.loss_history.len(), result.iterations + 1);
        result
    }

    /// Drives the state machine the way async code does, with `?` on the evaluation.
    fn drive(
        opt: &mut Minimizer,
        obj: &mut impl Objective<Error = TestError>,
    ) -> Result<OptimResult, TestError> {
        loop {
            match opt.next_step() {
                Step::Evaluate(x) => {
                    let (f, g) = obj.evaluate(&x)?;
                    opt.tell(f, g)?;
                }
                Step::Done(result) => return Ok(result),
            }
        }
    }

    fn config(tolerance: f64, max_iterations: usize) -> OptimConfig {
        OptimConfig {
            tolerance,
            max_iterations,
            ..OptimConfig::default()
        }
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    /// 0.5 (x - x*)' A (x - x*) with A = H diag(lambda) H, H a Householder reflection; and x*.
    fn quadratic(lambda: &[f64]) -> (impl Fn(&[f64]) -> Eval, Vec<f64>) {
        let n = lambda.len();
        let v: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64 * 0.7).sin()).collect();
        let vv = dot(&v, &v);
        let h = |i: usize, j: usize| f64::from(u8::from(i == j)) - 2.0 * v[i] * v[j] / vv;
        let entry = |i, j| (0..n).map(|k| h(i, k) * lambda[k] * h(k, j)).sum();
        let a: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| entry(i, j)).collect())
            .collect();
        let opt: Vec<f64> = (0..n).map(|i| (i as f64 * 1.3).cos() * 2.0).collect();
        let target = opt.clone();
        let f = move |x: &[f64]| {
            let d: Vec<f64> = x.iter().zip(&target).map(|(a, b)| a - b).collect();
            let g: Vec<f64> = a.iter().map(|row| dot(row, &d)).collect();
            (0.5 * dot(&d, &g), g)
        };
        (f, opt)
    }

    /// Chained Rosenbrock function.
    fn rosenbrock(x: &[f64]) -> Eval {
        let (mut f, mut g) = (0.0, vec![0.0; x.len()]);
        for i in 1..x.len() {
            let (a, b) = (x[i] - x[i - 1] * x[i - 1], 1.0 - x[i - 1]);
            f += 100.0 * a * a + b * b;
            g[i - 1] += -400.0 * a * x[i - 1] - 2.0 * b;
            g[i] += 200.0 * a;
        }
        (f, g)
    }

    #[test]
    fn lbfgs_ill_conditioned_quadratic() -> Result<(), OptimError> {
        let lambda: Vec<f64> = (0..20).map(|i| 10f64.powf(4.0 * i as f64 / 19.0)).collect();
        let (f, opt) = quadratic(&lambda);
        let result = run(Minimizer::lbfgs(vec![0.0; 20], config(1e-10, 1000))?, f);
        assert!(
            result.converged && max_diff(&result.x, &opt) < 1e-6,
            "{result:?}"
        );
        Ok(())
    }

    #[test]
    fn lbfgs_rosenbrock() -> Result<(), OptimError> {
        for n in [2, 10] {
            let x0 = (0..n)
                .map(|i| if i % 2 == 0 { -1.2 } else { 1.0 })
                .collect();
            let result = run(Minimizer::lbfgs(x0, config(1e-12, 1000))?, rosenbrock);
            assert!(result.converged, "{result:?}");
            assert!(
                max_diff(&result.x, &vec![1.0; n]) < 1e-5,
                "n={n} {result:?}"
            );
            assert!(result.loss_history.windows(2).all(|w| w[1] <= w[0]));
        }
        Ok(())
    }

    #[test]
    fn gradient_descent_quadratic() -> Result<(), OptimError> {
        let (f, opt) = quadratic(&[1.0, 1.5, 2.0, 2.5, 3.0]);
        let cfg = OptimConfig {
            step_size: 1.0 / 3.0,
            ..config(1e-12, 10_000)
        };
        let result = run(Minimizer::gradient_descent(vec![0.0; 5], cfg)?, f);
        assert!(
            result.converged && max_diff(&result.x, &opt) < 1e-6,
            "{result:?}"
        );
        // A good fixed step is never backtracked: one evaluation per iteration.
        assert_eq!(result.evaluations, result.iterations + 1);
        Ok(())
    }

    /// xorshift64* mapped to [-1, 1).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
            bits as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    /// 50 rows of 10 features plus a constant 1 (intercept), targets, and the L1 weights.
    fn lasso_data() -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
        let truth = [1.5, 0.0, -2.0, 0.0, 0.0, 0.8, 0.0, 0.0, -0.5, 0.0, 0.3];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let rows: Vec<Vec<f64>> = (0..50)
            .map(|_| {
                (0..11)
                    .map(|j| if j < 10 { rng.next() } else { 1.0 })
                    .collect()
            })
            .collect();
        let y = rows
            .iter()
            .map(|r| dot(r, &truth) + 0.1 * rng.next())
            .collect();
        let l1 = (0..11).map(|j| if j < 10 { 0.05 } else { 0.0 }).collect();
        (rows, y, l1)
    }

    /// Smooth part 1/(2n) ||X w - y||^2 and its gradient.
    fn least_squares(rows: &[Vec<f64>], y: &[f64], w: &[f64]) -> Eval {
        let (n, mut f, mut g) = (rows.len() as f64, 0.0, vec![0.0; w.len()]);
        for (row, yi) in rows.iter().zip(y) {
            let r = dot(row, w) - yi;
            f += 0.5 * r * r / n;
            axpy(r / n, row, &mut g);
        }
        (f, g)
    }

    fn coordinate_descent(rows: &[Vec<f64>], y: &[f64], l1: &[f64]) -> Vec<f64> {
        let n = rows.len() as f64;
        let mut w = vec![0.0; l1.len()];
        for _ in 0..100_000 {
            let mut change: f64 = 0.0;
            for j in 0..l1.len() {
                let (mut z, mut a) = (0.0, 0.0);
                for (row, yi) in rows.iter().zip(y) {
                    z += row[j] * (yi - dot(row, &w) + row[j] * w[j]) / n;
                    a += row[j] * row[j] / n;
                }
                let new = z.signum() * (z.abs() - l1[j]).max(0.0) / a;
                change = change.max((new - w[j]).abs());
                w[j] = new;
            }
            if change < 1e-15 {
                break;
            }
        }
        w
    }

    #[test]
    fn owlqn_matches_coordinate_descent_on_lasso() -> Result<(), OptimError> {
        let (rows, y, l1) = lasso_data();
        let cd = coordinate_descent(&rows, &y, &l1);
        let zeros: Vec<usize> = (0..11).filter(|&j| cd[j] == 0.0).collect();
        assert!(zeros.len() >= 3 && zeros.len() <= 7, "{cd:?}");
        let m = Minimizer::owlqn(vec![0.0; 11], l1.clone(), config(1e-14, 1000))?;
        let result = run(m, |w| least_squares(&rows, &y, w));
        assert!(max_diff(&result.x, &cd) < 1e-6, "{result:?}\n{cd:?}");
        assert!(zeros.iter().all(|&j| result.x[j] == 0.0), "{result:?}");
        let penalty: f64 = cd.iter().zip(&l1).map(|(w, l)| w.abs() * l).sum();
        let cd_loss = least_squares(&rows, &y, &cd).0 + penalty;
        assert!(
            (result.loss - cd_loss).abs() < 1e-12,
            "{result:?} vs {cd_loss}"
        );
        Ok(())
    }

    #[test]
    fn owlqn_without_l1_is_lbfgs() -> Result<(), OptimError> {
        let a = Minimizer::owlqn(vec![-1.2, 1.0], vec![0.0; 2], config(1e-12, 1000))?;
        let b = Minimizer::lbfgs(vec![-1.2, 1.0], config(1e-12, 1000))?;
        assert_eq!(run(a, rosenbrock), run(b, rosenbrock));
        Ok(())
    }

    #[test]
    fn evaluation_error_reaches_the_caller() -> Result<(), OptimError> {
        let new = || Minimizer::lbfgs(vec![-1.2, 1.0], config(1e-12, 1000));
        let lost = Err(TestError::Cluster("executor lost"));
        let mut failing = counted(rosenbrock, 5);
        assert_eq!(new()?.minimize(&mut failing), lost);
        assert_eq!(failing.calls, 5);
        // State machine: the error comes back, the minimizer is unchanged and can go on.
        let (mut m, mut failing) = (new()?, counted(rosenbrock, 5));
        assert_eq!(drive(&mut m, &mut failing), lost);
        assert_eq!(m.evaluations(), 4);
        let resumed = drive(&mut m, &mut failing).map_err(|_| OptimError::NotRunning)?;
        assert_eq!(resumed, run(new()?, rosenbrock));
        assert!(max_diff(&resumed.x, &[1.0; 2]) < 1e-5);
        Ok(())
    }

    #[test]
    fn optimizer_errors() -> Result<(), OptimError> {
        let mut m = Minimizer::lbfgs(vec![0.0; 3], config(1e-9, 10))?;
        let err = OptimError::GradientLength {
            expected: 3,
            actual: 2,
        };
        assert_eq!(m.tell(1.0, vec![0.0; 2]), Err(err));
        assert_eq!(
            m.tell(f64::NAN, vec![0.0; 3]),
            Err(OptimError::NonFiniteStart)
        );
        assert!(matches!(m.next_step(), Step::Done(r) if !r.converged));
        assert_eq!(m.tell(1.0, vec![0.0; 3]), Err(OptimError::NotRunning));
        let bad_l1 = Minimizer::owlqn(vec![0.0; 2], vec![1.0], OptimConfig::default());
        assert!(matches!(bad_l1, Err(OptimError::InvalidConfig(_))));
        let bad_step = OptimConfig {
            step_size: 0.0,
            ..OptimConfig::default()
        };
        assert!(Minimizer::gradient_descent(vec![0.0], bad_step).is_err());
        Ok(())
    }

    /// Loss NaN at evaluation 2 and +inf at evaluation 3 (the first line-search trials).
    fn poisoned(f: impl Fn(&[f64]) -> Eval) -> impl FnMut(&[f64]) -> Eval {
        let mut calls = 0;
        move |x| {
            calls += 1;
            let (v, g) = f(x);
            let bad = [v, v, f64::NAN, f64::INFINITY];
            (bad.get(calls).copied().unwrap_or(v), g)
        }
    }

    #[test]
    fn non_finite_trial_points_make_the_line_search_back_off() -> Result<(), OptimError> {
        let r = run(
            Minimizer::lbfgs(vec![-1.2, 1.0], config(1e-12, 1000))?,
            poisoned(rosenbrock),
        );
        assert!(r.converged && max_diff(&r.x, &[1.0; 2]) < 1e-5, "{r:?}");
        let (rows, y, l1) = lasso_data();
        let cd = coordinate_descent(&rows, &y, &l1);
        let m = Minimizer::owlqn(vec![0.0; 11], l1, config(1e-14, 1000))?;
        let r = run(m, poisoned(|w| least_squares(&rows, &y, w)));
        assert!(r.converged && max_diff(&r.x, &cd) < 1e-6, "{r:?}");
        // Gradient descent on x - ln x (infinite for x <= 0) with a far too long step.
        let cfg = OptimConfig {
            step_size: 10.0,
            ..config(1e-12, 1000)
        };
        let r = run(Minimizer::gradient_descent(vec![3.0], cfg)?, |x| {
            let v = if x[0] > 0.0 {
                x[0] - x[0].ln()
            } else {
                f64::INFINITY
            };
            (v, vec![1.0 - 1.0 / x[0]])
        });
        assert!(r.converged && (r.x[0] - 1.0).abs() < 1e-5, "{r:?}");
        assert!(r.evaluations > r.iterations + 1);
        Ok(())
    }
}
