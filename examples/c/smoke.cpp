// smoke.cpp: the C ABI from C++17 (g++ -std=c++17 -Wall -Wextra -Werror): quantize a
// matrix, parse the packed bytes, read its info, dequantize to bf16 and run both gemvs.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "adpq.h"

static bool ok(adpq_status s, const char *what) {
    if (s != ADPQ_STATUS_OK) {
        std::fprintf(stderr, "%s: %s\n", what, adpq_status_message(s));
        return false;
    }
    return true;
}

int main() {
    const size_t rows = 8, cols = 200;  // the rows end in a short group
    std::vector<float> w(rows * cols);
    for (size_t i = 0; i < w.size(); i++) w[i] = std::sin(0.1f * float(i)) * (i % 17 == 0 ? 8.f : 1.f);

    adpq_params params{};
    adpq_selection sel{};
    size_t len = 0;
    if (!ok(adpq_params_preset(ADPQ_PRESET_DEFAULT, &params), "preset") ||
        !ok(adpq_quantize_select(ADPQ_BACKEND_AUTO, w.data(), ADPQ_DTYPE_F32, rows, cols, &params,
                                 &sel, &len), "select"))
        return 1;
    std::vector<uint8_t> packed(len);
    if (!ok(adpq_quantize(ADPQ_BACKEND_AUTO, w.data(), ADPQ_DTYPE_F32, rows, cols, &params, &sel,
                          packed.data(), packed.size()), "quantize"))
        return 1;

    adpq_tensor t{};
    adpq_tensor_info info{};
    if (!ok(adpq_tensor_parse(packed.data(), packed.size(), &t), "parse") ||
        !ok(adpq_tensor_get_info(&t, &info), "info"))
        return 1;
    if (info.rows != rows || info.cols != cols || info.version != 3 || info.bits != 4) return 1;

    std::vector<float> back(rows * cols), scratch(cols);
    std::vector<uint16_t> half(rows * cols);
    if (!ok(adpq_dequantize_rows(&t, ADPQ_BACKEND_SCALAR, 0, rows, ADPQ_DTYPE_F32, back.data(),
                                 back.size() * 4, nullptr, 0), "dequantize f32") ||
        !ok(adpq_dequantize_rows(&t, ADPQ_BACKEND_AUTO, 0, rows, ADPQ_DTYPE_BF16, half.data(),
                                 half.size() * 2, scratch.data(), scratch.size()), "dequantize bf16"))
        return 1;
    double err = 0;
    for (size_t i = 0; i < w.size(); i++) err = std::fmax(err, std::fabs(back[i] - w[i]));

    std::vector<float> x(cols, 0.5f), y(rows), y8(rows);
    size_t scratch_len = 0;
    if (!ok(adpq_gemv(&t, ADPQ_BACKEND_AUTO, x.data(), cols, y.data(), rows), "gemv") ||
        !ok(adpq_q8_scratch_len(&t, &scratch_len), "scratch") )
        return 1;
    std::vector<uint8_t> s8(scratch_len);
    if (!ok(adpq_gemv_q8(&t, ADPQ_BACKEND_AUTO, x.data(), cols, s8.data(), s8.size(), y8.data(),
                         rows), "gemv_q8"))
        return 1;
    // A corrupted byte is caught by the CRC; the handle is left as it was.
    packed[packed.size() / 2] ^= 1;
    adpq_tensor bad{};
    if (adpq_tensor_parse(packed.data(), packed.size(), &bad) == ADPQ_STATUS_OK) return 1;
    if (adpq_gemv(&bad, ADPQ_BACKEND_AUTO, x.data(), cols, y.data(), rows) != ADPQ_STATUS_INVALID_HANDLE)
        return 1;
    std::printf("smoke.cpp: adpq %s, %s kernels, %.3f bits/weight, max |w - w'| %.4f, y[0] %.5f / %.5f\n",
                adpq_version(), adpq_backend_name(ADPQ_BACKEND_AUTO), info.bits_per_weight, err,
                double(y[0]), double(y8[0]));
    return err < 0.5 ? 0 : 1;
}
