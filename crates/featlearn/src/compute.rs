//! Where tensors live: the backend (ndarray on the CPU, wgpu on a GPU) and the float precision,
//! both chosen at run time; the device's limits (its largest single buffer, its memory); and the
//! few host <-> device conversions the rest of the crate uses. Every read back from the device
//! goes through [`to_host`], which turns a failed allocation or a lost device into an [`Error`].

use burn::backend::DispatchDevice;
use burn::tensor::{DType, Device, DeviceType, Tensor, TensorData};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::{simd_gemm, Error};

/// Which burn backend runs the tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// burn-ndarray on the host CPU: works everywhere.
    NdArray,
    /// burn-wgpu: Vulkan, Metal or DX12 on whatever adapter wgpu picks (a GPU, or lavapipe).
    Wgpu,
    /// burn's wgpu runtime pinned to Vulkan with SPIR-V kernels (cooperative-matrix
    /// instructions, 64-bit indexing); cargo feature `vulkan`.
    Vulkan,
    /// burn-cuda (CUDA kernels compiled at run time by NVRTC); cargo feature `cuda`.
    Cuda,
}

/// Float precision of every tensor of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    F64,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [BackendKind::NdArray, BackendKind::Wgpu, BackendKind::Vulkan, BackendKind::Cuda];
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::NdArray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Vulkan => "vulkan",
            BackendKind::Cuda => "cuda",
        }
    }
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        }
    }
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }
    /// Bytes of one element.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F64 => 8,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ndarray" => Ok(BackendKind::NdArray),
            "wgpu" => Ok(BackendKind::Wgpu),
            "vulkan" => Ok(BackendKind::Vulkan),
            "cuda" => Ok(BackendKind::Cuda),
            _ => Err(Error::Invalid(format!("unknown backend '{s}' (expected ndarray, wgpu, vulkan or cuda)"))),
        }
    }
}
impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "f32" => Ok(Precision::F32),
            "f64" => Ok(Precision::F64),
            _ => Err(Error::Invalid(format!("unknown precision '{s}' (expected f32 or f64)"))),
        }
    }
}

/// A device, the float dtype every tensor created through it gets, and the device's limits.
///
/// Tensors are created with an explicit dtype, so f32 and f64 work can share a process.
#[derive(Clone, Debug)]
pub struct Compute {
    pub device: Device,
    pub backend: BackendKind,
    pub precision: Precision,
    /// Bytes of the largest single buffer the device allocates (None: no limit, as on ndarray).
    /// Every n x n matrix is split into tiles below it.
    pub max_buffer: Option<u64>,
    /// Bytes of memory the device reports (None where it reports none).
    pub device_memory: Option<u64>,
}

impl Compute {
    /// Opens the backend. A wgpu request on a machine without a usable adapter, or an f64 request
    /// on an adapter without f64 arithmetic, is an error, not a panic.
    pub fn open(backend: BackendKind, precision: Precision) -> Result<Self, Error> {
        let device = match backend {
            // burn 0.22 marks ndarray deprecated in favour of flex; ndarray is the backend we ship.
            #[allow(deprecated)]
            BackendKind::NdArray => Device::ndarray(),
            BackendKind::Wgpu => open_wgpu()?,
            BackendKind::Vulkan => open_vulkan()?,
            BackendKind::Cuda => open_cuda()?,
        };
        if !device.supports_dtype(precision.dtype()) {
            return Err(Error::Backend(format!(
                "the {backend} device does not support {precision} arithmetic"
            )));
        }
        let (max_buffer, device_memory) = device_limits(&device);
        Ok(Compute { device, backend, precision, max_buffer, device_memory })
    }

    /// The same device with its largest buffer set to `bytes` (tests force small tiles with it;
    /// on ndarray it only sets the tile size and the size checks of [`Compute::check_fits`]).
    pub fn with_max_buffer(self, bytes: u64) -> Compute {
        Compute { max_buffer: Some(bytes), ..self }
    }

    /// Rows and columns of a tile when none is asked for: 512 on ndarray (the tile Cholesky's
    /// host diagonal factorisations and panel products stay small next to its trailing update),
    /// 2048 on the GPU backends (fewer, larger kernels).
    pub fn default_tile(&self) -> usize {
        match self.backend {
            BackendKind::NdArray => 512,
            _ => 2048,
        }
    }

    /// The side of the largest square tile at most `requested` x `requested` that fits one
    /// buffer: min(requested, floor(sqrt(max_buffer / bytes per element))), at least 1.
    pub fn tile_side(&self, requested: usize) -> usize {
        let fit = self.max_buffer.map_or(usize::MAX, |b| ((b / self.precision.bytes() as u64) as f64).sqrt() as usize);
        requested.min(fit).max(1)
    }

