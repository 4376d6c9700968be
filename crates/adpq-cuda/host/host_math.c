/* host_math.c: the device arithmetic (kernels/adpq_math.cuh) built for the host, so the
 * tests can compare it with the Rust scalar oracle without a GPU.
 *
 * Format v3 (adpq_host_quantize_v3) follows its kernels: each row's chunks of 512
 * columns rotated once into a scratch copy, each group's extent, the row's units, each
 * group's record and codes. Decoding undoes the rotation per row; dot products rotate the
 * activations chunk by chunk and add each chunk's share as the oracle does.
 *
 * The functions walk a tensor in the same steps as the kernels (kernels/quantize.cu):
 * ties per group, then an exclusive scan into each group's tie budget; (v2) each group's
 * extent, reduced per row into the row's units; each group's record, codes and count;
 * an exclusive scan of the counts; each group's positions. Only the loops differ: a
 * kernel runs a group per thread. Built with -ffp-contract=off (build.rs). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/adpq_math.cuh"

/* What a tensor is quantized with (mirrors QuantizePlan's job for one block). */
typedef struct {
    adpq_i32 version, bits, group_size, asymmetric;
    adpq_i32 scale_exp;
    adpq_u32 threshold_bits;
    adpq_u64 take_equal; /* ADPQ_TAKE_ALL: every tie is an outlier */
    adpq_u32 rot_seed, rot_log2; /* v3: the rows' rotation (log2 0: none) */
} adpq_host_job;

static adpq_rot rot_of(const adpq_host_job *job) {
    adpq_rot r;
    r.seed = job->rot_seed;
    r.log2 = job->rot_log2;
    return r;
}

static adpq_fmt fmt_of(const adpq_host_job *job) {
    adpq_fmt fp;
    fp.version = job->version;
    fp.bits = job->bits;
    fp.group_size = job->group_size;
    fp.asymmetric = job->asymmetric;
    return fp;
}

/* Quantizes a rows × cols tensor (dtype ADPQ_F32/F16/BF16) into the sections of a packed
 * buffer: `counts` (4 · rows bytes, u32 LE per row), `records`, `codes` (zeroed here) and
 * `positions` (positions_len bytes, zeroed here). Returns the number of outliers, or -1
 * when a weight is rejected (its flat index in *bad), -2 when the positions do not fit,
 * -3 when out of memory. */
