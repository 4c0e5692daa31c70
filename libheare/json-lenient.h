/* json-lenient: reads the valid JSON (RFC 8259) that jansson refuses whatever its flags:
 * strings with an escaped NUL or a lone surrogate escape, and numbers beyond int64 and
 * double. yajl judges whether the text is JSON at all, then a strict reader builds a
 * jansson tree in which
 *   - such a string keeps its length, each NUL and each lone surrogate being a NUL byte
 *     (so strlen() of its value is shorter than json_string_length());
 *   - such a number is the marker (one value of the tree, found by its address);
 *   - a member whose name is such a string is named by its escaped text as the message
 *     has it (a name with a backslash, which no field has) and its value is the marker.
 * Everything else is read exactly as jansson reads it. It runs only after jansson refused
 * a text, so the common messages never pay for it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* As jansson's JSON_PARSER_MAX_DEPTH: arrays and objects nested deeper are refused. */
#define JSON_LENIENT_MAX_DEPTH 2048

/* A repeated member name is an error (-EEXIST), as with JSON_REJECT_DUPLICATES; without
 * it the last one counts, as jansson does. */
#define JSON_LENIENT_REJECT_DUPLICATES 0x1u

/* Reads text[0..len) (any JSON value, white space around it allowed). Returns 0 with *ret
 * (a new reference) and *ret_marker (borrowed from *ret; NULL if no value needed it);
 * -EPROTO if the text is not JSON, -EEXIST for a repeated name (see flags), -E2BIG for
 * nesting deeper than JSON_LENIENT_MAX_DEPTH, -ENOMEM. Writes the out-parameters only on
 * success. */
int json_lenient_load(const char *text, size_t len, unsigned flags, json_t **ret,
                      json_t **ret_marker);

/* True if v, or anything inside it, is the marker or a string holding a NUL: a value a
 * handler cannot take as it is. With inner_only, a string v itself is not looked at (a
 * caller that reads top-level strings with their length judges those). */
bool json_lenient_holds_unfit(const json_t *v, const json_t *marker, bool inner_only);