    /// Rows of a `rows x cols` block that fit one buffer (at least 1, at most `rows`).
    pub fn rows_per_buffer(&self, rows: usize, cols: usize) -> usize {
        let fit = self.max_buffer.map_or(usize::MAX, |b| (b / (cols.max(1) * self.precision.bytes()) as u64) as usize);
        rows.min(fit).max(1)
    }

    /// Refuses a tensor of `values` elements that no buffer of the device can hold, naming it,
    /// its size and the limit.
    pub fn check_fits(&self, what: &str, values: usize) -> Result<(), Error> {
        let bytes = values as u64 * self.precision.bytes() as u64;
        match self.max_buffer {
            Some(limit) if bytes > limit => Err(Error::Memory(format!(
                "{what} needs one buffer of {} ({values} {} values), over the {} device's largest buffer of {} \
                 (set by the device, or by kernel.max_buffer_mb / --max-buffer-mb)",
                human_bytes(bytes),
                self.precision,
                self.backend,
                human_bytes(limit)
            ))),
            _ => Ok(()),
        }
    }

    /// The adapter's name when a GPU backend runs on a software rasterizer on the CPU (llvmpipe,
    /// lavapipe, WARP, SwiftShader: an adapter without a physical device); None on ndarray and
    /// on a real GPU.
    pub fn software_adapter(&self) -> Option<String> {
        if self.backend == BackendKind::NdArray {
            return None;
        }
        let id = std::panic::catch_unwind(|| self.device.identity()).ok().flatten()?;
        let name = id.name.to_lowercase();
        let software = ["llvmpipe", "lavapipe", "warp", "swiftshader"].iter().any(|s| name.contains(s));
        (id.physical.is_none() || software).then_some(id.name)
    }

    /// Whether dense factorisations run on the host in one piece: on ndarray (the host is the
    /// device) unless a buffer limit asks for tiles.
    pub fn factors_on_host(&self) -> bool {
        self.backend == BackendKind::NdArray && self.max_buffer.is_none()
    }

    /// The same device with gradients enabled (tensors made through it can `require_grad`).
    pub fn autodiff(&self) -> Compute {
        Compute { device: self.device.clone().autodiff(), ..self.clone() }
    }

    pub fn dtype(&self) -> DType {
        self.precision.dtype()
    }

    /// Waits for all queued work (use before reading a timer).
    pub fn sync(&self) {
        let _ = self.device.sync();
    }

    /// A `rows x cols` matrix from row-major host values.
    pub fn matrix(&self, values: &[f64], rows: usize, cols: usize) -> Tensor<2> {
        assert_eq!(values.len(), rows * cols, "matrix: {} values for {rows}x{cols}", values.len());
        Tensor::from_data(self.host_data(values, vec![rows, cols]), (&self.device, self.dtype()))
    }

    /// A vector from host values.
    pub fn vector(&self, values: &[f64]) -> Tensor<1> {
        Tensor::from_data(self.host_data(values, vec![values.len()]), (&self.device, self.dtype()))
    }

    pub fn zeros<const D: usize>(&self, shape: [usize; D]) -> Tensor<D> {
        Tensor::zeros(shape, (&self.device, self.dtype()))
    }

    fn host_data(&self, values: &[f64], shape: Vec<usize>) -> TensorData {
        match self.precision {
            Precision::F32 => TensorData::new(values.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape),
            Precision::F64 => TensorData::new(values.to_vec(), shape),
        }
    }
}

/// Keeps the Vulkan drivers' window-system probes off stderr. Without a desktop session
/// (XDG_RUNTIME_DIR unset: CI, batch jobs, ssh), Mesa's device-select layer asks Wayland for the
/// display's GPU at every Vulkan instance, and libwayland prints "error: XDG_RUNTIME_DIR is
/// invalid or not set" each time. There is no display to prefer a GPU for then, so the layer is
/// switched off (`NODEVICE_SELECT=1`) unless the user set that variable. Call it first in `main`,
/// before any thread starts.
pub fn quiet_driver_probes() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

/// Where the CPU thread count came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadSource {
    RayonNumThreads,
    SlurmCpusPerTask,
    AllCores,
}

