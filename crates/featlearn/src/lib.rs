//! featlearn: the science of feature learning versus kernels, as plain functions over burn
//! tensors. `docs/science.md` in the repository states the mathematics; each module names the
//! section it implements.
//!
//! - [`compute`]: the backend (ndarray or wgpu), precision and device limits, chosen at run time.
//! - [`rng`], [`data`]: seeded, chunk-invariant sampling.
//! - [`hermite`], [`target`]: multi-index polynomial targets f*(x) = g(Ux).
//! - [`network`], [`algorithm1`]: the two-layer network, Algorithm 1 and random features.
//! - [`kernels`], [`krr`]: NTK, NNGP and generic kernels, tiled Gram matrices, kernel ridge.
//! - [`tiles`]: symmetric n x n matrices as tiles under the device's largest buffer.
//! - [`linalg`]: tiled Cholesky and conjugate gradient on the device.
//! - [`host`]: small dense linear algebra on the host (faer).
//! - [`backprop`]: the two-layer network's forward and backward pass by hand, batched over replicas.
//! - [`dynamics`]: multi-step SGD of a two-layer student, replicas batched.
//! - [`overlaps`]: online SGD by the exact chain of the overlaps, at a cost free of d.
//! - [`training`]: both layers trained by gradient descent, and the empirical NTK.
//! - [`metrics`]: test errors, subspace alignment, kernel-target alignment.

/// `fn $name<T: Bound>(args) -> R` (the type parameter optional), which calls `$inner(args)` (an
/// `#[inline(always)]` fn) compiled for the widest vector unit the CPU has, chosen at run time:
/// AVX-512, else AVX2, else the crate's baseline x86-64 (SSE2: two f64 lanes, no fused
/// multiply-add), the only one on other architectures. Rust contracts no multiply and add into a
/// fused one, so every width performs the same operations in the same order and gives the same
/// bits. For the hot host loops the compiler vectorises (the NTK pass, gd's ReLU pass, the SGD
/// host step).
macro_rules! widest {
    ($(#[$doc:meta])* $vis:vis fn $name:ident$(<$t:ident: $bound:path>)?($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $inner:ident;) => {
        $(#[$doc])*
        $vis fn $name$(<$t: $bound>)?($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512$(<$t: $bound>)?($($arg: $ty),*) -> $ret {
                    $inner($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2$(<$t: $bound>)?($($arg: $ty),*) -> $ret {
                    $inner($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked on the line above)
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked on the line above)
                    return unsafe { avx2($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}

pub mod algorithm1;
pub mod backprop;
pub mod compute;
pub mod data;
pub mod dynamics;
pub mod hermite;
pub mod host;
pub mod kernels;
pub mod krr;
pub mod linalg;
pub mod metrics;
pub mod network;
pub mod overlaps;
pub mod training;
pub mod rng;
mod simd_gemm;
pub mod target;
pub mod tiles;

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
    /// A job does not fit its memory budget, or a tensor does not fit the device's largest buffer.
    #[error("{0}")]
    Memory(String),
    /// The device failed: an allocation it refused, a lost device.
    #[error("device error: {0}")]
    Device(String),
}
