//! Arbitrary bytes and arguments through the C entry points, for the `capi` fuzz target
//! (`fuzz/fuzz_targets/capi.rs`) and the crate's tests: wrong lengths, NULLs, misaligned
//! pointers, unknown enumeration values, corrupt buffers. Every call must return a known
//! status, never panic (a caught panic is `ADPQ_STATUS_PANIC`, which fails here) and
//! never touch memory outside the buffers it was given (what the sanitizers check).
//! The harness itself never lies about a buffer's length: lying would be the caller's
//! undefined behaviour, not the library's.

use std::vec;
use std::vec::Vec;

use crate::adpq_status::{self, *};
use crate::*;

/// Reads arguments from the fuzzer's bytes (zeros once they run out).
struct Args<'a>(&'a [u8]);

impl Args<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

fn check(s: adpq_status) -> bool {
    assert!(s != ADPQ_STATUS_PANIC, "a panic reached the boundary");
    assert!(
        (s as u32) < adpq_status::ALL.len() as u32,
        "unknown status {s:?}"
    );
    s == ADPQ_STATUS_OK
}

/// A buffer of `len` elements the harness owns, handed out as NULL, misaligned or exact.
struct Buf {
    bytes: Vec<u8>,
    offset: usize,
    null: bool,
}

impl Buf {
    fn new(len_bytes: usize, how: u8) -> Buf {
        Buf {
            bytes: vec![0u8; len_bytes + 8],
            // 0..=3 bytes past an 8-aligned start: misaligned for floats 3 times in 4.
            offset: usize::from(how >> 1 & 3),
            null: how & 1 == 1 && how & 0x80 != 0,
        }
    }
    fn ptr<T>(&mut self) -> *mut T {
        if self.null {
            return core::ptr::null_mut();
        }
        let base = self.bytes.as_mut_ptr();
        let skip = base.align_offset(8).min(4);
        // SAFETY: skip <= 4 and offset <= 3, both within the 8 spare bytes.
        unsafe { base.add(skip + self.offset) }.cast()
    }
}

/// How far one input got: the test asserts that inputs reach the success paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    /// The bytes parsed as a packed tensor.
    pub parsed: bool,
    /// A matrix was selected and quantized, and the result parsed.
    pub quantized: bool,
}

/// Runs the entry points on `data` (see the module docs).
pub fn entry_points(data: &[u8]) -> Reached {
    let (head, rest) = data.split_at(data.len().min(48));
    let mut a = Args(head);
    let flags = a.u8();

    // 1. The bytes as a packed tensor, optionally with length and CRC made to match.
    let mut packed = rest.to_vec();
    if flags & 1 == 1 && packed.len() >= adpq_core::format::HEADER_LEN {
        let n = packed.len() as u64;
        packed[48..56].copy_from_slice(&n.to_le_bytes());
        let crc = adpq_core::format::checksum(&packed);
        packed[56..60].copy_from_slice(&crc.to_le_bytes());
    }
    // SAFETY: zeroed storage, as the header asks.
    let mut t: adpq_tensor = unsafe { core::mem::zeroed() };
    let null_buf = flags & 2 == 2 && flags & 4 == 4;
    let p = if null_buf {
        core::ptr::null()
    } else {
        packed.as_ptr()
    };
    // SAFETY: `p` is NULL or readable for packed.len() bytes; `t` outlives no use of it.
    let parsed = check(unsafe { adpq_tensor_parse(p, packed.len(), &mut t) });
    // Parsed or still zeroed: either way every operation must answer with a status.
    operations(&t, &mut a, parsed);

    // 2. The bytes as a matrix to quantize, with arbitrary parameters.
    let rows = usize::from(a.u8() % 8) + usize::from(flags & 8 == 0);
    let cols = usize::from(a.u16() % 700);
    let dtype = u32::from(a.u8() % 4);
    // Three times in four, parameters and weights the format accepts (so the fuzzer
    // reaches quantization), else raw values.
    let sane = flags & 0x60 != 0x60;
    let params = if sane {
        let version = 1 + u32::from(a.u8() % 2);
        adpq_params {
            version,
            bits: 2 + u32::from(a.u8() % 7),
            group_size: 16 + u32::from(a.u16() % 240),
            grid: if version == 2 {
                1
            } else {
                u32::from(a.u8() % 2)
            },
            alpha: f64::from(a.u8()) / 600.0,
            reference_iters: 100 * u32::from(flags & 16 == 16),
        }
    } else {
        adpq_params {
            version: u32::from(a.u8() % 4),
            bits: u32::from(a.u8() % 12),
            group_size: u32::from(a.u16() % 1100),
            grid: u32::from(a.u8() % 3),
            alpha: f64::from(a.u8()) / 400.0,
            reference_iters: u32::from(a.u8() % 4) * 20 * u32::from(flags & 16 == 16),
        }
    };
    let esize = if dtype == 0 { 4 } else { 2 };
    let n = rows * cols;
    let mut w = Buf::new(n * esize, a.u8());
    let wp: *mut u8 = w.ptr();
    if !wp.is_null() && !rest.is_empty() {
        for i in 0..n {
            // Sane: small values from the bytes; raw: whatever bits they hold (NaN too).
            let mut e = [0u8; 4];
            if sane {
                let v = f32::from(rest[i % rest.len()] as i8) / 64.0;
                match dtype {
                    0 => e = v.to_le_bytes(),
                    1 => e[..2].copy_from_slice(&adpq_core::f16::from_f32(v).to_le_bytes()),
                    _ => e[..2].copy_from_slice(&adpq_core::bf16::from_f32(v).to_le_bytes()),
                }
            } else {
                for (j, b) in e.iter_mut().enumerate() {
                    *b = rest[(i * esize + j) % rest.len()];
                }
            }
            for (j, b) in e[..esize].iter().enumerate() {
                // SAFETY: wp points into w.bytes with at least n * esize bytes after it.
                unsafe { *wp.add(i * esize + j) = *b };
            }
        }
    }
    // SAFETY: zeroed storage.
    let mut sel: adpq_selection = unsafe { core::mem::zeroed() };
    let mut len = 0usize;
    let backend = u32::from(a.u8() % 5);
    // SAFETY: `w` holds n elements of the dtype's size after its pointer (or NULL).
    let ok = check(unsafe {
        adpq_quantize_select(
            backend,
            wp.cast(),
            dtype,
            rows,
            cols,
            &params,
            &mut sel,
            &mut len,
        )
    });
    if ok && len <= 1 << 22 {
        let delta = usize::from(a.u8() % 3);
        let out_len = (len + delta).saturating_sub(1);
        let mut out = Buf::new(out_len, a.u8());
        let op: *mut u8 = out.ptr();
        // SAFETY: as above; `out` holds out_len bytes after its pointer (or is NULL).
        let ok = check(unsafe {
            adpq_quantize(
                backend,
                wp.cast(),
                dtype,
                rows,
                cols,
                &params,
                &sel,
                op,
                out_len,
            )
        });
        if ok {
            // SAFETY: exact length written on success.
            let bytes = unsafe { core::slice::from_raw_parts(op, out_len) };
            // SAFETY: zeroed storage; `bytes` outlives the handle's uses below.
            let mut t2: adpq_tensor = unsafe { core::mem::zeroed() };
            // SAFETY: `bytes` is readable for its length.
            let s = unsafe { adpq_tensor_parse(bytes.as_ptr(), bytes.len(), &mut t2) };
            assert_eq!(s, ADPQ_STATUS_OK, "what adpq_quantize writes parses");
            operations(&t2, &mut a, true);
            return Reached {
                parsed,
                quantized: true,
            };
        }
    }
    Reached {
        parsed,
        quantized: false,
    }
}

