/* select.cu: the whole-tensor passes of outlier selection (adpq-core select/: TensorScan).
 * bits(|w|) is the f32 bit pattern of a weight's magnitude; every pass that reads all
 * weights also reports the first rejected one (NaN, infinite, |w| >= 2^124). */
#include "device.cuh"

#define ADPQ_HIST_BINS 2048

/* One histogram pass (HistogramPass): weights whose bits >> prefix_shift == prefix go to
 * bin (bits >> shift) & mask. Each block counts into its own shared-memory histogram,
 * merged into `bins` with atomics; the largest bits go to *max_bits (atomicMax) and the
 * smallest rejected index to *first_bad (atomicMin; initialise to ~0). */
extern "C" __global__ void adpq_histogram(const void *w, int dtype, adpq_u64 n,
                                          adpq_u32 prefix_shift, adpq_u32 prefix,
                                          adpq_u32 shift, adpq_u32 mask, adpq_u32 *bins,
                                          adpq_u32 *max_bits, adpq_u64 *first_bad) {
    __shared__ adpq_u32 local[ADPQ_HIST_BINS];
    for (adpq_u32 i = threadIdx.x; i < ADPQ_HIST_BINS; i += blockDim.x) local[i] = 0;
    __syncthreads();
    adpq_u32 max = 0;
    adpq_u64 bad = ~0ull;
    for (adpq_u64 i = adpq_tid(); i < n; i += adpq_nthreads()) {
        adpq_u32 b = adpq_f2u(adpq_load(w, dtype, i)) & 0x7FFFFFFFu;
        if (b >= ADPQ_OUT_OF_RANGE_BITS && i < bad) bad = i;
        max = b > max ? b : max;
        adpq_u32 p = prefix_shift >= 32 ? 0u : b >> prefix_shift;
        if (p == prefix) atomicAdd(&local[(b >> shift) & mask], 1u);
    }
    __syncthreads();
    for (adpq_u32 i = threadIdx.x; i < ADPQ_HIST_BINS; i += blockDim.x) {
        if (local[i] != 0) atomicAdd(&bins[i], local[i]);
    }
    atomicMax(max_bits, max);
    if (bad != ~0ull) atomicMin(first_bad, bad);
}

/* Weights with bits >= t (at_least != 0) or bits == t, added into *count. */
extern "C" __global__ void adpq_count(const void *w, int dtype, adpq_u64 n, adpq_u32 t,
                                      int at_least, adpq_u64 *count) {
    adpq_u64 c = 0;
    for (adpq_u64 i = adpq_tid(); i < n; i += adpq_nthreads()) {
        adpq_u32 b = adpq_f2u(adpq_load(w, dtype, i)) & 0x7FFFFFFFu;
        c += at_least ? (b >= t) : (b == t);
    }
    for (int o = 16; o > 0; o >>= 1) c += __shfl_down_sync(0xFFFFFFFFu, c, o);
    if ((threadIdx.x & 31u) == 0 && c != 0) atomicAdd(count, c);
}
