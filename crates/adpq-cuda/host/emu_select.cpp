// The selection kernels under host/emulate.hpp (tests only).
#include "emulate.hpp"

#include "../kernels/select.cu"

extern "C" void emu_histogram(unsigned grid, unsigned block, const void *w, int dtype,
                              adpq_u64 n, adpq_u32 prefix_shift, adpq_u32 prefix, adpq_u32 shift,
                              adpq_u32 mask, adpq_u32 *bins, adpq_u32 *max_bits,
                              adpq_u64 *first_bad) {
    emu::launch(grid, block, [=] {
        adpq_histogram(w, dtype, n, prefix_shift, prefix, shift, mask, bins, max_bits, first_bad);
    });
}

extern "C" void emu_count(unsigned grid, unsigned block, const void *w, int dtype, adpq_u64 n,
                          adpq_u32 t, int at_least, adpq_u64 *count) {
    emu::launch(grid, block, [=] { adpq_count(w, dtype, n, t, at_least, count); });
}
