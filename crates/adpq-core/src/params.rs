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
    /// Version 3: each row rotated by a randomized Hadamard transform before it is coded
    /// (the seed in the header), no outlier split; per row, f16 units for the step and the
    /// minimum; per group, 6-bit multiples of them (12 bits). 4-bit codes index a fixed
    /// 16-level code book ([`CODEBOOK_4BIT`]), other widths a uniform grid. Needs
    /// [`Grid::Asymmetric`], α = 0 and a power-of-two group size of at most 512.
    V3,
}

/// Format v3's 4-bit code book: level `c` is `CODEBOOK_4BIT[c] / 8` on `[0, 15]`, so a
/// group decodes `ŵ = m + d · L[c]`. Lloyd's levels for groups of 64 Gaussian weights
/// mapped onto `[0, 15]` by their own minimum and maximum (end levels fixed), in eighths
/// (docs/FORMAT-v3-experiments.md, book `lmg`).
pub const CODEBOOK_4BIT: [u8; 16] = [
    0, 12, 22, 30, 37, 44, 51, 57, 63, 69, 76, 83, 90, 98, 108, 120,
];

/// Largest group size of format v3 (a group never straddles two rotation blocks).
pub const MAX_GROUP_SIZE_V3: u16 = 512;

impl FormatVersion {
    /// The version number in the header.
    pub fn number(self) -> u16 {
        match self {
            FormatVersion::V1 => 1,
            FormatVersion::V2 => 2,
            FormatVersion::V3 => 3,
        }
    }

