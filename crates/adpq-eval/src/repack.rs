//! The decoder's copy of a model's packed matrices, their rows repacked for the int8
//! gemv ([`Repacked`]): all of them in one anonymous memory mapping that asks the OS for
//! huge pages.
//!
//! Why one mapping: a decoding step reads every matrix once, about 90 MB for
//! SmolLM2-135M, a stream the hardware prefetchers follow but whose 4 KiB pages each
//! cost a TLB miss. On 2 MiB pages one thread decoded 91 → 130 tokens/s (Intel Xeon,
//! same bits). Where the OS gives no huge pages (another OS, transparent huge pages
//! off) the mapping is plain memory and only the speed differs.

use std::ops::Range;
use std::sync::Arc;

use adpq_core::kernels::Repacked;
use memmap2::{Mmap, MmapMut};

use crate::linear::Linear;
use crate::{EvalError, Result};

/// The size of a huge page on x86-64 and most aarch64 kernels: where the rows start.
const HUGE_PAGE: usize = 2 << 20;

/// Each matrix's rows start on a cache line.
const LINE: usize = 64;

/// One matrix's repacked rows: a range of the mapping its model's matrices share (read
/// only once written). Made by
/// [`Model::repack_for_decoding`](crate::Model::repack_for_decoding).
#[derive(Clone)]
pub struct RepackedRows {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl RepackedRows {
    /// The repacked bytes ([`Repacked::new`] reads them).
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl std::fmt::Debug for RepackedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepackedRows({} bytes)", self.range.len())
    }
}

/// Repacks the rows of every matrix of `mats` that the core repacks
/// ([`Repacked::len_for`]) into one new mapping, and makes each a
/// [`Linear::Repacked`]; the others stay as they are. On an error no matrix changes.
pub(crate) fn repack_all(mats: &mut [&mut Linear<'_>]) -> Result<()> {
    let lens: Vec<Option<usize>> = mats
        .iter()
        .map(|m| match &**m {
            Linear::Packed(p) => Repacked::len_for(p),
            _ => None,
        })
        .collect();
    let total: usize = lens
        .iter()
        .flatten()
        .map(|len| len.next_multiple_of(LINE))
        .sum();
    if total == 0 {
        return Ok(());
    }
    let room = if total >= HUGE_PAGE {
        total + HUGE_PAGE
    } else {
        total
    };
    let mut map = MmapMut::map_anon(room).map_err(|e| {
        EvalError::Shape(format!(
            "cannot map {room} bytes of memory for the repacked rows: {e}"
        ))
    })?;
    #[cfg(target_os = "linux")]
    if total >= HUGE_PAGE {
        // A hint: without it (or where the kernel ignores it) the rows work the same.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    // The mapping starts on a (small) page; the rows start on a huge one.
    let mut at = match total >= HUGE_PAGE {
        true => {
            let addr = map.as_ptr() as usize;
            addr.next_multiple_of(HUGE_PAGE) - addr
        }
        false => 0,
    };
    let mut ranges = Vec::with_capacity(mats.len());
    for (m, len) in mats.iter().zip(&lens) {
        match (&**m, len) {
            (Linear::Packed(p), Some(len)) => {
                Repacked::repack(p, &mut map[at..at + len])?;
                ranges.push(Some(at..at + len));
                at += len.next_multiple_of(LINE);
            }
            _ => ranges.push(None),
        }
    }
    let map =
        Arc::new(map.make_read_only().map_err(|e| {
            EvalError::Shape(format!("cannot make the repacked rows read-only: {e}"))
        })?);
    for (m, range) in mats.iter_mut().zip(ranges) {
        if let (Linear::Packed(p), Some(range)) = (&**m, range) {
            let rows = RepackedRows {
                map: Arc::clone(&map),
                range,
            };
            **m = Linear::Repacked { packed: *p, rows };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use adpq_core::kernels::AnyKernels;
    use adpq_core::{packed_len, PackedTensor, Params, Weights};

    fn packed(rows: usize, cols: usize) -> Vec<u8> {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0)
            .collect();
        let (k, p) = (AnyKernels::detect(), Params::V3);
        let sel = adpq_core::select_tensor(&k, Weights::F32(&w), rows, cols, &p).unwrap();
        let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
        adpq_core::quantize_tensor(&k, Weights::F32(&w), rows, cols, &p, &sel, &mut buf).unwrap();
        buf
    }

    /// Past a huge page of rows the first matrix starts on a 2 MiB boundary, the next on
    /// a cache line after it, each holding what `Repacked::repack` writes; a matrix the
    /// core does not repack (here: dense) stays as it is.
    #[test]
    fn matrices_share_one_mapping_on_a_huge_page_boundary() {
        let (big, small) = (packed(4096, 1024), packed(24, 96));
        assert!(big.len() > HUGE_PAGE);
        let dense = vec![0f32; 8 * 32];
        let mut mats = [
            Linear::Packed(PackedTensor::parse(&big).unwrap()),
            Linear::Dense {
                w: std::borrow::Cow::Borrowed(&dense),
                rows: 8,
                cols: 32,
            },
            Linear::Packed(PackedTensor::parse(&small).unwrap()),
        ];
        let [a, b, c] = &mut mats;
        repack_all(&mut [a, b, c]).unwrap();
        let Linear::Repacked { rows: first, .. } = &mats[0] else {
            panic!("not repacked")
        };
        assert!(matches!(mats[1], Linear::Dense { .. }));
        let Linear::Repacked { rows: second, .. } = &mats[2] else {
            panic!("not repacked")
        };
        assert_eq!(first.bytes().as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(second.bytes().as_ptr() as usize % LINE, 0);
        assert!(Arc::ptr_eq(&first.map, &second.map));
        for (buf, rows) in [(&big, first), (&small, second)] {
            let t = PackedTensor::parse(buf).unwrap();
            let mut want = vec![0u8; Repacked::len_for(&t).unwrap()];
            Repacked::repack(&t, &mut want).unwrap();
            assert!(rows.bytes() == want.as_slice());
        }
    }
}
