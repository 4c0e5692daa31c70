/* varlink: finds message boundaries in a byte stream and parses a message as a call. */
#include <errno.h>
#include <string.h>

#include "ascii.h"
#include "json-lenient.h"
#include "json-scan.h"
#include "json-util.h"
#include "varlink.h"

int varlink_frame_next(const char *buf, size_t len, varlink_framing *framing, size_t *ret_msg_len,
                       size_t *ret_consumed)
{
    /* One byte past the maximum is enough to tell "too long" from "not complete yet", and
     * bounds the scan so a flood of bytes without a terminator costs O(max), not O(len). */
    size_t window = len < VARLINK_MESSAGE_MAX + 1 ? len : VARLINK_MESSAGE_MAX + 1;
    varlink_framing f = *framing;
    const char *end = NULL;

    /* An empty buffer may be NULL, which memchr must not see. */
    if (len == 0)
        return 0;
    switch (f) {
    case VARLINK_FRAMING_UNKNOWN: {
        const char *nul = memchr(buf, '\0', window);
        /* Only the part before the first NUL can hold an earlier '\n'. */
        const char *nl = memchr(buf, '\n', nul ? (size_t)(nul - buf) : window);
        if (nl) {
            end = nl;
            f = VARLINK_FRAMING_LINE;
        } else if (nul) {
            end = nul;
            f = VARLINK_FRAMING_NUL;
        }
        break;
    }
    case VARLINK_FRAMING_NUL:
        end = memchr(buf, '\0', window);
        break;
    case VARLINK_FRAMING_LINE:
        end = memchr(buf, '\n', window);
        break;
    default:
        return -EINVAL;
    }

    if (!end)
        return len > VARLINK_MESSAGE_MAX ? -EMSGSIZE : 0;

    size_t msg_len = (size_t)(end - buf);
    if (msg_len > VARLINK_MESSAGE_MAX)
        return -EMSGSIZE;

    *framing = f;
    *ret_msg_len = msg_len;
    *ret_consumed = msg_len + 1;
    return 1;
}

char varlink_terminator(varlink_framing framing)
{
    return framing == VARLINK_FRAMING_LINE ? '\n' : '\0';
}

int varlink_split_method(const char *qualified, size_t *ret_iface_len, const char **ret_method)
{
    if (!qualified)
        return -EINVAL;

    const char *dot = strrchr(qualified, '.');
    if (!dot || dot == qualified || dot[1] == '\0')
        return -EINVAL;

    *ret_iface_len = (size_t)(dot - qualified);
    *ret_method = dot + 1;
    return 0;
}

/* Absent means false; anything but a boolean is an error. */
static int optional_bool(const json_t *message, const char *name, bool *ret)
{
    const json_t *v = json_object_get(message, name);
    if (!v) {
        *ret = false;
        return 0;
    }
    if (!json_is_boolean(v))
        return -EPROTO;
    *ret = json_is_true(v);
    return 0;
}

