// llama_quant: fake-quantize a row-major f32 matrix with llama.cpp's own quantizer.
//
// Usage: llama_quant TYPE ROWS COLS < weights.f32 > dequantized.f32
//
// Reads ROWS*COLS little-endian f32 from stdin, quantizes them with ggml's public API
// (ggml_quantize_chunk, no importance matrix: what `llama-quantize` does without
// --imatrix), dequantizes them back with the type's to_float and writes ROWS*COLS f32 to
// stdout. One line on stderr, starting "llama_quant:", reports the type asked for, the
// type used, the bytes of one quantized row and the seconds spent quantizing (one
// thread). Rows whose width the type's block does not divide get llama.cpp's fallback
// type (tensor_type_fallback in src/llama-quant.cpp, mirrored below), so bits per
// weight are those of the file llama-quantize would write.
#include "ggml.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int fail(const char *message, const char *detail) {
    fprintf(stderr, "llama_quant: error: %s%s\n", message, detail ? detail : "");
    return 1;
}

// A ggml type by its name (ggml_type_name, any case: Q4_0, q4_K, IQ4_NL...).
static int type_by_name(const char *name, enum ggml_type *out) {
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const struct ggml_type_traits *traits = ggml_get_type_traits((enum ggml_type)t);
        if (traits->type_name == NULL || traits->to_float == NULL) {
            continue;
        }
        if (strcasecmp(traits->type_name, name) == 0) {
            *out = (enum ggml_type)t;
            return 1;
        }
    }
    return 0;
}

// llama.cpp's tensor_type_fallback: the type llama-quantize writes when the type asked
// for does not fit the row width.
static enum ggml_type fallback(enum ggml_type asked, int64_t cols) {
    if (cols % ggml_blck_size(asked) == 0) {
        return asked;
    }
    enum ggml_type used;
    switch (asked) {
    case GGML_TYPE_IQ1_S:
    case GGML_TYPE_IQ1_M:
    case GGML_TYPE_IQ2_XXS:
    case GGML_TYPE_IQ2_XS:
    case GGML_TYPE_IQ2_S:
    case GGML_TYPE_IQ3_XXS:
    case GGML_TYPE_IQ3_S:
    case GGML_TYPE_IQ4_XS: used = GGML_TYPE_IQ4_NL; break;
    case GGML_TYPE_Q2_K:
    case GGML_TYPE_Q3_K:
    case GGML_TYPE_TQ1_0:
    case GGML_TYPE_TQ2_0: used = GGML_TYPE_Q4_0; break;
    case GGML_TYPE_Q4_K: used = GGML_TYPE_Q5_0; break;
    case GGML_TYPE_Q5_K: used = GGML_TYPE_Q5_1; break;
    case GGML_TYPE_Q6_K: used = GGML_TYPE_Q8_0; break;
    default: used = asked; break;
    }
    if (cols % ggml_blck_size(used) != 0) {
        used = GGML_TYPE_F16;
    }
    return used;
}

static int read_all(float *buffer, size_t count) {
    size_t done = 0;
    while (done < count) {
        size_t got = fread(buffer + done, sizeof(float), count - done, stdin);
        if (got == 0) {
            return 0;
        }
        done += got;
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        return fail("usage: llama_quant TYPE ROWS COLS < in.f32 > out.f32", NULL);
    }
    enum ggml_type asked;
    if (!type_by_name(argv[1], &asked)) {
        return fail("unknown ggml type ", argv[1]);
    }
    char *end = NULL;
    const long long rows = strtoll(argv[2], &end, 10);
    if (*end != '\0' || rows <= 0) {
        return fail("ROWS must be a positive integer, not ", argv[2]);
    }
    const long long cols = strtoll(argv[3], &end, 10);
    if (*end != '\0' || cols <= 0) {
        return fail("COLS must be a positive integer, not ", argv[3]);
    }
    const enum ggml_type used = fallback(asked, cols);
    if (ggml_quantize_requires_imatrix(used)) {
        return fail("this type needs an importance matrix: ", argv[1]);
    }
    const size_t count = (size_t)rows * (size_t)cols;
    const size_t row_bytes = ggml_row_size(used, cols);
    float *weights = malloc(count * sizeof(float));
    void *packed = malloc(row_bytes * (size_t)rows);
    if (weights == NULL || packed == NULL) {
        return fail("out of memory", NULL);
    }
    if (!read_all(weights, count)) {
        return fail("stdin ended before ROWS*COLS f32 values", NULL);
    }

    struct timespec start, stop;
    clock_gettime(CLOCK_MONOTONIC, &start);
    const size_t written = ggml_quantize_chunk(used, weights, packed, 0, rows, cols, NULL);
    clock_gettime(CLOCK_MONOTONIC, &stop);
    if (written != row_bytes * (size_t)rows) {
        return fail("ggml_quantize_chunk wrote an unexpected number of bytes", NULL);
    }
    const double seconds = (double)(stop.tv_sec - start.tv_sec) + 1e-9 * (double)(stop.tv_nsec - start.tv_nsec);

    ggml_get_type_traits(used)->to_float(packed, weights, (int64_t)count);
    if (fwrite(weights, sizeof(float), count, stdout) != count || fflush(stdout) != 0) {
        return fail("cannot write stdout", NULL);
    }
    fprintf(stderr, "llama_quant: asked=%s used=%s row_bytes=%zu quantize_seconds=%.9f\n",
            ggml_type_name(asked), ggml_type_name(used), row_bytes, seconds);
    free(weights);
    free(packed);
    ggml_quantize_free();
    return 0;
}
