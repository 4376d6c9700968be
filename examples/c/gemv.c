/*
 * gemv.c: y = W x from an adpq-quantized safetensors file, in plain C11 + POSIX mmap.
 *
 *   gemv FILE TENSOR [BACKEND [OUT_PREFIX]]
 *
 * Memory-maps FILE, finds TENSOR (a U8 tensor holding a packed adpq buffer) with a
 * minimal safetensors header reader, validates it (adpq_tensor_parse: structure and
 * CRC), then runs gemv with f32 activations and with int8 activations on
 * x[i] = ((i * 37) % 101 - 50) / 50 (exact in binary32, so any language computes the
 * same x). BACKEND is auto (default) or scalar. With OUT_PREFIX, writes the outputs as
 * raw little-endian floats to OUT_PREFIX.f32 and OUT_PREFIX.q8.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror gemv.c $(pkg-config --cflags --libs adpq)
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adpq.h"

/* ---- a minimal safetensors header reader -------------------------------------------
 * A file is: u64 little-endian N, N bytes of JSON {"name": {"dtype": "U8", "shape": [..],
 * "data_offsets": [begin, end]}, ...}, then the data (offsets relative to its start).
 * This reader only needs names without escapes, which is what checkpoints use. */

typedef struct {
    const char *p;
    const char *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) {
        c->p++;
    }
}

/* Reads a JSON string; *s, *n point into the header (escapes are kept verbatim). */
static int read_string(cursor *c, const char **s, size_t *n) {
    skip_ws(c);
    if (c->p >= c->end || *c->p != '"') {
        return -1;
    }
    const char *start = ++c->p;
    while (c->p < c->end && *c->p != '"') {
        if (*c->p == '\\') {
            c->p++;
        }
        c->p++;
    }
    if (c->p >= c->end) {
        return -1;
    }
    *s = start;
    *n = (size_t)(c->p - start);
    c->p++;
    return 0;
}

static int expect(cursor *c, char ch) {
    skip_ws(c);
    if (c->p >= c->end || *c->p != ch) {
        return -1;
    }
    c->p++;
    return 0;
}

static int read_u64(cursor *c, uint64_t *v) {
    skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') {
        return -1;
    }
    uint64_t x = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        uint64_t d = (uint64_t)(*c->p - '0');
        if (x > (UINT64_MAX - d) / 10) {
            return -1;
        }
        x = x * 10 + d;
        c->p++;
    }
    *v = x;
    return 0;
}

/* Skips one JSON value (string, number, array, object, literal). */
static int skip_value(cursor *c) {
    skip_ws(c);
    if (c->p >= c->end) {
        return -1;
    }
    if (*c->p == '"') {
        const char *s;
        size_t n;
        return read_string(c, &s, &n);
    }
    if (*c->p == '{' || *c->p == '[') {
        int depth = 0;
        while (c->p < c->end) {
            if (*c->p == '"') {
                const char *s;
                size_t n;
                if (read_string(c, &s, &n) != 0) {
                    return -1;
                }
                continue;
            }
            if (*c->p == '{' || *c->p == '[') {
                depth++;
            } else if (*c->p == '}' || *c->p == ']') {
                if (--depth == 0) {
                    c->p++;
                    return 0;
                }
            }
            c->p++;
        }
        return -1;
    }
    while (c->p < c->end && *c->p != ',' && *c->p != '}' && *c->p != ']') {
        c->p++;
    }
    return 0;
}

/* Finds tensor `name`: its dtype must be U8; *begin, *end are its data offsets. */
static int find_tensor(const char *json, size_t len, const char *name, uint64_t *begin,
                       uint64_t *end) {
    cursor c = {json, json + len};
    size_t name_len = strlen(name);
    if (expect(&c, '{') != 0) {
        return -1;
    }
    for (;;) {
        const char *key;
        size_t key_len;
        if (read_string(&c, &key, &key_len) != 0 || expect(&c, ':') != 0) {
            return -1;
        }
        if (key_len == name_len && memcmp(key, name, name_len) == 0) {
            int have_dtype = 0, have_offsets = 0;
            if (expect(&c, '{') != 0) {
                return -1;
            }
            for (;;) {
                const char *f;
                size_t f_len;
                if (read_string(&c, &f, &f_len) != 0 || expect(&c, ':') != 0) {
                    return -1;
                }
                if (f_len == 5 && memcmp(f, "dtype", 5) == 0) {
                    const char *d;
                    size_t d_len;
                    if (read_string(&c, &d, &d_len) != 0) {
                        return -1;
                    }
                    if (d_len != 2 || memcmp(d, "U8", 2) != 0) {
                        fprintf(stderr, "%s: dtype %.*s, not U8 (not quantized?)\n", name,
                                (int)d_len, d);
                        return -1;
                    }
                    have_dtype = 1;
                } else if (f_len == 12 && memcmp(f, "data_offsets", 12) == 0) {
                    if (expect(&c, '[') != 0 || read_u64(&c, begin) != 0 ||
                        expect(&c, ',') != 0 || read_u64(&c, end) != 0 ||
                        expect(&c, ']') != 0) {
                        return -1;
                    }
                    have_offsets = 1;
                } else if (skip_value(&c) != 0) {
                    return -1;
                }
                skip_ws(&c);
                if (c.p < c.end && *c.p == ',') {
                    c.p++;
                    continue;
                }
                if (expect(&c, '}') != 0) {
                    return -1;
                }
                return (have_dtype && have_offsets && *begin <= *end) ? 0 : -1;
            }
        }
        if (skip_value(&c) != 0) {
            return -1;
        }
        skip_ws(&c);
        if (c.p < c.end && *c.p == ',') {
            c.p++;
            continue;
        }
        fprintf(stderr, "tensor %s not found\n", name);
        return -1;
    }
}

