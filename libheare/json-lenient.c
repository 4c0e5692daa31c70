/* json-lenient: valid JSON that jansson refuses, read into a jansson tree. See json-lenient.h. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "ascii.h"
#include "json-lenient.h"
#include "json-util.h"
#include "macro.h"
#include "secret.h"

typedef struct reader {
    const char *p, *end;
    unsigned flags;
    unsigned depth;
    json_t *marker; /* created on first use; the tree holds a reference for each use */
    int err;
} reader;

/* yajl's verdict: one JSON value and nothing else. With no callbacks it converts no
 * number, so a number beyond int64 or double is no error to it. */
static bool yajl_takes(const char *text, size_t len)
{
    yajl_handle h = yajl_alloc(NULL, NULL, NULL);
    if (!h)
        return false;
    bool ok = yajl_parse(h, (const unsigned char *)text, len) == yajl_status_ok &&
              yajl_complete_parse(h) == yajl_status_ok;
    yajl_free(h);
    return ok;
}

/* A decoded string. It may be a key: wiped whole (NULs and all) before it is freed. */
typedef struct decoded {
    char *s;
    size_t len, cap;
} decoded;

static void decoded_wipe(decoded *d)
{
    if (d->s) {
        secret_wipe(d->s, d->cap);
        free(d->s);
    }
    *d = (decoded){0};
}

static int fail(reader *r, int err)
{
    if (r->err == 0)
        r->err = err;
    return err;
}

/* The four white-space bytes of RFC 8259 only (yajl also takes \v and \f). */
static void skip_space(reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static json_t *marker(reader *r)
{
    if (!r->marker)
        r->marker = json_real(0.0);
    if (!r->marker) {
        fail(r, -ENOMEM);
        return NULL;
    }
    return json_incref(r->marker);
}

static int hex4(const char *p, const char *end, unsigned *ret)
{
    unsigned v = 0;
    if (end - p < 4)
        return -EPROTO;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d == 16)
            return -EPROTO;
        v = v * 16 + d;
    }
    *ret = v;
    return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string at r->p (its opening quote), decoded into *ret (NUL-terminated too); *ret_odd
 * if it holds a NUL or a lone surrogate, which become NUL bytes. *ret_raw and *ret_raw_len
 * are its text between the quotes. */
static int read_string(reader *r, decoded *ret, bool *ret_odd, const char **ret_raw,
                       size_t *ret_raw_len)
{
    if (r->p >= r->end || *r->p != '"')
        return fail(r, -EPROTO);
    const char *start = ++r->p;
    /* Decoding never makes the text longer. */
    const char *q = start;
    while (q < r->end && *q != '"')
        q += *q == '\\' && q + 1 < r->end ? 2 : 1;
    if (q >= r->end)
        return fail(r, -EPROTO);
    _cleanup_(decoded_wipe) decoded d = {.cap = (size_t)(q - start) + 1};
    d.s = malloc(d.cap);
    if (!d.s)
        return fail(r, -ENOMEM);
    char *buf = d.s;
    size_t n = 0;
    bool odd = false;
    const char *p = start;
    while (p < q) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20)
            return fail(r, -EPROTO);
        if (c >= 0x80) {
            size_t l = utf8_sequence_len((const unsigned char *)p, (size_t)(q - p));
            if (l == 0)
                return fail(r, -EPROTO);
            memcpy(buf + n, p, l);
            n += l;
            p += l;
            continue;
        }
        if (c != '\\') {
            buf[n++] = (char)c;
            p++;
            continue;
        }
        p++;
        char e = *p++;
        unsigned cp, lo;
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u':
            if (hex4(p, q, &cp) < 0)
                return fail(r, -EPROTO);
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && q - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
                hex4(p + 2, q, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff) {
                p += 6;
                n += put_utf8(buf + n, 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00));
            } else if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff)) {
                odd = true;
                buf[n++] = '\0';
            } else {
                n += put_utf8(buf + n, cp);
            }
            break;
        default:
            return fail(r, -EPROTO);
        }
    }
    buf[n] = '\0';
    d.len = n;
    r->p = q + 1;
    *ret = d;
    d = (decoded){0};
    *ret_odd = odd;
    *ret_raw = start;
    *ret_raw_len = (size_t)(q - start);
    return 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A number as RFC 8259 writes it; one jansson cannot hold becomes the marker. */
static json_t *read_number(reader *r)
{
    const char *start = r->p, *p = r->p, *end = r->end;
    bool integer = true;

    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if (p < end && *p >= '1' && *p <= '9')
        while (p < end && is_digit(*p))
            p++;
    else
        return fail(r, -EPROTO), NULL;
    if (p < end && *p == '.') {
        integer = false;
        if (++p >= end || !is_digit(*p))
            return fail(r, -EPROTO), NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integer = false;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return fail(r, -EPROTO), NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    r->p = p;

    _cleanup_free_ char *s = strndup(start, (size_t)(p - start));
    if (!s)
        return fail(r, -ENOMEM), NULL;
    json_t *v;
    errno = 0;
    if (integer) {
        long long i = strtoll(s, NULL, 10);
        v = errno == ERANGE ? marker(r) : json_integer((json_int_t)i);
    } else {
        /* As jansson: an overflow is refused, an underflow is the nearest double. */
        double d = strtod(s, NULL);
        v = errno == ERANGE && isinf(d) ? marker(r) : json_real(d);
    }
    if (!v)
        fail(r, -ENOMEM);
    return v;
}

static bool literal(reader *r, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0)
        return false;
    r->p += n;
    return true;
}

