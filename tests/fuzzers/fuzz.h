/* fuzz: what the fuzz targets share. Each fuzz-<target>.c defines LLVMFuzzerTestOneInput;
 * built with -Dfuzz=true it links libFuzzer, and in every build it links replay.c, which
 * runs it on the kept inputs (tests/fuzzers/regressions/, corpus/) under the unit tests.
 *
 * A target hands the code under test exact-size copies of the input, never libFuzzer's own
 * buffer, and no terminator it does not need: AddressSanitizer then catches a read one byte
 * past what the code was given. A broken invariant aborts, which libFuzzer and the replay
 * report with the input. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz assertion failed: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Out of memory in a target is no finding, and every caller would have to handle it. */
static inline void *fuzz_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    FUZZ_ASSERT(p != NULL);
    return p;
}

/* A copy of p[0..n) in a block of exactly n bytes. */
static inline char *fuzz_copy(const void *p, size_t n)
{
    char *c = fuzz_malloc(n);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* A NUL-terminated copy of p[0..n) (a NUL inside ends the C string early, as it would for
 * the caller that reads such text). */
static inline char *fuzz_strndup(const void *p, size_t n)
{
    char *c = fuzz_malloc(n + 1);
    if (n)
        memcpy(c, p, n);
    c[n] = '\0';
    return c;
}

/* The input, read from the front: the first bytes choose modes and split points, the rest
 * is the text. Reading past the end gives zeros. */
typedef struct fuzz_input {
    const uint8_t *p;
    size_t n;
} fuzz_input;

static inline uint8_t fuzz_byte(fuzz_input *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint64_t fuzz_u64(fuzz_input *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | fuzz_byte(in);
    return v;
}

/* The next piece up to (not including) sep, which is consumed; the rest if there is none. */
static inline const uint8_t *fuzz_piece(fuzz_input *in, uint8_t sep, size_t *ret_len)
{
    const uint8_t *start = in->p, *end = in->n ? memchr(in->p, sep, in->n) : NULL;
    size_t len = end ? (size_t)(end - start) : in->n;
    *ret_len = len;
    in->p += len + (end ? 1 : 0);
    in->n -= len + (end ? 1 : 0);
    return start;
}