/* ---- the example ------------------------------------------------------------------- */

static int check(adpq_status s, const char *what) {
    if (s != ADPQ_STATUS_OK) {
        fprintf(stderr, "%s: %s (status %u)\n", what, adpq_status_message((uint32_t)s),
                (unsigned)s);
        return -1;
    }
    return 0;
}

static int write_floats(const char *prefix, const char *ext, const float *v, size_t n) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s.%s", prefix, ext) >= (int)sizeof path) {
        return -1;
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t w = fwrite(v, sizeof(float), n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s FILE TENSOR [auto|scalar [OUT_PREFIX]]\n", argv[0]);
        return 2;
    }
    uint32_t backend = ADPQ_BACKEND_AUTO;
    if (argc >= 4) {
        if (strcmp(argv[3], "scalar") == 0) {
            backend = ADPQ_BACKEND_SCALAR;
        } else if (strcmp(argv[3], "auto") != 0) {
            fprintf(stderr, "unknown backend %s\n", argv[3]);
            return 2;
        }
    }
    if (adpq_version_number() != ADPQ_VERSION_NUMBER) {
        fprintf(stderr, "header %d and library %u disagree\n", ADPQ_VERSION_NUMBER,
                (unsigned)adpq_version_number());
        return 1;
    }

    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 8) {
        fprintf(stderr, "%s: not a safetensors file\n", argv[1]);
        close(fd);
        return 1;
    }
    size_t size = (size_t)st.st_size;
    const uint8_t *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        perror("mmap");
        return 1;
    }

    int rc = 1;
    float *x = NULL, *y = NULL, *y8 = NULL;
    uint8_t *scratch = NULL;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) {
        n |= (uint64_t)map[i] << (8 * i);
    }
    uint64_t begin, end;
    if (n > size - 8 || find_tensor((const char *)map + 8, (size_t)n, argv[2], &begin, &end) != 0 ||
        end > size - 8 - n) {
        fprintf(stderr, "%s: no usable tensor %s\n", argv[1], argv[2]);
        goto out;
    }
    const uint8_t *packed = map + 8 + n + begin;
    size_t packed_len = (size_t)(end - begin);

    adpq_tensor t = {0}; /* caller storage; borrows the mapping */
    adpq_tensor_info info;
    if (check(adpq_tensor_parse(packed, packed_len, &t), "parse") != 0 ||
        check(adpq_tensor_get_info(&t, &info), "info") != 0) {
        goto out;
    }
    printf("%s: %llu x %llu, format v%u, %u bits, groups of %u, %.3f bits/weight, kernels %s\n",
           argv[2], (unsigned long long)info.rows, (unsigned long long)info.cols,
           (unsigned)info.version, (unsigned)info.bits, (unsigned)info.group_size,
           info.bits_per_weight, adpq_backend_name(backend));

    size_t rows = (size_t)info.rows, cols = (size_t)info.cols, scratch_len = 0;
    x = malloc(cols * sizeof *x);
    y = malloc(rows * sizeof *y);
    y8 = malloc(rows * sizeof *y8);
    if (x == NULL || y == NULL || y8 == NULL ||
        check(adpq_q8_scratch_len(&t, &scratch_len), "q8 scratch") != 0 ||
        (scratch = malloc(scratch_len)) == NULL) {
        goto out;
    }
    for (size_t i = 0; i < cols; i++) {
        x[i] = (float)((int)((i * 37) % 101) - 50) / 50.0f;
    }
    if (check(adpq_gemv(&t, backend, x, cols, y, rows), "gemv") != 0 ||
        check(adpq_gemv_q8(&t, backend, x, cols, scratch, scratch_len, y8, rows), "gemv_q8") !=
            0) {
        goto out;
    }
    double num = 0, den = 0;
    for (size_t r = 0; r < rows; r++) {
        num += (double)(y8[r] - y[r]) * (y8[r] - y[r]);
        den += (double)y[r] * y[r];
    }
    printf("y[0..3] = %.6g %.6g %.6g; int8 activations: relative error %.3g\n", y[0],
           rows > 1 ? y[1] : 0.0, rows > 2 ? y[2] : 0.0, den > 0 ? sqrt(num / den) : 0.0);
    if (argc == 5 && (write_floats(argv[4], "f32", y, rows) != 0 ||
                      write_floats(argv[4], "q8", y8, rows) != 0)) {
        goto out;
    }
    rc = 0;
out:
    free(scratch);
    free(y8);
    free(y);
    free(x);
    munmap((void *)map, size);
    return rc;
}
