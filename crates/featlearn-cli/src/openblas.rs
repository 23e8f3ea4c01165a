//! The `blas` build links the system OpenBLAS. Debian's OpenBLAS 0.3.21 does not recognise some
//! (virtualised) Xeons and falls back to its generic "Prescott" kernels: 54 GFLOP/s f32 matmul on
//! the 2-core CI machine instead of 220 with its AVX-512 kernels. OpenBLAS reads
//! `OPENBLAS_CORETYPE` when the library is loaded, before `main`, so the process re-executes
//! itself once with the best core type the CPU reports. A core type set by the user is kept.

use std::ffi::{c_char, CStr};
use std::os::unix::process::CommandExt;
use std::process::Command;

extern "C" {
    fn openblas_get_corename() -> *const c_char;
}

/// The kernel family OpenBLAS picked for this CPU, e.g. "SkylakeX" or "Prescott".
pub fn core_name() -> String {
    // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(openblas_get_corename()) }.to_string_lossy().into_owned()
}

/// Re-executes the process with `OPENBLAS_CORETYPE` set when OpenBLAS fell back to its generic
/// kernels on a CPU with AVX2 or AVX-512. Returns (and the process goes on as it is) otherwise,
/// or when the re-execution fails.
pub fn use_the_cpus_kernels() {
    if std::env::var_os("OPENBLAS_CORETYPE").is_some() || core_name() != "Prescott" {
        return;
    }
    let best = if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
    {
        "SkylakeX"
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        "Haswell"
    } else {
        return;
    };
    if let Ok(exe) = std::env::current_exe() {
        // exec only returns on failure; then the generic kernels stay, which is still correct.
        let _ = Command::new(exe).args(std::env::args_os().skip(1)).env("OPENBLAS_CORETYPE", best).exec();
    }
}