int64_t adpq_host_quantize(const void *w, int32_t dtype, uint32_t rows, uint32_t cols,
                           const adpq_host_job *job, uint8_t *counts, uint8_t *records,
                           uint8_t *codes, uint8_t *positions, uint64_t positions_len,
                           uint64_t *bad) {
    adpq_fmt fp = fmt_of(job);
    adpq_u32 g = (adpq_u32)fp.group_size;
    adpq_u32 groups = (cols + g - 1) / g;
    adpq_u64 n_groups = (adpq_u64)rows * groups;
    adpq_u64 rrb = adpq_row_record_bytes(&fp, cols), rcb = adpq_row_code_bytes(&fp, cols);
    adpq_u32 pbits = adpq_position_bits(&fp);
    adpq_u64 *before = (adpq_u64 *)calloc(n_groups + 1, sizeof(adpq_u64));
    adpq_u32 *group_out = (adpq_u32 *)calloc(n_groups + 1, sizeof(adpq_u32));
    adpq_units *units = (adpq_units *)calloc(rows, sizeof(adpq_units));
    int64_t result = 0;
    if (!before || !group_out || !units) {
        result = -3;
        goto done;
    }
    memset(codes, 0, rows * rcb);
    memset(positions, 0, positions_len);
    /* Ties per group, scanned: each group's tie budget. Rejected weights first. */
    for (adpq_u64 k = 0; k < n_groups; k++) {
        adpq_u32 r = (adpq_u32)(k / groups), gi = (adpq_u32)(k % groups);
        adpq_src s = {w, dtype, (adpq_u64)r * cols + (adpq_u64)gi * g,
                      cols - gi * g < g ? cols - gi * g : g};
        adpq_u32 i = adpq_group_first_bad(&s);
        if (i < s.n) {
            *bad = s.start + i;
            result = -1;
            goto done;
        }
        before[k + 1] = before[k] + adpq_group_ties(&s, job->threshold_bits);
    }
    /* v2: each row's units from its groups' extents. */
    if (fp.version == 2) {
        for (adpq_u32 r = 0; r < rows; r++) {
            adpq_extent e = adpq_extent_zero();
            for (adpq_u32 gi = 0; gi < groups; gi++) {
                adpq_u64 k = (adpq_u64)r * groups + gi;
                adpq_src s = {w, dtype, (adpq_u64)r * cols + (adpq_u64)gi * g,
                              cols - gi * g < g ? cols - gi * g : g};
                adpq_extent ge = adpq_v2_group_extent(
                    &s, adpq_rule_after(job->threshold_bits, job->take_equal, before[k]));
                adpq_extent_add(&e, &ge);
            }
            units[r] = adpq_row_units(&e, job->threshold_bits, &fp, job->scale_exp);
            adpq_v2_put_units(records + r * rrb, &units[r]);
        }
    }
    /* Each group's record, codes and count. */
    for (adpq_u64 k = 0; k < n_groups; k++) {
        adpq_u32 r = (adpq_u32)(k / groups), gi = (adpq_u32)(k % groups);
        adpq_src s = {w, dtype, (adpq_u64)r * cols + (adpq_u64)gi * g,
                      cols - gi * g < g ? cols - gi * g : g};
        adpq_rule rule = adpq_rule_after(job->threshold_bits, job->take_equal, before[k]);
        adpq_u32 mask[ADPQ_MASK_WORDS];
        if (fp.version == 2) {
            group_out[k] = adpq_v2_group(&s, &rule, &fp, &units[r], records + r * rrb, gi,
                                         codes + r * rcb, gi * g, mask);
        } else {
            group_out[k] = adpq_v1_group(&s, &rule, &fp, job->scale_exp,
                                         records + r * rrb + (adpq_u64)gi * adpq_record_bytes(&fp),
                                         codes + r * rcb, gi * g, mask);
        }
    }
    /* Counts scanned: each row's count and each group's first position index. */
    adpq_u64 total = 0;
    for (adpq_u32 r = 0; r < rows; r++) {
        adpq_u32 row = 0;
        for (adpq_u32 gi = 0; gi < groups; gi++) row += group_out[(adpq_u64)r * groups + gi];
        counts[4 * r] = (uint8_t)row;
        counts[4 * r + 1] = (uint8_t)(row >> 8);
        counts[4 * r + 2] = (uint8_t)(row >> 16);
        counts[4 * r + 3] = (uint8_t)(row >> 24);
        total += row;
    }
    if ((total * pbits + 7) / 8 > positions_len) {
        result = -2;
        goto done;
    }
    adpq_u64 first = 0;
    for (adpq_u64 k = 0; k < n_groups; k++) {
        adpq_u32 r = (adpq_u32)(k / groups), gi = (adpq_u32)(k % groups);
        adpq_src s = {w, dtype, (adpq_u64)r * cols + (adpq_u64)gi * g,
                      cols - gi * g < g ? cols - gi * g : g};
        adpq_rule rule = adpq_rule_after(job->threshold_bits, job->take_equal, before[k]);
        adpq_u32 mask[ADPQ_MASK_WORDS];
        (void)adpq_classify(&s, &rule, mask);
        adpq_put_positions(positions, first, pbits, mask, s.n);
        first += group_out[k];
    }
    result = (int64_t)total;
done:
    free(before);
    free(group_out);
    free(units);
    return result;
}

/* Walks the groups of packed row r: `offsets` are the rows + 1 outlier offsets. */
typedef struct {
    adpq_fmt fp;
    adpq_u32 cols;
    const uint8_t *records, *codes, *positions;
    const uint32_t *offsets;
    adpq_u64 positions_len;
} host_packed;

static adpq_packed_group group_at(const host_packed *t, adpq_u32 r, adpq_u32 gi,
                                  adpq_u64 first) {
    adpq_u32 g = (adpq_u32)t->fp.group_size;
    adpq_u64 rcb = adpq_row_code_bytes(&t->fp, t->cols);
    adpq_packed_group p;
    p.row_records = t->records + r * adpq_row_record_bytes(&t->fp, t->cols);
    p.row_record_bytes = adpq_row_record_bytes(&t->fp, t->cols);
    p.row_codes = t->codes + r * rcb;
    p.row_code_bytes = rcb;
    p.positions = t->positions;
    p.positions_len = t->positions_len;
    p.gi = gi;
    p.col0 = gi * g;
    p.n = t->cols - gi * g < g ? t->cols - gi * g : g;
    p.first_outlier = first;
    return p;
}

