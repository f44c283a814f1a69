//! One error type for the crate: what went wrong, and what to do about it.

/// Everything gradguard can refuse or fail at. Bad input never panics; it lands here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{detail}. On Debian/Ubuntu install a CPU Vulkan driver: \
         `apt-get install -y mesa-vulkan-drivers libvulkan1`, or pick another backend with \
         WGPU_BACKEND=vulkan|gl|metal|dx12"
    )]
    NoAdapter { detail: String },

    #[error("requesting a device from adapter `{adapter}` failed: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    #[error("the gradient set is empty: give at least one segment")]
    EmptySet,

    #[error("segment {segment}: byte offset {offset} is not a multiple of 4 (f32 elements must be aligned)")]
    MisalignedOffset { segment: usize, offset: u64 },

    #[error("segment {segment}: bytes {start}..{end} run past the end of its buffer ({buffer_size} bytes)")]
    OutOfBounds { segment: usize, start: u64, end: u64, buffer_size: u64 },

    #[error("segment {segment}: its buffer lacks usage {missing:?} (create it with BufferUsages::{missing:?})")]
    MissingUsage { segment: usize, missing: wgpu::BufferUsages },

    /// A kernel operand (named by `what`, e.g. "matmul C") lacks a usage flag its binding
    /// needs. [`Error::MissingUsage`] is the same refusal for a gradient-set segment.
    #[error("{what}: the buffer lacks usage {missing:?} (create it with BufferUsages::{missing:?})")]
    MissingBufferUsage { what: String, missing: wgpu::BufferUsages },

    #[error("{what} must be a positive finite number, got {value}")]
    NotPositive { what: &'static str, value: f64 },

    #[error("{what}: expected {expected}, got {actual}")]
    LengthMismatch { what: String, expected: u64, actual: u64 },

    #[error("non-finite gradient: {nan} NaN and {inf} inf elements, first in segment {segment}")]
    NonFinite { segment: u32, nan: u32, inf: u32 },

    #[error("the gradient norm overflows f32 ({norm}) although every element is finite")]
    NormOverflow { norm: f32 },

    #[error("segments {first} and {second} overlap in their buffer: each element may belong to one segment only")]
    OverlappingSegments { first: usize, second: usize },

    #[error("the device reported an error in {during}: {message}")]
    Device { during: &'static str, message: String },

    #[error("reading back from the device failed: {0}")]
    Readback(String),

    #[error("invalid argument: {0}")]
    Invalid(String),

    /// A setting outside the range it is meaningful in (a percentile above 100, a negative
    /// z-score limit, a NaN…).
    #[error("{what} must be {expected}, got {value}")]
    OutOfRange { what: &'static str, value: f64, expected: &'static str },

    /// A model layer with a zero size (no features, no hidden units, no time steps).
    #[error("layer {layer} ({kind}): {what} must be ≥ 1, got 0")]
    EmptyLayer { layer: usize, kind: &'static str, what: &'static str },

    /// A file or directory that could not be written, created or read.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint that cannot be written, read or resumed from (corrupt, or written by
    /// another configuration).
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: std::path::PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
