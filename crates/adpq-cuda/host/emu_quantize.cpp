// The quantize kernels under host/emulate.hpp, in the launch sequence of
// src/engine/launch.rs (tests only).
#include "emulate.hpp"

#include "../kernels/quantize.cu"

/* Quantizes like launch::quantize with `grid` blocks of `block` threads (the scan with
 * one block of `scan_block`). Outputs as adpq_host_quantize (host_math.c); returns the
 * outlier count, or -1 with the first rejected index in *bad. */
extern "C" long long emu_quantize(unsigned grid, unsigned block, unsigned scan_block,
                                  const void *w, int dtype, adpq_u32 rows, adpq_u32 cols,
                                  adpq_i32 version, adpq_i32 bits, adpq_i32 group_size,
                                  adpq_i32 asymmetric, adpq_i32 scale_exp,
                                  adpq_u32 threshold_bits, adpq_u64 take_equal,
                                  adpq_u32 rot_seed, adpq_u32 rot_log2, adpq_u32 *row_counts, adpq_u8 *records, adpq_u8 *codes,
                                  adpq_u8 *positions, adpq_u64 positions_len, adpq_u64 *bad) {
    adpq_job job = {version, bits,           group_size, asymmetric, scale_exp,
                    threshold_bits, take_equal, rot_seed,   rot_log2};
    adpq_fmt fp = adpq_job_fmt(&job);
    adpq_u32 g = (adpq_u32)group_size, groups = (cols + g - 1) / g;
    adpq_u64 n_groups = (adpq_u64)rows * groups;
    // Word-padded buffers, as the engine allocates them for the atomic byte OR.
    auto words = [](adpq_u64 bytes) { return (bytes + 3) / 4 * 4 + 4; };
    std::vector<adpq_u64> ties(n_groups + 1), counts(n_groups + 1);
    adpq_u64 first_bad = ~0ull;
    adpq_u64 rec_len = rows * adpq_row_record_bytes(&fp, cols);
    adpq_u64 code_len = rows * adpq_row_code_bytes(&fp, cols);
    std::vector<adpq_u8> rec(words(rec_len)), cod(words(code_len));
    adpq_u64 *t = ties.data(), *c = counts.data(), *fb = &first_bad;
    adpq_u8 *r = rec.data(), *cd = cod.data();
    emu::launch(grid, block,
                [=] { adpq_group_ties(w, dtype, rows, cols, g, threshold_bits, t, fb); });
    if (first_bad != ~0ull) {
        *bad = first_bad;
        return -1;
    }
    if (version == 3) {
        // v3: rotated rows (scratch), extents, units, groups; no counts or positions.
        std::vector<float> rot((adpq_u64)rows * cols), ext(3 * n_groups);
        float *ro = rot.data(), *e = ext.data();
        emu::launch(grid, block,
                    [=] { adpq_v3_rotate(w, dtype, rows, cols, rot_seed, rot_log2, ro); });
        emu::launch(grid, block, [=] { adpq_v3_extents(ro, rows, cols, job, e); });
        emu::launch(grid, block, [=] { adpq_put_row_units(rows, cols, job, e, r); });
        emu::launch(grid, block, [=] { adpq_v3_groups(ro, rows, cols, job, r, cd); });
        std::memcpy(records, rec.data(), rec_len);
        std::memcpy(codes, cod.data(), code_len);
        return 0;
    }
    emu::launch(1, scan_block, [=] { adpq_scan(t, n_groups); });
    if (version == 2) {
        std::vector<float> ext(3 * n_groups);
        float *e = ext.data();
        emu::launch(grid, block, [=] { adpq_v2_extents(w, dtype, rows, cols, job, t, e); });
        emu::launch(grid, block, [=] { adpq_put_row_units(rows, cols, job, e, r); });
    }
    emu::launch(grid, block,
                [=] { adpq_quantize_groups(w, dtype, rows, cols, job, t, r, cd, c); });
    emu::launch(1, scan_block, [=] { adpq_scan(c, n_groups); });
    adpq_u64 total = counts[n_groups];
    adpq_u64 pos_len = (total * adpq_position_bits(&fp) + 7) / 8;
    if (pos_len > positions_len) return -2;
    std::vector<adpq_u8> pos(words(pos_len));
    adpq_u8 *p = pos.data();
    emu::launch(grid, block, [=] { adpq_row_counts(rows, groups, c, row_counts); });
    emu::launch(grid, block, [=] { adpq_positions(w, dtype, rows, cols, job, t, c, p); });
    std::memcpy(records, rec.data(), rec_len);
    std::memcpy(codes, cod.data(), code_len);
    std::memcpy(positions, pos.data(), pos_len);
    return (long long)total;
}

/* The rotation kernel alone (what the engine runs over a v3 gemm's activations). */
extern "C" void emu_v3_rotate(unsigned grid, unsigned block, const void *w, int dtype,
                              adpq_u32 rows, adpq_u32 cols, adpq_u32 rot_seed, adpq_u32 rot_log2,
                              float *out) {
    emu::launch(grid, block, [=] { adpq_v3_rotate(w, dtype, rows, cols, rot_seed, rot_log2, out); });
}
