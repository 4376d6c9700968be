// The product kernels under host/emulate.hpp (tests only).
#include "emulate.hpp"

#include "../kernels/gemv.cu"

extern "C" void emu_gemm(unsigned grid, unsigned block, const adpq_u8 *records,
                         const adpq_u8 *codes, const adpq_u8 *positions, adpq_u64 positions_len,
                         const adpq_u32 *offsets, adpq_u32 rows, adpq_u32 cols, adpq_i32 version,
                         adpq_i32 bits, adpq_i32 group_size, adpq_i32 asymmetric,
                         adpq_i32 scale_exp, adpq_u32 threshold_bits, const float *x,
                         adpq_u32 batch, float *y) {
    adpq_packed_params pp = {version, bits, group_size, asymmetric, scale_exp, threshold_bits};
    emu::launch(grid, block, [=] {
        adpq_gemm(records, codes, positions, positions_len, offsets, rows, cols, pp, x, batch, y);
    });
}

extern "C" void emu_gemv_q8(unsigned grid, unsigned block, const adpq_u8 *records,
                            const adpq_u8 *codes, const adpq_u8 *positions,
                            adpq_u64 positions_len, const adpq_u32 *offsets, adpq_u32 rows,
                            adpq_u32 cols, adpq_i32 version, adpq_i32 bits, adpq_i32 group_size,
                            adpq_i32 asymmetric, adpq_i32 scale_exp, adpq_u32 threshold_bits,
                            const signed char *q, const float *scales, const adpq_i32 *sums,
                            float *y) {
    adpq_packed_params pp = {version, bits, group_size, asymmetric, scale_exp, threshold_bits};
    emu::launch(grid, block, [=] {
        adpq_gemv_q8(records, codes, positions, positions_len, offsets, rows, cols, pp, q, scales,
                     sums, y);
    });
}