    /// True when the format stores an outlier split (row offsets, counts, positions).
    pub fn has_outliers(self) -> bool {
        self != FormatVersion::V3
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
    /// The default parameters: format v3's plain defaults ([`Params::V3`]: rows rotated,
    /// the 4-bit code book, groups of 64, no outlier split), what `adpq quantize` without
    /// flags gives a Llama `q_proj`, `o_proj` or `gate_proj`. Its default preset (`v3`)
    /// gives the other Llama projections their own bits and groups
    /// ([`Params::default_for`]), and chooses those of any tensor it does not name from the
    /// checkpoint's weights.
    pub const DEFAULT: Params = Params::V3;

    /// Format v2's measured preset (`v2-vproj6`, the default before format v3): 4 bits,
    /// groups of 64, α = 0.04, exact selection; [`Params::v2_for`] adds 6-bit `v_proj`.
    pub const V2_PRESET: Params = Params {
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

    /// Format v3's plain defaults: 4 bits (the code book), groups of 64, no outlier split,
    /// rows rotated.
    pub const V3: Params = Params {
        fields: ParamFields {
            bits: 4,
            group_size: 64,
            alpha: 0.0,
            grid: Grid::Asymmetric,
            selection: SelectionMode::Exact,
            version: FormatVersion::V3,
        },
    };

    /// Format v3's parameters for the tensor named `name` (preset `v3`, the per-tensor
    /// bits and groups measured in docs/FORMAT-v3-experiments.md): 6 bits in groups of
    /// 128 for an attention value projection (`v_proj`), groups of 128 for `k_proj`, 5
    /// bits for the MLP's `down_proj` and `up_proj`, 7 bits for a token embedding
    /// (`embed_tokens`: the CLI quantizes it only when tied, the output projection), 4
    /// (the code book) in groups of 64 for any other (4.798 bits/weight on SmolLM2's
    /// projections).
    pub fn v3_for(name: &str) -> Params {
        // Whole dot-separated components: Phi-3's `qkv_proj` is not a `v_proj`.
        let is = |component: &str| name.split('.').any(|c| c == component);
        let (bits, group_size) = if is("v_proj") {
            (6, 128)
        } else if is("k_proj") {
            (4, 128)
        } else if is("down_proj") || is("up_proj") {
            (5, 64)
        } else if is("embed_tokens") {
            // A tied embedding, the output projection (the CLI's filter takes it only
            // when tied): 7 bits cost ≈1 % of SmolLM2's KL for half its file.
            (7, 64)
        } else {
            (4, 64)
        };
        Params {
            fields: ParamFields {
                bits,
                group_size,
                ..Params::V3.fields
            },
        }
    }

    /// Format v2's parameters for the tensor named `name` (preset `v2-vproj6`, measured in
    /// docs/FORMAT-v2.md): 6 bits and α = 0.05 for an attention value projection (a name
    /// containing `v_proj`), [`Params::V2_PRESET`] for any other.
    pub fn v2_for(name: &str) -> Params {
        if name.contains("v_proj") {
            Params {
                fields: ParamFields {
                    bits: 6,
                    alpha: 0.05,
                    ..Params::V2_PRESET.fields
                },
            }
        } else {
            Params::V2_PRESET
        }
    }

    /// The default parameters of the tensor named `name`: [`Params::v3_for`], what
    /// `adpq quantize` gives a Llama projection without flags (its default preset `v3`).
    /// For a tensor no rule of the preset names, the CLI goes further than this function
    /// can: it chooses bits and group from the checkpoint's weights under a bits budget.
    pub fn default_for(name: &str) -> Params {
        Params::v3_for(name)
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
        if self.version == FormatVersion::V3 {
            if self.grid != Grid::Asymmetric {
                return Err(Error::Unsupported(
                    "format v3 needs the asymmetric grid (its groups have a minimum)",
                ));
            }
            if !self.group_size.is_power_of_two() || self.group_size > MAX_GROUP_SIZE_V3 {
                return Err(Error::Unsupported(
                    "format v3 needs a power-of-two group size of at most 512",
                ));
            }
            if self.alpha != 0.0 {
                return Err(Error::Unsupported(
                    "format v3 has no outlier split: alpha must be 0",
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
    /// v3: 0, its 12-bit records are packed in pairs ([`row_record_bytes`](Self::row_record_bytes)).
    pub fn record_bytes(&self) -> usize {
        match self.version {
            FormatVersion::V1 => {}
            FormatVersion::V2 => return 3,
            FormatVersion::V3 => return 0,
        }
        4 + self.count_bytes()
            + match self.grid {
                Grid::Symmetric => 0,
                Grid::Asymmetric => 2,
            }
    }
    /// Bytes of the per-row fields before a row's group records: v2's three f16 units,
    /// v3's two.
    pub fn row_unit_bytes(&self) -> usize {
        match self.version {
            FormatVersion::V1 => 0,
            FormatVersion::V2 => 6,
            FormatVersion::V3 => 4,
        }
    }
    /// Bytes of the records of one row of `cols` columns (row units and group records;
    /// v3: 12 bits a group, the row's last byte padded with zero bits).
    pub fn row_record_bytes(&self, cols: usize) -> usize {
        let groups = cols.div_ceil(usize::from(self.group_size));
        match self.version {
            FormatVersion::V3 => self.row_unit_bytes() + (12 * groups).div_ceil(8),
            _ => self.row_unit_bytes() + groups * self.record_bytes(),
        }
    }
    /// Bytes per row of the outlier offsets section (v3 has none).
    pub fn row_count_bytes(&self) -> usize {
        if self.version.has_outliers() {
            4
        } else {
            0
        }
    }
    /// Largest stored multiple of a row unit in a group record: 255 (v2's u8 fields),
    /// 63 (v3's 6-bit fields).
    pub fn field_max(&self) -> u8 {
        if self.version == FormatVersion::V3 {
            63
        } else {
            255
        }
    }
    /// The value of code `code` on the unit grid `[0, code_max]`: v3's 4-bit code book
    /// level, else the code itself.
    #[inline(always)]
    pub fn level(&self, code: u8) -> f32 {
        if self.uses_codebook() {
            f32::from(CODEBOOK_4BIT[usize::from(code & 15)]) * 0.125
        } else {
            f32::from(code)
        }
    }
    /// True for format v3 at 4 bits: codes index [`CODEBOOK_4BIT`].
    #[inline(always)]
    pub fn uses_codebook(&self) -> bool {
        self.version == FormatVersion::V3 && self.bits == 4
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
