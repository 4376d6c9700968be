// The product kernels under host/emulate.hpp (tests only).
#include "emulate.hpp"

#include "../kernels/gemv.cu"

// Defined in emu_quantize.cpp (quantize.cu's rotation kernel, as the engine launches it).
extern "C" void emu_v3_rotate(unsigned grid, unsigned block, const void *w, int dtype,
                              adpq_u32 rows, adpq_u32 cols, adpq_u32 rot_seed, adpq_u32 rot_log2,
                              float *out);

extern "C" void emu_gemm(unsigned grid, unsigned block, const adpq_u8 *records,
                         const adpq_u8 *codes, const adpq_u8 *positions, adpq_u64 positions_len,
                         const adpq_u32 *offsets, adpq_u32 rows, adpq_u32 cols, adpq_i32 version,
                         adpq_i32 bits, adpq_i32 group_size, adpq_i32 asymmetric,
                         adpq_i32 scale_exp, adpq_u32 threshold_bits, adpq_u32 rot_seed,
                         adpq_u32 rot_log2, const float *x, adpq_u32 batch, float *y) {
    adpq_packed_params pp = {version,   bits,           group_size, asymmetric,
                             scale_exp, threshold_bits, rot_seed,   rot_log2};
    // v3: the vectors rotated once into scratch first, as launch::gemm.
    std::vector<float> rotated;
    if (version == 3) {
        rotated.resize((size_t)batch * cols);
        emu_v3_rotate(grid, block, x, ADPQ_F32, batch, cols, rot_seed, rot_log2, rotated.data());
        x = rotated.data();
    }
    emu::launch(grid, block, [=] {
        adpq_gemm(records, codes, positions, positions_len, offsets, rows, cols, pp, x, batch, y);
    });
}

extern "C" void emu_gemv_q8(unsigned grid, unsigned block, const adpq_u8 *records,
                            const adpq_u8 *codes, const adpq_u8 *positions,
                            adpq_u64 positions_len, const adpq_u32 *offsets, adpq_u32 rows,
                            adpq_u32 cols, adpq_i32 version, adpq_i32 bits, adpq_i32 group_size,
                            adpq_i32 asymmetric, adpq_i32 scale_exp, adpq_u32 threshold_bits,
                            adpq_u32 rot_seed, adpq_u32 rot_log2, const signed char *q, const float *scales, const adpq_i32 *sums,
                            float *y) {
    adpq_packed_params pp = {version,   bits,           group_size, asymmetric,
                             scale_exp, threshold_bits, rot_seed,   rot_log2};
    emu::launch(grid, block, [=] {
        adpq_gemv_q8(records, codes, positions, positions_len, offsets, rows, cols, pp, q, scales,
                     sums, y);
    });
}
