//! A probe for issue 17's open design question, not a product kernel: how fast would the
//! default format's int8 gemv run over rows **repacked at load** by an engine, and does it
//! keep the reference's bits?
//!
//! `cargo run --release -p adpq-bench --example repack_probe -- ROWSxCOLS [REPS]` (x86_64
//! with AVX2; rows a multiple of 4, columns of 64). It quantizes Gaussian weights with
//! `Params::V3` (rotated rows, the 4-bit code book, groups of 64), makes the int8
//! activations as an engine does, and times (CPU time of this thread, best of REPS) the
//! core's `gemv_q8` against two layouts of the same codes, each 4-row block's groups one
//! after the other:
//! - **factors**: per group the 4 rows' 32 code bytes, then each row's `(q_d·u_d)·⅛` and
//!   `−(q_m·u_m)` as f32 (the reference's own products, so the same bits), 160 bytes;
//! - **fields**: per block the 4 rows' units, per group the 4 rows' codes and their 12-bit
//!   record fields as 4 u16 in lane order (136 bytes: about the packed size).
//!
//! Each is timed once on one matrix (in cache) and once cycling through 256 MB of copies
//! (from memory, as decode reads a model), and every output is compared bit for bit with
//! the core's. Intrinsics are written here directly, outside the core's lane abstraction,
//! because this measures a layout: a product version belongs in `adpq-core` over `Lanes`,
//! with the scalar oracle, every code width and NEON.

#[cfg(target_arch = "x86_64")]
#[path = "shared/cpu_time.rs"]
mod cpu_time;

#[cfg(target_arch = "x86_64")]
mod probe {
    use super::cpu_time::on_cpu_ns;
    use adpq_core::format::record_v3::read_record;
    use adpq_core::kernels::{AnyKernels, Q8Activations};
    use adpq_core::params::CODEBOOK_4BIT;
    use adpq_core::{packed_len, CpuKernels, PackedTensor, Params, Weights};
    use std::arch::x86_64::*;

    /// Columns per group (`Params::V3`).
    const G: usize = 64;
    /// Bytes per block and group: the factors layout, the fields layout.
    const FACTORS: usize = 4 * 32 + 32;
    const FIELDS: usize = 4 * 32 + 8;
    /// Bytes at the head of a fields block: the 4 rows' step units, then minimum units.
    const UNITS: usize = 32;