/* Decodes packed row r into out[0..cols] (the dequantize kernel's per-row loop). */
void adpq_host_dequantize_row(const adpq_host_job *job, uint32_t cols, const uint8_t *records,
                              const uint8_t *codes, const uint8_t *positions,
                              uint64_t positions_len, const uint32_t *offsets, uint32_t r,
                              float *out) {
    host_packed t = {fmt_of(job), cols, records, codes, positions, offsets, positions_len};
    adpq_u32 g = (adpq_u32)t.fp.group_size, groups = (cols + g - 1) / g;
    adpq_u64 first = t.fp.version == 3 ? 0u : offsets[r]; /* v3: no offsets */
    for (adpq_u32 gi = 0; gi < groups; gi++) {
        adpq_packed_group p = group_at(&t, r, gi, first);
        adpq_decode_group(&p, &t.fp, job->scale_exp, adpq_u2f(job->threshold_bits),
                          out + p.col0);
        first += adpq_group_count(p.row_records, gi, &t.fp);
    }
    adpq_rot rot = rot_of(job);
    if (t.fp.version == 3) adpq_rot_inverse(&rot, 0, out, cols);
}

/* The dot product of packed row r with x[0..cols], groups in order (the oracle's sum). */
float adpq_host_dot_row(const adpq_host_job *job, uint32_t cols, const uint8_t *records,
                        const uint8_t *codes, const uint8_t *positions, uint64_t positions_len,
                        const uint32_t *offsets, uint32_t r, const float *x) {
    host_packed t = {fmt_of(job), cols, records, codes, positions, offsets, positions_len};
    adpq_u32 g = (adpq_u32)t.fp.group_size, groups = (cols + g - 1) / g;
    if (t.fp.version == 3) {
        /* x rotated a chunk at a time; each chunk's groups summed, then added (dot_row). */
        adpq_rot rot = rot_of(job);
        float buf[ADPQ_MAX_SEGMENT];
        float acc = 0.0f;
        for (adpq_u32 start = 0; start < cols; start += ADPQ_MAX_SEGMENT) {
            adpq_u32 n = cols - start < ADPQ_MAX_SEGMENT ? cols - start : ADPQ_MAX_SEGMENT;
            adpq_rot_load(x, ADPQ_F32, cols, 0, start, n, &rot, buf);
            float part = 0.0f;
            for (adpq_u32 gi = start / g; gi < groups && gi * g < start + n; gi++) {
                adpq_packed_group p = group_at(&t, r, gi, 0);
                adpq_dot_group(&p, &t.fp, job->scale_exp, 0.0f, buf + (p.col0 - start), &part);
            }
            acc += part;
        }
        return acc;
    }
    adpq_u64 first = offsets[r];
    float acc = 0.0f;
    for (adpq_u32 gi = 0; gi < groups; gi++) {
        adpq_packed_group p = group_at(&t, r, gi, first);
        adpq_dot_group(&p, &t.fp, job->scale_exp, adpq_u2f(job->threshold_bits), x + p.col0,
                       &acc);
        first += adpq_group_count(p.row_records, gi, &t.fp);
    }
    return acc;
}

/* f32 -> f16 bits as the kernels round (tested against the half crate). */
uint16_t adpq_host_f16_from_f32(float x) { return adpq_f16_from_f32(x); }

/* f16 bits -> f32 as the kernels widen. */
float adpq_host_f16_to_f32(uint16_t h) { return adpq_f16_to_f32(h); }

/* The int8-activation dot product of packed row r (q: cols int8 values; scales and sums
 * per group), groups in order (the oracle's sum). */
float adpq_host_dot_row_q8(const adpq_host_job *job, uint32_t cols, const uint8_t *records,
                           const uint8_t *codes, const uint8_t *positions,
                           uint64_t positions_len, const uint32_t *offsets, uint32_t r,
                           const int8_t *q, const float *scales, const int32_t *sums) {
    host_packed t = {fmt_of(job), cols, records, codes, positions, offsets, positions_len};
    adpq_u32 g = (adpq_u32)t.fp.group_size, groups = (cols + g - 1) / g;
    adpq_u64 first = t.fp.version == 3 ? 0u : offsets[r]; /* v3: no offsets */
    float acc = 0.0f;
    for (adpq_u32 gi = 0; gi < groups; gi++) {
        adpq_packed_group p = group_at(&t, r, gi, first);
        adpq_dot_group_q8(&p, &t.fp, job->scale_exp, adpq_u2f(job->threshold_bits),
                          (const signed char *)q + p.col0, scales[gi], sums[gi], &acc);
        first += adpq_group_count(p.row_records, gi, &t.fp);
    }
    return acc;
}

/* Error sums of rows × cols weights against their dequantized values `deq`, plus RTN at
 * `bits` and `group_size`: per-group sums (the error kernel's job) added in row-major
 * group order. out = [signal, adpq, rtn]. */
void adpq_host_error_sums(const void *w, int32_t dtype, const float *deq, uint32_t rows,
                          uint32_t cols, int32_t bits, uint32_t group_size, double *out) {
    out[0] = out[1] = out[2] = 0.0;
    for (adpq_u32 r = 0; r < rows; r++) {
        for (adpq_u32 c0 = 0; c0 < cols; c0 += group_size) {
            adpq_src s = {w, dtype, (adpq_u64)r * cols + c0,
                          cols - c0 < group_size ? cols - c0 : group_size};
            double gs[3];
            adpq_rtn_group_sums(&s, deq + s.start, bits, gs);
            out[0] += gs[0];
            out[1] += gs[1];
            out[2] += gs[2];
        }
    }
}