/// Every operation on `t`, with arguments from `a`.
fn operations(t: &adpq_tensor, a: &mut Args<'_>, parsed: bool) {
    let mut info = adpq_tensor_info::default();
    // SAFETY: valid storage and output.
    let ok = check(unsafe { adpq_tensor_get_info(t, &mut info) });
    assert_eq!(ok, parsed, "info answers for parsed handles only");
    let (rows, cols) = if ok {
        assert!(info.rows > 0 && info.cols > 0 && info.bits_per_weight > 0.0);
        (info.rows as usize, info.cols as usize)
    } else {
        (usize::from(a.u8()) + 1, usize::from(a.u8()) + 1)
    };
    if rows.saturating_mul(cols) > 1 << 20 {
        return;
    }
    // Lengths: exact, or one off either way.
    let len = |exact: usize, a: &mut Args<'_>| match a.u8() % 4 {
        0 => exact + 1,
        1 => exact.saturating_sub(1),
        _ => exact,
    };
    for _ in 0..2 {
        let backend = u32::from(a.u8() % 5);
        let first = usize::from(a.u8()) % (rows + 1);
        let n_rows = (usize::from(a.u8()) % (rows + 1)).min(rows + 1 - first);
        let dtype = u32::from(a.u8() % 4);
        let esize = if dtype == 0 { 4 } else { 2 };
        let out_len = len(n_rows * cols * esize, a);
        let scratch_len = len(cols * (1 + usize::from(a.u8() % 3)), a);
        let mut out = Buf::new(out_len, a.u8());
        let mut scratch = Buf::new(scratch_len * 4, a.u8());
        // SAFETY: each buffer holds the length passed after its pointer (or is NULL).
        check(unsafe {
            adpq_dequantize_rows(
                t,
                backend,
                first,
                n_rows,
                dtype,
                out.ptr(),
                out_len,
                scratch.ptr(),
                scratch_len,
            )
        });

        let x_len = len(cols, a);
        let y_len = len(rows, a);
        let mut x = Buf::new(x_len * 4, a.u8());
        let xs = x.ptr::<f32>();
        if !xs.is_null() && xs.is_aligned() {
            for i in 0..x_len {
                let v = f32::from(a.u8() as i8) / 16.0;
                // SAFETY: x holds x_len floats after its (aligned) pointer.
                unsafe { xs.add(i).write(if a.u8() == 255 { f32::NAN } else { v }) };
            }
        }
        let mut y = Buf::new(y_len * 4, a.u8());
        let row = usize::from(a.u8()) % (rows + 1);
        let mut d = 0f32;
        // SAFETY: buffers hold the lengths passed (or are NULL).
        unsafe {
            check(adpq_gemv(t, backend, xs, x_len, y.ptr(), y_len));
            check(adpq_dot_row(t, backend, row, xs, x_len, &mut d));
        }
        let mut need = 0usize;
        // SAFETY: valid output.
        let need = if check(unsafe { adpq_q8_scratch_len(t, &mut need) }) {
            len(need, a)
        } else {
            len(cols * 2, a)
        };
        let mut s8 = Buf::new(need, a.u8());
        // SAFETY: buffers hold the lengths passed (or are NULL).
        check(unsafe { adpq_gemv_q8(t, backend, xs, x_len, s8.ptr(), need, y.ptr(), y_len) });
    }
}
