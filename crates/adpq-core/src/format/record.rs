//! Group records: their four byte layouts as little-endian structs, encoding and decoding,
//! and how a group's grid is chosen.
//!
//! A record holds two f16 steps, the outlier count (u8, or u16 when `g ≥ 256`) and, for
//! asymmetric grids only, two zero points: 5, 6, 7 or 8 bytes (`docs/FORMAT.md`).

use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::params::{FormatParams, Grid};
use crate::quant::GridScale;

/// One decoded group record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupRecord {
    /// Inlier grid.
    pub inliers: GridScale,
    /// Outlier grid.
    pub outliers: GridScale,
    /// Outliers in the group.
    pub count: usize,
}

/// The stored fields of a record, whatever its byte layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordFields {
    /// f16 bits of the inlier step.
    pub(crate) h_in: u16,
    /// f16 bits of the outlier step.
    pub(crate) h_out: u16,
    pub(crate) count: usize,
    /// Inlier and outlier zero points (asymmetric layouts only; 0 otherwise).
    pub(crate) zeros: [u8; 2],
}

/// One byte layout of a group record.
trait RecordBytes: FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned + Sized {
    fn fields(&self) -> RecordFields;
    fn new(f: &RecordFields) -> Self;
}

/// The outlier count field: u8, or u16 when `g ≥ 256`.
trait CountField: Copy {
    fn to_count(self) -> usize;
    /// Truncates: the count is at most `g`, which fits the field by construction.
    fn from_count(count: usize) -> Self;
}

impl CountField for u8 {
    #[inline(always)]
    fn to_count(self) -> usize {
        usize::from(self)
    }
    #[inline(always)]
    fn from_count(count: usize) -> Self {
        count as u8
    }
}

impl CountField for U16 {
    #[inline(always)]
    fn to_count(self) -> usize {
        usize::from(self.get())
    }
    #[inline(always)]
    fn from_count(count: usize) -> Self {
        U16::new(count as u16)
    }
}

macro_rules! record_layout {
    ($(#[$doc:meta])* $name:ident, $count:ty, $len:expr, zeros: $zeros:tt) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
        struct $name {
            h_in: U16,
            h_out: U16,
            count: $count,
            zeros: [u8; record_layout!(@zeros $zeros)],
        }
        const _: () = {
            assert!(core::mem::size_of::<$name>() == $len);
            assert!(core::mem::offset_of!($name, h_out) == 2);
            assert!(core::mem::offset_of!($name, count) == 4);
        };
        impl RecordBytes for $name {
            #[inline(always)]
            fn fields(&self) -> RecordFields {
                let mut zeros = [0u8; 2];
                zeros[..self.zeros.len()].copy_from_slice(&self.zeros);
                RecordFields {
                    h_in: self.h_in.get(),
                    h_out: self.h_out.get(),
                    count: self.count.to_count(),
                    zeros,
                }
            }
            #[inline(always)]
            fn new(f: &RecordFields) -> Self {
                let mut zeros = [0u8; record_layout!(@zeros $zeros)];
                let n = zeros.len();
                zeros.copy_from_slice(&f.zeros[..n]);
                $name {
                    h_in: U16::new(f.h_in),
                    h_out: U16::new(f.h_out),
                    count: <$count>::from_count(f.count),
                    zeros,
                }
            }
        }
    };
    (@zeros yes) => { 2 };
    (@zeros no) => { 0 };
}

record_layout!(
    /// Symmetric, `g < 256`.
    SymmetricRecord, u8, 5, zeros: no
);
record_layout!(
    /// Symmetric, `g ≥ 256`.
    SymmetricWideRecord, U16, 6, zeros: no
);
record_layout!(
    /// Asymmetric, `g < 256`.
    AsymmetricRecord, u8, 7, zeros: yes
);
record_layout!(
    /// Asymmetric, `g ≥ 256`.
    AsymmetricWideRecord, U16, 8, zeros: yes
);

#[inline(always)]
fn read<R: RecordBytes>(rec: &[u8]) -> RecordFields {
    // Callers pass whole records; a short slice reads as an empty record, never panics.
    R::ref_from_prefix(rec).map_or(
        RecordFields {
            h_in: 0,
            h_out: 0,
            count: 0,
            zeros: [0; 2],
        },
        |(r, _)| r.fields(),
    )
}

#[inline(always)]
fn write<R: RecordBytes>(rec: &mut [u8], f: &RecordFields) {
    if let Ok((r, _)) = R::mut_from_prefix(rec) {
        *r = R::new(f);
    }
}

impl RecordFields {
    /// Reads the record at the start of `rec` (`fp.record_bytes()` long).
    #[inline(always)]
    pub(crate) fn read(rec: &[u8], fp: &FormatParams) -> RecordFields {
        match (fp.grid, fp.count_bytes() == 1) {
            (Grid::Symmetric, true) => read::<SymmetricRecord>(rec),
            (Grid::Symmetric, false) => read::<SymmetricWideRecord>(rec),
            (Grid::Asymmetric, true) => read::<AsymmetricRecord>(rec),
            (Grid::Asymmetric, false) => read::<AsymmetricWideRecord>(rec),
        }
    }

    /// Writes the record into the start of `rec` (`fp.record_bytes()` long).
    #[inline(always)]
    pub(crate) fn write(&self, rec: &mut [u8], fp: &FormatParams) {
        match (fp.grid, fp.count_bytes() == 1) {
            (Grid::Symmetric, true) => write::<SymmetricRecord>(rec, self),
            (Grid::Symmetric, false) => write::<SymmetricWideRecord>(rec, self),
            (Grid::Asymmetric, true) => write::<AsymmetricRecord>(rec, self),
            (Grid::Asymmetric, false) => write::<AsymmetricWideRecord>(rec, self),
        }
    }
}

/// Decodes the record at the start of `rec` (caller guarantees its length).
#[inline(always)]
pub fn decode_record(rec: &[u8], fp: &FormatParams, scale_exp: i8) -> GroupRecord {
    let f = RecordFields::read(rec, fp);
    let (z_in, z_out) = match fp.grid {
        Grid::Symmetric => (1i32 << (fp.bits - 1), 1i32 << (fp.bits - 1)),
        Grid::Asymmetric => (i32::from(f.zeros[0]), i32::from(f.zeros[1])),
    };
    GroupRecord {
        inliers: GridScale::from_stored(f.h_in, z_in, scale_exp),
        outliers: GridScale::from_stored(f.h_out, z_out, scale_exp),
        count: f.count,
    }
}

/// Encodes a record into `rec` (exactly `record_bytes` long).
#[inline(always)]
pub fn encode_record(
    rec: &mut [u8],
    fp: &FormatParams,
    inliers: &GridScale,
    outliers: &GridScale,
    count: usize,
) {
    RecordFields {
        h_in: inliers.h,
        h_out: outliers.h,
        count,
        zeros: [inliers.offset as u8, outliers.offset as u8],
    }
    .write(rec, fp);
}

/// The grid of one group's members (inliers or outliers).
#[inline(always)]
pub fn grid_of(
    fp: &FormatParams,
    scale_exp: i8,
    max_abs: f32,
    lo: f32,
    hi: f32,
    members: usize,
) -> GridScale {
    if members == 0 {
        return GridScale::empty(fp);
    }
    match fp.grid {
        Grid::Symmetric => GridScale::symmetric(max_abs, fp, scale_exp),
        Grid::Asymmetric => GridScale::asymmetric(lo, hi, fp, scale_exp),
    }
}
