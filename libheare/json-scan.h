/* json-scan: the hot paths' JSON reader, for the messages clients write plainly: objects
 * whose members are strings of plain bytes (ascii.h), with no escapes. It builds no tree
 * and changes nothing; anything it does not take, the caller hands to jansson, which
 * judges it and names the problem. Used for the Varlink fast path and HTTP POST /verify. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "ascii.h"

typedef struct json_scanner {
    char *p, *end;
} json_scanner;

/* One member of a flat object: name[0..name_len) and value[0..value_len), each followed by
 * its closing quote in the message. */
typedef struct json_flat_member {
    char *name;
    size_t name_len;
    char *value;
    size_t value_len;
} json_flat_member;

static inline bool json_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static inline void json_scan_space(json_scanner *s)
{
    /* Most messages have no white space at all: one comparison a token for them. */
    while (s->p < s->end && (unsigned char)*s->p <= ' ' && json_is_space(*s->p))
        s->p++;
}

static inline bool json_scan_char(json_scanner *s, char c)
{
    json_scan_space(s);
    if (s->p >= s->end || *s->p != c)
        return false;
    s->p++;
    return true;
}

/* A string of plain bytes; *ret_len is its length, its closing quote follows. Inlined, so
 * that the scanner's position stays in a register. */
static inline __attribute__((always_inline)) bool json_scan_string(json_scanner *s,
                                                                   char **ret_start,
                                                                   size_t *ret_len)
{
    if (!json_scan_char(s, '"'))
        return false;
    char *start = s->p;
    char *p = start + ascii_plain_span(start, (size_t)(s->end - start));
    if (p >= s->end || *p != '"')
        return false;
    *ret_start = start;
    *ret_len = (size_t)(p - start);
    s->p = p + 1;
    return true;
}

static inline bool json_same_name(const char *a, size_t a_len, const char *lit, size_t lit_len)
{
    return a_len == lit_len && memcmp(a, lit, lit_len) == 0;
}
#define JSON_SAME_NAME(a, a_len, lit) json_same_name(a, a_len, lit, sizeof(lit) - 1)

/* Reads an object {"name":"value",…} at s (white space allowed between tokens) into m:
 * at most max members, names distinct. Returns the number of members and leaves s after
 * the '}', or -1 for anything else (a repeated name, a value that is not a plain string,
 * more than max members), with s anywhere. */
int json_scan_flat_object(json_scanner *s, json_flat_member *m, size_t max);
