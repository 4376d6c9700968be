/* dequantize.cu: packed tensor -> f32, one group per thread (v3: the levels, then
 * adpq_v3_unrotate undoes the rotation, a thread per chunk of a row). The f32 values go back to
 * the host, where the core's narrowing rule (adpq_core::narrow) writes F16/BF16, so a
 * value beyond a dtype's range is saturated or refused exactly as on the CPU. */
#include "device.cuh"

typedef struct {
    adpq_i32 version, bits, group_size, asymmetric, scale_exp;
    adpq_u32 threshold_bits;
    adpq_u32 rot_seed, rot_log2; /* v3: the rows' rotation (log2 0: none) */
} adpq_packed_params;

/* The packed data of group gi of row r; its first outlier from the row's offset plus the
 * counts of the groups before it in the row. */
__device__ inline adpq_packed_group adpq_group_at(const adpq_fmt *fp, adpq_u32 cols,
                                                  const adpq_u8 *records, const adpq_u8 *codes,
                                                  const adpq_u8 *positions, adpq_u64 positions_len,
                                                  const adpq_u32 *offsets, adpq_u64 r,
                                                  adpq_u32 gi) {
    adpq_u32 g = (adpq_u32)fp->group_size;
    adpq_u64 rcb = adpq_row_code_bytes(fp, cols);
    adpq_packed_group p;
    p.row_records = records + r * adpq_row_record_bytes(fp, cols);
    p.row_record_bytes = adpq_row_record_bytes(fp, cols);
    p.row_codes = codes + r * rcb;
    p.row_code_bytes = rcb;
    p.positions = positions;
    p.positions_len = positions_len;
    p.gi = gi;
    p.col0 = gi * g;
    p.n = cols - gi * g < g ? cols - gi * g : g;
    adpq_u64 first = fp->version == 3 ? 0u : offsets[r]; /* v3: no offsets */
    for (adpq_u32 j = 0; j < gi; j++) first += adpq_group_count(p.row_records, j, fp);
    p.first_outlier = first;
    return p;
}

extern "C" __global__ void adpq_dequantize(const adpq_u8 *records, const adpq_u8 *codes,
                                           const adpq_u8 *positions, adpq_u64 positions_len,
                                           const adpq_u32 *offsets, adpq_u32 rows, adpq_u32 cols,
                                           adpq_packed_params pp, float *out) {
    adpq_fmt fp;
    fp.version = pp.version;
    fp.bits = pp.bits;
    fp.group_size = pp.group_size;
    fp.asymmetric = pp.asymmetric;
    adpq_u32 groups = (cols + (adpq_u32)fp.group_size - 1) / (adpq_u32)fp.group_size;
    adpq_u64 n_groups = (adpq_u64)rows * groups;
    for (adpq_u64 k = adpq_tid(); k < n_groups; k += adpq_nthreads()) {
        adpq_packed_group p = adpq_group_at(&fp, cols, records, codes, positions, positions_len,
                                            offsets, k / groups, (adpq_u32)(k % groups));
        adpq_decode_group(&p, &fp, pp.scale_exp, adpq_u2f(pp.threshold_bits),
                          out + (k / groups) * cols + p.col0);
    }
}

/* Format v3: undoes the rows' rotation of the decoded levels in place, one thread per
 * chunk of ADPQ_MAX_SEGMENT columns of a row (dequantize_row's inverse). */
extern "C" __global__ void adpq_v3_unrotate(float *values, adpq_u32 rows, adpq_u32 cols,
                                            adpq_packed_params pp) {
    adpq_rot rot;
    rot.seed = pp.rot_seed;
    rot.log2 = pp.rot_log2;
    adpq_u32 chunks = (cols + ADPQ_MAX_SEGMENT - 1u) / ADPQ_MAX_SEGMENT;
    adpq_u64 n_chunks = (adpq_u64)rows * chunks;
    for (adpq_u64 k = adpq_tid(); k < n_chunks; k += adpq_nthreads()) {
        adpq_u64 r = k / chunks;
        adpq_u32 start = (adpq_u32)(k % chunks) * ADPQ_MAX_SEGMENT;
        adpq_u32 n = cols - start < ADPQ_MAX_SEGMENT ? cols - start : ADPQ_MAX_SEGMENT;
        adpq_rot_inverse(&rot, start, values + r * cols + start, n);
    }
}

/* Per-group [Σw², Σ(w − ŵ)², Σ(w − rtn(w))²] of the weights against the dequantized
 * values; the host adds them in row-major group order, as the CPU engine does. */
extern "C" __global__ void adpq_error_sums(const void *w, int dtype, const float *deq,
                                           adpq_u32 rows, adpq_u32 cols, adpq_i32 bits,
                                           adpq_u32 g, double *sums) {
    adpq_u32 groups = (cols + g - 1) / g;
    adpq_u64 n_groups = (adpq_u64)rows * groups;
    for (adpq_u64 k = adpq_tid(); k < n_groups; k += adpq_nthreads()) {
        adpq_src s = adpq_group_src(w, dtype, cols, g, groups, k);
        adpq_rtn_group_sums(&s, deq + s.start, bits, sums + 3 * k);
    }
}