static json_t *read_value(reader *r);

static json_t *read_object(reader *r)
{
    _cleanup_json_ json_t *obj = json_object();
    if (!obj)
        return fail(r, -ENOMEM), NULL;
    r->p++; /* '{' */
    skip_space(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return TAKE_PTR(obj);
    }
    for (;;) {
        _cleanup_(decoded_wipe) decoded d = {0};
        _cleanup_free_ char *raw_name = NULL;
        size_t raw_len;
        const char *raw, *name;
        bool odd;
        skip_space(r);
        if (read_string(r, &d, &odd, &raw, &raw_len) < 0)
            return NULL;
        name = d.s;
        skip_space(r);
        if (r->p >= r->end || *r->p != ':')
            return fail(r, -EPROTO), NULL;
        r->p++;
        skip_space(r);
        _cleanup_json_ json_t *v = read_value(r);
        if (!v)
            return NULL;
        if (odd) {
            /* A name jansson cannot hold: named as written, its value unfit to take. */
            name = raw_name = strndup(raw, raw_len);
            json_decref(v);
            v = marker(r);
            if (!name || !v)
                return fail(r, -ENOMEM), NULL;
        }
        if ((r->flags & JSON_LENIENT_REJECT_DUPLICATES) && json_object_get(obj, name))
            return fail(r, -EEXIST), NULL;
        if (json_object_set_new(obj, name, TAKE_PTR(v)) < 0)
            return fail(r, -ENOMEM), NULL;
        skip_space(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            return TAKE_PTR(obj);
        }
        return fail(r, -EPROTO), NULL;
    }
}

static json_t *read_array(reader *r)
{
    _cleanup_json_ json_t *arr = json_array();
    if (!arr)
        return fail(r, -ENOMEM), NULL;
    r->p++; /* '[' */
    skip_space(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return TAKE_PTR(arr);
    }
    for (;;) {
        skip_space(r);
        json_t *v = read_value(r);
        if (!v || json_array_append_new(arr, v) < 0)
            return fail(r, -ENOMEM), NULL;
        skip_space(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == ']') {
            r->p++;
            return TAKE_PTR(arr);
        }
        return fail(r, -EPROTO), NULL;
    }
}

static json_t *read_value(reader *r)
{
    if (r->p >= r->end)
        return fail(r, -EPROTO), NULL;
    switch (*r->p) {
    case '{':
    case '[': {
        if (r->depth == JSON_LENIENT_MAX_DEPTH)
            return fail(r, -E2BIG), NULL;
        r->depth++;
        json_t *v = *r->p == '{' ? read_object(r) : read_array(r);
        r->depth--;
        return v;
    }
    case '"': {
        _cleanup_(decoded_wipe) decoded d = {0};
        size_t raw_len;
        const char *raw;
        bool odd;
        if (read_string(r, &d, &odd, &raw, &raw_len) < 0)
            return NULL;
        json_t *v = json_stringn(d.s, d.len);
        if (!v)
            fail(r, -ENOMEM);
        return v;
    }
    case 't':
        return literal(r, "true") ? json_true() : (fail(r, -EPROTO), NULL);
    case 'f':
        return literal(r, "false") ? json_false() : (fail(r, -EPROTO), NULL);
    case 'n':
        return literal(r, "null") ? json_null() : (fail(r, -EPROTO), NULL);
    default:
        return read_number(r);
    }
}

int json_lenient_load(const char *text, size_t len, unsigned flags, json_t **ret,
                      json_t **ret_marker)
{
    if (!yajl_takes(text, len))
        return -EPROTO;

    reader r = {.p = text, .end = text + len, .flags = flags};
    skip_space(&r);
    _cleanup_json_ json_t *v = read_value(&r);
    skip_space(&r);
    if (v && r.p != r.end)
        fail(&r, -EPROTO);
    if (r.err < 0 || !v) {
        json_decref(r.marker);
        return r.err < 0 ? r.err : -EPROTO;
    }
    /* The tree holds the marker wherever it is used: this reference is not needed. */
    json_decref(r.marker);
    *ret_marker = r.marker;
    *ret = TAKE_PTR(v);
    return 0;
}

bool json_lenient_holds_unfit(const json_t *v, const json_t *marker, bool inner_only)
{
    const char *name;
    const json_t *m;
    size_t i;

    if (marker && v == marker)
        return true;
    switch (json_typeof(v)) {
    case JSON_STRING:
        return !inner_only && strlen(json_string_value(v)) != json_string_length(v);
    case JSON_OBJECT:
        json_object_foreach((json_t *)v, name, m)
            if (json_lenient_holds_unfit(m, marker, false))
                return true;
        return false;
    case JSON_ARRAY:
        json_array_foreach(v, i, m)
            if (json_lenient_holds_unfit(m, marker, false))
                return true;
        return false;
    default:
        return false;
    }
}
