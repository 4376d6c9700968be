//! Quantization parameters and their validation.

use crate::error::{Error, Result};

/// Smallest accepted group size.
pub const MIN_GROUP_SIZE: u16 = 16;
/// Largest accepted group size.
pub const MAX_GROUP_SIZE: u16 = 1024;
/// Largest accepted group size in format v2 (its outlier counts are one byte).
pub const MAX_GROUP_SIZE_V2: u16 = 255;

/// How each grid maps weights to codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grid {
    /// `code = round(w / Δ)`, `Δ = max|w| / (2^(b-1) - 1)`; no zero point.
    #[default]
    Symmetric,
    /// Min–max over `[min(w, 0), max(w, 0)]` with a per-grid zero point.
    Asymmetric,
}

/// The packed format version a tensor is written in (`docs/FORMAT.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatVersion {
    /// Version 1: per group, two f16 steps (inliers and outliers on their own grid) and a
    /// count; symmetric or asymmetric grids.
    #[default]
    V1,
    /// Version 2: per row, f16 units for the inlier step and minimum and one outlier step;
    /// per group, u8 multiples of those units and a count (3 bytes). Inliers sit on an
    /// asymmetric grid whose range is searched for the least squared error; outliers are
    /// a sign and an offset above the threshold. Needs [`Grid::Asymmetric`] and
    /// `group_size < 256`.
    V2,
}

impl FormatVersion {
    /// The version number in the header.
    pub fn number(self) -> u16 {
        match self {
            FormatVersion::V1 => 1,
            FormatVersion::V2 => 2,
        }
    }
}

/// How the per-tensor outlier threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SelectionMode {
    /// Exactly `k = round(α·N)` outliers, the k largest `|w|`; ties at the threshold
    /// go to the earliest elements in row-major order. Two or three histogram passes.
    #[default]
    Exact,
    /// Follows the Python reference (auto_adpq 0.3.5): Brent-style search on λ' over
    /// `[0, 1e7]`, stopping when the count is within 0.1 % of `α·N`, the bracket is
    /// narrower than 1e-5, or after `n_iters` steps; outliers are `|w| − λ'/|w| > 0` in f64.
    Reference {
        /// Iteration cap (the reference's `n_iters`, default 100).
        n_iters: u32,
    },
}

/// Parameters of one quantized tensor, validated: a value of this type always holds
/// bits, a group size, α, a grid and a selection mode that the chosen format can store.
/// It is checked once, when it is made ([`ParamFields::validate`], [`Params::new`], the
/// `with_*` methods); everything that takes a `Params` relies on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    fields: ParamFields,
}

/// The fields of [`Params`], unchecked: fill them, then [`validate`](Self::validate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamFields {
    /// Bits per code, `2..=8`.
    pub bits: u8,
    /// Weights per group along a row, `16..=1024` (v2: below 256). The last group of a
    /// row may be shorter.
    pub group_size: u16,
    /// Target outlier fraction, `[0, 0.5]`.
    pub alpha: f64,
    /// Grid kind, shared by the inlier and the outlier grid (v2: asymmetric).
    pub grid: Grid,
    /// Threshold search.
    pub selection: SelectionMode,
    /// Packed format version.
    pub version: FormatVersion,
}

impl Default for Params {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Params {
    /// The default parameters, those of `adpq quantize` without flags: format v2, 4 bits,
    /// groups of 64, α = 0.04, exact selection. The CLI's default preset (`v2-vproj6`)
    /// gives `v_proj` tensors 6 bits and α = 0.05 on top: [`Params::default_for`].
    pub const DEFAULT: Params = Params {
        fields: ParamFields {
            alpha: 0.04,
            ..Params::V2.fields
        },
    };

    /// Format v1's defaults: 4 bits, groups of 128, α = 0.06, symmetric grids, exact
    /// selection.
    pub const V1: Params = Params {
        fields: ParamFields {
            bits: 4,
            group_size: 128,
            alpha: 0.06,
            grid: Grid::Symmetric,
            selection: SelectionMode::Exact,
            version: FormatVersion::V1,
        },
    };

    /// Format v2's plain defaults: 4 bits, groups of 64, α = 0.05, exact selection (the
    /// measured winner of `docs/FORMAT-v2.md` for one setting for every tensor).
    pub const V2: Params = Params {
        fields: ParamFields {
            bits: 4,
            group_size: 64,
            alpha: 0.05,
            grid: Grid::Asymmetric,
            selection: SelectionMode::Exact,
            version: FormatVersion::V2,
        },
    };

    /// The default parameters of the tensor named `name` (what `adpq quantize` uses
    /// without flags, preset `v2-vproj6`): 6 bits and α = 0.05 for an attention value
    /// projection (a name containing `v_proj`), [`Params::DEFAULT`] for any other.
    pub fn default_for(name: &str) -> Params {
        if name.contains("v_proj") {
            Params {
                fields: ParamFields {
                    bits: 6,
                    alpha: 0.05,
                    ..Params::DEFAULT.fields
                },
            }
        } else {
            Params::DEFAULT
        }
    }

    /// Format v1 parameters with exact selection, validated.
    pub fn new(bits: u8, group_size: u16, alpha: f64, grid: Grid) -> Result<Self> {
        ParamFields {
            bits,
            group_size,
            alpha,
            grid,
            ..Params::V1.fields
        }
        .validate()
    }

    /// The fields, to change some and [`validate`](ParamFields::validate) again.
    pub fn fields(&self) -> ParamFields {
        self.fields
    }

    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.fields.bits
    }

