/* quantize.cu: a selected tensor into the sections of its packed buffer (records, codes,
 * per-row counts, positions), one group per thread, in these launches:
 *   adpq_group_ties      ties at the threshold per group (and the first rejected weight)
 *   adpq_scan            exclusive scan: the ties before each group -> its tie budget
 *   adpq_v2_extents      (v2) each group's extent under its budget
 *   adpq_v2_units        (v2) one thread per row: the row's units, written to its records
 *   adpq_quantize_groups each group's record, codes (atomic OR) and outlier count
 *   adpq_scan            exclusive scan of the counts: each group's first position
 *   adpq_row_counts      each row's count (what the core's stitch turns into offsets)
 *   adpq_positions       each group's positions, placed at its first position
 * Codes and positions buffers are zeroed, 4-byte aligned and padded to a multiple of 4. */
#include "device.cuh"

typedef struct {
    adpq_i32 version, bits, group_size, asymmetric, scale_exp;
    adpq_u32 threshold_bits;
    adpq_u64 take_equal;
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

extern "C" __global__ void adpq_v2_units(adpq_u32 rows, adpq_u32 cols, adpq_job job,
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
        adpq_units u = adpq_v2_units(&e, job.threshold_bits, &fp, job.scale_exp);
        adpq_v2_put_units(records + r * adpq_row_record_bytes(&fp, cols), &u);
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
