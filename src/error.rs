//! One error type for the crate: what went wrong, and what to do about it.

/// Everything gradguard can refuse or fail at. Bad input never panics; it lands here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{detail}. On Debian/Ubuntu install a CPU Vulkan driver: \
         `apt-get install -y mesa-vulkan-drivers libvulkan1`, or pick another backend with \
         WGPU_BACKEND=vulkan|gl|metal|dx12"
    )]
    /// No adapter matched: none installed, or none passing the `WGPU_BACKEND` /
    /// `WGPU_ADAPTER_NAME` filters. Returned by [`Gpu::new`](crate::Gpu::new).
    NoAdapter {
        /// Which filter excluded everything (` for WGPU_BACKEND=…`, ` whose name contains …`),
        /// or empty when no filter was set.
        detail: String,
    },

    /// `WGPU_BACKEND` names a backend wgpu does not know.
    #[error("WGPU_BACKEND={value}: `{name}` is not a backend; use vulkan, gl, metal or dx12 (comma-separated), or unset it")]
    UnknownBackend {
        /// The unknown name.
        name: String,
        /// The whole variable.
        value: String,
    },

    #[error("requesting a device from adapter `{adapter}` failed: {source}")]
    /// The adapter was found but refused to open a device with the requested features and
    /// limits.
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's reason.
        #[source]
        source: wgpu::RequestDeviceError,
    },

    #[error("the gradient set is empty: give at least one segment")]
    /// A [`GradSet`](crate::GradSet) with no segments.
    EmptySet,

    #[error("segment {segment}: byte offset {offset} is not a multiple of 4 (f32 elements must be aligned)")]
    /// A segment's byte offset is not a multiple of 4, so it cannot address `f32`s.
    MisalignedOffset {
        /// Index of the segment in the set.
        segment: usize,
        /// The offending byte offset.
        offset: u64,
    },

    #[error("segment {segment}: bytes {start}..{end} run past the end of its buffer ({buffer_size} bytes)")]
    /// A segment's bytes `start..end` run past the end of its buffer.
    OutOfBounds {
        /// Index of the segment in the set.
        segment: usize,
        /// First byte of the segment (its offset).
        start: u64,
        /// One past its last byte (`u64::MAX` if `offset + 4·len` overflowed).
        end: u64,
        /// Size of the buffer in bytes.
        buffer_size: u64,
    },

    #[error("segment {segment}: its buffer lacks usage {} (create it with {})", usage_names(.missing, ""), usage_names(.missing, "BufferUsages::"))]
    /// A segment's buffer was created without a usage the kernels need (gradients need
    /// [`GRAD_USAGES`](crate::GRAD_USAGES), i.e. `STORAGE`).
    MissingUsage {
        /// Index of the segment in the set.
        segment: usize,
        /// The usage flags the buffer lacks.
        missing: wgpu::BufferUsages,
    },

    /// A kernel operand (named by `what`, e.g. "matmul C") lacks a usage flag its binding
    /// needs. [`Error::MissingUsage`] is the same refusal for a gradient-set segment.
    #[error("{what}: the buffer lacks usage {} (create it with {})", usage_names(.missing, ""), usage_names(.missing, "BufferUsages::"))]
    MissingBufferUsage {
        /// The operand, e.g. `"matmul C"`.
        what: String,
        /// The usage flags the buffer lacks.
        missing: wgpu::BufferUsages,
    },

    #[error("{what} must be a positive finite number, got {value}")]
    /// A threshold (`max_norm`, `clip_value`, AGC `clipping`, …) that is ≤ 0, NaN or inf.
    NotPositive {
        /// The parameter's name.
        what: &'static str,
        /// The value given.
        value: f64,
    },

    #[error("{what}: expected {expected}, got {actual}")]
    /// Two things that must have the same length or shape do not (AGC parameters against
    /// gradients, a batch against the model's input, a buffer against its tensor…).
    LengthMismatch {
        /// What was measured.
        what: String,
        /// The length required.
        expected: u64,
        /// The length given.
        actual: u64,
    },

    #[error("non-finite gradient: {nan} NaN and {inf} inf elements, first in segment {segment}")]
    /// The gradients held NaN or ±inf. Returned by
    /// [`NormStats::check_finite`](crate::NormStats::check_finite), e.g. under
    /// [`NonFinitePolicy::Error`](crate::NonFinitePolicy::Error).
    NonFinite {
        /// The first segment (in set order) holding a non-finite element.
        segment: u32,
        /// NaN elements across the whole set.
        nan: u32,
        /// ±inf elements across the whole set.
        inf: u32,
    },

    #[error("the gradient norm overflows f32 ({norm}) although every element is finite")]
    /// Every element is finite but the norm itself exceeds `f32::MAX`. Returned by
    /// [`NormStats::check_finite`](crate::NormStats::check_finite).
    NormOverflow {
        /// The norm as computed (inf).
        norm: f32,
    },

    #[error("segments {first} and {second} overlap in their buffer: each element may belong to one segment only")]
    /// Two segments of a set share bytes of one buffer.
    OverlappingSegments {
        /// Index of one overlapping segment.
        first: usize,
        /// Index of the other.
        second: usize,
    },

    #[error("the device reported an error in {during}: {message}")]
    /// wgpu reported a validation or out-of-memory error (caught in an error scope) or a
    /// failed poll, during the named operation.
    Device {
        /// The operation, e.g. `"filling a new buffer"`.
        during: &'static str,
        /// wgpu's message.
        message: String,
    },

    #[error("reading back from the device failed: {0}")]
    /// Mapping or decoding a buffer read back from the device failed (map error, a step
    /// never recorded, a malformed stats record).
    Readback(String),

    #[error("{0}")]
    /// A command line the CLI cannot run; the message names the flag and why. Only the CLI's
    /// parsing returns it: the library's refusals have the typed variants below.
    Usage(String),

    /// A kernel's result that disagrees with its CPU twin beyond the rounding bound (a
    /// benchmark's self-check).
    #[error("{what}: element {index} is {got}, expected {want} (tolerance {tolerance})")]
    WrongResult {
        /// The kernel and problem checked.
        what: String,
        /// The first element out of bounds.
        index: usize,
        /// The kernel's value.
        got: f32,
        /// The CPU twin's value.
        want: f32,
        /// The bound it exceeds.
        tolerance: f32,
    },

    /// A process-wide runtime (MPI) initialised a second time.
    #[error("{0} is already initialised in this process")]
    AlreadyInitialised(&'static str),

    /// A setting outside the range it is meaningful in (a percentile above 100, a negative
    /// z-score limit, a NaN…).
    #[error("{what} must be {expected}, got {value}")]
    OutOfRange {
        /// The setting's name.
        what: &'static str,
        /// The value given.
        value: f64,
        /// The accepted range, in words.
        expected: &'static str,
    },

    /// Something that would not fit: more bytes than a device limit or the host budget, more
    /// invocations than a workgroup may have.
    #[error("{what} needs {amount} {unit}, more than {limit_name} ({limit} {unit})")]
    TooLarge {
        /// What was to be allocated or launched.
        what: String,
        /// How much it needs, in `unit`s.
        amount: u64,
        /// The unit: `"bytes"`, `"invocations"`…
        unit: &'static str,
        /// The limit it exceeds, in `unit`s.
        limit: u64,
        /// The limit's name, e.g. "the device's max_buffer_size".
        limit_name: &'static str,
    },

    /// A model layer with a zero size (no features, no hidden units, no time steps).
    #[error("layer {layer} ({kind}): {what} must be ≥ 1, got 0")]
    EmptyLayer {
        /// Index of the layer in the model.
        layer: usize,
        /// The layer's kind, e.g. `"linear"`.
        kind: &'static str,
        /// The size that is zero.
        what: &'static str,
    },

    /// A file or directory that could not be written, created or read.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was attempted: `"writing"` a file or `"creating"` a directory.
        action: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint that cannot be written, read or resumed from (corrupt, or written by
    /// another configuration).
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Two bindings of one dispatch on one buffer where one is written: WebGPU lets no
    /// dispatch bind a buffer both read-only and writable, nor two overlapping writable ranges.
    #[error("{first} and {second} are the same buffer, and one of them is written: use separate buffers")]
    Aliased {
        /// The first binding's name.
        first: String,
        /// The second binding's name.
        second: String,
    },

    /// An operand of no elements.
    #[error("{what}: no elements (an operand needs at least one)")]
    Empty {
        /// The operand.
        what: String,
    },

    /// An operand's offset not on the alignment storage bindings need.
    #[error("{what}: offset {offset} is not a multiple of {align} bytes")]
    Misaligned {
        /// The operand.
        what: String,
        /// Its byte offset.
        offset: u64,
        /// The alignment required.
        align: u64,
    },

    /// An index or count at or past the limit it must stay below (a batch row past the
    /// data, a class label past the classes, a rank past the group).
    #[error("{what} must be below {limit}, got {value}")]
    NotBelow {
        /// The index or count, by its name.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The limit it must stay below.
        limit: u64,
    },
    /// A count above the most there can be (a batch larger than the training set).
    #[error("{what} must be at most {max}, got {value}")]
    AboveMax {
        /// The count, by its name.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The most allowed.
        max: u64,
    },
    /// A name that matches nothing of its kind (a fault's layer).
    #[error("no {what} `{name}`; there are: {known}")]
    Unknown {
        /// The kind of thing named, e.g. `"layer"`.
        what: &'static str,
        /// The name given.
        name: String,
        /// The names there are, comma-separated.
        known: String,
    },
    /// Encoding an output (JSON, a chart) failed.
    #[error("encoding {what}: {message}")]
    Encode {
        /// What was being encoded, e.g. `"summary.json"`.
        what: &'static str,
        /// The encoder's message.
        message: String,
    },
    /// An external peer process (the PyTorch benchmark peer) could not run or failed.
    #[error("the PyTorch peer: {0}")]
    Peer(String),
    /// Two settings that cannot go together.
    #[error("{setting} cannot go with {other}: {why}")]
    Incompatible {
        /// The setting refused, by its name in the configuration.
        setting: &'static str,
        /// What it conflicts with.
        other: String,
        /// Why, and what to do instead.
        why: &'static str,
    },

    /// Data-parallel ranks that should hold the same weights do not.
    #[error("data-parallel rank {rank}'s weights differ from rank 0's after the same steps: a device or the collective broke replication")]
    ReplicasDiverged {
        /// The first rank whose weights differ.
        rank: usize,
    },
}

/// The flags' names, each after `prefix`, joined by ` | `: `STORAGE`, not wgpu's Debug
/// form `BufferUsages(STORAGE)`.
fn usage_names(usages: &wgpu::BufferUsages, prefix: &str) -> String {
    usages.iter_names().map(|(name, _)| format!("{prefix}{name}")).collect::<Vec<_>>().join(" | ")
}

/// The settings a checkpoint's refusal may name, in backticks.
const SETTINGS_IN_REASONS: &[&str] = &["steps", "allow_nonfinite"];

impl Error {
    /// The error with each setting it names (`what` of `OutOfRange`, `NotPositive`,
    /// `NotBelow` and `AboveMax`, and the settings a `Checkpoint` refusal names in backticks,
    /// `setting` of `Incompatible`) renamed by `name`: how a front end (the CLI) speaks of
    /// the settings in its own words, flags for instance.
    pub fn renamed(self, name: impl Fn(&'static str) -> &'static str) -> Self {
        match self {
            Self::OutOfRange { what, value, expected } => Self::OutOfRange { what: name(what), value, expected },
            Self::NotPositive { what, value } => Self::NotPositive { what: name(what), value },
            Self::Incompatible { setting, other, why } => Self::Incompatible { setting: name(setting), other, why },
            Self::NotBelow { what, value, limit } => Self::NotBelow { what: name(what), value, limit },
            Self::AboveMax { what, value, max } => Self::AboveMax { what: name(what), value, max },
            Self::Checkpoint { path, mut reason } => {
                for setting in SETTINGS_IN_REASONS {
                    reason = reason.replace(&format!("`{setting}`"), name(setting));
                }
                Self::Checkpoint { path, reason }
            }
            other => other,
        }
    }
}

/// `Error::NotPositive` unless `value` is finite and > 0.
pub(crate) fn check_positive(what: &'static str, value: f32) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::NotPositive { what, value: value as f64 })
    }
}

/// `Error::OutOfRange` for the first of `sizes` that is 0.
pub(crate) fn check_sizes(sizes: &[(&'static str, u32)]) -> Result<()> {
    match sizes.iter().find(|(_, n)| *n == 0) {
        Some(&(what, _)) => Err(Error::OutOfRange { what, value: 0.0, expected: "≥ 1" }),
        None => Ok(()),
    }
}

/// `Error::OutOfRange` unless `value` is finite and ≥ 0.
pub(crate) fn check_non_negative(what: &'static str, value: f32) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::OutOfRange { what, value: value as f64, expected: "finite and ≥ 0" })
    }
}

/// `std::result::Result` with gradguard's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
