//! Observers: called once per iteration, with no-op defaults. Progress bars and experiment
//! tracking (MLflow) implement this in the plugin crate.

use crate::report::{Info, SolverKind};

/// The state a solver exposes after each iteration.
#[derive(Debug)]
pub struct IterationState<'a, V> {
    /// Which solver is running.
    pub solver: SolverKind,
    /// Iteration number (1 for the first completed iteration).
    pub iteration: usize,
    /// Residual after this iteration (same meaning as in [`Info::residual_history`]).
    pub residual: f64,
    /// Operator applications so far.
    pub operator_applications: usize,
    /// The current iterate `v_k`.
    pub iterate: &'a V,
}

/// Receives progress from the solvers. Every method has a no-op default.
pub trait Observer<V> {
    /// Called once after every iteration.
    fn on_iteration(&mut self, _state: &IterationState<'_, V>) {}
    /// Called once when a solve ends successfully, with its report.
    fn on_finish(&mut self, _info: &Info) {}
}

/// The observer that does nothing.
impl<V> Observer<V> for () {}

/// Records every iterate (for tests and small problems: it clones each iterate).
#[derive(Debug, Clone, Default)]
pub struct Recorder<V> {
    /// The iterates `v_1, v_2, …` in order.
    pub iterates: Vec<V>,
    /// The residuals reported with them.
    pub residuals: Vec<f64>,
}

impl<V: Clone> Observer<V> for Recorder<V> {
    fn on_iteration(&mut self, state: &IterationState<'_, V>) {
        self.iterates.push(state.iterate.clone());
        self.residuals.push(state.residual);
    }
}
