/* fuzz-ids: the shapes of presented keys and key ids, and the word-at-a-time byte tests
 * behind them (ascii.h), each against a plain byte-by-byte statement of its rule: a
 * presented key's MALFORMED rules (length, graphic bytes, a generation-1 secret's base62
 * body and CRC-32 checksum), key ids, scopes, base62 and CRC-32 (against zlib). The first
 * byte picks an offset, so the word loops see the text at every alignment. */
#include <errno.h>

#include <zlib.h>

#include "ascii.h"
#include "fuzz.h"
#include "ids.h"
#include "keydoc.h"

static bool is_graphic(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e;
}

static int base62_value(char c)
{
    const char *p = memchr(ids_base62_alphabet, c, sizeof(ids_base62_alphabet));
    return c && p ? (int)(p - ids_base62_alphabet) : -1;
}

static bool all_base62(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (base62_value(s[i]) < 0)
            return false;
    return true;
}

static void check_presented(const char *key, size_t len)
{
    bool graphic = true;
    for (size_t i = 0; i < len; i++)
        graphic &= is_graphic((unsigned char)key[i]);
    bool shape = len >= 1 && len <= IDS_PRESENTED_MAX && graphic;
    FUZZ_ASSERT((ids_check_shape(key, len) == 0) == shape);
    FUZZ_ASSERT(ascii_all_graphic(key, len) == graphic);

    bool want = shape;
    if (shape && len >= 5 && memcmp(key, "sec_1", 5) == 0) {
        const size_t body = IDS_SECRET_LEN - IDS_CHECKSUM_LEN;
        want = len == IDS_SECRET_LEN && all_base62(key + 4, len - 4);
        if (want) {
            uint64_t sum = 0;
            for (size_t i = body; i < len; i++)
                sum = sum * 62 + (uint64_t)base62_value(key[i]);
            want = sum == (uint64_t)crc32(0, (const Bytef *)key, (uInt)body);
        }
    }
    FUZZ_ASSERT((ids_check_presented(key, len) == 0) == want);
}

static void check_plain_span(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && ascii_plain_byte((unsigned char)s[i]))
        i++;
    FUZZ_ASSERT(ascii_plain_span(s, n) == i);
}

static void check_strings(const char *s)
{
    size_t n = strlen(s);
    FUZZ_ASSERT(ids_is_key_id(s) ==
                (n >= 5 && n <= 4 + 64 && memcmp(s, "key_", 4) == 0 && all_base62(s + 4, n - 4)));
    bool scope = n > 0;
    for (size_t i = 0; i < n; i++)
        scope &= is_graphic((unsigned char)s[i]);
    FUZZ_ASSERT(keydoc_is_scope(s) == scope);
}

static void check_base62(uint64_t v, size_t width)
{
    char out[16];
    uint64_t limit = 1; /* 62^width, or 0 past 2^64 */
    for (size_t i = 0; i < width && limit; i++)
        limit = limit > UINT64_MAX / 62 ? 0 : limit * 62;
    int r = ids_base62_encode(v, width, out);
    if (limit && v >= limit) {
        FUZZ_ASSERT(r == -ERANGE);
        return;
    }
    FUZZ_ASSERT(r == 0);
    uint64_t back = 0;
    for (size_t i = 0; i < width; i++) {
        int d = base62_value(out[i]);
        FUZZ_ASSERT(d >= 0);
        back = back * 62 + (uint64_t)d;
    }
    FUZZ_ASSERT(back == v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    uint8_t mode = fuzz_byte(&in);
    size_t shift = mode & 7;
    /* The text at offset shift of a block of exactly shift + n bytes. */
    char *block = fuzz_malloc(shift + in.n);
    memcpy(block + shift, in.p, in.n);
    const char *text = block + shift;

    check_presented(text, in.n);
    for (size_t cut = 0; cut < in.n && cut < 16; cut++)
        check_plain_span(text + cut, in.n - cut);
    check_plain_span(text, in.n);
    FUZZ_ASSERT(ids_crc32(text, in.n) == (uint32_t)crc32(0, (const Bytef *)text, (uInt)in.n));

    char *s = fuzz_strndup(in.p, in.n);
    check_strings(s);
    free(s);

    fuzz_input num = {data, size};
    uint64_t v = fuzz_u64(&num);
    check_base62(v, 1 + (size_t)(mode >> 4) % 13);
    check_base62(v >> (mode & 63), IDS_CHECKSUM_LEN);
    free(block);
    return 0;
}