int varlink_call_parse(const char *msg, size_t len, varlink_call *ret, const char **reterr_reason)
{
    json_error_t error;
    bool oneway, more, upgrade;

    /* JSON_DECODE_ANY so a bare scalar is reported as "not a JSON object" rather than as
     * a syntax error; the trailing-garbage check of json_loadb stays on. */
    _cleanup_json_ json_t *message =
        json_util_loadb(msg, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &error);
    json_t *unfit = NULL;
    bool lenient = false;
    if (!message && json_error_code(&error) == json_error_duplicate_key) {
        *reterr_reason = "duplicate member name";
        return -EPROTO;
    }
    if (!message) {
        /* Valid JSON is never "not JSON": jansson refuses some of it whatever its flags. */
        int r = json_lenient_load(msg, len, JSON_LENIENT_REJECT_DUPLICATES, &message, &unfit);
        if (r < 0) {
            *reterr_reason = r == -EEXIST   ? "duplicate member name"
                             : r == -E2BIG  ? "nested too deeply"
                             : r == -ENOMEM ? "out of memory"
                                            : "not JSON";
            return r == -ENOMEM ? -ENOMEM : -EPROTO;
        }
        lenient = true;
    }
    if (!json_is_object(message)) {
        *reterr_reason = "not a JSON object";
        return -EPROTO;
    }

    const json_t *method = json_object_get(message, "method");
    if (!method) {
        *reterr_reason = "method missing";
        return -EPROTO;
    }
    if (!json_is_string(method)) {
        *reterr_reason = "method is not a string";
        return -EPROTO;
    }

    size_t iface_len, method_len = json_string_length(method);
    const char *method_name;
    /* A name with a NUL is no method's, whatever its C string says. */
    if (strlen(json_string_value(method)) == method_len &&
        varlink_split_method(json_string_value(method), &iface_len, &method_name) < 0) {
        *reterr_reason = "method is not a qualified name";
        return -EPROTO;
    }

    json_t *parameters = json_object_get(message, "parameters");
    /* The reference implementations send null for a call without parameters. */
    if (!parameters || json_is_null(parameters)) {
        /* Stored inside message so the call owns it like a sent one. */
        parameters = json_object();
        if (!parameters || json_object_set_new(message, "parameters", parameters) < 0) {
            *reterr_reason = "out of memory";
            return -ENOMEM;
        }
    } else if (!json_is_object(parameters)) {
        *reterr_reason = "parameters is not an object";
        return -EPROTO;
    }

    if (optional_bool(message, "oneway", &oneway) < 0) {
        *reterr_reason = "oneway is not a boolean";
        return -EPROTO;
    }
    if (optional_bool(message, "more", &more) < 0) {
        *reterr_reason = "more is not a boolean";
        return -EPROTO;
    }
    if (oneway && more) {
        *reterr_reason = "oneway and more both set";
        return -EPROTO;
    }
    /* Read so that a bad value is refused like oneway's; a request for an upgrade is the
     * caller's to refuse (no method takes one), on a connection that stays open. */
    if (optional_bool(message, "upgrade", &upgrade) < 0) {
        *reterr_reason = "upgrade is not a boolean";
        return -EPROTO;
    }

    *ret = (varlink_call){
        .method = json_string_value(method),
        .method_len = method_len,
        .parameters = parameters,
        .flags = (oneway ? VARLINK_CALL_ONEWAY : 0u) | (more ? VARLINK_CALL_MORE : 0u) |
                 (upgrade ? VARLINK_CALL_UPGRADE : 0u),
        .lenient = lenient,
        .unfit = unfit,
    };
    ret->message = TAKE_PTR(message);
    return 0;
}

void varlink_call_done(varlink_call *call)
{
    if (!call)
        return;
    json_decref(call->message);
    *call = (varlink_call){};
}

/* ---- the simple-call scanner ---- */

/* Advances *p past the literal lit if the bytes before end start with it. */
static inline bool skip_literal(char **p, const char *end, const char *lit, size_t n)
{
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}
#define SKIP(p, end, lit) skip_literal(p, end, lit, sizeof(lit) - 1)

/* A plain string's bytes up to its closing quote, which *p is left on. */
static inline bool plain_to_quote(char **p, const char *end)
{
    *p += ascii_plain_span(*p, (size_t)(end - *p));
    return *p < end && **p == '"';
}

/* The end of both scanners: a call whose method is not a qualified name (as
 * varlink_split_method judges it) is left to the full parser, which names the problem;
 * else the n_closes closing quotes in ret->nuls become NULs. */
static bool scan_finish(varlink_simple_call *ret, size_t n_closes)
{
    const char *dot = memrchr(ret->method, '.', ret->method_len);
    if (!dot || dot == ret->method || dot + 1 == ret->method + ret->method_len)
        return false;
    for (size_t i = 0; i < n_closes; i++)
        *ret->nuls[i] = '\0';
    ret->n_nuls = n_closes;
    return true;
}

/* The call as most clients write it (compact JSON, "method" first, as jansson, sd-varlink
 * and the reference Go implementation do): {"method":"M"}, {"method":"M","parameters":null}
 * or {"method":"M","parameters":{"N":"V",…}}. The member
 * names and punctuation are compared as literals rather than read token by token.
 * Returns 1 as varlink_call_scan_simple() does, or -1 for anything else (msg untouched),
 * which the general scanner then reads. */
