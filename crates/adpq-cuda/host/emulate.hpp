// emulate.hpp: just enough of CUDA's execution model to run the kernels/*.cu files on the
// host, for tests only: every thread of a block is an OS thread, blocks run one after
// another (so a function-static array is the block's shared memory), __syncthreads is a
// barrier of the block, warp shuffles exchange through a per-warp slot and barrier, and
// atomics are std::atomic_ref. It checks the kernels' grid-level logic (thread mapping,
// shared memory, atomics, scans) without a GPU; not the memory model of a real device.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct adpq_dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

inline thread_local adpq_dim3 threadIdx;
inline thread_local adpq_dim3 blockIdx;
inline adpq_dim3 blockDim;
inline adpq_dim3 gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

namespace emu {
/* One launch at a time in the process (test threads run in parallel): the grid shape,
 * barriers and warp slots below are global. */
inline std::mutex launch_lock;
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline unsigned long long warp_slots[32][32];

template <class F> void launch(unsigned int grid, unsigned int block, F kernel) {
    std::lock_guard<std::mutex> hold(launch_lock);
    gridDim.x = grid;
    blockDim.x = block;
    block_barrier = std::make_unique<std::barrier<>>(block);
    warp_barriers.clear();
    for (unsigned int w = 0; w < block / 32; w++) {
        warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
    }
    for (unsigned int b = 0; b < grid; b++) {
        std::vector<std::thread> threads;
        for (unsigned int t = 0; t < block; t++) {
            threads.emplace_back([=] {
                blockIdx.x = b;
                threadIdx.x = t;
                kernel();
            });
        }
        for (auto &t : threads) t.join();
    }
}

/* Every lane publishes v, then reads lane `src`'s (src out of range: its own). */
template <class T> T exchange(T v, int src) {
    unsigned int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    static_assert(sizeof(T) <= sizeof(unsigned long long));
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    warp_slots[warp][lane] = bits;
    warp_barriers[warp]->arrive_and_wait();
    unsigned long long got = warp_slots[warp][(src >= 0 && src < 32) ? src : lane];
    warp_barriers[warp]->arrive_and_wait();
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}
} // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

template <class T> T __shfl_sync(unsigned int, T v, int src) { return emu::exchange(v, src); }
template <class T> T __shfl_down_sync(unsigned int, T v, unsigned int d) {
    return emu::exchange(v, (int)(threadIdx.x % 32 + d));
}
template <class T> T __shfl_up_sync(unsigned int, T v, unsigned int d) {
    return emu::exchange(v, (int)(threadIdx.x % 32) - (int)d);
}

template <class T> T atomicAdd(T *p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> T atomicOr(T *p, T v) { return std::atomic_ref<T>(*p).fetch_or(v); }
template <class T> T atomicMax(T *p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
template <class T> T atomicMin(T *p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old > v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
