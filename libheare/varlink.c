/* varlink: finds message boundaries in a byte stream and parses a message as a call. */
#include <errno.h>
#include <string.h>

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
    bool oneway, more;

    /* JSON_DECODE_ANY so a bare scalar is reported as "not a JSON object" rather than as
     * a syntax error; the trailing-garbage check of json_loadb stays on. */
    _cleanup_json_ json_t *message =
        json_loadb(msg, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &error);
    if (!message) {
        *reterr_reason = json_error_code(&error) == json_error_duplicate_key
                             ? "duplicate member name"
                             : "not JSON";
        return -EPROTO;
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

    size_t iface_len;
    const char *method_name;
    if (varlink_split_method(json_string_value(method), &iface_len, &method_name) < 0) {
        *reterr_reason = "method is not a qualified name";
        return -EPROTO;
    }

    json_t *parameters = json_object_get(message, "parameters");
    if (!parameters) {
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

    *ret = (varlink_call){
        .method = json_string_value(method),
        .parameters = parameters,
        .flags = (oneway ? VARLINK_CALL_ONEWAY : 0u) | (more ? VARLINK_CALL_MORE : 0u),
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