/// The CPU threads of this process and where the count came from: `RAYON_NUM_THREADS` when set
/// to a positive count, else `SLURM_CPUS_PER_TASK` (a Slurm task gets the CPUs it asked for, so
/// tasks that share a node do not oversubscribe it), else every core the OS lets us use.
pub fn thread_count_from(rayon: Option<&str>, slurm: Option<&str>, cores: usize) -> (usize, ThreadSource) {
    let count = |v: Option<&str>| v.and_then(|s| s.trim().parse::<usize>().ok()).filter(|&n| n > 0);
    match (count(rayon), count(slurm)) {
        (Some(n), _) => (n, ThreadSource::RayonNumThreads),
        (None, Some(n)) => (n, ThreadSource::SlurmCpusPerTask),
        (None, None) => (cores.max(1), ThreadSource::AllCores),
    }
}

/// Sets the CPU thread count of the process once, before any tensor work, and returns it:
/// rayon's global pool (burn-ndarray's element-wise ops, faer, the fused kernels) and
/// matrixmultiply's own pool (`MATMUL_NUM_THREADS`, which it caps at 4; a value the user set is
/// kept) follow [`thread_count_from`]. Later calls return the first answer.
pub fn init_threads() -> (usize, ThreadSource) {
    static THREADS: OnceLock<(usize, ThreadSource)> = OnceLock::new();
    *THREADS.get_or_init(|| {
        let var = |k: &str| std::env::var(k).ok();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (n, source) = thread_count_from(var("RAYON_NUM_THREADS").as_deref(), var("SLURM_CPUS_PER_TASK").as_deref(), cores);
        if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
            // read by matrixmultiply at its first product; set before any thread of ours runs
            std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
        }
        // fails only when the pool was already built (by an earlier caller): it then keeps its size
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
        (rayon::current_num_threads(), source)
    })
}

/// Default memory budget of a job: half of the host's available memory for ndarray; 90% of the
/// memory a GPU reports (cubecl reads it for CUDA, and for wgpu in builds with the Vulkan or
/// Metal compilers), and 8 GiB where it reports none (set it explicitly for a larger GPU).
pub fn default_memory_budget(c: &Compute) -> u64 {
    match (c.backend, c.device_memory) {
        (BackendKind::NdArray, _) => host_available_memory().map_or(4 << 30, |b| b / 2),
        (_, Some(bytes)) => bytes / 10 * 9,
        (_, None) => 8 << 30,
    }
}

/// The largest single allocation and the memory of a cubecl device (wgpu: the smaller of the
/// adapter's largest buffer and largest storage binding, 128 MiB on lavapipe and 2 GiB - 1 on
/// NVIDIA); (None, None) for ndarray, whose buffers are host memory.
fn device_limits(device: &Device) -> (Option<u64>, Option<u64>) {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        DispatchDevice::Cube(cube) => {
            let properties = cube.client().properties().memory.clone();
            (Some(properties.max_page_size), properties.max_memory())
        }
        _ => (None, None),
    }
}

/// 1.5 GiB, 96.0 MiB, 12.0 KiB, 512 B.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        _ if bytes >= 1 << 30 => format!("{:.2} GiB", b / (1u64 << 30) as f64),
        _ if bytes >= 1 << 20 => format!("{:.1} MiB", b / (1u64 << 20) as f64),
        _ if bytes >= 1 << 10 => format!("{:.1} KiB", b / 1024.0),
        _ => format!("{bytes} B"),
    }
}

fn host_available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether the device is burn-ndarray's (the host CPU, without autodiff), where every tensor op
/// is its own pass over memory.
pub fn is_ndarray(device: &Device) -> bool {
    #[allow(deprecated)]
    let ndarray = Device::ndarray();
    *device == ndarray
}

/// Multiply-adds from which the products below hand an ndarray product to faer's gemm: below it
/// the copies in and out cost more than the faster kernel saves.
const HOST_GEMM_MIN: usize = 1 << 22;

/// Whether an operand enters the product as it is or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    N,
    T,
}

/// The product a b (a: m x k, b: k x n). On ndarray, a product of at least 2^22 multiply-adds
/// runs on the host buffers on every core with the CPU's widest kernels (`host_product`)
/// rather than in matrixmultiply, which stops at 4 threads and narrower kernels
/// (BENCHMARKS.md), in the `blas` build too (burn-ndarray's OpenBLAS path was slower on the
/// transposed operands of the first step). On the GPU backends, and for small products, it is
/// burn's matmul.
pub fn matmul(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    product(a, Op::N, b, Op::N)
}

/// a^T b (a: k x m, b: k x n) without forming a^T: faer reads a's rows as columns.
pub fn matmul_tn(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    product(a, Op::T, b, Op::N)
}

/// a b^T (a: m x k, b: n x k) without forming b^T.
pub fn matmul_nt(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    product(a, Op::N, b, Op::T)
}

