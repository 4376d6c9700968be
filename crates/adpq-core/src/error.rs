//! Error values of the core. Every fallible operation returns one of these; nothing panics
//! on bad input.

use core::fmt;

use crate::dtype::OutDtype;

/// Everything that can go wrong in the core.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// `bits` outside `2..=8`.
    InvalidBits(u8),
    /// Group size outside `16..=1024`.
    InvalidGroupSize(u32),
    /// α outside `[0, 0.5]` or not a number.
    InvalidAlpha(f64),
    /// The reference-compatible search needs at least one iteration.
    InvalidIterations(u32),
    /// A combination of parameters the chosen format cannot store; the string says which.
    Unsupported(&'static str),
    /// A tensor with zero rows or zero columns.
    EmptyTensor,
    /// A tensor with more than `u32::MAX` elements, rows or columns.
    TensorTooLarge {
        /// Number of elements asked for.
        elements: u64,
    },
    /// The slice length does not match `rows * cols` (or a row range).
    ShapeMismatch {
        /// Elements the shape implies.
        expected: u64,
        /// Elements the slice holds.
        actual: u64,
    },
    /// A NaN or infinite weight.
    NonFinite {
        /// Row of the weight.
        row: u64,
        /// Column of the weight.
        col: u64,
        /// The offending value.
        value: f32,
    },
    /// A finite weight too large for the format (|w| ≥ 2^124).
    OutOfRange {
        /// Row of the weight.
        row: u64,
        /// Column of the weight.
        col: u64,
        /// The offending value.
        value: f32,
    },
    /// Every weight of the tensor is below the format's range (its largest magnitude is
    /// nonzero but below [`MIN_MAX_ABS`](crate::quant::MIN_MAX_ABS), 2^-100): the steps
    /// would fall below what the per-tensor exponent can represent, and the tensor would
    /// come back zeroed or with part of its energy lost. Such a tensor is refused, not
    /// quantized; a caller keeps it unquantized (an all-zero tensor is accepted).
    TooSmall {
        /// The tensor's largest magnitude.
        max_abs: f32,
    },
    /// A caller-provided buffer has the wrong size.
    BufferSize {
        /// Bytes or elements needed.
        needed: u64,
        /// Bytes or elements given.
        actual: u64,
    },
    /// The number of outliers found differs from the number the selection (or the
    /// layout) promised: the selection does not belong to these weights.
    OutlierCount {
        /// Outliers promised.
        expected: u64,
        /// Outliers found.
        actual: u64,
    },
    /// The reference-compatible search could not bracket the target outlier count
    /// (the Python reference fails its assertion here, e.g. α = 0).
    NotBracketed,
    /// A row index past the end of the tensor.
    RowOutOfRange {
        /// The row asked for.
        row: u64,
        /// Rows in the tensor.
        rows: u64,
    },
    /// A packed buffer failed validation.
    Format(FormatError),
    /// A dequantized value does not fit the output dtype: not finite, or beyond its
    /// largest finite value by more than the quantization error (see [`crate::narrow`]).
    NotRepresentable {
        /// Row of the value.
        row: u64,
        /// Column of the value.
        col: u64,
        /// The dequantized value (f32).
        value: f32,
        /// The output dtype.
        dtype: OutDtype,
    },
}

