// The dequantize and error-sum kernels under host/emulate.hpp (tests only).
#include "emulate.hpp"

#include "../kernels/dequantize.cu"

extern "C" void emu_dequantize(unsigned grid, unsigned block, const adpq_u8 *records,
                               const adpq_u8 *codes, const adpq_u8 *positions,
                               adpq_u64 positions_len, const adpq_u32 *offsets, adpq_u32 rows,
                               adpq_u32 cols, adpq_i32 version, adpq_i32 bits,
                               adpq_i32 group_size, adpq_i32 asymmetric, adpq_i32 scale_exp,
                               adpq_u32 threshold_bits, adpq_u32 rot_seed, adpq_u32 rot_log2,
                               float *out) {
    adpq_packed_params pp = {version,   bits,           group_size, asymmetric,
                             scale_exp, threshold_bits, rot_seed,   rot_log2};
    emu::launch(grid, block, [=] {
        adpq_dequantize(records, codes, positions, positions_len, offsets, rows, cols, pp, out);
    });
    // v3: then the inverse rotation, as launch::dequantize.
    if (version == 3) {
        emu::launch(grid, block, [=] { adpq_v3_unrotate(out, rows, cols, pp); });
    }
}

extern "C" void emu_error_sums(unsigned grid, unsigned block, const void *w, int dtype,
                               const float *deq, adpq_u32 rows, adpq_u32 cols, adpq_i32 bits,
                               adpq_u32 g, double *sums) {
    emu::launch(grid, block, [=] { adpq_error_sums(w, dtype, deq, rows, cols, bits, g, sums); });
}