    /// Weights per group.
    pub fn group_size(&self) -> u16 {
        self.fields.group_size
    }

    /// Target outlier fraction.
    pub fn alpha(&self) -> f64 {
        self.fields.alpha
    }

    /// Grid kind.
    pub fn grid(&self) -> Grid {
        self.fields.grid
    }

    /// Threshold search.
    pub fn selection(&self) -> SelectionMode {
        self.fields.selection
    }

    /// Packed format version.
    pub fn version(&self) -> FormatVersion {
        self.fields.version
    }

    /// These parameters with another selection mode.
    pub fn with_selection(self, selection: SelectionMode) -> Result<Self> {
        ParamFields {
            selection,
            ..self.fields
        }
        .validate()
    }

    /// These parameters in another format version.
    pub fn with_version(self, version: FormatVersion) -> Result<Self> {
        ParamFields {
            version,
            ..self.fields
        }
        .validate()
    }

    /// These parameters with other bits.
    pub fn with_bits(self, bits: u8) -> Result<Self> {
        ParamFields {
            bits,
            ..self.fields
        }
        .validate()
    }

    /// These parameters with another α.
    pub fn with_alpha(self, alpha: f64) -> Result<Self> {
        ParamFields {
            alpha,
            ..self.fields
        }
        .validate()
    }

    /// The format-relevant subset (what a packed buffer records).
    pub fn format(&self) -> FormatParams {
        let f = &self.fields;
        FormatParams {
            bits: f.bits,
            group_size: f.group_size,
            grid: f.grid,
            version: f.version,
        }
    }
}

impl ParamFields {
    /// Checks every field: the [`Params`] they make, or why not.
    pub fn validate(self) -> Result<Params> {
        if !(2..=8).contains(&self.bits) {
            return Err(Error::InvalidBits(self.bits));
        }
        if !(MIN_GROUP_SIZE..=MAX_GROUP_SIZE).contains(&self.group_size) {
            return Err(Error::InvalidGroupSize(u32::from(self.group_size)));
        }
        if !(self.alpha >= 0.0 && self.alpha <= 0.5) {
            return Err(Error::InvalidAlpha(self.alpha));
        }
        if self.version == FormatVersion::V2 {
            if self.grid != Grid::Asymmetric {
                return Err(Error::Unsupported(
                    "format v2 needs the asymmetric grid (its inliers are asymmetric)",
                ));
            }
            if self.group_size > MAX_GROUP_SIZE_V2 {
                return Err(Error::Unsupported(
                    "format v2 needs a group size below 256 (its counts are one byte)",
                ));
            }
        }
        if let SelectionMode::Reference { n_iters } = self.selection {
            if n_iters == 0 {
                return Err(Error::InvalidIterations(n_iters));
            }
        }
        Ok(Params { fields: self })
    }
}

impl TryFrom<ParamFields> for Params {
    type Error = Error;

    fn try_from(fields: ParamFields) -> Result<Params> {
        fields.validate()
    }
}

/// The parameters that shape a packed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatParams {
    /// Bits per code.
    pub bits: u8,
    /// Weights per group.
    pub group_size: u16,
    /// Grid kind.
    pub grid: Grid,
    /// Format version.
    pub version: FormatVersion,
}

impl FormatParams {
    /// Largest symmetric code magnitude, `2^(b-1) - 1`.
    pub fn sym_qmax(&self) -> i32 {
        (1i32 << (self.bits - 1)) - 1
    }
    /// Largest stored code, `2^b - 1`.
    pub fn code_max(&self) -> i32 {
        (1i32 << self.bits) - 1
    }
    /// Bits per outlier position: `ceil(log2(group_size))`.
    pub fn position_bits(&self) -> u32 {
        let g = u32::from(self.group_size);
        32 - (g - 1).leading_zeros()
    }
    /// Bytes of the per-group outlier count: 1 below 256, else 2.
    pub fn count_bytes(&self) -> usize {
        if self.group_size < 256 {
            1
        } else {
            2
        }
    }
    /// Largest outlier offset in format v2, `2^(b-1) - 1` (the top bit is the sign).
    pub fn magnitude_max(&self) -> i32 {
        self.sym_qmax()
    }
    /// Bytes of one group record. v1: two f16 scales, the count, and two zero points if
    /// asymmetric. v2: u8 step, u8 minimum, u8 count.
    pub fn record_bytes(&self) -> usize {
        if self.version == FormatVersion::V2 {
            return 3;
        }
        4 + self.count_bytes()
            + match self.grid {
                Grid::Symmetric => 0,
                Grid::Asymmetric => 2,
            }
    }
    /// Bytes of the per-row fields before a row's group records: v2's three f16 units.
    pub fn row_unit_bytes(&self) -> usize {
        match self.version {
            FormatVersion::V1 => 0,
            FormatVersion::V2 => 6,
        }
    }
    /// Bytes of the records of one row of `cols` columns (row units and group records).
    pub fn row_record_bytes(&self, cols: usize) -> usize {
        self.row_unit_bytes() + cols.div_ceil(usize::from(self.group_size)) * self.record_bytes()
    }
    /// Validates the fields (same ranges as [`ParamFields::validate`]).
    pub fn validate(&self) -> Result<()> {
        ParamFields {
            bits: self.bits,
            group_size: self.group_size,
            alpha: 0.0,
            grid: self.grid,
            selection: SelectionMode::Exact,
            version: self.version,
        }
        .validate()
        .map(|_| ())
    }
}