/// The Gram a^T a (a: k x m, result m x m, symmetric). On ndarray faer reads a where it lies
/// and computes the lower triangle only, half the flops of the full product, then mirrors it.
pub fn gram_tn(a: Tensor<2>) -> Tensor<2> {
    let [k, m] = a.dims();
    let dtype = a.dtype();
    let host = matches!(dtype, DType::F32 | DType::F64) && is_ndarray(&a.device());
    if !host || m.saturating_mul(m).saturating_mul(k) < HOST_GEMM_MIN {
        return a.clone().transpose().matmul(a);
    }
    let device = a.device();
    let out = match dtype {
        DType::F32 => host_gram::<f32>(a),
        _ => host_gram::<f64>(a),
    };
    Tensor::from_data(out.unwrap_or_else(|| nan_matrix(m, m)), (&device, dtype))
}

fn host_gram<T: HostFloat>(a: Tensor<2>) -> Option<TensorData> {
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    let primitive = ndarray_primitive(a)?;
    let a = T::host_view(&primitive)?;
    let m = a.ncols();
    let mut out = vec![T::zero_impl(); m * m];
    matmul(
        faer::MatMut::from_row_major_slice_mut(&mut out, m, m),
        BlockStructure::TriangularLower,
        faer::Accum::Replace,
        a.transpose(),
        BlockStructure::Rectangular,
        a,
        BlockStructure::Rectangular,
        T::one_impl(),
        faer::Par::rayon(0),
    );
    for i in 0..m {
        for j in 0..i {
            out[j * m + i] = out[i * m + j];
        }
    }
    Some(TensorData::new(out, [m, m]))
}

/// Products over a leading replica dimension, (R x m x k)(R x k x n) -> R x m x n, each operand
/// as it is or with its last two dimensions transposed (`ta`, `tb`). One replica goes through the
/// 2-D products above (faer's gemm on ndarray); more are burn's batched matmul.
pub fn batched_matmul(a: Tensor<3>, ta: bool, b: Tensor<3>, tb: bool) -> Tensor<3> {
    let op = |t: bool| if t { Op::T } else { Op::N };
    if a.dims()[0] == 1 && b.dims()[0] == 1 {
        let (a2, b2) = (a.squeeze_dim::<2>(0), b.squeeze_dim::<2>(0));
        return product(a2, op(ta), b2, op(tb)).unsqueeze_dim(0);
    }
    let orient = |t: Tensor<3>, tr: bool| if tr { t.swap_dims(1, 2) } else { t };
    orient(a, ta).matmul(orient(b, tb))
}

fn product(a: Tensor<2>, op_a: Op, b: Tensor<2>, op_b: Op) -> Tensor<2> {
    let orient = |t: Tensor<2>, op| if op == Op::T { t.transpose() } else { t };
    let (da, db) = (a.dims(), b.dims());
    let (m, k) = if op_a == Op::T { (da[1], da[0]) } else { (da[0], da[1]) };
    let n = if op_b == Op::T { db[0] } else { db[1] };
    let dtype = a.dtype();
    let host = matches!(dtype, DType::F32 | DType::F64) && dtype == b.dtype() && is_ndarray(&a.device());
    if !host || m.saturating_mul(k).saturating_mul(n) < HOST_GEMM_MIN {
        return orient(a, op_a).matmul(orient(b, op_b));
    }
    let device = a.device();
    let out = match dtype {
        DType::F32 => host_gemm::<f32>(a, op_a, b, op_b),
        _ => host_gemm::<f64>(a, op_a, b, op_b),
    };
    // Reading an ndarray tensor does not fail (host memory); were it to, the product is NaN,
    // which the callers' finiteness checks report as a failed trial.
    Tensor::from_data(out.unwrap_or_else(|| nan_matrix(m, n)), (&device, dtype))
}

fn nan_matrix(rows: usize, cols: usize) -> TensorData {
    TensorData::new(vec![f64::NAN; rows * cols], [rows, cols])
}

/// burn-ndarray's own tensor inside a tensor on the ndarray device (None on any other backend).
#[allow(deprecated)]
fn ndarray_primitive<const D: usize>(t: Tensor<D>) -> Option<burn::backend::ndarray::NdArrayTensor> {
    t.try_into_primitive::<burn::backend::NdArray>().ok()
}

/// [`ndarray_primitive`] for a tensor known to be on the ndarray device: failing is a device error.
#[allow(deprecated)]
fn ndarray_tensor<const D: usize>(t: Tensor<D>) -> Result<burn::backend::ndarray::NdArrayTensor, Error> {
    ndarray_primitive(t).ok_or_else(|| Error::Device("an ndarray tensor is not burn-ndarray's".into()))
}

