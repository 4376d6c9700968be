/* gemv.cu: y = W x for a packed W, one warp per row. Format v3 reads x already rotated
 * (the engine runs adpq_v3_rotate over the vectors first, once per launch; int8
 * activations come rotated from Q8Activations::quantize_for). Lane l takes groups l, l + 32, ...;
 * each group's first outlier comes from a warp scan of the groups' counts. The lanes'
 * partial sums are added by a shuffle tree, so results match the CPU within
 * adpq_core::kernels::dot_tolerance, not bit for bit. */
#include "device.cuh"

typedef struct {
    adpq_i32 version, bits, group_size, asymmetric, scale_exp;
    adpq_u32 threshold_bits;
    adpq_u32 rot_seed, rot_log2; /* v3: the rows' rotation (log2 0: none) */
} adpq_packed_params;

__device__ __forceinline__ adpq_fmt adpq_pp_fmt(const adpq_packed_params *pp) {
    adpq_fmt f;
    f.version = pp->version;
    f.bits = pp->bits;
    f.group_size = pp->group_size;
    f.asymmetric = pp->asymmetric;
    return f;
}

/* Walks the groups of row r in warp-sized steps, calling body(p) for the lane's group. */
#define ADPQ_ROW_GROUPS(body)                                                                  \
    adpq_u32 g = (adpq_u32)fp.group_size, groups = (cols + g - 1) / g;                         \
    adpq_u64 rcb = adpq_row_code_bytes(&fp, cols);                                             \
    const adpq_u8 *row_records = records + r * adpq_row_record_bytes(&fp, cols);               \
    adpq_u64 first = fp.version == 3 ? 0u : offsets[r]; /* v3: no offsets */                   \
    for (adpq_u32 base = 0; base < groups; base += 32) {                                       \
        adpq_u32 gi = base + lane;                                                             \
        adpq_u64 count = gi < groups ? adpq_group_count(row_records, gi, &fp) : 0;             \
        adpq_u64 step_total;                                                                   \
        adpq_u64 before = adpq_warp_exclusive(count, &step_total);                             \
        if (gi < groups) {                                                                     \
            adpq_packed_group p;                                                               \
            p.row_records = row_records;                                                       \
            p.row_record_bytes = adpq_row_record_bytes(&fp, cols);                             \
            p.row_codes = codes + r * rcb;                                                     \
            p.row_code_bytes = rcb;                                                            \
            p.positions = positions;                                                           \
            p.positions_len = positions_len;                                                   \
            p.gi = gi;                                                                         \
            p.col0 = gi * g;                                                                   \
            p.n = cols - gi * g < g ? cols - gi * g : g;                                       \
            p.first_outlier = first + before;                                                  \
            body                                                                               \
        }                                                                                      \
        first += step_total;                                                                   \
    }

/* Y[b·rows + r] = Σ_c W[r, c] · X[b·cols + c] for b < batch (batch 1: a gemv). */
extern "C" __global__ void adpq_gemm(const adpq_u8 *records, const adpq_u8 *codes,
                                     const adpq_u8 *positions, adpq_u64 positions_len,
                                     const adpq_u32 *offsets, adpq_u32 rows, adpq_u32 cols,
                                     adpq_packed_params pp, const float *x, adpq_u32 batch,
                                     float *y) {
    adpq_fmt fp = adpq_pp_fmt(&pp);
    float t = adpq_u2f(pp.threshold_bits);
    adpq_u32 lane = threadIdx.x & 31u;
    adpq_u64 warps = adpq_nthreads() / 32;
    for (adpq_u64 r = adpq_tid() / 32; r < rows; r += warps) {
        for (adpq_u32 b = 0; b < batch; b++) {
            const float *xb = x + (adpq_u64)b * cols;
            float acc = 0.0f;
            ADPQ_ROW_GROUPS(adpq_dot_group(&p, &fp, pp.scale_exp, t, xb + p.col0, &acc);)
            acc = adpq_warp_sum(acc);
            if (lane == 0) y[(adpq_u64)b * rows + r] = acc;
        }
    }
}

/* y = W x̂ with int8 activations (q per column, scale and sum per group). */
extern "C" __global__ void adpq_gemv_q8(const adpq_u8 *records, const adpq_u8 *codes,
                                        const adpq_u8 *positions, adpq_u64 positions_len,
                                        const adpq_u32 *offsets, adpq_u32 rows, adpq_u32 cols,
                                        adpq_packed_params pp, const signed char *q,
                                        const float *scales, const adpq_i32 *qsums, float *y) {
    adpq_fmt fp = adpq_pp_fmt(&pp);
    float t = adpq_u2f(pp.threshold_bits);
    adpq_u32 lane = threadIdx.x & 31u;
    adpq_u64 warps = adpq_nthreads() / 32;
    for (adpq_u64 r = adpq_tid() / 32; r < rows; r += warps) {
        float acc = 0.0f;
        ADPQ_ROW_GROUPS(adpq_dot_group_q8(&p, &fp, pp.scale_exp, t, q + p.col0, scales[gi],
                                          qsums[gi], &acc);)
        acc = adpq_warp_sum(acc);
        if (lane == 0) y[r] = acc;
    }
}
