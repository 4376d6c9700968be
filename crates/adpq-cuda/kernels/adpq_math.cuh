/* adpq_math.cuh: the per-group arithmetic of formats v1, v2 and v3, written once for the
 * device kernels (NVRTC) and for the host C build that the tests compare against the
 * Rust scalar oracle (adpq-core: quant.rs, affine.rs, rotate.rs, format/record*.rs,
 * kernels/scalar*.rs).
 *
 * Byte identity rests on doing the oracle's f32/f64 operations in its order, each
 * rounded: the host build uses -ffp-contract=off, NVRTC --fmad=false, and nothing here
 * calls a libm function except floor (exact). f16 conversions are done in integer
 * arithmetic (the half crate's algorithm), so host and device round alike.
 *
 * Rounding to an integer is the oracle's magic-number trick (ties to even), never
 * rintf/roundf. Min/max follow Rust's f32::min/max on non-NaN inputs; where they may
 * differ (the sign of a zero) the result never reaches a stored byte (see affine.rs).
 *
 * Everything works on groups: a group is `n` consecutive weights of one row, read
 * through adpq_src (f32, f16 or bf16 storage), so a device thread and the host loop run
 * the same function on the same data. Codes and positions are ORed into zeroed bit
 * streams through ADPQ_OR_BYTE, which a kernel defines as an atomic OR before
 * including this file (neighbouring groups may share a byte). */
#ifndef ADPQ_MATH_CUH
#define ADPQ_MATH_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define ADPQ_HD __host__ __device__ inline
#define ADPQ_FLOOR(x) floor(x)
#else
#include <math.h>
#define ADPQ_HD static inline
#define ADPQ_FLOOR(x) floor(x)
#endif

#ifndef ADPQ_OR_BYTE
#define ADPQ_OR_BYTE(ptr, v) (*(ptr) |= (adpq_u8)(v))
#endif

typedef unsigned char adpq_u8;
typedef unsigned short adpq_u16;
typedef unsigned int adpq_u32;
typedef int adpq_i32;
typedef unsigned long long adpq_u64;

/* Largest group sizes (params.rs): v1 1024, v2 255, v3 512. */
#define ADPQ_MAX_GROUP 1024
#define ADPQ_MAX_GROUP_V2 255
/* Format v3's rotation works on chunks of at most this many columns of a row
 * (rotate.rs MAX_SEGMENT); a v3 group never straddles two. */
#define ADPQ_MAX_SEGMENT 512u
/* Words of an outlier mask of one group. */
#define ADPQ_MASK_WORDS (ADPQ_MAX_GROUP / 32)
/* Selection: "every weight equal to the threshold is an outlier". */
#define ADPQ_TAKE_ALL 0xFFFFFFFFFFFFFFFFull
/* |w| bits at or above which a weight is rejected (2^124, weights.rs). */
#define ADPQ_OUT_OF_RANGE_BITS (((adpq_u32)(124 + 127)) << 23)

/* Storage types of the weights. */
#define ADPQ_F32 0
#define ADPQ_F16 1
#define ADPQ_BF16 2

/* ---- bits and f16 ---------------------------------------------------------------- */

ADPQ_HD adpq_u32 adpq_f2u(float f) {
    union { float f; adpq_u32 u; } v;
    v.f = f;
    return v.u;
}

ADPQ_HD float adpq_u2f(adpq_u32 u) {
    union { float f; adpq_u32 u; } v;
    v.u = u;
    return v.f;
}

/* f32 -> f16 bits, round to nearest even (half's f32_to_f16_fallback). */
ADPQ_HD adpq_u16 adpq_f16_from_f32(float f) {
    adpq_u32 x = adpq_f2u(f);
    adpq_u32 sign = x & 0x80000000u;
    adpq_u32 exp = x & 0x7F800000u;
    adpq_u32 man = x & 0x007FFFFFu;
    adpq_u32 half_sign = sign >> 16;
    if (exp == 0x7F800000u) {
        adpq_u32 nan_bit = man == 0 ? 0u : 0x0200u;
        return (adpq_u16)(half_sign | 0x7C00u | nan_bit | (man >> 13));
    }
    adpq_i32 half_exp = (adpq_i32)(exp >> 23) - 127 + 15;
    if (half_exp >= 0x1F) {
        return (adpq_u16)(half_sign | 0x7C00u);
    }
    if (half_exp <= 0) {
        if (14 - half_exp > 24) {
            return (adpq_u16)half_sign;
        }
        man |= 0x00800000u;
        adpq_u32 half_man = man >> (14 - half_exp);
        adpq_u32 round_bit = 1u << (13 - half_exp);
        if ((man & round_bit) != 0 && (man & (3u * round_bit - 1u)) != 0) {
            half_man += 1;
        }
        return (adpq_u16)(half_sign | half_man);
    }
    adpq_u32 half_exp_bits = ((adpq_u32)half_exp) << 10;
    adpq_u32 half_man = man >> 13;
    adpq_u32 round_bit = 0x1000u;
    if ((man & round_bit) != 0 && (man & (3u * round_bit - 1u)) != 0) {
        return (adpq_u16)((half_sign | half_exp_bits | half_man) + 1u);
    }
    return (adpq_u16)(half_sign | half_exp_bits | half_man);
}

/* f16 bits -> f32, exact. */
ADPQ_HD float adpq_f16_to_f32(adpq_u16 h) {
    adpq_u32 sign = ((adpq_u32)(h & 0x8000u)) << 16;
    adpq_u32 exp = ((adpq_u32)h >> 10) & 0x1Fu;
    adpq_u32 man = (adpq_u32)h & 0x3FFu;
    if (exp == 0) {
        /* Zero or subnormal: man · 2^-24, exact in f32. */
        float v = (float)man * adpq_u2f(0x33800000u);
        return sign ? -v : v;
    }
    if (exp == 0x1F) {
        return adpq_u2f(sign | 0x7F800000u | (man << 13));
    }
    return adpq_u2f(sign | ((exp + 112u) << 23) | (man << 13));
}

