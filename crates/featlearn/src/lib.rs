//! featlearn: the science of feature learning versus kernels, as plain functions over burn
//! tensors. `../../shared/SCIENCE.md` in the repository is the specification; each module names
//! the section it implements.
//!
//! - [`compute`]: the backend (ndarray or wgpu) and precision, chosen at run time.
//! - [`rng`], [`data`]: seeded, chunk-invariant sampling.
//! - [`hermite`], [`target`]: multi-index polynomial targets f*(x) = g(Ux).
//! - [`network`], [`algorithm1`]: the two-layer network, Algorithm 1 and random features.
//! - [`kernels`], [`krr`]: NTK, NNGP and generic kernels, tiled Gram matrices, kernel ridge.
//! - [`linalg`]: blocked Cholesky and conjugate gradient on the device.
//! - [`training`]: both layers trained by gradient descent, and the empirical NTK.
//! - [`metrics`]: test errors, subspace alignment, kernel-target alignment.

pub mod algorithm1;
pub mod compute;
pub mod data;
pub mod hermite;
pub mod host;
pub mod kernels;
pub mod krr;
pub mod linalg;
pub mod metrics;
pub mod network;
pub mod training;
pub mod rng;
pub mod target;

pub use compute::{BackendKind, Compute, Precision};

/// Everything that can go wrong, as a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a value out of range, an inconsistent option.
    #[error("{0}")]
    Invalid(String),
    /// The requested backend cannot run here.
    #[error("{0}")]
    Backend(String),
    /// A non-finite value appeared during training or solving.
    #[error("diverged: {0}")]
    Diverged(String),
    /// A matrix that must be positive definite is not.
    #[error("matrix is not positive definite (non-positive pivot at row {row})")]
    NotPositiveDefinite { row: usize },
    /// A job does not fit its memory budget.
    #[error("{0}")]
    Memory(String),
}