/// The values of a burn-ndarray float tensor that burn-ndarray's own read would copy element by
/// element through dynamic indices (about 20 ns a value: 10 ms for the quick config's 500 x 1000
/// training features): a shared contiguous buffer is copied in one memcpy, a strided matrix
/// (transposed, sliced) row by row through a faer view. None for a uniquely held contiguous
/// buffer, which burn-ndarray hands over without a copy.
#[allow(deprecated)]
fn host_copy(t: &burn::backend::ndarray::NdArrayTensor) -> Option<TensorData> {
    use burn::backend::ndarray::NdArrayTensor;
    match t {
        NdArrayTensor::F32(s) => match s.view().as_slice() {
            Some(v) => (!s.is_unique()).then(|| TensorData::new(v.to_vec(), s.shape().to_vec())),
            None => f32::host_view(t).map(strided_copy),
        },
        NdArrayTensor::F64(s) => match s.view().as_slice() {
            Some(v) => (!s.is_unique()).then(|| TensorData::new(v.to_vec(), s.shape().to_vec())),
            None => f64::host_view(t).map(strided_copy),
        },
        _ => None,
    }
}

/// Copies a 2-D tensor's values into `dst` (same shape): on ndarray faer reads the tensor's
/// buffer where it lies ([`HostFloat::host_view`]), elsewhere it is read back first.
pub(crate) fn copy_into<T: HostFloat>(t: Tensor<2>, mut dst: faer::MatMut<'_, T>) -> Result<(), Error> {
    if is_ndarray(&t.device()) {
        let primitive = ndarray_tensor(t)?;
        let view = T::host_view(&primitive).ok_or_else(|| Error::Device("an ndarray tensor of another element type".into()))?;
        dst.copy_from(view);
        return Ok(());
    }
    let [rows, cols] = t.dims();
    let data = read_data(t)?;
    let values = data.as_slice::<T>().map_err(|e| Error::Device(format!("reading a tensor: {e:?}")))?;
    dst.copy_from(faer::MatRef::from_row_major_slice(values, rows, cols));
    Ok(())
}

/// A faer view's values, row-major.
fn strided_copy<T: HostFloat>(v: faer::MatRef<'_, T>) -> TensorData {
    let values: Vec<T> = (0..v.nrows()).flat_map(|i| (0..v.ncols()).map(move |j| v[(i, j)])).collect();
    TensorData::new(values, [v.nrows(), v.ncols()])
}

/// The float types of a run, as the host code sees them: faer multiplies them, fused passes
/// read them as f64 (burn's `ToElement::to_f64`) and round f64 back to them (`from_f64`, a
/// plain `as` cast), and an ndarray tensor of each can be read in place.
#[allow(deprecated)]
pub(crate) trait HostFloat: faer::traits::ComplexField + burn::tensor::Element + simd_gemm::SimdFloat {
    fn from_f64(v: f64) -> Self;
    /// A faer view of the tensor's buffer where it lies, with the tensor's own strides: a
    /// transposed, sliced or shared tensor is read in place, nothing is copied. None where the
    /// tensor is not 2-D or holds another element type.
    fn host_view(t: &burn::backend::ndarray::NdArrayTensor) -> Option<faer::MatRef<'_, Self>>;
}

#[allow(deprecated)]
impl HostFloat for f32 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn host_view(t: &burn::backend::ndarray::NdArrayTensor) -> Option<faer::MatRef<'_, f32>> {
        let burn::backend::ndarray::NdArrayTensor::F32(s) = t else { return None };
        let v = s.view();
        // SAFETY: the buffer belongs to `t` (an Arc'd array or bytes it owns), which outlives the
        // view; it is shared copy-on-write, so nothing writes to it while `t` is held.
        unsafe { strided_view(v.as_ptr(), v.shape(), v.strides()) }
    }
}

#[allow(deprecated)]
impl HostFloat for f64 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    fn host_view(t: &burn::backend::ndarray::NdArrayTensor) -> Option<faer::MatRef<'_, f64>> {
        let burn::backend::ndarray::NdArrayTensor::F64(s) = t else { return None };
        let v = s.view();
        // SAFETY: as for f32.
        unsafe { strided_view(v.as_ptr(), v.shape(), v.strides()) }
    }
}