/* f32 -> bf16 bits, round to nearest even (half's bf16::from_f32); NaN stays NaN. */
ADPQ_HD adpq_u16 adpq_bf16_from_f32(float f) {
    adpq_u32 x = adpq_f2u(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (adpq_u16)((x >> 16) | 0x0040u);
    adpq_u32 round_bit = 0x00008000u;
    if ((x & round_bit) != 0 && (x & (3u * round_bit - 1u)) != 0) {
        return (adpq_u16)((x >> 16) + 1u);
    }
    return (adpq_u16)(x >> 16);
}

/* 2^e for e in -126..=127 (quant.rs pow2). */
ADPQ_HD float adpq_pow2(adpq_i32 e) {
    return adpq_u2f(((adpq_u32)(e + 127)) << 23);
}

/* Ties to even for |x| <= 2^22 (quant.rs round_ties_even). */
ADPQ_HD float adpq_rte(float x) {
    const float magic = 12582912.0f;
    return (x + magic) - magic;
}

ADPQ_HD float adpq_maxf(float a, float b) { return b > a ? b : a; }
ADPQ_HD float adpq_minf(float a, float b) { return b < a ? b : a; }
/* Rust's f32::clamp (NaN passes through). */
ADPQ_HD float adpq_clampf(float x, float lo, float hi) {
    if (x < lo) x = lo;
    if (x > hi) x = hi;
    return x;
}

/* ---- weights, parameters, the outlier rule ---------------------------------------- */

/* Element i of a weight buffer, as f32 (exact for all three storage types). */
ADPQ_HD float adpq_load(const void *w, adpq_i32 dtype, adpq_u64 i) {
    if (dtype == ADPQ_F16) {
        return adpq_f16_to_f32(((const adpq_u16 *)w)[i]);
    }
    if (dtype == ADPQ_BF16) {
        return adpq_u2f(((adpq_u32)((const adpq_u16 *)w)[i]) << 16);
    }
    return ((const float *)w)[i];
}

/* The format parameters that shape the bytes (FormatParams). */
typedef struct {
    adpq_i32 version;    /* 1, 2 or 3 */
    adpq_i32 bits;       /* 2..=8 */
    adpq_i32 group_size; /* 16..=1024 (v2: ..=255; v3: a power of two ..=512) */
    adpq_i32 asymmetric; /* v1 grid: 0 symmetric, 1 asymmetric (v2, v3: 1) */
} adpq_fmt;

ADPQ_HD adpq_i32 adpq_code_max(const adpq_fmt *fp) { return (1 << fp->bits) - 1; }
ADPQ_HD adpq_i32 adpq_sym_qmax(const adpq_fmt *fp) { return (1 << (fp->bits - 1)) - 1; }
ADPQ_HD adpq_u32 adpq_position_bits(const adpq_fmt *fp) {
    adpq_u32 g = (adpq_u32)fp->group_size, p = 0;
    while ((1u << p) < g) p++;
    return p;
}
/* Bytes of one group record (v2: 3; v1: 5..8; v3: 0, its records are 12-bit fields). */
ADPQ_HD adpq_u32 adpq_record_bytes(const adpq_fmt *fp) {
    if (fp->version == 2) return 3;
    if (fp->version == 3) return 0;
    return 4u + (fp->group_size < 256 ? 1u : 2u) + (fp->asymmetric ? 2u : 0u);
}
/* Bytes of one row's records (v2: 6 bytes of units first; v3: 4 bytes of units, then
 * 12 bits a group, the last byte padded). */
ADPQ_HD adpq_u64 adpq_row_record_bytes(const adpq_fmt *fp, adpq_u32 cols) {
    adpq_u64 groups = (cols + (adpq_u32)fp->group_size - 1) / (adpq_u32)fp->group_size;
    if (fp->version == 3) return 4u + (12u * groups + 7u) / 8u;
    return (fp->version == 2 ? 6u : 0u) + groups * adpq_record_bytes(fp);
}
/* Largest stored multiple of a row unit (FormatParams::field_max): 255, v3 63. */
ADPQ_HD adpq_u32 adpq_field_max(const adpq_fmt *fp) { return fp->version == 3 ? 63u : 255u; }
ADPQ_HD adpq_u64 adpq_row_code_bytes(const adpq_fmt *fp, adpq_u32 cols) {
    return ((adpq_u64)cols * (adpq_u64)fp->bits + 7u) / 8u;
}

/* Decides, weight by weight in row-major order, which are outliers (OutlierRule). */
typedef struct {
    adpq_u32 threshold_bits;
    adpq_u64 budget; /* ties still to take; ADPQ_TAKE_ALL: unlimited */
} adpq_rule;

/* The rule for a group preceded by `equal_before` ties (Selection::rule_after). */
ADPQ_HD adpq_rule adpq_rule_after(adpq_u32 threshold_bits, adpq_u64 take_equal,
                                  adpq_u64 equal_before) {
    adpq_rule r;
    r.threshold_bits = threshold_bits;
    if (take_equal == ADPQ_TAKE_ALL) {
        r.budget = ADPQ_TAKE_ALL;
    } else {
        r.budget = take_equal > equal_before ? take_equal - equal_before : 0;
    }
    return r;
}

ADPQ_HD int adpq_rule_take(adpq_rule *r, adpq_u32 abs_bits) {
    if (abs_bits > r->threshold_bits) return 1;
    if (abs_bits == r->threshold_bits && r->budget > 0) {
        if (r->budget != ADPQ_TAKE_ALL) r->budget -= 1;
        return 1;
    }
    return 0;
}

/* One group of a weight buffer: elements start..start+n. */
typedef struct {
    const void *w;
    adpq_i32 dtype;
    adpq_u64 start;
    adpq_u32 n;
} adpq_src;

ADPQ_HD float adpq_src_at(const adpq_src *s, adpq_u32 i) {
    return adpq_load(s->w, s->dtype, s->start + i);
}

/* Weights of a group equal to the threshold (where the tie budget is spent). */
ADPQ_HD adpq_u32 adpq_group_ties(const adpq_src *s, adpq_u32 threshold_bits) {
    adpq_u32 c = 0;
    for (adpq_u32 i = 0; i < s->n; i++) {
        c += (adpq_f2u(adpq_src_at(s, i)) & 0x7FFFFFFFu) == threshold_bits;
    }
    return c;
}

/* Index of the first rejected weight of a group (NaN, infinite, |w| >= 2^124), or n. */
ADPQ_HD adpq_u32 adpq_group_first_bad(const adpq_src *s) {
    for (adpq_u32 i = 0; i < s->n; i++) {
        if ((adpq_f2u(adpq_src_at(s, i)) & 0x7FFFFFFFu) >= ADPQ_OUT_OF_RANGE_BITS) return i;
    }
    return s->n;
}

/* What classifying a group finds: its inliers' and outliers' extents. */
typedef struct {
    float in_max, in_lo, in_hi;
    float out_max, out_lo, out_hi;
    adpq_u32 n_in, n_out;
} adpq_stats;

/* Classifies a group with `rule` (consuming its budget), sets bit i of `mask` for each
 * outlier and returns the extents, as the oracle's first loop over a group does. */
ADPQ_HD adpq_stats adpq_classify(const adpq_src *s, adpq_rule *rule, adpq_u32 *mask) {
    adpq_stats st;
    st.in_max = 0.0f; st.in_lo = 0.0f; st.in_hi = 0.0f;
    st.out_max = 0.0f; st.out_lo = 0.0f; st.out_hi = 0.0f;
    st.n_in = 0; st.n_out = 0;
    for (adpq_u32 k = 0; k < (s->n + 31u) / 32u; k++) mask[k] = 0;
    for (adpq_u32 i = 0; i < s->n; i++) {
        float x = adpq_src_at(s, i);
        adpq_u32 b = adpq_f2u(x) & 0x7FFFFFFFu;
        float a = adpq_u2f(b);
        if (adpq_rule_take(rule, b)) {
            mask[i >> 5] |= 1u << (i & 31u);
            st.out_max = adpq_maxf(st.out_max, a);
            st.out_lo = adpq_minf(st.out_lo, x);
            st.out_hi = adpq_maxf(st.out_hi, x);
            st.n_out++;
        } else {
            st.in_max = adpq_maxf(st.in_max, a);
            st.in_lo = adpq_minf(st.in_lo, x);
            st.in_hi = adpq_maxf(st.in_hi, x);
            st.n_in++;
        }
    }
    return st;
}

ADPQ_HD int adpq_is_out(const adpq_u32 *mask, adpq_u32 i) {
    return (mask[i >> 5] >> (i & 31u)) & 1u;
}

/* ---- bit streams (bits.rs, format/codes.rs) --------------------------------------- */

/* ORs the low n (<= 16) bits of v in at bit offset off (target bits zero). */
ADPQ_HD void adpq_or_bits(adpq_u8 *data, adpq_u64 off, adpq_u32 n, adpq_u32 v) {
    adpq_u64 byte = off >> 3;
    adpq_u32 word = (v & ((1u << n) - 1u)) << (adpq_u32)(off & 7u);
    for (adpq_u32 i = 0; word != 0; i++) {
        ADPQ_OR_BYTE(data + byte + i, word & 0xFFu);
        word >>= 8;
    }
}

/* Reads n (<= 16) bits at bit offset off. The caller keeps off + n inside data, and the
 * buffer readable for 2 bytes past the value's last byte or at its end. */
ADPQ_HD adpq_u32 adpq_get_bits(const adpq_u8 *data, adpq_u64 off, adpq_u32 n, adpq_u64 len) {
    adpq_u64 byte = off >> 3;
    adpq_u32 b0 = byte < len ? data[byte] : 0u;
    adpq_u32 b1 = byte + 1 < len ? data[byte + 1] : 0u;
    adpq_u32 b2 = byte + 2 < len ? data[byte + 2] : 0u;
    adpq_u32 word = b0 | (b1 << 8) | (b2 << 16);
    return (word >> (adpq_u32)(off & 7u)) & ((1u << n) - 1u);
}

ADPQ_HD void adpq_put_code(adpq_u8 *row_codes, adpq_u32 col, adpq_i32 bits, adpq_u32 code) {
    adpq_or_bits(row_codes, (adpq_u64)col * (adpq_u64)bits, (adpq_u32)bits, code);
}

ADPQ_HD adpq_u32 adpq_code_at(const adpq_u8 *row_codes, adpq_u32 col, adpq_i32 bits,
                              adpq_u64 row_code_bytes) {
    return adpq_get_bits(row_codes, (adpq_u64)col * (adpq_u64)bits, (adpq_u32)bits,
                         row_code_bytes);
}

/* Writes the positions of a group's outliers (its mask) into the tensor's position
 * stream from value index `first` on. */
ADPQ_HD void adpq_put_positions(adpq_u8 *positions, adpq_u64 first, adpq_u32 pbits,
                                const adpq_u32 *mask, adpq_u32 n) {
    adpq_u64 k = first;
    for (adpq_u32 i = 0; i < n; i++) {
        if (adpq_is_out(mask, i)) {
            adpq_or_bits(positions, k * pbits, pbits, i);
            k++;
        }
    }
}

ADPQ_HD void adpq_put_u16(adpq_u8 *p, adpq_u32 v) {
    p[0] = (adpq_u8)(v & 0xFFu);
    p[1] = (adpq_u8)((v >> 8) & 0xFFu);
}
ADPQ_HD adpq_u32 adpq_get_u16(const adpq_u8 *p) { return (adpq_u32)p[0] | ((adpq_u32)p[1] << 8); }

/* ---- format v1: two grids per group (quant.rs, format/record.rs) ------------------ */

typedef struct {
    adpq_u16 h;      /* stored f16 step */
    adpq_i32 offset; /* zero point, or 2^(b-1) symmetric */
    float step;      /* h · 2^e */
    float inv;       /* 1/step, 0 when step is 0 */
} adpq_grid1;

ADPQ_HD adpq_grid1 adpq_grid1_empty(const adpq_fmt *fp) {
    adpq_grid1 g;
    g.h = 0;
    g.offset = fp->asymmetric ? 0 : (1 << (fp->bits - 1));
    g.step = 0.0f;
    g.inv = 0.0f;
    return g;
}

ADPQ_HD void adpq_grid1_set_step(adpq_grid1 *g, float scaled, adpq_i32 scale_exp) {
    adpq_u16 h = adpq_f16_from_f32(scaled);
    if ((h & 0x7FFFu) == 0x7C00u) {
        h = 0x7BFFu; /* f16::MAX: only with a selection that understates the data */
    } else if (h == 0) {
        h = 1; /* a positive step too small for f16: the smallest subnormal */
    }
    g->h = h;
    g->step = adpq_f16_to_f32(h) * adpq_pow2(scale_exp);
    g->inv = 1.0f / g->step;
}

/* grid_of: the grid of a group's members (inliers or outliers). */
ADPQ_HD adpq_grid1 adpq_grid1_of(const adpq_fmt *fp, adpq_i32 scale_exp, float max_abs,
                                 float lo, float hi, adpq_u32 members) {
    adpq_grid1 g = adpq_grid1_empty(fp);
    if (members == 0) return g;
    if (!fp->asymmetric) {
        if (max_abs > 0.0f) {
            float scaled = (max_abs * adpq_pow2(-scale_exp)) / (float)adpq_sym_qmax(fp);
            adpq_grid1_set_step(&g, scaled, scale_exp);
        }
    } else {
        lo = adpq_minf(lo, 0.0f);
        hi = adpq_maxf(hi, 0.0f);
        if (hi > lo) {
            float cm = (float)adpq_code_max(fp);
            float scaled = ((hi - lo) * adpq_pow2(-scale_exp)) / cm;
            adpq_grid1_set_step(&g, scaled, scale_exp);
            g.offset = (adpq_i32)adpq_rte(adpq_clampf(-lo * g.inv, 0.0f, cm));
        }
    }
    return g;
}

ADPQ_HD adpq_grid1 adpq_grid1_stored(adpq_u16 h, adpq_i32 offset, adpq_i32 scale_exp) {
    adpq_grid1 g;
    g.h = h;
    g.offset = offset;
    g.step = adpq_f16_to_f32(h) * adpq_pow2(scale_exp);
    g.inv = g.step > 0.0f ? 1.0f / g.step : 0.0f;
    return g;
}

ADPQ_HD adpq_u32 adpq_grid1_encode(const adpq_grid1 *g, float w, adpq_i32 code_max) {
    adpq_i32 q = (adpq_i32)adpq_rte(adpq_clampf(w * g->inv, -512.0f, 512.0f)) + g->offset;
    if (q < 0) q = 0;
    if (q > code_max) q = code_max;
    return (adpq_u32)q;
}

ADPQ_HD float adpq_grid1_decode(const adpq_grid1 *g, adpq_u32 code) {
    return (float)((adpq_i32)code - g->offset) * g->step;
}

/* Writes a v1 record (h_in, h_out, count as u8 or u16, zero points if asymmetric). */
ADPQ_HD void adpq_v1_put_record(adpq_u8 *rec, const adpq_fmt *fp, const adpq_grid1 *gin,
                                const adpq_grid1 *gout, adpq_u32 count) {
    adpq_put_u16(rec, gin->h);
    adpq_put_u16(rec + 2, gout->h);
    adpq_u32 at = 4;
    if (fp->group_size < 256) {
        rec[at++] = (adpq_u8)count;
    } else {
        adpq_put_u16(rec + at, count);
        at += 2;
    }
    if (fp->asymmetric) {
        rec[at] = (adpq_u8)gin->offset;
        rec[at + 1] = (adpq_u8)gout->offset;
    }
}

/* The two grids and the count of a stored v1 record. */
ADPQ_HD void adpq_v1_get_record(const adpq_u8 *rec, const adpq_fmt *fp, adpq_i32 scale_exp,
                                adpq_grid1 *gin, adpq_grid1 *gout, adpq_u32 *count) {
    adpq_i32 sym = 1 << (fp->bits - 1);
    adpq_u32 at = 4;
    if (fp->group_size < 256) {
        *count = rec[at++];
    } else {
        *count = adpq_get_u16(rec + at);
        at += 2;
    }
    adpq_i32 z_in = fp->asymmetric ? (adpq_i32)rec[at] : sym;
    adpq_i32 z_out = fp->asymmetric ? (adpq_i32)rec[at + 1] : sym;
    *gin = adpq_grid1_stored((adpq_u16)adpq_get_u16(rec), z_in, scale_exp);
    *gout = adpq_grid1_stored((adpq_u16)adpq_get_u16(rec + 2), z_out, scale_exp);
}

/* Quantizes one v1 group starting at column col0 of its row: the record, the codes
 * (ORed into the zeroed row codes) and the outlier mask; returns the outlier count. */
ADPQ_HD adpq_u32 adpq_v1_group(const adpq_src *s, adpq_rule *rule, const adpq_fmt *fp,
                               adpq_i32 scale_exp, adpq_u8 *rec, adpq_u8 *row_codes,
                               adpq_u32 col0, adpq_u32 *mask) {
    adpq_stats st = adpq_classify(s, rule, mask);
    adpq_grid1 gin = adpq_grid1_of(fp, scale_exp, st.in_max, st.in_lo, st.in_hi, st.n_in);
    adpq_grid1 gout =
        adpq_grid1_of(fp, scale_exp, st.out_max, st.out_lo, st.out_hi, st.n_out);
    adpq_i32 cm = adpq_code_max(fp);
    for (adpq_u32 i = 0; i < s->n; i++) {
        const adpq_grid1 *g = adpq_is_out(mask, i) ? &gout : &gin;
        adpq_put_code(row_codes, col0 + i, fp->bits, adpq_grid1_encode(g, adpq_src_at(s, i), cm));
    }
    adpq_v1_put_record(rec, fp, &gin, &gout, st.n_out);
    return st.n_out;
}

/* ---- format v2: row units, searched inlier grids, offset outliers (affine.rs) ------ */

typedef struct {
    adpq_u16 step_bits, min_bits, out_bits;
    float step_unit, min_unit, outlier_step, threshold;
} adpq_units;

/* The nearest f16 at or above x (finite); 0 for x <= 0 (f16_at_least). */
ADPQ_HD adpq_u16 adpq_f16_at_least(float x) {
    if (x <= 0.0f) return 0;
    adpq_u16 h = adpq_f16_from_f32(x);
    if (adpq_f16_to_f32(h) < x) h = (adpq_u16)(h + 1u);
    if ((h & 0x7FFFu) == 0x7C00u) {
        h = 0x7BFFu;
    } else if (h == 0) {
        h = 1;
    }
    return h;
}

/* The nearest f16 to x (finite); 0 for x <= 0 (f16_nearest). */
ADPQ_HD adpq_u16 adpq_f16_nearest(float x) {
    if (x <= 0.0f) return 0;
    adpq_u16 h = adpq_f16_from_f32(x);
    return (h & 0x7FFFu) == 0x7C00u ? (adpq_u16)0x7BFFu : h;
}

ADPQ_HD adpq_units adpq_units_stored(adpq_u16 step, adpq_u16 min, adpq_u16 out,
                                     adpq_i32 scale_exp, float threshold) {
    float scale = adpq_pow2(scale_exp);
    adpq_units u;
    u.step_bits = step;
    u.min_bits = min;
    u.out_bits = out;
    u.step_unit = adpq_f16_to_f32(step) * scale;
    u.min_unit = adpq_f16_to_f32(min) * scale;
    u.outlier_step = adpq_f16_to_f32(out) * scale;
    u.threshold = threshold;
    return u;
}

/* A row's extent: its groups' widest inlier range, deepest minimum, largest outlier. */
typedef struct {
    float span_max, neg_max, out_max;
} adpq_extent;

ADPQ_HD adpq_extent adpq_extent_zero(void) {
    adpq_extent e;
    e.span_max = 0.0f;
    e.neg_max = 0.0f;
    e.out_max = 0.0f;
    return e;
}

/* The extent of one group, classified with a copy of its rule (pass 1 of the oracle). */
ADPQ_HD adpq_extent adpq_v2_group_extent(const adpq_src *s, adpq_rule rule) {
    adpq_u32 mask[ADPQ_MASK_WORDS];
    adpq_stats st = adpq_classify(s, &rule, mask);
    adpq_extent e;
    e.span_max = st.in_hi - st.in_lo;
    e.neg_max = -st.in_lo;
    e.out_max = st.out_max;
    return e;
}

/* Adds a group's extent to a row's, in group order (RowExtent::add_group). */
ADPQ_HD void adpq_extent_add(adpq_extent *row, const adpq_extent *g) {
    row->span_max = adpq_maxf(row->span_max, g->span_max);
    row->neg_max = adpq_maxf(row->neg_max, g->neg_max);
    row->out_max = adpq_maxf(row->out_max, g->out_max);
}

/* The row's units (RowUnits::for_row), v2 and v3. */
ADPQ_HD adpq_units adpq_row_units(const adpq_extent *e, adpq_u32 threshold_bits,
                                  const adpq_fmt *fp, adpq_i32 scale_exp) {
    float threshold = adpq_u2f(threshold_bits);
    float down = adpq_pow2(-scale_exp);
    float cm = (float)adpq_code_max(fp);
    float field_max = (float)adpq_field_max(fp);
    adpq_u16 step = adpq_f16_at_least(((e->span_max * down) / cm) / field_max);
    adpq_u16 min = adpq_f16_at_least((e->neg_max * down) / field_max);
    adpq_u16 out = 0;
    if (e->out_max > 0.0f && e->out_max > threshold) {
        out = adpq_f16_nearest(((e->out_max - threshold) * down) / (float)adpq_sym_qmax(fp));
    }
    return adpq_units_stored(step, min, out, scale_exp, threshold);
}

ADPQ_HD void adpq_v2_put_units(adpq_u8 *row_records, const adpq_units *u) {
    adpq_put_u16(row_records, u->step_bits);
    adpq_put_u16(row_records + 2, u->min_bits);
    adpq_put_u16(row_records + 4, u->out_bits);
}

ADPQ_HD adpq_units adpq_v2_get_units(const adpq_u8 *row_records, adpq_i32 scale_exp,
                                     float threshold) {
    return adpq_units_stored((adpq_u16)adpq_get_u16(row_records),
                             (adpq_u16)adpq_get_u16(row_records + 2),
                             (adpq_u16)adpq_get_u16(row_records + 4), scale_exp, threshold);
}

/* The inlier grid of a group: c·d + m (AffineGrid). */
typedef struct {
    adpq_u32 q_step, q_min;
    float step, min, inv;
} adpq_grid2;

ADPQ_HD adpq_grid2 adpq_grid2_new(adpq_u32 q_step, adpq_u32 q_min, const adpq_units *u) {
    adpq_grid2 g;
    g.q_step = q_step;
    g.q_min = q_min;
    g.step = (float)q_step * u->step_unit;
    g.min = -((float)q_min * u->min_unit);
    g.inv = g.step > 0.0f ? 1.0f / g.step : 0.0f;
    return g;
}

ADPQ_HD float adpq_grid2_encode(const adpq_grid2 *g, float w, float code_max) {
    return adpq_rte(adpq_clampf((w - g->min) * g->inv, 0.0f, code_max));
}

ADPQ_HD float adpq_grid2_decode(const adpq_grid2 *g, adpq_u32 code) {
    return (float)code * g->step + g->min;
}

/* The outlier code of w: the sign bit and the nearest offset (encode_outlier). */
ADPQ_HD adpq_u32 adpq_v2_encode_outlier(const adpq_units *u, float w, const adpq_fmt *fp) {
    float inv = u->outlier_step > 0.0f ? 1.0f / u->outlier_step : 0.0f;
    float aw = adpq_u2f(adpq_f2u(w) & 0x7FFFFFFFu);
    float k = adpq_rte(adpq_clampf((aw - u->threshold) * inv, 0.0f, (float)adpq_sym_qmax(fp)));
    return (adpq_u32)k | ((adpq_f2u(w) >> 31) << (fp->bits - 1));
}

/* The value of outlier code `code` (RowUnits::outlier). */
ADPQ_HD float adpq_v2_outlier(const adpq_units *u, adpq_u32 code, adpq_i32 bits) {
    adpq_u32 k = code & ((1u << (bits - 1)) - 1u);
    float magnitude = u->threshold + (float)k * u->outlier_step;
    return (code >> (bits - 1)) != 0 ? -magnitude : magnitude;
}

/* ---- format v3: the row rotation (rotate.rs) --------------------------------------- */

/* A row rotation: the seed of its signs and log2 of its segment (0: rows not rotated). */
typedef struct {
    adpq_u32 seed, log2;
} adpq_rot;

/* SplitMix64's output function. */
ADPQ_HD adpq_u64 adpq_splitmix64(adpq_u64 x) {
    adpq_u64 z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The sign of column col (Rotation::sign): bit col % 64 of SplitMix64 of
 * seed · 2^32 + col / 64. */
ADPQ_HD int adpq_rot_sign(const adpq_rot *r, adpq_u64 col) {
    adpq_u64 word = adpq_splitmix64(((adpq_u64)r->seed << 32) ^ (col >> 6));
    return (int)((word >> (col & 63u)) & 1u);
}

/* Negates the values of columns start.. whose sign is set. */
ADPQ_HD void adpq_rot_signs(const adpq_rot *r, adpq_u64 start, float *x, adpq_u32 n) {
    for (adpq_u32 i = 0; i < n; i++) {
        if (adpq_rot_sign(r, start + i)) x[i] = -x[i];
    }
}

/* Each block of a segment x[0..n] (decreasing powers of two) multiplied by 2^(-m/2)
 * (m its log2; 1/sqrt(2) as the f32 FRAC_1_SQRT_2 for odd m, skipped when 1), then
 * transformed by the unnormalized Walsh-Hadamard butterflies at strides 1, 2, 4... */
ADPQ_HD void adpq_rot_blocks(float *x, adpq_u32 n) {
    adpq_u32 at = 0;
    while (at < n) {
        adpq_u32 m = 0;
        while ((2u << m) <= n - at) m++;
        adpq_u32 len = 1u << m;
        float *b = x + at;
        float s = (m % 2u == 0u) ? adpq_pow2(-(adpq_i32)(m / 2u))
                                 : adpq_pow2(-(adpq_i32)((m - 1u) / 2u)) * 0.70710678118654752440f;
        if (s != 1.0f) {
            for (adpq_u32 i = 0; i < len; i++) b[i] *= s;
        }
        for (adpq_u32 h = 1; h < len; h *= 2u) {
            for (adpq_u32 p = 0; p < len; p += 2u * h) {
                for (adpq_u32 i = p; i < p + h; i++) {
                    float u = b[i], v = b[i + h];
                    b[i] = u + v;
                    b[i + h] = u - v;
                }
            }
        }
        at += len;
    }
}

/* Rotates columns start..start+n of a row in place (Rotation::forward_at; start a
 * multiple of the segment): segment by segment, signs, then the blocks. */
ADPQ_HD void adpq_rot_forward(const adpq_rot *r, adpq_u64 start, float *x, adpq_u32 n) {
    if (r->log2 == 0) return;
    adpq_u32 b = 1u << r->log2;
    for (adpq_u32 s = 0; s < n; s += b) {
        adpq_u32 len = n - s < b ? n - s : b;
        adpq_rot_signs(r, start + s, x + s, len);
        adpq_rot_blocks(x + s, len);
    }
}

/* Undoes adpq_rot_forward (Rotation::inverse_at): the blocks, then the signs. */
ADPQ_HD void adpq_rot_inverse(const adpq_rot *r, adpq_u64 start, float *x, adpq_u32 n) {
    if (r->log2 == 0) return;
    adpq_u32 b = 1u << r->log2;
    for (adpq_u32 s = 0; s < n; s += b) {
        adpq_u32 len = n - s < b ? n - s : b;
        adpq_rot_blocks(x + s, len);
        adpq_rot_signs(r, start + s, x + s, len);
    }
}

/* Loads columns start..start+n of the row-major weights' row `row` (cols wide) into
 * out[0..n] as f32 and rotates them: one chunk of a v3 encoder's row (load_segment). */
ADPQ_HD void adpq_rot_load(const void *w, adpq_i32 dtype, adpq_u32 cols, adpq_u64 row,
                           adpq_u32 start, adpq_u32 n, const adpq_rot *r, float *out) {
    for (adpq_u32 i = 0; i < n; i++) out[i] = adpq_load(w, dtype, row * cols + start + i);
    adpq_rot_forward(r, start, out, n);
}

/* ---- format v3: code book and codes (params.rs, scalar_v3.rs) ---------------------- */

/* CODEBOOK_4BIT[c & 15]: level c of the 4-bit code book, in eighths. */
ADPQ_HD adpq_u32 adpq_v3_book(adpq_u32 c) {
    const adpq_u8 book[16] = {0, 12, 22, 30, 37, 44, 51, 57, 63, 69, 76, 83, 90, 98, 108, 120};
    return book[c & 15u];
}

/* The value of code c on the unit grid [0, code_max] (FormatParams::level): at 4 bits
 * the code book's level, else the code. */
ADPQ_HD float adpq_v3_level(const adpq_fmt *fp, adpq_u32 code) {
    if (fp->bits == 4) return (float)adpq_v3_book(code) * 0.125f;
    return (float)code;
}

/* The code of w on grid g (scalar_v3 encode): u = (w - m)·inv on [0, code_max]; at 4
 * bits the count of the level midpoints (T[k] + T[k+1])/16 below u (ties low), else
 * u rounded half to even. */
ADPQ_HD adpq_u32 adpq_v3_encode(const adpq_grid2 *g, float w, const adpq_fmt *fp) {
    float u = adpq_clampf((w - g->min) * g->inv, 0.0f, (float)adpq_code_max(fp));
    if (fp->bits == 4) {
        adpq_u32 c = 0;
        for (adpq_u32 k = 0; k < 15u; k++) {
            c += u > (float)(adpq_v3_book(k) + adpq_v3_book(k + 1u)) / 16.0f ? 1u : 0u;
        }
        return c;
    }
    return (adpq_u32)adpq_rte(u);
}

/* [min(x, 0), max(x, 0)] of a group's values. */
ADPQ_HD void adpq_v3_range(const float *x, adpq_u32 n, float *lo, float *hi) {
    float l = 0.0f, h = 0.0f;
    for (adpq_u32 i = 0; i < n; i++) {
        l = adpq_minf(l, x[i]);
        h = adpq_maxf(h, x[i]);
    }
    *lo = l;
    *hi = h;
}

/* ---- the range search of v2 and v3 (affine.rs search_group) ------------------------ */

/* A sum over a group in 8 lanes, totalled in one fixed order (LaneSums). */
ADPQ_HD float adpq_lanes_total(const float *a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* The values of one group that the search's passes run over (GroupPasses): v2 reads its
 * inliers from storage (outliers in `mask` skipped), v3 its rotated values `vals`. */
typedef struct {
    const adpq_src *src;  /* v2 */
    const adpq_u32 *mask; /* v2 */
    const float *vals;    /* v3 */
    adpq_u32 n;
    const adpq_fmt *fp;
} adpq_passes;

/* Value i of the group into *x; 0 when it is an outlier (not in the passes). */
ADPQ_HD int adpq_pass_at(const adpq_passes *p, adpq_u32 i, float *x) {
    if (p->fp->version == 3) {
        *x = p->vals[i];
        return 1;
    }
    if (adpq_is_out(p->mask, i)) return 0;
    *x = adpq_src_at(p->src, i);
    return 1;
}

/* The level x takes on grid g: v2 its code, v3 its code's level (fp.level(encode)). */
ADPQ_HD float adpq_pass_level(const adpq_passes *p, const adpq_grid2 *g, float x) {
    if (p->fp->version == 3) return adpq_v3_level(p->fp, adpq_v3_encode(g, x, p->fp));
    return adpq_grid2_encode(g, x, (float)adpq_code_max(p->fp));
}

/* Σ (L·d + m − x)² over the group's values (the passes' error), in 8 lanes. */
ADPQ_HD float adpq_pass_error(const adpq_passes *p, const adpq_grid2 *g) {
    float lanes[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (adpq_u32 i = 0; i < p->n; i++) {
        float x;
        if (adpq_pass_at(p, i, &x)) {
            float c = adpq_pass_level(p, g, x);
            float e = (c * g->step + g->min) - x;
            lanes[i & 7u] += e * e;
        }
    }
    return adpq_lanes_total(lanes);
}

/* Rounds a stored multiple to lo..=max (affine.rs multiple). */
ADPQ_HD adpq_u32 adpq_multiple(double v, double lo, double max) {
    if (v != v) return (adpq_u32)lo;
    double c = v < lo ? lo : (v > max ? max : v);
    return (adpq_u32)ADPQ_FLOOR(c + 0.5);
}

ADPQ_HD adpq_grid2 adpq_candidate(float lo, float hi, float step_scale, float top,
                                  const adpq_units *u) {
    adpq_u32 q_step = (adpq_u32)adpq_rte(adpq_clampf((hi - lo) / step_scale, 1.0f, top));
    adpq_u32 q_min = 0;
    if (u->min_unit > 0.0f) {
        q_min = (adpq_u32)adpq_rte(adpq_clampf(-lo / u->min_unit, 0.0f, top));
    }
    return adpq_grid2_new(q_step, q_min, u);
}

/* The grid of a group whose values span [lo, hi] (search_group): the least squared
 * error of the 25 shrunk ranges, then one least-squares refit. */
ADPQ_HD adpq_grid2 adpq_search(const adpq_passes *p, float lo, float hi, const adpq_units *u) {
    if (hi <= lo) return adpq_grid2_new(0, 0, u);
    const float shrink[5] = {1.0f, 0.96f, 0.92f, 0.88f, 0.84f};
    float code_max = (float)adpq_code_max(p->fp);
    adpq_u32 field_max = adpq_field_max(p->fp);
    float top = (float)field_max;
    float step_scale = code_max * u->step_unit;
    /* Candidates in order; a repeat of the one before is skipped (same grid, and only
     * a strictly lower error wins). */
    adpq_grid2 best = adpq_candidate(lo, hi, step_scale, top, u);
    adpq_grid2 prev = best;
    float best_err = adpq_pass_error(p, &best);
    for (int i = 0; i < 5; i++) {
        for (int j = 0; j < 5; j++) {
            if (i == 0 && j == 0) continue;
            adpq_grid2 g = adpq_candidate(lo * shrink[i], hi * shrink[j], step_scale, top, u);
            if (g.q_step == prev.q_step && g.q_min == prev.q_min) continue;
            prev = g;
            float err = adpq_pass_error(p, &g);
            if (err < best_err) {
                best = g;
                best_err = err;
            }
        }
    }
    /* The refit's sums over the winner's levels (refit_sums). */
    float lc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, lcc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float lw[8] = {0, 0, 0, 0, 0, 0, 0, 0}, lcw[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    adpq_u32 count = 0;
    for (adpq_u32 i = 0; i < p->n; i++) {
        float x;
        if (adpq_pass_at(p, i, &x)) {
            float c = adpq_pass_level(p, &best, x);
            count++;
            lc[i & 7u] += c;
            lcc[i & 7u] += c * c;
            lw[i & 7u] += x;
            lcw[i & 7u] += c * x;
        }
    }
    double n = (double)count;
    double sc = (double)adpq_lanes_total(lc), scc = (double)adpq_lanes_total(lcc);
    double sw = (double)adpq_lanes_total(lw), scw = (double)adpq_lanes_total(lcw);
    double det = n * scc - sc * sc;
    if (det > 0.0) {
        double d = (n * scw - sc * sw) / det;
        double m = (sw - d * sc) / n;
        double fmax = (double)field_max;
        adpq_u32 q_step = adpq_multiple(d / (double)u->step_unit, 1.0, fmax);
        adpq_u32 q_min =
            u->min_unit > 0.0f ? adpq_multiple(-m / (double)u->min_unit, 0.0, fmax) : 0u;
        if (q_step != best.q_step || q_min != best.q_min) {
            adpq_grid2 g = adpq_grid2_new(q_step, q_min, u);
            if (adpq_pass_error(p, &g) < best_err) best = g;
        }
    }
    return best;
}

/* Quantizes one v2 group (group index gi of its row, starting at column col0): its
 * record (after the row's units), codes and outlier mask; returns the outlier count. */
ADPQ_HD adpq_u32 adpq_v2_group(const adpq_src *s, adpq_rule *rule, const adpq_fmt *fp,
                               const adpq_units *u, adpq_u8 *row_records, adpq_u32 gi,
                               adpq_u8 *row_codes, adpq_u32 col0, adpq_u32 *mask) {
    adpq_stats st = adpq_classify(s, rule, mask);
    adpq_passes p = {s, mask, 0, s->n, fp};
    adpq_grid2 g = adpq_search(&p, st.in_lo, st.in_hi, u);
    float code_max = (float)adpq_code_max(fp);
    for (adpq_u32 i = 0; i < s->n; i++) {
        float x = adpq_src_at(s, i);
        adpq_u32 code = adpq_is_out(mask, i) ? adpq_v2_encode_outlier(u, x, fp)
                                             : (adpq_u32)adpq_grid2_encode(&g, x, code_max);
        adpq_put_code(row_codes, col0 + i, fp->bits, code);
    }
    adpq_u8 *rec = row_records + 6u + 3u * gi;
    rec[0] = (adpq_u8)g.q_step;
    rec[1] = (adpq_u8)g.q_min;
    rec[2] = (adpq_u8)st.n_out;
    return st.n_out;
}

/* ---- format v3: units, records, groups (format/record_v3.rs, scalar_v3.rs) --------- */

/* Writes a v3 row's units (step, minimum: 2 f16) at the start of its zeroed records. */
ADPQ_HD void adpq_v3_put_units(adpq_u8 *row_records, const adpq_units *u) {
    adpq_put_u16(row_records, u->step_bits);
    adpq_put_u16(row_records + 2, u->min_bits);
}

ADPQ_HD adpq_units adpq_v3_get_units(const adpq_u8 *row_records, adpq_i32 scale_exp) {
    return adpq_units_stored((adpq_u16)adpq_get_u16(row_records),
                             (adpq_u16)adpq_get_u16(row_records + 2), 0, scale_exp, 0.0f);
}

/* ORs group gi's 12-bit record (6-bit q_d, then 6-bit q_m) into the row's zeroed record
 * bit stream after its units. */
ADPQ_HD void adpq_v3_put_record(adpq_u8 *row_records, adpq_u32 gi, const adpq_grid2 *g) {
    adpq_u32 fields = (g->q_step & 63u) | ((g->q_min & 63u) << 6);
    adpq_or_bits(row_records + 4, (adpq_u64)gi * 12u, 12u, fields);
}

/* Group gi's grid from a row's records (row_record_bytes of them). */
ADPQ_HD adpq_grid2 adpq_v3_get_record(const adpq_u8 *row_records, adpq_u64 row_record_bytes,
                                      adpq_u32 gi, const adpq_units *u) {
    adpq_u32 f = adpq_get_bits(row_records + 4, (adpq_u64)gi * 12u, 12u, row_record_bytes - 4u);
    return adpq_grid2_new(f & 63u, f >> 6, u);
}

/* A v3 group's extent in its row (pass 1 of the oracle): its range of rotated values. */
ADPQ_HD adpq_extent adpq_v3_group_extent(const float *vals, adpq_u32 n) {
    float lo, hi;
    adpq_v3_range(vals, n, &lo, &hi);
    adpq_extent e;
    e.span_max = hi - lo;
    e.neg_max = -lo;
    e.out_max = 0.0f;
    return e;
}

/* Quantizes one v3 group, its rotated values vals[0..n] (group gi of its row, starting
 * at column col0): the searched grid's codes and record, ORed into the row's zeroed codes
 * and records (pass 2 of the oracle). */
ADPQ_HD void adpq_v3_group(const float *vals, adpq_u32 n, const adpq_fmt *fp,
                           const adpq_units *u, adpq_u8 *row_records, adpq_u32 gi,
                           adpq_u8 *row_codes, adpq_u32 col0) {
    float lo, hi;
    adpq_v3_range(vals, n, &lo, &hi);
    adpq_passes p = {0, 0, vals, n, fp};
    adpq_grid2 g = adpq_search(&p, lo, hi, u);
    for (adpq_u32 i = 0; i < n; i++) {
        adpq_put_code(row_codes, col0 + i, fp->bits, adpq_v3_encode(&g, vals[i], fp));
    }
    adpq_v3_put_record(row_records, gi, &g);
}

/* ---- decode and dot products (scalar*.rs: dequantize_row, dot_row) ---------------- */

/* Where a group's packed data lies: its row's records and codes, its columns, and its
 * first outlier in the tensor's position stream (v3: none). v3's values and activations
 * are in the rotated basis: a caller undoes the rotation after decoding and rotates the
 * activations before a dot product. */
typedef struct {
    const adpq_u8 *row_records;
    adpq_u64 row_record_bytes;
    const adpq_u8 *row_codes;
    adpq_u64 row_code_bytes;
    const adpq_u8 *positions;
    adpq_u64 positions_len;
    adpq_u32 gi, col0, n;
    adpq_u64 first_outlier;
} adpq_packed_group;

/* The outlier count stored in a group's record. */
ADPQ_HD adpq_u32 adpq_group_count(const adpq_u8 *row_records, adpq_u32 gi, const adpq_fmt *fp) {
    if (fp->version == 3) return 0;
    if (fp->version == 2) return row_records[6u + 3u * gi + 2u];
    const adpq_u8 *rec = row_records + (adpq_u64)gi * adpq_record_bytes(fp);
    return fp->group_size < 256 ? (adpq_u32)rec[4] : adpq_get_u16(rec + 4);
}

ADPQ_HD adpq_u32 adpq_position_at(const adpq_packed_group *p, adpq_u64 k, adpq_u32 pbits) {
    return adpq_get_bits(p->positions, k * pbits, pbits, p->positions_len);
}

/* Decodes one group into out[0..n]: every code on the inlier grid, then the outliers.
 * `threshold` is the header's t (v2). */
ADPQ_HD void adpq_decode_group(const adpq_packed_group *p, const adpq_fmt *fp,
                               adpq_i32 scale_exp, float threshold, float *out) {
    adpq_u32 pbits = adpq_position_bits(fp);
    if (fp->version == 3) {
        /* Each code's level on the group's grid (decode_segment), still rotated. */
        adpq_units u = adpq_v3_get_units(p->row_records, scale_exp);
        adpq_grid2 g = adpq_v3_get_record(p->row_records, p->row_record_bytes, p->gi, &u);
        for (adpq_u32 i = 0; i < p->n; i++) {
            adpq_u32 c = adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes);
            out[i] = adpq_v3_level(fp, c) * g.step + g.min;
        }
        return;
    }
    if (fp->version == 2) {
        adpq_units u = adpq_v2_get_units(p->row_records, scale_exp, threshold);
        const adpq_u8 *rec = p->row_records + 6u + 3u * p->gi;
        adpq_grid2 g = adpq_grid2_new(rec[0], rec[1], &u);
        for (adpq_u32 i = 0; i < p->n; i++) {
            out[i] = adpq_grid2_decode(&g, adpq_code_at(p->row_codes, p->col0 + i, fp->bits,
                                                        p->row_code_bytes));
        }
        for (adpq_u32 k = 0; k < rec[2]; k++) {
            adpq_u32 i = adpq_position_at(p, p->first_outlier + k, pbits);
            if (i < p->n) {
                out[i] = adpq_v2_outlier(
                    &u, adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes),
                    fp->bits);
            }
        }
        return;
    }
    adpq_grid1 gin, gout;
    adpq_u32 count;
    adpq_v1_get_record(p->row_records + (adpq_u64)p->gi * adpq_record_bytes(fp), fp, scale_exp,
                       &gin, &gout, &count);
    for (adpq_u32 i = 0; i < p->n; i++) {
        out[i] = adpq_grid1_decode(
            &gin, adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes));
    }
    for (adpq_u32 k = 0; k < count; k++) {
        adpq_u32 i = adpq_position_at(p, p->first_outlier + k, pbits);
        if (i < p->n) {
            out[i] = adpq_grid1_decode(
                &gout, adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes));
        }
    }
}

/* A group's share of a dot product with f32 activations x[0..n], in the oracle's
 * order: the dense sum on the inlier grid, then each outlier's correction. Added to
 * *acc exactly as dot_row adds it. */
ADPQ_HD void adpq_dot_group(const adpq_packed_group *p, const adpq_fmt *fp, adpq_i32 scale_exp,
                            float threshold, const float *x, float *acc) {
    adpq_u32 pbits = adpq_position_bits(fp);
    if (fp->version == 3) {
        /* x rotated: d·Σ L[c]·x + m·Σ x (dot_segment). */
        adpq_units u = adpq_v3_get_units(p->row_records, scale_exp);
        adpq_grid2 g = adpq_v3_get_record(p->row_records, p->row_record_bytes, p->gi, &u);
        float lx = 0.0f, sx = 0.0f;
        for (adpq_u32 i = 0; i < p->n; i++) {
            adpq_u32 c = adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes);
            lx += adpq_v3_level(fp, c) * x[i];
            sx += x[i];
        }
        *acc += lx * g.step + sx * g.min;
        return;
    }
    if (fp->version == 2) {
        adpq_units u = adpq_v2_get_units(p->row_records, scale_exp, threshold);
        const adpq_u8 *rec = p->row_records + 6u + 3u * p->gi;
        adpq_grid2 g = adpq_grid2_new(rec[0], rec[1], &u);
        float cx = 0.0f, sx = 0.0f;
        for (adpq_u32 i = 0; i < p->n; i++) {
            cx += (float)adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes) *
                  x[i];
            sx += x[i];
        }
        *acc += cx * g.step + sx * g.min;
        for (adpq_u32 k = 0; k < rec[2]; k++) {
            adpq_u32 i = adpq_position_at(p, p->first_outlier + k, pbits);
            if (i < p->n) {
                adpq_u32 c = adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes);
                *acc += x[i] * (adpq_v2_outlier(&u, c, fp->bits) - adpq_grid2_decode(&g, c));
            }
        }
        return;
    }
    adpq_grid1 gin, gout;
    adpq_u32 count;
    adpq_v1_get_record(p->row_records + (adpq_u64)p->gi * adpq_record_bytes(fp), fp, scale_exp,
                       &gin, &gout, &count);
    float dense = 0.0f;
    for (adpq_u32 i = 0; i < p->n; i++) {
        adpq_u32 c = adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes);
        dense += (float)((adpq_i32)c - gin.offset) * x[i];
    }
    *acc += dense * gin.step;
    for (adpq_u32 k = 0; k < count; k++) {
        adpq_u32 i = adpq_position_at(p, p->first_outlier + k, pbits);
        if (i < p->n) {
            adpq_u32 c = adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes);
            *acc += x[i] * (adpq_grid1_decode(&gout, c) - adpq_grid1_decode(&gin, c));
        }
    }
}

