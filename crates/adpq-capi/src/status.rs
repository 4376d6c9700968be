//! The status every fallible entry point returns, and its messages.

use adpq_core::{Error, FormatError};

/// The result of a call. Values are stable: a new status gets a new number, existing
/// numbers never change meaning.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum adpq_status {
    /// Success.
    ADPQ_STATUS_OK = 0,
    /// A required pointer argument was NULL.
    ADPQ_STATUS_NULL_POINTER = 1,
    /// A typed pointer (`float *`, `int8` scratch...) is not aligned for its element type.
    ADPQ_STATUS_MISALIGNED = 2,
    /// A caller buffer has the wrong length (too small, or not the exact size asked for).
    ADPQ_STATUS_BUFFER_SIZE = 3,
    /// An argument is out of its domain: an unknown backend, dtype, grid, version or
    /// preset value, or a row range past the tensor.
    ADPQ_STATUS_INVALID_ARGUMENT = 4,
    /// The `adpq_tensor` or `adpq_selection` was not filled by a successful call.
    ADPQ_STATUS_INVALID_HANDLE = 5,
    /// The requested backend cannot run on this CPU or target.
    ADPQ_STATUS_BACKEND_UNAVAILABLE = 6,
    /// Invalid parameters: bits, group size or α out of range, or a combination the
    /// chosen format version cannot store.
    ADPQ_STATUS_INVALID_PARAMS = 7,
    /// A tensor with zero rows or columns.
    ADPQ_STATUS_EMPTY_TENSOR = 8,
    /// A tensor with more than `UINT32_MAX` elements, rows or columns.
    ADPQ_STATUS_TENSOR_TOO_LARGE = 9,
    /// Activations or weights whose length does not match the tensor's shape.
    ADPQ_STATUS_SHAPE_MISMATCH = 10,
    /// A NaN or infinite weight or activation.
    ADPQ_STATUS_NON_FINITE = 11,
    /// A finite weight too large for the format (|w| >= 2^124).
    ADPQ_STATUS_OUT_OF_RANGE = 12,
    /// Every weight is below the format's range (largest |w| below 2^-100, not zero):
    /// keep such a tensor unquantized.
    ADPQ_STATUS_TOO_SMALL = 13,
    /// The selection does not belong to these weights or parameters.
    ADPQ_STATUS_SELECTION_MISMATCH = 14,
    /// The reference-compatible threshold search could not bracket the outlier count.
    ADPQ_STATUS_NOT_BRACKETED = 15,
    /// A dequantized value does not fit the output dtype (beyond its range by more than
    /// the quantization error; see the core's narrowing rule).
    ADPQ_STATUS_NOT_REPRESENTABLE = 16,
    /// Packed buffer: shorter than its header or than the length it declares.
    ADPQ_STATUS_FORMAT_TRUNCATED = 17,
    /// Packed buffer: the first four bytes are not `ADPQ`.
    ADPQ_STATUS_FORMAT_BAD_MAGIC = 18,
    /// Packed buffer: a format version this library does not read.
    ADPQ_STATUS_FORMAT_UNSUPPORTED_VERSION = 19,
    /// Packed buffer: the CRC-32 does not match the contents.
    ADPQ_STATUS_FORMAT_CHECKSUM = 20,
    /// Packed buffer: a header field, row, group or position is invalid.
    ADPQ_STATUS_FORMAT_CORRUPT = 21,
    /// A panic was caught at the boundary (a bug in adpq; please report it).
    ADPQ_STATUS_PANIC = 22,
    /// An error of the core this version of the C ABI has no status for.
    ADPQ_STATUS_INTERNAL = 23,
}

use adpq_status::*;

impl From<Error> for adpq_status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidBits(_)
            | Error::InvalidGroupSize(_)
            | Error::InvalidAlpha(_)
            | Error::InvalidIterations(_)
            | Error::Unsupported(_) => ADPQ_STATUS_INVALID_PARAMS,
            Error::EmptyTensor => ADPQ_STATUS_EMPTY_TENSOR,
            Error::TensorTooLarge { .. } => ADPQ_STATUS_TENSOR_TOO_LARGE,
            Error::ShapeMismatch { .. } => ADPQ_STATUS_SHAPE_MISMATCH,
            Error::NonFinite { .. } => ADPQ_STATUS_NON_FINITE,
            Error::OutOfRange { .. } => ADPQ_STATUS_OUT_OF_RANGE,
            Error::TooSmall { .. } => ADPQ_STATUS_TOO_SMALL,
            Error::BufferSize { .. } => ADPQ_STATUS_BUFFER_SIZE,
            Error::OutlierCount { .. } => ADPQ_STATUS_SELECTION_MISMATCH,
            Error::NotBracketed => ADPQ_STATUS_NOT_BRACKETED,
            Error::RowOutOfRange { .. } => ADPQ_STATUS_INVALID_ARGUMENT,
            Error::NotRepresentable { .. } => ADPQ_STATUS_NOT_REPRESENTABLE,
            Error::Format(f) => match f {
                FormatError::Truncated { .. } => ADPQ_STATUS_FORMAT_TRUNCATED,
                FormatError::BadMagic => ADPQ_STATUS_FORMAT_BAD_MAGIC,
                FormatError::UnsupportedVersion(_) => ADPQ_STATUS_FORMAT_UNSUPPORTED_VERSION,
                FormatError::ChecksumMismatch { .. } => ADPQ_STATUS_FORMAT_CHECKSUM,
                _ => ADPQ_STATUS_FORMAT_CORRUPT,
            },
            _ => ADPQ_STATUS_INTERNAL,
        }
    }
}

