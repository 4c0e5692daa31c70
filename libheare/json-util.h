/* json-util: cleanup helpers for jansson values (jansson itself provides json_decrefp), and
 * the one way the project parses JSON text with jansson. */
#pragma once

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "macro.h"

#define _cleanup_json_ _cleanup_(json_decrefp)

/* json_loadb(), but a text holding a NUL byte is refused, as RFC 8259 refuses it: jansson
 * 2.14 drops a NUL that directly follows a number or a literal ("[1\0]",
 * "{\"version\":2\0,…}") and takes the rest. The error reads like jansson's own (code
 * json_error_invalid_syntax, line, column and position of the NUL). */
static inline json_t *json_util_loadb(const char *buf, size_t len, size_t flags,
                                      json_error_t *error)
{
    const char *nul = len ? memchr(buf, '\0', len) : NULL;
    if (!nul)
        return json_loadb(buf, len, flags, error);
    if (error) {
        const char *line = buf;
        int n = 1;
        for (const char *p = buf; p < nul; p++)
            if (*p == '\n') {
                n++;
                line = p + 1;
            }
        *error = (json_error_t){.line = n, .column = (int)(nul - line) + 1,
                                .position = (int)(nul - buf)};
        snprintf(error->source, sizeof(error->source), "<buffer>");
        snprintf(error->text, sizeof(error->text), "NUL byte in the text");
        error->text[JSON_ERROR_TEXT_LENGTH - 1] = (char)json_error_invalid_syntax;
    }
    return NULL;
}