/// A rows x cols faer view of `ptr` with ndarray's strides (in elements, either sign).
///
/// # Safety
/// Every element the shape and strides reach must stay valid and unwritten for `'a`.
unsafe fn strided_view<'a, T>(ptr: *const T, shape: &[usize], strides: &[isize]) -> Option<faer::MatRef<'a, T>> {
    match (shape, strides) {
        (&[rows, cols], &[rs, cs]) => Some(faer::MatRef::from_raw_parts(ptr, rows, cols, rs, cs)),
        _ => None,
    }
}

/// a b (each operand as it is or transposed, `op_a`, `op_b`) on the host: faer reads both
/// operands where they lie and writes a fresh row-major buffer.
fn host_gemm<T: HostFloat>(a: Tensor<2>, op_a: Op, b: Tensor<2>, op_b: Op) -> Option<TensorData> {
    let (pa, pb) = (ndarray_primitive(a)?, ndarray_primitive(b)?);
    let (a, b) = (T::host_view(&pa)?, T::host_view(&pb)?);
    let a = if op_a == Op::T { a.transpose() } else { a };
    let b = if op_b == Op::T { b.transpose() } else { b };
    let (m, n) = (a.nrows(), b.ncols());
    let mut out = Vec::with_capacity(m * n);
    host_product(&mut out.spare_capacity_mut()[..m * n], a, b);
    // SAFETY: host_product wrote each of the m n values
    unsafe { out.set_len(m * n) };
    Some(TensorData::new(out, [m, n]))
}

/// c = a b into c (m x n, row-major) on the threads of the rayon pool. Where our own kernels beat
/// faer's ([`simd_gemm::chosen`]: AVX2 where it is the CPU's widest vector unit, AVX-512 on an
/// Intel CPU), they take the shapes they win ([`simd_gemm::Tiling::wins`]): faer's AVX2 kernels
/// took 13-28% longer at 2048^3 on an AMD EPYC (Zen 3), its AVX-512 kernels 4-9% longer on an
/// Intel Xeon (Sapphire Rapids) (BENCHMARKS.md). Elsewhere faer's gemm on one block per thread
/// ([`split_gemm`]). Both give faer's sums to the bit, so the CPU and the shape do not change a
/// run's numbers. c need not hold values: ours write each before reading it, and faer's gemm
/// does not read c where it replaces it.
fn host_product<T: HostFloat>(c: &mut [std::mem::MaybeUninit<T>], a: faer::MatRef<'_, T>, b: faer::MatRef<'_, T>) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    if let Some(tiling) = simd_gemm::chosen::<T>().filter(|t| t.wins(m, k, n)) {
        if simd_gemm::gemm(c, a, b, tiling) {
            return;
        }
    }
    assert!(c.len() == m * n, "host_product: {m}x{n} into {} values", c.len());
    // SAFETY: c holds m rows of n values, row-major, and nothing else touches it while the view
    // lives; faer's gemm with Accum::Replace writes every value of c and reads none
    let c = unsafe { faer::MatMut::from_raw_parts_mut(c.as_mut_ptr() as *mut T, m, n, n as isize, 1) };
    split_gemm(c, a, b, rayon::current_num_threads());
}

/// c = a b on `parts` threads: c is cut along its longer side into `parts` blocks of near-equal
/// size, and each block is one single-threaded faer gemm (each packs its own share of the
/// operands). faer's own parallel gemm (`Par::rayon`) reached 248-273 GFLOP/s at 2 threads on a
/// Xeon (Sapphire Rapids, 2048^3 f32) where one thread gives 152 and OpenBLAS 318-329; these
/// blocks reach 314-333 (BENCHMARKS.md). Every element is the same k-reduction in the same
/// kernel, cut or not. c need not hold values: faer's `Accum::Replace` reads none (its documented
/// contract). Zeroing c first, on one thread, made the first step's x W^T (20000 x 64 x 2000,
/// 160 MB) take 1.8x as long on a Zen 5. A side shorter than two blocks of 32 is not cut: faer's
/// own threads.
fn split_gemm<T: faer::traits::ComplexField>(c: faer::MatMut<'_, T>, a: faer::MatRef<'_, T>, b: faer::MatRef<'_, T>, parts: usize) {
    const MIN_SIDE: usize = 32;
    let (m, n) = (c.nrows(), c.ncols());
    if parts <= 1 || m.max(n) < 2 * MIN_SIDE {
        let par = if parts <= 1 { faer::Par::Seq } else { faer::Par::rayon(parts) };
        faer::linalg::matmul::matmul(c, faer::Accum::Replace, a, b, T::one_impl(), par);
        return;
    }
    if n > m {
        // c^T = b^T a^T: the columns of c are the rows of c^T (views, nothing is copied)
        return split_gemm(c.transpose_mut(), b.transpose(), a.transpose(), parts);
    }
    let first = parts / 2;
    let cut = m * first / parts;
    let (c0, c1) = c.split_at_row_mut(cut);
    let (a0, a1) = a.split_at_row(cut);
    rayon::join(|| split_gemm(c0, a0, b, first), || split_gemm(c1, a1, b, parts - first));
}