/* A group's share of a dot product with int8 activations q[0..n] (group scale sx, sum of
 * the group's q qsum), in the order of dot_row_q8_ref (v1) and scalar_v2::dot_row_q8. */
ADPQ_HD void adpq_dot_group_q8(const adpq_packed_group *p, const adpq_fmt *fp, adpq_i32 scale_exp,
                               float threshold, const signed char *q, float sx, adpq_i32 qsum,
                               float *acc) {
    adpq_u32 pbits = adpq_position_bits(fp);
    if (fp->version == 3) {
        /* q rotated: s·d·Σ L[c]·q + s·m·Σ q, the levels in eighths at 4 bits
         * (scalar_v3::dot_row_q8). */
        adpq_units u = adpq_v3_get_units(p->row_records, scale_exp);
        adpq_grid2 g = adpq_v3_get_record(p->row_records, p->row_record_bytes, p->gi, &u);
        int book = fp->bits == 4;
        float unit = book ? 0.125f : 1.0f;
        adpq_i32 lsum = 0;
        for (adpq_u32 i = 0; i < p->n; i++) {
            adpq_u32 c = adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes);
            lsum += (adpq_i32)(book ? adpq_v3_book(c) : c) * (adpq_i32)q[i];
        }
        *acc += (sx * (g.step * unit)) * (float)lsum + (sx * g.min) * (float)qsum;
        return;
    }
    adpq_i32 isum = 0;
    for (adpq_u32 i = 0; i < p->n; i++) {
        isum += (adpq_i32)adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes) *
                (adpq_i32)q[i];
    }
    float corr = 0.0f;
    if (fp->version == 2) {
        adpq_units u = adpq_v2_get_units(p->row_records, scale_exp, threshold);
        const adpq_u8 *rec = p->row_records + 6u + 3u * p->gi;
        adpq_grid2 g = adpq_grid2_new(rec[0], rec[1], &u);
        for (adpq_u32 k = 0; k < rec[2]; k++) {
            adpq_u32 i = adpq_position_at(p, p->first_outlier + k, pbits);
            if (i < p->n) {
                adpq_u32 c = adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes);
                corr += (sx * (float)q[i]) *
                        (adpq_v2_outlier(&u, c, fp->bits) - adpq_grid2_decode(&g, c));
            }
        }
        *acc += ((sx * g.step) * (float)isum + (sx * g.min) * (float)qsum) + corr;
        return;
    }
    adpq_grid1 gin, gout;
    adpq_u32 count;
    adpq_v1_get_record(p->row_records + (adpq_u64)p->gi * adpq_record_bytes(fp), fp, scale_exp,
                       &gin, &gout, &count);
    adpq_i32 dense = isum - gin.offset * qsum;
    for (adpq_u32 k = 0; k < count; k++) {
        adpq_u32 i = adpq_position_at(p, p->first_outlier + k, pbits);
        if (i < p->n) {
            adpq_u32 c = adpq_code_at(p->row_codes, p->col0 + i, fp->bits, p->row_code_bytes);
            corr += (sx * (float)q[i]) * (adpq_grid1_decode(&gout, c) - adpq_grid1_decode(&gin, c));
        }
    }
    *acc += (sx * gin.step) * (float)dense + corr;
}

