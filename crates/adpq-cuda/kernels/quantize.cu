/* quantize.cu: a selected tensor into the sections of its packed buffer (records, codes,
 * per-row counts, positions), one group per thread. Formats v1 and v2 in these launches:
 *   adpq_group_ties      ties at the threshold per group (and the first rejected weight)
 *   adpq_scan            exclusive scan: the ties before each group -> its tie budget
 *   adpq_v2_extents      (v2) each group's extent under its budget
 *   adpq_put_row_units   (v2) one thread per row: the row's units, written to its records
 *   adpq_quantize_groups each group's record, codes (atomic OR) and outlier count
 *   adpq_scan            exclusive scan of the counts: each group's first position
 *   adpq_row_counts      each row's count (what the core's stitch turns into offsets)
 *   adpq_positions       each group's positions, placed at its first position
 * Format v3 (no outliers; rows rotated):
 *   adpq_group_ties      the first rejected weight (the ties are not used)
 *   adpq_v3_rotate       one thread per chunk of 512 columns of a row: the rotated rows,
 *                        as f32, into a scratch buffer (rotated once, read by both passes)
 *   adpq_v3_extents      each group's extent
 *   adpq_put_row_units   one thread per row: the row's units
 *   adpq_v3_groups       each group's searched grid: record and codes (atomic OR)
 * adpq_v3_rotate also rotates the activations of a v3 gemm (dtype f32, a row per vector).
 * Codes and positions buffers are zeroed, 4-byte aligned and padded to a multiple of 4. */
#include "device.cuh"

typedef struct {
    adpq_i32 version, bits, group_size, asymmetric, scale_exp;
    adpq_u32 threshold_bits;
    adpq_u64 take_equal;
    adpq_u32 rot_seed, rot_log2; /* v3: the rows' rotation (log2 0: none) */
} adpq_job;

__device__ __forceinline__ adpq_fmt adpq_job_fmt(const adpq_job *j) {
    adpq_fmt f;
    f.version = j->version;
    f.bits = j->bits;
    f.group_size = j->group_size;
    f.asymmetric = j->asymmetric;
    return f;
}

extern "C" __global__ void adpq_group_ties(const void *w, int dtype, adpq_u32 rows,
                                           adpq_u32 cols, adpq_u32 g, adpq_u32 threshold_bits,
                                           adpq_u64 *ties, adpq_u64 *first_bad) {
    adpq_u32 groups = (cols + g - 1) / g;
    adpq_u64 n_groups = (adpq_u64)rows * groups;
    for (adpq_u64 k = adpq_tid(); k < n_groups; k += adpq_nthreads()) {
        adpq_src s = adpq_group_src(w, dtype, cols, g, groups, k);
        adpq_u32 i = adpq_group_first_bad(&s);
        if (i < s.n) atomicMin(first_bad, s.start + i);
        ties[k] = adpq_group_ties(&s, threshold_bits);
    }
}

/* In-place exclusive scan of data[0..n], total in data[n]: one block of 1024 threads,
 * each scanning a contiguous chunk. */
extern "C" __global__ void adpq_scan(adpq_u64 *data, adpq_u64 n) {
    __shared__ adpq_u64 warp_totals[32];
    adpq_u64 per = (n + blockDim.x - 1) / blockDim.x;
    adpq_u64 lo = threadIdx.x * per, hi = lo + per < n ? lo + per : n;
    adpq_u64 sum = 0;
    for (adpq_u64 i = lo; i < hi; i++) sum += data[i];
    adpq_u64 warp_total;
    adpq_u64 before = adpq_warp_exclusive(sum, &warp_total);
    unsigned int warp = threadIdx.x >> 5, lane = threadIdx.x & 31u;
    if (lane == 0) warp_totals[warp] = warp_total;
    __syncthreads();
    if (warp == 0) {
        adpq_u64 t = lane < (blockDim.x >> 5) ? warp_totals[lane] : 0;
        adpq_u64 all;
        adpq_u64 ex = adpq_warp_exclusive(t, &all);
        if (lane < (blockDim.x >> 5)) warp_totals[lane] = ex;
        if (lane == 0) data[n] = all;
    }
    __syncthreads();
    adpq_u64 run = warp_totals[warp] + before;
    for (adpq_u64 i = lo; i < hi; i++) {
        adpq_u64 v = data[i];
        data[i] = run;
        run += v;
    }
}