/// Reads a tensor back to the host: the data as the device holds it, row-major, in a buffer the
/// caller owns and may write into (on ndarray a uniquely held buffer is handed over, any other
/// copied in one pass: `host_copy`). A failed allocation, a lost device or any other failure
/// of the work that was to produce it is an [`Error::Device`].
pub fn read_data<const D: usize>(t: Tensor<D>) -> Result<TensorData, Error> {
    let t = if is_ndarray(&t.device()) {
        let primitive = ndarray_tensor(t)?;
        if let Some(data) = host_copy(&primitive) {
            return Ok(data);
        }
        #[allow(deprecated)]
        Tensor::from_primitive::<burn::backend::NdArray>(primitive)
    } else {
        t
    };
    t.try_into_data().map_err(|e| Error::Device(e.reason().lines().next().unwrap_or("device failure").to_string()))
}

/// Reads a float tensor back to the host as f64 values (row-major).
pub fn to_host<const D: usize>(t: Tensor<D>) -> Result<Vec<f64>, Error> {
    read_data(t)?.try_into_vec_as::<f64>().map_err(|e| Error::Device(format!("reading a float tensor: {e:?}")))
}

/// Reads a scalar (a one-element tensor) back to the host.
pub fn scalar<const D: usize>(t: Tensor<D>) -> Result<f64, Error> {
    let v = to_host(t)?;
    v.first().copied().ok_or_else(|| Error::Device("an empty tensor where a scalar was expected".into()))
}

/// The wgpu runtime can be initialised once per process; every later open reuses it.
fn open_wgpu() -> Result<Device, Error> {
    static WGPU: OnceLock<Result<Device, String>> = OnceLock::new();
    let opened = WGPU.get_or_init(|| {
        // Initialising with explicit options reports a missing adapter as an error, not a panic.
        match std::panic::catch_unwind(|| Device::wgpu_options().init()) {
            Ok(Ok(device)) => Ok(device),
            Ok(Err(e)) => Err(format!("no usable wgpu adapter: {e}")),
            Err(_) => Err("no usable wgpu adapter (is a Vulkan/Metal/DX12 driver installed? on Debian: mesa-vulkan-drivers)".into()),
        }
    });
    opened.clone().map_err(Error::Backend)
}

/// Opens a device whose constructor is lazy (the runtime starts at the first op) by running one
/// tiny op inside `catch_unwind`: a missing driver becomes an error naming `hint`.
#[cfg(any(feature = "vulkan", feature = "cuda"))]
fn open_lazy(name: &str, make: fn() -> Device, hint: &str) -> Result<Device, Error> {
    // the runtime reports a missing adapter by panicking in its server thread: keep those
    // panics (and their backtraces) off the user's terminal while probing
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let device = make();
        Tensor::<1>::ones([1], (&device, DType::F32)).try_into_data().map(|_| device)
    });
    std::panic::set_hook(hook);
    match probe {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(Error::Backend(format!("the {name} device failed: {}", e.reason()))),
        Err(_) => Err(Error::Backend(format!("no usable {name} device ({hint})"))),
    }
}

/// wgpu pinned to Vulkan (SPIR-V kernels), opened once per process.
#[cfg(feature = "vulkan")]
fn open_vulkan() -> Result<Device, Error> {
    use burn::tensor::DeviceKind;
    static VULKAN: OnceLock<Result<Device, String>> = OnceLock::new();
    let opened = VULKAN.get_or_init(|| {
        // the default kind pinned to Vulkan skips software adapters (lavapipe): try those next
        open_lazy("vulkan", || Device::vulkan(DeviceKind::DefaultDevice), "is a Vulkan driver installed?")
            .or_else(|_| open_lazy("vulkan", || Device::vulkan(DeviceKind::Cpu), "is a Vulkan driver installed?"))
            .map_err(|e| e.to_string())
    });
    opened.clone().map_err(Error::Backend)
}

#[cfg(not(feature = "vulkan"))]
fn open_vulkan() -> Result<Device, Error> {
    Err(Error::Backend("this featlearn was built without the vulkan backend (cargo build --release --features featlearn-cli/vulkan)".into()))
}

