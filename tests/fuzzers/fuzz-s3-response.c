/* fuzz-s3-response: what the S3 store reads of an answer (libheare/s3-response.c). The
 * input up to its first NUL is the header block, handed over line by line with each
 * line's '\n', as libcurl does; the rest is an error body, handed over in chunks whose
 * length the first byte sets, and kept up to a bound the second byte sets. The ETag kept
 * is trimmed and never empty; the body is the input's prefix up to the bound; Code and
 * Message are printable and within their buffers. */
#include <ctype.h>

#include "fuzz.h"
#include "s3-response.h"

static void check_element(const char *body, const char *tag, size_t max)
{
    char *out = fuzz_malloc(max);
    s3_xml_element(body, tag, out, max);
    size_t n = strlen(out);
    FUZZ_ASSERT(n < max);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT(isprint((unsigned char)out[i]));
    if (n > 0)
        FUZZ_ASSERT(body && strstr(body, tag));
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    size_t chunk = 1 + fuzz_byte(&in);
    uint8_t bound = fuzz_byte(&in);
    size_t max = bound ? bound : (size_t)64 << 10;
    size_t head_len;
    const uint8_t *head = fuzz_piece(&in, 0, &head_len);
    char *etag = NULL;

    for (size_t off = 0; off < head_len;) {
        const uint8_t *nl = memchr(head + off, '\n', head_len - off);
        size_t n = nl ? (size_t)(nl - (head + off)) + 1 : head_len - off;
        char *line = fuzz_copy(head + off, n);
        s3_response_header(line, n, &etag);
        free(line);
        if (etag) {
            size_t e = strlen(etag);
            FUZZ_ASSERT(e > 0 && etag[0] != ' ' && etag[0] != '\t');
            FUZZ_ASSERT(!isspace((unsigned char)etag[e - 1]));
        }
        off += n;
    }

    s3_error_body b = {0};
    for (size_t off = 0; off < in.n; off += chunk) {
        size_t n = chunk < in.n - off ? chunk : in.n - off;
        char *piece = fuzz_copy(in.p + off, n);
        FUZZ_ASSERT(s3_error_body_append(&b, piece, n, max) == 0);
        free(piece);
    }
    size_t want = in.n < max ? in.n : max;
    FUZZ_ASSERT(b.len == want);
    if (want) {
        FUZZ_ASSERT(b.text && b.alloc == max + 1 && b.text[b.len] == '\0');
        FUZZ_ASSERT(memcmp(b.text, in.p, want) == 0);
    }
    check_element(b.text, "Code", 64);
    check_element(b.text, "Message", 160);
    check_element(b.text, "Code", 1);
    s3_error_body_done(&b);
    FUZZ_ASSERT(!b.text && b.len == 0);
    free(etag);
    return 0;
}
