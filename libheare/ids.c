/* ids: heare-ids key ids and secrets — base62, CRC32, CSPRNG and the MALFORMED rules. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <zlib.h>

#include "ascii.h"
#include "ids.h"
#include "macro.h"

const char ids_base62_alphabet[62] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "abcdefghijklmnopqrstuvwxyz";

/* 248 = 4 * 62: bytes below it map onto the alphabet evenly, the rest are redrawn. */
#define BASE62_REJECT_AT 248

/* Byte classes for the checks that run on every presented key: a table lookup a byte,
 * no branch on the character's value. */
enum { PRINTABLE = 1, BASE62 = 2 };
static const unsigned char byte_class[256] = {
    ['!' ... '/'] = PRINTABLE,          ['0' ... '9'] = PRINTABLE | BASE62,
    [':' ... '@'] = PRINTABLE,          ['A' ... 'Z'] = PRINTABLE | BASE62,
    ['[' ... '`'] = PRINTABLE,          ['a' ... 'z'] = PRINTABLE | BASE62,
    ['{' ... '~'] = PRINTABLE,
};

/* ANDs the classes of s[0..n): the bits every byte has. */
static unsigned classes_of(const char *s, size_t n)
{
    unsigned all = PRINTABLE | BASE62;
    for (size_t i = 0; i < n; i++)
        all &= byte_class[(unsigned char)s[i]];
    return all;
}

int ids_base62_encode(uint64_t v, size_t width, char *out)
{
    char buf[16]; /* 62^11 > 2^64, so 11 digits always suffice */
    size_t n = 0;

    do {
        buf[n++] = ids_base62_alphabet[v % 62];
        v /= 62;
    } while (v > 0);
    if (n > width)
        return -ERANGE;

    size_t pad = width - n;
    memset(out, '0', pad);
    for (size_t i = 0; i < n; i++)
        out[pad + i] = buf[n - 1 - i];
    return 0;
}

static int fill_random(uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return negative_errno();
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int ids_random_base62(char *out, size_t n)
{
    uint8_t buf[64];
    size_t done = 0;
    int r = 0;

    while (done < n) {
        size_t want = n - done;
        if (want > sizeof(buf))
            want = sizeof(buf);
        r = fill_random(buf, want);
        if (r < 0)
            break;
        for (size_t i = 0; i < want && done < n; i++)
            if (buf[i] < BASE62_REJECT_AT)
                out[done++] = ids_base62_alphabet[buf[i] % 62];
    }
    /* The raw bytes become part of a secret: leave no copy on the stack. */
    explicit_bzero(buf, sizeof(buf));
    return r;
}

uint32_t ids_crc32(const void *p, size_t n)
{
    /* zlib's CRC-32 (ISO-HDLC, as Python's zlib.crc32 that the ids were made with). */
    return (uint32_t)crc32(0L, p, (uInt)n);
}

/* Writes "<prefix><generation><ts8>" and returns its length, or -ERANGE for a time that
 * does not fit eight base62 digits. */
static int write_head(const char *prefix, char generation, int64_t now, char *out)
{
    size_t pl = strlen(prefix);
    int r;

    if (now < 0)
        return -ERANGE;
    memcpy(out, prefix, pl);
    out[pl] = generation;
    r = ids_base62_encode((uint64_t)now, IDS_TIMESTAMP_LEN, out + pl + 1);
    if (r < 0)
        return r;
    return (int)(pl + 1 + IDS_TIMESTAMP_LEN);
}

int ids_new_key_id(int64_t now, char ret[IDS_KEY_ID_LEN + 1])
{
    char buf[IDS_KEY_ID_LEN + 1];
    int h, r;

    h = write_head("key_", '0', now, buf);
    if (h < 0)
        return h;
    r = ids_random_base62(buf + h, IDS_KEY_ENTROPY_LEN);
    if (r < 0)
        return r;
    buf[IDS_KEY_ID_LEN] = '\0';
    memcpy(ret, buf, sizeof(buf));
    return 0;
}

int ids_new_secret(int64_t now, char ret[IDS_SECRET_LEN + 1])
{
    char buf[IDS_SECRET_LEN + 1];
    const size_t body = IDS_SECRET_LEN - IDS_CHECKSUM_LEN;
    int h, r;

    h = write_head("sec_", '1', now, buf);
    if (h < 0)
        return h;
    r = ids_random_base62(buf + h, IDS_SECRET_ENTROPY_LEN);
    if (r >= 0)
        r = ids_base62_encode(ids_crc32(buf, body), IDS_CHECKSUM_LEN, buf + body);
    if (r >= 0) {
        buf[IDS_SECRET_LEN] = '\0';
        memcpy(ret, buf, sizeof(buf));
    }
    explicit_bzero(buf, sizeof(buf));
    return r < 0 ? r : 0;
}

int ids_check_shape(const char *key, size_t len)
{
    /* A word at a time: this runs for every presented key, and the byte-class loop was the
     * largest part of the verify path after SHA-256. */
    if (!key || len == 0 || len > IDS_PRESENTED_MAX || !ascii_all_graphic(key, len))
        return -EINVAL;
    return 0;
}

int ids_check_presented(const char *key, size_t len)
{
    static const char gen1[] = "sec_1";
    const size_t body = IDS_SECRET_LEN - IDS_CHECKSUM_LEN;
    char want[IDS_CHECKSUM_LEN];

    if (ids_check_shape(key, len) < 0)
        return -EINVAL;
    if (len < strlen(gen1) || memcmp(key, gen1, strlen(gen1)) != 0)
        return 0;

    if (len != IDS_SECRET_LEN || !(classes_of(key + 4, len - 4) & BASE62))
        return -EINVAL;
    /* A CRC32 always fits six base62 digits (62^6 > 2^32). */
    if (ids_base62_encode(ids_crc32(key, body), IDS_CHECKSUM_LEN, want) < 0)
        return -EINVAL;
    if (memcmp(want, key + body, IDS_CHECKSUM_LEN) != 0)
        return -EINVAL;
    return 0;
}

bool ids_is_key_id(const char *s)
{
    size_t n;

    if (!s || strncmp(s, "key_", 4) != 0)
        return false;
    n = strnlen(s + 4, 65);
    return n >= 1 && n <= 64 && (classes_of(s + 4, n) & BASE62);
}