extern "C" __global__ void adpq_v2_extents(const void *w, int dtype, adpq_u32 rows, adpq_u32 cols,
                                           adpq_job job, const adpq_u64 *ties_before,
                                           float *extents) {
    adpq_u32 g = (adpq_u32)job.group_size, groups = (cols + g - 1) / g;
    adpq_u64 n_groups = (adpq_u64)rows * groups;
    for (adpq_u64 k = adpq_tid(); k < n_groups; k += adpq_nthreads()) {
        adpq_src s = adpq_group_src(w, dtype, cols, g, groups, k);
        adpq_extent e = adpq_v2_group_extent(
            &s, adpq_rule_after(job.threshold_bits, job.take_equal, ties_before[k]));
        extents[3 * k] = e.span_max;
        extents[3 * k + 1] = e.neg_max;
        extents[3 * k + 2] = e.out_max;
    }
}

/* One thread per row: its groups' extents reduced in order into the row's units (v2, v3),
 * written at the start of its zeroed records. */
extern "C" __global__ void adpq_put_row_units(adpq_u32 rows, adpq_u32 cols, adpq_job job,
                                              const float *extents, adpq_u8 *records) {
    adpq_fmt fp = adpq_job_fmt(&job);
    adpq_u32 groups = (cols + (adpq_u32)fp.group_size - 1) / (adpq_u32)fp.group_size;
    for (adpq_u64 r = adpq_tid(); r < rows; r += adpq_nthreads()) {
        adpq_extent e = adpq_extent_zero();
        for (adpq_u32 gi = 0; gi < groups; gi++) {
            const float *x = extents + 3 * (r * groups + gi);
            adpq_extent ge;
            ge.span_max = x[0];
            ge.neg_max = x[1];
            ge.out_max = x[2];
            adpq_extent_add(&e, &ge);
        }
        adpq_units u = adpq_row_units(&e, job.threshold_bits, &fp, job.scale_exp);
        adpq_u8 *row_records = records + r * adpq_row_record_bytes(&fp, cols);
        if (fp.version == 3) {
            adpq_v3_put_units(row_records, &u);
        } else {
            adpq_v2_put_units(row_records, &u);
        }
    }
}

extern "C" __global__ void adpq_quantize_groups(const void *w, int dtype, adpq_u32 rows,
                                                adpq_u32 cols, adpq_job job,
                                                const adpq_u64 *ties_before, adpq_u8 *records,
                                                adpq_u8 *codes, adpq_u64 *counts) {
    adpq_fmt fp = adpq_job_fmt(&job);
    adpq_u32 g = (adpq_u32)fp.group_size, groups = (cols + g - 1) / g;
    adpq_u64 n_groups = (adpq_u64)rows * groups;
    adpq_u64 rrb = adpq_row_record_bytes(&fp, cols), rcb = adpq_row_code_bytes(&fp, cols);
    for (adpq_u64 k = adpq_tid(); k < n_groups; k += adpq_nthreads()) {
        adpq_u64 r = k / groups;
        adpq_u32 gi = (adpq_u32)(k % groups);
        adpq_src s = adpq_group_src(w, dtype, cols, g, groups, k);
        adpq_rule rule = adpq_rule_after(job.threshold_bits, job.take_equal, ties_before[k]);
        adpq_u32 mask[ADPQ_MASK_WORDS];
        adpq_u8 *row_records = records + r * rrb;
        if (fp.version == 2) {
            adpq_units u =
                adpq_v2_get_units(row_records, job.scale_exp, adpq_u2f(job.threshold_bits));
            counts[k] = adpq_v2_group(&s, &rule, &fp, &u, row_records, gi, codes + r * rcb,
                                      gi * g, mask);
        } else {
            counts[k] = adpq_v1_group(&s, &rule, &fp, job.scale_exp,
                                      row_records + (adpq_u64)gi * adpq_record_bytes(&fp),
                                      codes + r * rcb, gi * g, mask);
        }
    }
}

/* Row r's outlier count from the scanned group counts (first[k], total at first[n]). */
extern "C" __global__ void adpq_row_counts(adpq_u32 rows, adpq_u32 groups, const adpq_u64 *first,
                                           adpq_u32 *row_counts) {
    for (adpq_u64 r = adpq_tid(); r < rows; r += adpq_nthreads()) {
        row_counts[r] = (adpq_u32)(first[(r + 1) * groups] - first[r * groups]);
    }
}