impl adpq_status {
    /// Every status, in value order (a test holds the values dense and stable).
    pub(crate) const ALL: [adpq_status; 24] = [
        ADPQ_STATUS_OK,
        ADPQ_STATUS_NULL_POINTER,
        ADPQ_STATUS_MISALIGNED,
        ADPQ_STATUS_BUFFER_SIZE,
        ADPQ_STATUS_INVALID_ARGUMENT,
        ADPQ_STATUS_INVALID_HANDLE,
        ADPQ_STATUS_BACKEND_UNAVAILABLE,
        ADPQ_STATUS_INVALID_PARAMS,
        ADPQ_STATUS_EMPTY_TENSOR,
        ADPQ_STATUS_TENSOR_TOO_LARGE,
        ADPQ_STATUS_SHAPE_MISMATCH,
        ADPQ_STATUS_NON_FINITE,
        ADPQ_STATUS_OUT_OF_RANGE,
        ADPQ_STATUS_TOO_SMALL,
        ADPQ_STATUS_SELECTION_MISMATCH,
        ADPQ_STATUS_NOT_BRACKETED,
        ADPQ_STATUS_NOT_REPRESENTABLE,
        ADPQ_STATUS_FORMAT_TRUNCATED,
        ADPQ_STATUS_FORMAT_BAD_MAGIC,
        ADPQ_STATUS_FORMAT_UNSUPPORTED_VERSION,
        ADPQ_STATUS_FORMAT_CHECKSUM,
        ADPQ_STATUS_FORMAT_CORRUPT,
        ADPQ_STATUS_PANIC,
        ADPQ_STATUS_INTERNAL,
    ];

    /// The status's message, NUL-terminated.
    fn message(self) -> &'static str {
        match self {
            ADPQ_STATUS_OK => "success\0",
            ADPQ_STATUS_NULL_POINTER => "a required pointer argument is NULL\0",
            ADPQ_STATUS_MISALIGNED => "a pointer is not aligned for its element type\0",
            ADPQ_STATUS_BUFFER_SIZE => "a buffer has the wrong length\0",
            ADPQ_STATUS_INVALID_ARGUMENT => {
                "an argument is out of range (enumeration value or row range)\0"
            }
            ADPQ_STATUS_INVALID_HANDLE => "the handle was not filled by a successful adpq call\0",
            ADPQ_STATUS_BACKEND_UNAVAILABLE => "the backend cannot run on this CPU\0",
            ADPQ_STATUS_INVALID_PARAMS => {
                "invalid quantization parameters (bits, group size, alpha, grid or version)\0"
            }
            ADPQ_STATUS_EMPTY_TENSOR => "the tensor has zero rows or columns\0",
            ADPQ_STATUS_TENSOR_TOO_LARGE => "the tensor is too large (over UINT32_MAX)\0",
            ADPQ_STATUS_SHAPE_MISMATCH => "a length does not match the tensor's shape\0",
            ADPQ_STATUS_NON_FINITE => "a NaN or infinite value\0",
            ADPQ_STATUS_OUT_OF_RANGE => "a weight is too large for the format (|w| >= 2^124)\0",
            ADPQ_STATUS_TOO_SMALL => {
                "every weight is below the format's range (max |w| < 2^-100): keep it unquantized\0"
            }
            ADPQ_STATUS_SELECTION_MISMATCH => {
                "the selection does not belong to these weights and parameters\0"
            }
            ADPQ_STATUS_NOT_BRACKETED => {
                "the reference threshold search could not bracket the outlier count\0"
            }
            ADPQ_STATUS_NOT_REPRESENTABLE => "a dequantized value does not fit the output dtype\0",
            ADPQ_STATUS_FORMAT_TRUNCATED => "packed buffer truncated\0",
            ADPQ_STATUS_FORMAT_BAD_MAGIC => "not a packed adpq buffer (bad magic)\0",
            ADPQ_STATUS_FORMAT_UNSUPPORTED_VERSION => {
                "packed buffer of a format version this library does not read\0"
            }
            ADPQ_STATUS_FORMAT_CHECKSUM => "packed buffer checksum mismatch\0",
            ADPQ_STATUS_FORMAT_CORRUPT => "packed buffer corrupt (header, row or group)\0",
            ADPQ_STATUS_PANIC => "internal panic caught at the C boundary (a bug)\0",
            ADPQ_STATUS_INTERNAL => "internal error without a C status\0",
        }
    }
}

/// A static, NUL-terminated English message for `status` (any value: an unknown one
/// gets `"unknown status"`). Never NULL; the string lives as long as the program.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn adpq_status_message(status: u32) -> *const core::ffi::c_char {
    let msg = match adpq_status::ALL.get(status as usize) {
        Some(s) => s.message(),
        None => "unknown status\0",
    };
    msg.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_dense_and_messages_terminated() {
        for (i, s) in adpq_status::ALL.iter().enumerate() {
            assert_eq!(*s as u32, i as u32);
            let m = s.message();
            assert!(m.ends_with('\0') && m[..m.len() - 1].find('\0').is_none());
            assert!(m.len() > 5, "{s:?}");
        }
        // SAFETY: static NUL-terminated strings.
        let unknown = unsafe { core::ffi::CStr::from_ptr(adpq_status_message(9999)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown status");
        assert_eq!(ADPQ_STATUS_INTERNAL as u32, 23, "stable values");
        assert_eq!(ADPQ_STATUS_FORMAT_CHECKSUM as u32, 20, "stable values");
    }
}
