/* varlink: message framing shared by the daemon and the client (SPEC §5). Each message is
 * a JSON object followed by NUL, or by '\n' on a connection whose first message ended so
 * ("line mode"). Nothing here allocates or does I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define VARLINK_MESSAGE_MAX (64 * 1024)

typedef enum varlink_framing {
    VARLINK_FRAMING_UNKNOWN = 0, /* decided by the first message */
    VARLINK_FRAMING_NUL,
    VARLINK_FRAMING_LINE,
} varlink_framing;

/* Looks for the next complete message at the start of buf[0..len). With *framing UNKNOWN
 * the first terminator found (NUL or '\n') decides it and *framing is set. Returns 1 with
 * *ret_msg_len (bytes before the terminator) and *ret_consumed (including it); 0 if no
 * complete message is there yet and len <= VARLINK_MESSAGE_MAX; -EMSGSIZE if the message is
 * (or must become) longer than VARLINK_MESSAGE_MAX bytes. */
int varlink_frame_next(const char *buf, size_t len, varlink_framing *framing,
                       size_t *ret_msg_len, size_t *ret_consumed);

/* The terminator byte for a framing (NUL for UNKNOWN and NUL). */
char varlink_terminator(varlink_framing framing);

#define VARLINK_CALL_ONEWAY 0x1u
#define VARLINK_CALL_MORE 0x2u
#define VARLINK_CALL_UPGRADE 0x4u /* asked for; the daemon refuses it (InvalidParameter) */

typedef struct varlink_call {
    json_t *message;         /* owns the whole parsed message */
    const char *method;      /* "io.heare.Auth.Verify", borrowed from message */
    size_t method_len;       /* longer than strlen(method) if the name holds a NUL */
    const json_t *parameters; /* object; an empty one if absent or null (borrowed) */
    unsigned flags;           /* VARLINK_CALL_* */
    /* Read by json-lenient because jansson refused it: strings may hold NULs and values
     * may be json-lenient's marker (unfit, borrowed from message; NULL if none). */
    bool lenient;
    const json_t *unfit;
} varlink_call;

/* Parses one message as a call: a JSON object with a string "method" (a qualified name
 * "iface.Method"), optional object "parameters" (null or absent: an empty object),
 * optional bool "oneway"/"more"/"upgrade"; "more" and "oneway" together are refused; other
 * members are ignored. Valid JSON that jansson
 * refuses is read by json_lenient_load(), and a method name holding a NUL is taken as it
 * is (no such method exists: the caller answers MethodNotFound). Returns 0, or -EPROTO
 * with *reterr_reason (static string) saying what is wrong. */
int varlink_call_parse(const char *msg, size_t len, varlink_call *ret, const char **reterr_reason);

/* Releases what a parsed call owns. */
void varlink_call_done(varlink_call *call);

/* Splits a qualified method "a.b.C.Method" into interface "a.b.C" (length) and the method
 * name. Returns 0, or -EINVAL if there is no dot or either part is empty. */
int varlink_split_method(const char *qualified, size_t *ret_iface_len, const char **ret_method);

/* The common call, scanned without building a JSON tree (the daemon's fast path for
 * Verify): an object with a string "method" and an optional "parameters", null or an
 * object whose members are all strings. Strings point into the message, NUL-terminated in
 * place. */
#define VARLINK_SIMPLE_MAX_PARAMS 4

typedef struct varlink_simple_param {
    const char *name;
    char *value;
    size_t value_len;
} varlink_simple_param;

typedef struct varlink_simple_call {
    const char *method;
    size_t method_len;
    varlink_simple_param params[VARLINK_SIMPLE_MAX_PARAMS];
    size_t n_params;
    char *nuls[2 + 2 * VARLINK_SIMPLE_MAX_PARAMS]; /* where quotes became NULs */
    size_t n_nuls;
} varlink_simple_call;

/* Returns 1 and fills *ret if msg[0..len) is such a call written plainly: members "method"
 * and "parameters" only (each at most once; null parameters are none), at most
 * VARLINK_SIMPLE_MAX_PARAMS distinct parameters, strings of printable ASCII without
 * escapes, nothing after the object. Only then is msg changed: the closing quote of each
 * string becomes a NUL. Returns 0,
 * leaving msg untouched (and *ret with nothing to undo), for anything else, which
 * varlink_call_parse then judges. */
int varlink_call_scan_simple(char *msg, size_t len, varlink_simple_call *ret);

/* Puts back the quotes a successful scan replaced, so that varlink_call_parse can read the
 * message after all. */
void varlink_simple_call_undo(varlink_simple_call *call);
