//! The element types a packed tensor is dequantized into.

use core::fmt;

use half::{bf16, f16};

/// Element type of a dequantized output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

impl OutDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            OutDtype::F32 => 4,
            OutDtype::F16 | OutDtype::Bf16 => 2,
        }
    }

    /// The safetensors name of the dtype (`F32`, `F16`, `BF16`).
    pub fn name(self) -> &'static str {
        match self {
            OutDtype::F32 => "F32",
            OutDtype::F16 => "F16",
            OutDtype::Bf16 => "BF16",
        }
    }

    /// The dtype of a safetensors name (`F32`, `F16`, `BF16`), if it is one of these.
    pub fn from_name(name: &str) -> Option<OutDtype> {
        match name {
            "F32" => Some(OutDtype::F32),
            "F16" => Some(OutDtype::F16),
            "BF16" => Some(OutDtype::Bf16),
            _ => None,
        }
    }

    /// The largest finite value of the dtype.
    pub fn max_finite(self) -> f32 {
        match self {
            OutDtype::F32 => f32::MAX,
            OutDtype::F16 => f16::MAX.to_f32(),
            OutDtype::Bf16 => bf16::MAX.to_f32(),
        }
    }
}

impl fmt::Display for OutDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}
