/* ascii: byte tests of the hot paths, eight bytes at a time (and one UTF-8 check). A "plain" byte is printable
 * ASCII other than '"' and '\\': a JSON string can hold it as it is, so the Varlink
 * fast-path scanner takes strings made only of such bytes, and the JSON log copies runs of
 * them without escaping. A "graphic" byte is '!' … '~' (isgraph in the C locale): what a
 * presented key may consist of. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ASCII_BYTES(b) (0x0101010101010101u * (uint64_t)(b))

/* The high bit of every byte of w that is not plain. With x = w & 0x7f..7f no addition
 * below carries from one byte into the next, so each byte's bit is exact. */
static inline uint64_t ascii_word_not_plain(uint64_t w)
{
    uint64_t x = w & ASCII_BYTES(0x7f);
    uint64_t ok = (x + ASCII_BYTES(0x60))                    /* high bit: byte >= 0x20 */
                  & ((x ^ ASCII_BYTES('"')) + ASCII_BYTES(0x7f))  /* byte != '"' */
                  & ((x ^ ASCII_BYTES('\\')) + ASCII_BYTES(0x7f)); /* byte != '\\' */
    /* w: bytes >= 0x80; x + 1: 0x7f. */
    return (w | (x + ASCII_BYTES(0x01)) | ~ok) & ASCII_BYTES(0x80);
}

static inline int ascii_plain_byte(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

/* The index of the first byte in memory order whose bit is set in bad (non-zero). */
static inline size_t ascii_first(uint64_t bad)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (size_t)__builtin_ctzll(bad) / 8;
#else
    return (size_t)__builtin_clzll(bad) / 8;
#endif
}

/* How many of the n bytes at s are plain before the first that is not (n if all are). */
static inline size_t ascii_plain_span(const char *s, size_t n)
{
    uint64_t w, bad;
    size_t i = 0;

    if (n < 8) {
        while (i < n && ascii_plain_byte((unsigned char)s[i]))
            i++;
        return i;
    }
    for (; n - i >= 8; i += 8) {
        memcpy(&w, s + i, sizeof(w));
        bad = ascii_word_not_plain(w);
        if (bad)
            return i + ascii_first(bad);
    }
    if (i == n)
        return n;
    /* The last 8 bytes, overlapping bytes already found plain: their bits are clear. */
    memcpy(&w, s + n - 8, sizeof(w));
    bad = ascii_word_not_plain(w);
    return bad ? n - 8 + ascii_first(bad) : n;
}

/* The high bit of every byte of w that is not graphic (exact per byte, as above). */
static inline uint64_t ascii_word_not_graphic(uint64_t w)
{
    uint64_t x = w & ASCII_BYTES(0x7f);
    /* ~(x + 0x5f): x < 0x21; x + 1: 0x7f; w: bytes >= 0x80. */
    return (w | (x + ASCII_BYTES(0x01)) | ~(x + ASCII_BYTES(0x5f))) & ASCII_BYTES(0x80);
}

/* True if all n bytes at s are graphic. No branch depends on the bytes' values: a key's
 * shape is checked before anything else is known about it. */
static inline int ascii_all_graphic(const char *s, size_t n)
{
    uint64_t w, bad = 0;
    size_t i = 0;

    if (n < 8) {
        for (; i < n; i++)
            bad |= (uint64_t)((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e);
        return !bad;
    }
    for (; n - i >= 8; i += 8) {
        memcpy(&w, s + i, sizeof(w));
        bad |= ascii_word_not_graphic(w);
    }
    if (i < n) {
        /* The last 8 bytes, overlapping some already checked. */
        memcpy(&w, s + n - 8, sizeof(w));
        bad |= ascii_word_not_graphic(w);
    }
    return !bad;
}

/* The length (2 … 4) of the UTF-8 sequence of a non-ASCII character at s[0..n) if it is
 * one jansson accepts (RFC 3629: no overlong form, no surrogate, nothing above U+10FFFF),
 * else 0 (also for an ASCII byte, and for a sequence cut short by n). */
static inline size_t utf8_sequence_len(const unsigned char *s, size_t n)
{
    size_t len = s[0] < 0xc2 ? 0 : s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : s[0] < 0xf5 ? 4 : 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((len == 3 && s[0] == 0xe0 && s[1] < 0xa0) ||  /* overlong */
        (len == 3 && s[0] == 0xed && s[1] > 0x9f) ||  /* a surrogate */
        (len == 4 && s[0] == 0xf0 && s[1] < 0x90) ||  /* overlong */
        (len == 4 && s[0] == 0xf4 && s[1] > 0x8f))    /* above U+10FFFF */
        return 0;
    return len;
}