extern "C" __global__ void adpq_positions(const void *w, int dtype, adpq_u32 rows, adpq_u32 cols,
                                          adpq_job job, const adpq_u64 *ties_before,
                                          const adpq_u64 *first, adpq_u8 *positions) {
    adpq_fmt fp = adpq_job_fmt(&job);
    adpq_u32 g = (adpq_u32)fp.group_size, groups = (cols + g - 1) / g;
    adpq_u64 n_groups = (adpq_u64)rows * groups;
    adpq_u32 pbits = adpq_position_bits(&fp);
    for (adpq_u64 k = adpq_tid(); k < n_groups; k += adpq_nthreads()) {
        adpq_src s = adpq_group_src(w, dtype, cols, g, groups, k);
        adpq_rule rule = adpq_rule_after(job.threshold_bits, job.take_equal, ties_before[k]);
        adpq_u32 mask[ADPQ_MASK_WORDS];
        (void)adpq_classify(&s, &rule, mask);
        adpq_put_positions(positions, first[k], pbits, mask, s.n);
    }
}

/* Rows of f32 (or f16/bf16) values rotated into `out` (f32, rows · cols), one thread per
 * chunk of ADPQ_MAX_SEGMENT columns of a row (load_segment, rotated_segment). */
extern "C" __global__ void adpq_v3_rotate(const void *w, int dtype, adpq_u32 rows, adpq_u32 cols,
                                          adpq_u32 rot_seed, adpq_u32 rot_log2, float *out) {
    adpq_rot rot;
    rot.seed = rot_seed;
    rot.log2 = rot_log2;
    adpq_u32 chunks = (cols + ADPQ_MAX_SEGMENT - 1u) / ADPQ_MAX_SEGMENT;
    adpq_u64 n_chunks = (adpq_u64)rows * chunks;
    for (adpq_u64 k = adpq_tid(); k < n_chunks; k += adpq_nthreads()) {
        adpq_u64 r = k / chunks;
        adpq_u32 start = (adpq_u32)(k % chunks) * ADPQ_MAX_SEGMENT;
        adpq_u32 n = cols - start < ADPQ_MAX_SEGMENT ? cols - start : ADPQ_MAX_SEGMENT;
        adpq_rot_load(w, dtype, cols, r, start, n, &rot, out + r * cols + start);
    }
}

/* Each v3 group's extent from the rotated rows (three f32 per group, as v2's). */
extern "C" __global__ void adpq_v3_extents(const float *rotated, adpq_u32 rows, adpq_u32 cols,
                                           adpq_job job, float *extents) {
    adpq_u32 g = (adpq_u32)job.group_size, groups = (cols + g - 1) / g;
    adpq_u64 n_groups = (adpq_u64)rows * groups;
    for (adpq_u64 k = adpq_tid(); k < n_groups; k += adpq_nthreads()) {
        adpq_src s = adpq_group_src(rotated, ADPQ_F32, cols, g, groups, k);
        adpq_extent e = adpq_v3_group_extent(rotated + s.start, s.n);
        extents[3 * k] = e.span_max;
        extents[3 * k + 1] = e.neg_max;
        extents[3 * k + 2] = e.out_max;
    }
}

/* Each v3 group's record and codes from the rotated rows, the row's units already in its
 * records. */
extern "C" __global__ void adpq_v3_groups(const float *rotated, adpq_u32 rows, adpq_u32 cols,
                                          adpq_job job, adpq_u8 *records, adpq_u8 *codes) {
    adpq_fmt fp = adpq_job_fmt(&job);
    adpq_u32 g = (adpq_u32)fp.group_size, groups = (cols + g - 1) / g;
    adpq_u64 n_groups = (adpq_u64)rows * groups;
    adpq_u64 rrb = adpq_row_record_bytes(&fp, cols), rcb = adpq_row_code_bytes(&fp, cols);
    for (adpq_u64 k = adpq_tid(); k < n_groups; k += adpq_nthreads()) {
        adpq_u64 r = k / groups;
        adpq_u32 gi = (adpq_u32)(k % groups);
        adpq_src s = adpq_group_src(rotated, ADPQ_F32, cols, g, groups, k);
        adpq_u8 *row_records = records + r * rrb;
        adpq_units u = adpq_v3_get_units(row_records, job.scale_exp);
        adpq_v3_group(rotated + s.start, s.n, &fp, &u, row_records, gi, codes + r * rcb, gi * g);
    }
}