/// Why a packed buffer was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// Shorter than its header or than the length it declares.
    Truncated {
        /// Bytes the header says are needed.
        needed: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The first four bytes are not `ADPQ`.
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion(u16),
    /// A header field is out of range or inconsistent; the string names it.
    BadHeader(&'static str),
    /// The declared total length differs from the buffer length or from the layout.
    LengthMismatch {
        /// Length implied by the header fields.
        expected: u64,
        /// Length found.
        actual: u64,
    },
    /// The CRC-32 does not match the contents.
    ChecksumMismatch {
        /// Stored checksum.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
    /// The per-row outlier offsets are not monotone or do not add up.
    BadRowOffsets {
        /// First row found inconsistent.
        row: u64,
    },
    /// A row's fields (format v2's units) are invalid; the string says which.
    BadRow {
        /// The row.
        row: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A group record is invalid; the string says which field.
    BadGroup {
        /// Row of the group.
        row: u64,
        /// Index of the group within its row.
        group: u64,
        /// What is wrong.
        what: &'static str,
    },
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        Error::Format(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidBits(b) => write!(f, "bits must be in 2..=8, got {b}"),
            Error::InvalidGroupSize(g) => write!(f, "group size must be in 16..=1024, got {g}"),
            Error::InvalidAlpha(a) => write!(f, "alpha must be in [0, 0.5], got {a}"),
            Error::InvalidIterations(n) => {
                write!(f, "reference search needs at least 1 iteration, got {n}")
            }
            Error::Unsupported(what) => write!(f, "{what}"),
            Error::EmptyTensor => write!(f, "tensor has no elements"),
            Error::TensorTooLarge { elements } => write!(
                f,
                "tensor of {elements} elements is too large (at most 4294967295 elements, rows and columns)"
            ),
            Error::ShapeMismatch { expected, actual } => write!(
                f,
                "shape implies {expected} elements but {actual} were given"
            ),
            Error::NonFinite { row, col, value } => {
                write!(f, "non-finite weight {value} at row {row}, column {col}")
            }
            Error::OutOfRange { row, col, value } => write!(
                f,
                "weight {value:e} at row {row}, column {col} is too large to quantize (|w| must be below 2^124)"
            ),
            Error::TooSmall { max_abs } => write!(
                f,
                "every weight is tiny (largest magnitude {max_abs:e}, below 2^-100): too small to quantize faithfully, keep the tensor unquantized"
            ),
            Error::BufferSize { needed, actual } => {
                write!(f, "buffer holds {actual} but {needed} are needed")
            }
            Error::OutlierCount { expected, actual } => write!(
                f,
                "expected {expected} outliers but found {actual}: the selection does not match the weights"
            ),
            Error::NotBracketed => write!(
                f,
                "reference search: lambda' in [0, 1e7] does not bracket the target outlier count"
            ),
            Error::RowOutOfRange { row, rows } => {
                write!(f, "row {row} is out of range for a tensor of {rows} rows")
            }
            Error::Format(e) => write!(f, "invalid packed tensor: {e}"),
            Error::NotRepresentable {
                row,
                col,
                value,
                dtype,
            } if value.is_finite() => write!(
                f,
                "dequantized value {value:e} at row {row}, column {col} is beyond the range of {dtype} (largest finite {:e}) by more than the quantization error",
                dtype.max_finite()
            ),
            Error::NotRepresentable { row, col, value, .. } => write!(
                f,
                "dequantized value {value:e} at row {row}, column {col} is not finite (a corrupt packed tensor)"
            ),
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Truncated { needed, actual } => {
                write!(f, "truncated: {actual} bytes, {needed} needed")
            }
            FormatError::BadMagic => write!(f, "not an ADPQ buffer (bad magic)"),
            FormatError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            FormatError::BadHeader(what) => write!(f, "bad header field: {what}"),
            FormatError::LengthMismatch { expected, actual } => {
                write!(f, "length is {actual} bytes but the header implies {expected}")
            }
            FormatError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the data is corrupt"
            ),
            FormatError::BadRowOffsets { row } => {
                write!(f, "outlier offsets inconsistent at row {row}")
            }
            FormatError::BadRow { row, what } => write!(f, "row {row}: {what}"),
            FormatError::BadGroup { row, group, what } => {
                write!(f, "row {row}, group {group}: {what}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
#[cfg(feature = "std")]
impl std::error::Error for FormatError {}

/// Result alias of the core.
pub type Result<T, E = Error> = core::result::Result<T, E>;