static int scan_compact(char *msg, size_t len, varlink_simple_call *ret)
{
    char *p = msg, *end = msg + len;
    size_t n_closes = 0, n = 0, name_lens[VARLINK_SIMPLE_MAX_PARAMS];

    if (!SKIP(&p, end, "{\"method\":\""))
        return -1;
    ret->method = p;
    if (!plain_to_quote(&p, end))
        return -1;
    ret->method_len = (size_t)(p - ret->method);
    ret->nuls[n_closes++] = p++;
    if (SKIP(&p, end, ",\"parameters\":null")) {
        /* none, as "parameters":{} */
    } else if (SKIP(&p, end, ",\"parameters\":{") && !SKIP(&p, end, "}")) {
        do {
            varlink_simple_param *prm = &ret->params[n];
            if (n == VARLINK_SIMPLE_MAX_PARAMS || !SKIP(&p, end, "\""))
                return -1;
            prm->name = p;
            if (!plain_to_quote(&p, end))
                return -1;
            name_lens[n] = (size_t)(p - prm->name);
            for (size_t i = 0; i < n; i++)
                if (name_lens[n] == name_lens[i] && memcmp(prm->name, ret->params[i].name, name_lens[n]) == 0)
                    return -1; /* a repeated name: for the full parser to refuse */
            ret->nuls[n_closes++] = p++;
            if (!SKIP(&p, end, ":\""))
                return -1;
            prm->value = p;
            if (!plain_to_quote(&p, end))
                return -1;
            prm->value_len = (size_t)(p - prm->value);
            ret->nuls[n_closes++] = p++;
            n++;
        } while (SKIP(&p, end, ","));
        if (!SKIP(&p, end, "}"))
            return -1;
    }
    if (p + 1 != end || *p != '}')
        return -1;
    ret->n_params = n;
    return scan_finish(ret, n_closes) ? 1 : -1;
}

int varlink_call_scan_simple(char *msg, size_t len, varlink_simple_call *ret)
{
    /* Built in *ret directly (it is the caller's to ignore when 0 is returned). Every
     * string's closing quote goes into ret->nuls, and becomes a NUL only once all of msg
     * passed. */
    size_t n_closes = 0;
    bool have_method = false, have_params = false;
    json_scanner s = {msg, msg + len};
    json_flat_member params[VARLINK_SIMPLE_MAX_PARAMS];
    char *name, *value;
    size_t name_len, value_len;

    ret->n_params = 0;
    ret->n_nuls = 0;
    if (scan_compact(msg, len, ret) > 0)
        return 1;
    ret->n_params = 0;
    if (!json_scan_char(&s, '{'))
        return 0;
    if (json_scan_char(&s, '}'))
        return 0; /* no method: the full parser names the problem */
    do {
        if (!json_scan_string(&s, &name, &name_len) || !json_scan_char(&s, ':'))
            return 0;
        if (JSON_SAME_NAME(name, name_len, "method") && !have_method) {
            if (!json_scan_string(&s, &value, &value_len))
                return 0;
            have_method = true;
            ret->method = value;
            ret->method_len = value_len;
            ret->nuls[n_closes++] = value + value_len;
        } else if (JSON_SAME_NAME(name, name_len, "parameters") && !have_params) {
            have_params = true;
            json_scan_space(&s);
            if (SKIP(&s.p, s.end, "null"))
                continue; /* none; what follows must be ',' or '}' */
            int n = json_scan_flat_object(&s, params, VARLINK_SIMPLE_MAX_PARAMS);
            if (n < 0)
                return 0;
            for (int i = 0; i < n; i++) {
                const json_flat_member *m = &params[i];
                ret->params[i] = (varlink_simple_param){
                    .name = m->name, .value = m->value, .value_len = m->value_len};
                ret->nuls[n_closes++] = m->name + m->name_len;
                ret->nuls[n_closes++] = m->value + m->value_len;
            }
            ret->n_params = (size_t)n;
        } else {
            return 0;
        }
    } while (json_scan_char(&s, ','));
    if (!json_scan_char(&s, '}'))
        return 0;
    json_scan_space(&s);
    if (s.p != s.end || !have_method)
        return 0;
    return scan_finish(ret, n_closes) ? 1 : 0;
}

void varlink_simple_call_undo(varlink_simple_call *call)
{
    for (size_t i = 0; i < call->n_nuls; i++)
        *call->nuls[i] = '"';
    call->n_nuls = 0;
}
