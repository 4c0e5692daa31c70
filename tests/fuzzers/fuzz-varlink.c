/* fuzz-varlink: the Varlink byte stream as a peer sends it. The stream is cut into
 * messages with varlink_frame_next() (framing chosen by the first byte's value modulo 3,
 * or left for the first message to decide), and each message goes through both call readers: the
 * fast-path scanner, varlink_call_scan_simple(), and the full parser,
 * varlink_call_parse(). Whatever the scanner takes, the parser must take too and read the
 * same call; what the scanner refuses or undoes it must leave as it was. */
#include <errno.h>

#include "fuzz.h"
#include "varlink.h"

static void check_call(const char *msg, size_t len)
{
    char *scanned = fuzz_copy(msg, len);
    varlink_simple_call sc;
    varlink_call call;
    const char *reason = NULL;

    int s = varlink_call_scan_simple(scanned, len, &sc);
    FUZZ_ASSERT(s == 0 || s == 1);
    if (s == 0)
        FUZZ_ASSERT(len == 0 || memcmp(scanned, msg, len) == 0);

    int r = varlink_call_parse(msg, len, &call, &reason);
    FUZZ_ASSERT(r == 0 || r == -EPROTO);
    if (r < 0)
        FUZZ_ASSERT(reason != NULL);
    else {
        FUZZ_ASSERT(call.message && call.method && json_is_object(call.parameters));
        FUZZ_ASSERT(!(call.flags & VARLINK_CALL_ONEWAY) || !(call.flags & VARLINK_CALL_MORE));
        FUZZ_ASSERT(call.lenient || !call.unfit);
        if (strlen(call.method) == call.method_len) {
            size_t iface_len;
            const char *name;
            FUZZ_ASSERT(varlink_split_method(call.method, &iface_len, &name) == 0);
        } else
            FUZZ_ASSERT(call.lenient);
    }

    if (s == 1) {
        /* The fast path reads only plain JSON: the full parser must agree on every part. */
        FUZZ_ASSERT(r == 0);
        FUZZ_ASSERT(!call.lenient && call.flags == 0);
        FUZZ_ASSERT(sc.method_len == call.method_len &&
                    memcmp(sc.method, call.method, sc.method_len) == 0);
        FUZZ_ASSERT(sc.method[sc.method_len] == '\0');
        FUZZ_ASSERT(sc.n_params <= VARLINK_SIMPLE_MAX_PARAMS);
        FUZZ_ASSERT(json_object_size(call.parameters) == sc.n_params);
        for (size_t i = 0; i < sc.n_params; i++) {
            const varlink_simple_param *p = &sc.params[i];
            const json_t *v = json_object_get(call.parameters, p->name);
            FUZZ_ASSERT(json_is_string(v));
            FUZZ_ASSERT(json_string_length(v) == p->value_len);
            FUZZ_ASSERT(memcmp(json_string_value(v), p->value, p->value_len) == 0);
            FUZZ_ASSERT(p->value[p->value_len] == '\0');
        }
        varlink_simple_call_undo(&sc);
        FUZZ_ASSERT(memcmp(scanned, msg, len) == 0);
    }
    if (r == 0)
        varlink_call_done(&call);
    free(scanned);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    uint8_t mode = fuzz_byte(&in);
    varlink_framing framing = (varlink_framing)(mode % 3);
    size_t len = in.n, pad = 0;

    /* The length limit is 64 KiB, past what inputs reach: with the first byte 0xfc to 0xff,
     * about 64 KiB of a byte that ends nothing sit in the middle of the stream (rarely, as
     * parsing them is slow). */
    if (mode >= 0xfc)
        pad = VARLINK_MESSAGE_MAX - 2 + (size_t)(mode - 0xfc);
    char *buf = fuzz_malloc(len + pad);
    size_t half = len / 2;
    memcpy(buf, in.p, half);
    memset(buf + half, ' ', pad);
    memcpy(buf + half + pad, in.p + half, len - half);
    len += pad;

    for (size_t off = 0; off <= len;) {
        varlink_framing before = framing;
        size_t msg_len = SIZE_MAX, consumed = SIZE_MAX;
        int r = varlink_frame_next(len > off ? buf + off : NULL, len - off, &framing, &msg_len,
                                   &consumed);
        if (r == 0) {
            FUZZ_ASSERT(len - off <= VARLINK_MESSAGE_MAX && framing == before);
            break;
        }
        if (r < 0) {
            FUZZ_ASSERT(r == -EMSGSIZE && len - off > VARLINK_MESSAGE_MAX && framing == before);
            break;
        }
        FUZZ_ASSERT(r == 1);
        FUZZ_ASSERT(framing != VARLINK_FRAMING_UNKNOWN);
        FUZZ_ASSERT(before == VARLINK_FRAMING_UNKNOWN || before == framing);
        FUZZ_ASSERT(msg_len <= VARLINK_MESSAGE_MAX && consumed == msg_len + 1);
        FUZZ_ASSERT(consumed <= len - off);
        const char *msg = buf + off;
        FUZZ_ASSERT(msg[msg_len] == varlink_terminator(framing));
        FUZZ_ASSERT(!memchr(msg, varlink_terminator(framing), msg_len));
        /* Undecided, the first terminator of either kind decides. */
        if (before == VARLINK_FRAMING_UNKNOWN)
            FUZZ_ASSERT(!memchr(msg, framing == VARLINK_FRAMING_LINE ? '\0' : '\n', msg_len));
        check_call(msg, msg_len);
        off += consumed;
    }
    free(buf);
    return 0;
}