/// The first CUDA device. burn-cuda compiles its kernels with NVRTC at run time, so the CUDA
/// driver and the CUDA headers must be installed.
#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Device, Error> {
    open_lazy("cuda", || Device::cuda(0), "burn-cuda needs an NVIDIA driver, and NVRTC with the CUDA headers at run time")
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Device, Error> {
    Err(Error::Backend("this featlearn was built without the cuda backend (cargo build --release --features featlearn-cli/cuda)".into()))
}

/// One line per device this build can use: ndarray always (with its thread count), then each wgpu adapter with its name
/// and whether it is a physical GPU or a software/CPU adapter (e.g. lavapipe).
pub fn list_devices() -> Vec<String> {
    let (threads, source) = init_threads();
    let source = match source {
        ThreadSource::RayonNumThreads => "RAYON_NUM_THREADS",
        ThreadSource::SlurmCpusPerTask => "SLURM_CPUS_PER_TASK",
        ThreadSource::AllCores => "all cores",
    };
    let mut lines = vec![format!("ndarray  cpu  (host CPU, {threads} threads from {source}; f32 and f64)")];
    let found = std::panic::catch_unwind(|| Device::enumerate(DeviceType::Wgpu).into_vec());
    match found {
        Ok(devices) if !devices.is_empty() => {
            for (i, d) in devices.iter().enumerate() {
                let name_kind = std::panic::catch_unwind(|| d.identity());
                let (name, kind) = match name_kind {
                    Ok(Some(id)) => {
                        let kind = if id.physical.is_some() { "gpu" } else { "software/cpu adapter" };
                        (id.name, kind)
                    }
                    _ => ("unknown adapter".to_string(), "unknown"),
                };
                let f64_ok = std::panic::catch_unwind(|| d.supports_dtype(DType::F64)).unwrap_or(false);
                lines.push(format!(
                    "wgpu:{i}   {kind}  {name}  ({})",
                    if f64_ok { "f32 and f64" } else { "f32 only" }
                ));
            }
        }
        _ => lines.push("wgpu     none  (no adapter found: install a Vulkan/Metal/DX12 driver)".into()),
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_follows_rayon_then_slurm_then_the_cores() {
        assert_eq!(thread_count_from(Some("3"), Some("8"), 16), (3, ThreadSource::RayonNumThreads));
        assert_eq!(thread_count_from(None, Some("8"), 16), (8, ThreadSource::SlurmCpusPerTask));
        assert_eq!(thread_count_from(Some("0"), Some(" 2 "), 16), (2, ThreadSource::SlurmCpusPerTask));
        assert_eq!(thread_count_from(Some("many"), None, 16), (16, ThreadSource::AllCores));
        assert_eq!(thread_count_from(None, None, 0), (1, ThreadSource::AllCores));
    }

    /// host_product on faer's path (n < 256, or c wider than tall: shapes our kernels never
    /// take) into a buffer of NaNs: every value is written and none is read (a NaN read into a
    /// sum would stay NaN), and the threads' blocks give faer's one-thread product to the bit.
    /// Rows cut across threads, columns cut (n > m), and a side too short to cut.
    fn check_faer_path<T: HostFloat + std::fmt::Debug>(cast: fn(f64) -> T, nan: T) {
        for (m, k, n) in [(300, 200, 100), (90, 250, 301), (40, 600, 50), (7, 5, 3)] {
            let a = faer::Mat::<T>::from_fn(m, k, |i, j| cast(((i * 7 + j * 3) % 17) as f64 / 17.0 - 0.5));
            let b = faer::Mat::<T>::from_fn(k, n, |i, j| cast(((i * 5 + j * 11) % 13) as f64 / 13.0 - 0.25));
            let mut c = vec![std::mem::MaybeUninit::new(nan); m * n];
            host_product(&mut c, a.as_ref(), b.as_ref());
            let mut reference = faer::Mat::<T>::zeros(m, n);
            faer::linalg::matmul::matmul(reference.as_mut(), faer::Accum::Replace, a.as_ref(), b.as_ref(), T::one_impl(), faer::Par::Seq);
            for (x, v) in c.iter().enumerate() {
                // SAFETY: every value was initialised (NaN, then the product)
                let v = unsafe { v.assume_init() };
                assert!(v == reference[(x / n, x % n)], "{m}x{k}x{n}: c[{x}] = {v:?}, faer's one-thread product {:?}", reference[(x / n, x % n)]);
            }
        }
    }

    #[test]
    fn faer_products_write_every_value_and_read_none() {
        check_faer_path::<f32>(|v| v as f32, f32::NAN);
        check_faer_path::<f64>(|v| v, f64::NAN);
    }
}