    /// The matrix in one of the two layouts (see the module docs).
    fn repack(t: &PackedTensor<'_>, fields: bool) -> Vec<u8> {
        let (rows, groups) = (t.rows(), t.cols() / G);
        let per_block = if fields {
            UNITS + groups * FIELDS
        } else {
            groups * FACTORS
        };
        let mut out = vec![0u8; rows / 4 * per_block];
        for (b, block) in out.chunks_exact_mut(per_block).enumerate() {
            for n in 0..4 {
                let row = t.row(b * 4 + n).expect("a row");
                let units = t.units_of(&row);
                if fields {
                    block[4 * n..][..4].copy_from_slice(&units.step_unit.to_le_bytes());
                    block[16 + 4 * n..][..4].copy_from_slice(&units.min_unit.to_le_bytes());
                }
                for gi in 0..groups {
                    let (q_step, q_min) = read_record(row.records, gi);
                    let at = if fields {
                        UNITS + gi * FIELDS
                    } else {
                        gi * FACTORS
                    };
                    let g = &mut block[at..];
                    g[n * 32..][..32].copy_from_slice(&row.codes[gi * 32..][..32]);
                    if fields {
                        let f = u16::from(q_step) | (u16::from(q_min) << 6);
                        g[128 + 2 * n..][..2].copy_from_slice(&f.to_le_bytes());
                    } else {
                        let step = (f32::from(q_step) * units.step_unit) * 0.125;
                        let min = -(f32::from(q_min) * units.min_unit);
                        g[128 + 4 * n..][..4].copy_from_slice(&step.to_le_bytes());
                        g[144 + 4 * n..][..4].copy_from_slice(&min.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// `y = W x̂` over a repacked matrix: per group the 4 rows' exact `Σ L[c]·q` (even and
    /// odd codes against de-interleaved activations, `maddubs`), their 4 sums in the
    /// lanes of one register, then the reference's f32 arithmetic per lane.
    ///
    /// # Safety
    /// AVX2 must be present; `rp` must be `repack(t, fields)` of a tensor with `y.len()`
    /// rows and `q.len()` columns, `scales` and `sums` one per group of `q`.
    #[target_feature(enable = "avx2")]
    unsafe fn gemv(
        rp: &[u8],
        fields: bool,
        (q, scales, sums): (&[i8], &[f32], &[i32]),
        y: &mut [f32],
    ) {
        let groups = scales.len();
        let (head, per_group) = if fields {
            (UNITS, FIELDS)
        } else {
            (0, FACTORS)
        };
        let per_block = head + groups * per_group;
        assert_eq!(rp.len(), y.len() / 4 * per_block, "a repacked matrix");
        assert!(q.len() == groups * G && sums.len() == groups, "activations");
        // SAFETY: the caller guarantees AVX2 (every intrinsic's requirement); every
        // pointer stays inside `rp`'s block (`per_block` bytes) or `q` (`groups · G`
        // bytes), as the asserts above check; the prefetch past a block is a hint that
        // reads nothing.
        unsafe {
            let book = _mm256_broadcastsi128_si256(_mm_loadu_si128(CODEBOOK_4BIT.as_ptr().cast()));
            let (low, ones) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi16(1));
            let split = _mm256_setr_epi8(
                0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, //
                0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
            );
            let sign = _mm_castsi128_ps(_mm_set1_epi32(i32::MIN));
            for (block, out) in rp.chunks_exact(per_block).zip(y.chunks_exact_mut(4)) {
                let p = block.as_ptr();
                // SAFETY (every pointer below): offsets stay inside `block` (`per_block`
                // bytes) and `q` (`groups · G` bytes), checked by the asserts above; the
                // prefetch past the block is a hint and reads nothing.
                let (step_units, min_units) =
                    (_mm_loadu_ps(p.cast()), _mm_loadu_ps(p.add(16).cast()));
                let mut acc = _mm_setzero_ps();
                for gi in 0..groups {
                    let gp = p.add(head + gi * per_group);
                    for line in [0, 64, 128] {
                        _mm_prefetch::<_MM_HINT_T0>(gp.wrapping_add(per_block + line).cast());
                    }
                    let qp = q.as_ptr().add(gi * G);
                    let half = |v| {
                        _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(v, split))
                    };
                    let (a0, a1) = (
                        half(_mm256_loadu_si256(qp.cast())),
                        half(_mm256_loadu_si256(qp.add(32).cast())),
                    );
                    let (q_even, q_odd) = (
                        _mm256_permute2x128_si256::<0x20>(a0, a1),
                        _mm256_permute2x128_si256::<0x31>(a0, a1),
                    );
                    let v: [__m256i; 4] = core::array::from_fn(|n| {
                        let c = _mm256_loadu_si256(gp.add(n * 32).cast());
                        let even = _mm256_shuffle_epi8(book, _mm256_and_si256(c, low));
                        let odd = _mm256_shuffle_epi8(
                            book,
                            _mm256_and_si256(_mm256_srli_epi16::<4>(c), low),
                        );
                        _mm256_add_epi32(
                            _mm256_madd_epi16(_mm256_maddubs_epi16(even, q_even), ones),
                            _mm256_madd_epi16(_mm256_maddubs_epi16(odd, q_odd), ones),
                        )
                    });
                    let abcd = _mm256_hadd_epi32(
                        _mm256_hadd_epi32(v[0], v[1]),
                        _mm256_hadd_epi32(v[2], v[3]),
                    );
                    let isum = _mm_add_epi32(
                        _mm256_castsi256_si128(abcd),
                        _mm256_extracti128_si256::<1>(abcd),
                    );
                    let (step, min) = if fields {
                        let f = _mm_cvtepu16_epi32(_mm_loadl_epi64(gp.add(128).cast()));
                        let q_step = _mm_cvtepi32_ps(_mm_and_si128(f, _mm_set1_epi32(63)));
                        let q_min = _mm_cvtepi32_ps(_mm_srli_epi32::<6>(f));
                        (
                            _mm_mul_ps(_mm_mul_ps(q_step, step_units), _mm_set1_ps(0.125)),
                            _mm_xor_ps(_mm_mul_ps(q_min, min_units), sign),
                        )
                    } else {
                        (
                            _mm_loadu_ps(gp.add(128).cast()),
                            _mm_loadu_ps(gp.add(144).cast()),
                        )
                    };
                    // The reference's order: `acc += (sx·(d·⅛))·Σ L·q + (sx·m)·Σ q`.
                    let sx = _mm_set1_ps(scales[gi]);
                    let dense = _mm_mul_ps(_mm_mul_ps(sx, step), _mm_cvtepi32_ps(isum));
                    let offset = _mm_mul_ps(_mm_mul_ps(sx, min), _mm_set1_ps(sums[gi] as f32));
                    acc = _mm_add_ps(acc, _mm_add_ps(dense, offset));
                }
                _mm_storeu_ps(out.as_mut_ptr(), acc);
            }
        }
    }

    /// Runs the probe (see the module docs).
    pub fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let shape = args.first().and_then(|s| s.split_once('x'));
        let Some((rows, cols)) =
            shape.and_then(|(r, c)| Some((r.parse::<usize>().ok()?, c.parse::<usize>().ok()?)))
        else {
            eprintln!("usage: repack_probe ROWSxCOLS [REPS] (rows a multiple of 4, columns of 64)");
            std::process::exit(2);
        };
        if rows % 4 != 0 || cols % G != 0 || !is_x86_feature_detected!("avx2") {
            eprintln!("repack_probe: needs AVX2, rows a multiple of 4 and columns of 64");
            std::process::exit(2);
        }
        let reps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
        let k = AnyKernels::by_name("avx2").expect("AVX2");
        let (w, x) = (
            adpq_bench::gaussian(rows * cols, 1),
            adpq_bench::gaussian(cols, 2),
        );
        let (params, ww) = (Params::V3, Weights::F32(&w));
        let sel = adpq_core::select_tensor(&k, ww, rows, cols, &params).expect("select");
        let mut packed = vec![0u8; packed_len(rows, cols, params.format(), 0).expect("size")];
        adpq_core::quantize_tensor(&k, ww, rows, cols, &params, &sel, &mut packed)
            .expect("quantize");
        let t = PackedTensor::parse(&packed).expect("parse");
        let groups = cols / G;
        let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
        let a = Q8Activations::quantize_for(&t, &x, &mut q, &mut sc, &mut su).expect("activations");
        let act = (a.q(), a.scales(), a.sums());
        let mut want = vec![0f32; rows];
        k.gemv_q8(&t, &a, &mut want).expect("gemv");
        // Copies cycled through, so that the weights come from memory.
        let copies = (256 << 20) / packed.len() + 1;
        let cores: Vec<Vec<u8>> = vec![packed.clone(); copies];
        let cores: Vec<PackedTensor<'_>> = cores
            .iter()
            .map(|b| PackedTensor::parse(b).expect("parse"))
            .collect();
        let layouts: Vec<Vec<Vec<u8>>> = [false, true].map(|f| vec![repack(&t, f); copies]).into();
        let mut y = vec![0f32; rows];
        for (fields, copies) in [false, true].into_iter().zip(&layouts) {
            // SAFETY: AVX2 was detected; the layout is `repack(t, fields)` of `t`, whose
            // activations `a` are.
            unsafe { gemv(&copies[0], fields, act, &mut y) };
            let differ = want
                .iter()
                .zip(&y)
                .filter(|(w, y)| w.to_bits() != y.to_bits())
                .count();
            println!(
                "{} layout: {differ} of {rows} outputs differ from the core's in bits",
                name(fields)
            );
        }
        let bytes = |f: bool| layouts[usize::from(f)][0].len();
        println!(
            "bytes: packed {}, factors {}, fields {}",
            packed.len(),
            bytes(false),
            bytes(true)
        );
        for from_memory in [false, true] {
            let n = if from_memory { copies } else { 1 };
            let mut best = [f64::INFINITY; 3];
            for _ in 0..reps {
                let t0 = on_cpu_ns();
                for t in &cores[..n] {
                    k.gemv_q8(t, &a, &mut y).expect("gemv");
                }
                best[0] = best[0].min((on_cpu_ns() - t0) as f64);
                for (fields, copies) in [false, true].into_iter().zip(&layouts) {
                    let t0 = on_cpu_ns();
                    for rp in &copies[..n] {
                        // SAFETY: as above.
                        unsafe { gemv(rp, fields, act, &mut y) };
                    }
                    let i = 1 + usize::from(fields);
                    best[i] = best[i].min((on_cpu_ns() - t0) as f64);
                }
            }
            let weights = (rows * cols * n) as f64;
            println!(
                "{rows}x{cols} {}: core {:.2}, factors {:.2}, fields {:.2} G weights/s (CPU time, best of {reps})",
                if from_memory { "from memory (256 MB of copies)" } else { "in cache" },
                weights / best[0],
                weights / best[1],
                weights / best[2],
            );
        }
    }

    fn name(fields: bool) -> &'static str {
        if fields {
            "fields"
        } else {
            "factors"
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    probe::main();
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!("repack_probe: x86_64 only");
}
