/* device.cuh: what every kernel file shares on the device: the atomic byte OR that the
 * math header uses for codes and positions (neighbouring groups may share a byte), and
 * warp/block helpers. Included first by every .cu file. */
#ifndef ADPQ_DEVICE_CUH
#define ADPQ_DEVICE_CUH

/* ORs v into the byte at p through an atomic OR on its aligned 32-bit word. Buffers
 * written this way are allocated 4-byte aligned with their size rounded up to 4. */
__device__ __forceinline__ void adpq_atomic_or_byte(unsigned char *p, unsigned int v) {
    unsigned long long a = (unsigned long long)p;
    unsigned int *word = (unsigned int *)(a & ~3ull);
    atomicOr(word, (v & 0xFFu) << (8u * (unsigned int)(a & 3ull)));
}
#define ADPQ_OR_BYTE(ptr, v) adpq_atomic_or_byte((ptr), (unsigned int)(v))

#include "adpq_math.cuh"

/* Global index of this thread, and the grid's thread count (grid-stride loops). */
__device__ __forceinline__ adpq_u64 adpq_tid(void) {
    return (adpq_u64)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ adpq_u64 adpq_nthreads(void) {
    return (adpq_u64)gridDim.x * blockDim.x;
}

/* Sum of v over the warp (every lane gets it). */
__device__ __forceinline__ float adpq_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xFFFFFFFFu, v, o);
    return __shfl_sync(0xFFFFFFFFu, v, 0);
}

/* Exclusive prefix sum of v over the warp, and the warp's total in *total. */
__device__ __forceinline__ adpq_u64 adpq_warp_exclusive(adpq_u64 v, adpq_u64 *total) {
    unsigned int lane = threadIdx.x & 31u;
    adpq_u64 x = v;
    for (int o = 1; o < 32; o <<= 1) {
        adpq_u64 y = __shfl_up_sync(0xFFFFFFFFu, x, o);
        if (lane >= (unsigned int)o) x += y;
    }
    *total = __shfl_sync(0xFFFFFFFFu, x, 31);
    return x - v;
}

/* The group of a row-major tensor with `groups` groups per row, as a source. */
__device__ __forceinline__ adpq_src adpq_group_src(const void *w, int dtype, adpq_u32 cols,
                                                   adpq_u32 g, adpq_u32 groups, adpq_u64 k) {
    adpq_u32 r = (adpq_u32)(k / groups), gi = (adpq_u32)(k % groups);
    adpq_src s;
    s.w = w;
    s.dtype = dtype;
    s.start = (adpq_u64)r * cols + (adpq_u64)gi * g;
    s.n = cols - gi * g < g ? cols - gi * g : g;
    return s;
}

#endif /* ADPQ_DEVICE_CUH */