/* f32 -> bf16 bits as the kernels round. */
uint16_t adpq_host_bf16_from_f32(float x) { return adpq_bf16_from_f32(x); }

/* Quantizes a rows × cols tensor into format v3's sections (records, codes; zeroed here)
 * in the steps of its kernels. Returns 0, or -1 when a weight is rejected (its flat index
 * in *bad), -3 when out of memory. */
int64_t adpq_host_quantize_v3(const void *w, int32_t dtype, uint32_t rows, uint32_t cols,
                              const adpq_host_job *job, uint8_t *records, uint8_t *codes,
                              uint64_t *bad) {
    adpq_fmt fp = fmt_of(job);
    adpq_rot rot = rot_of(job);
    adpq_u32 g = (adpq_u32)fp.group_size;
    adpq_u32 groups = (cols + g - 1) / g;
    adpq_u64 rrb = adpq_row_record_bytes(&fp, cols), rcb = adpq_row_code_bytes(&fp, cols);
    memset(records, 0, rows * rrb);
    memset(codes, 0, rows * rcb);
    /* The first rejected weight, in row-major order. */
    for (adpq_u32 r = 0; r < rows; r++) {
        adpq_src s = {w, dtype, (adpq_u64)r * cols, cols};
        adpq_u32 i = adpq_group_first_bad(&s);
        if (i < s.n) {
            *bad = s.start + i;
            return -1;
        }
    }
    float *rotated = (float *)malloc((size_t)rows * cols * sizeof(float));
    if (!rotated) return -3;
    for (adpq_u32 r = 0; r < rows; r++) {
        for (adpq_u32 start = 0; start < cols; start += ADPQ_MAX_SEGMENT) {
            adpq_u32 n = cols - start < ADPQ_MAX_SEGMENT ? cols - start : ADPQ_MAX_SEGMENT;
            adpq_rot_load(w, dtype, cols, r, start, n, &rot, rotated + (adpq_u64)r * cols + start);
        }
    }
    for (adpq_u32 r = 0; r < rows; r++) {
        const float *row = rotated + (adpq_u64)r * cols;
        adpq_extent e = adpq_extent_zero();
        for (adpq_u32 gi = 0; gi < groups; gi++) {
            adpq_extent ge =
                adpq_v3_group_extent(row + gi * g, cols - gi * g < g ? cols - gi * g : g);
            adpq_extent_add(&e, &ge);
        }
        adpq_units u = adpq_row_units(&e, job->threshold_bits, &fp, job->scale_exp);
        adpq_v3_put_units(records + r * rrb, &u);
        /* Read back as the group kernel does. */
        u = adpq_v3_get_units(records + r * rrb, job->scale_exp);
        for (adpq_u32 gi = 0; gi < groups; gi++) {
            adpq_v3_group(row + gi * g, cols - gi * g < g ? cols - gi * g : g, &fp, &u,
                          records + r * rrb, gi, codes + r * rcb, gi * g);
        }
    }
    free(rotated);
    return 0;
}

/* Rotates x[0..n], columns start.. of a row, in place (inverse: undoes it). */
void adpq_host_rotate(uint32_t seed, uint32_t log2, uint64_t start, float *x, uint32_t n,
                      int32_t inverse) {
    adpq_rot r;
    r.seed = seed;
    r.log2 = log2;
    if (inverse) {
        adpq_rot_inverse(&r, start, x, n);
    } else {
        adpq_rot_forward(&r, start, x, n);
    }
}

/* The level of a v3 code at `bits` bits (FormatParams::level). */
float adpq_host_v3_level(int32_t bits, uint32_t code) {
    adpq_fmt fp = {3, bits, 64, 1};
    return adpq_v3_level(&fp, code);
}

/* The v3 code of w on the grid of stored multiples (q_step, q_min) of units (f16 bits,
 * scale exponent 0) at `bits` bits, as the kernels encode. */
uint32_t adpq_host_v3_encode(int32_t bits, uint16_t step_unit, uint16_t min_unit,
                             uint32_t q_step, uint32_t q_min, float w) {
    adpq_fmt fp = {3, bits, 64, 1};
    adpq_units u = adpq_units_stored(step_unit, min_unit, 0, 0, 0.0f);
    adpq_grid2 g = adpq_grid2_new(q_step, q_min, &u);
    return adpq_v3_encode(&g, w, &fp);
}