/* ---- error statistics (adpq-engine rtn.rs group_sums) ------------------------------ */

/* [Σw², Σ(w − ŵ)², Σ(w − rtn(w))²] of one group (w the weights, d the dequantized
 * values), in f64: full chunks of 8 into 8 lanes each summed in order, then the tail. */
ADPQ_HD void adpq_rtn_group_sums(const adpq_src *s, const float *d, adpq_i32 bits, double *out) {
    float qmax = (float)((1 << (bits - 1)) - 1);
    float max = 0.0f;
    for (adpq_u32 i = 0; i < s->n; i++) {
        max = adpq_maxf(max, adpq_u2f(adpq_f2u(adpq_src_at(s, i)) & 0x7FFFFFFFu));
    }
    float step = 0.0f, inv = 0.0f;
    if (max > 0.0f) {
        step = max / qmax;
        inv = qmax / max;
    }
    double acc[3][8];
    for (int k = 0; k < 3; k++)
        for (int l = 0; l < 8; l++) acc[k][l] = 0.0;
    adpq_u32 full = s->n / 8u * 8u;
    for (adpq_u32 i = 0; i < s->n; i++) {
        float v = adpq_src_at(s, i);
        float x = adpq_clampf(v * inv, -qmax, qmax);
        float q = adpq_rte(x) * step;
        double dv = (double)v, dd = (double)d[i], dq = (double)q;
        double e0 = dv * dv, e1 = (dv - dd) * (dv - dd), e2 = (dv - dq) * (dv - dq);
        if (i < full) {
            acc[0][i & 7u] += e0;
            acc[1][i & 7u] += e1;
            acc[2][i & 7u] += e2;
        } else {
            if (i == full) {
                for (int k = 0; k < 3; k++) {
                    out[k] = 0.0;
                    for (int l = 0; l < 8; l++) out[k] += acc[k][l];
                }
            }
            out[0] += e0;
            out[1] += e1;
            out[2] += e2;
        }
    }
    if (full == s->n) {
        for (int k = 0; k < 3; k++) {
            out[k] = 0.0;
            for (int l = 0; l < 8; l++) out[k] += acc[k][l];
        }
    }
}

#endif /* ADPQ_MATH_CUH */
