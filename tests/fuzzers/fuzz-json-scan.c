/* fuzz-json-scan: the hot paths' flat-object reader. Whatever json_scan_flat_object()
 * takes must be a JSON object that jansson reads to the same members, and it must change
 * nothing and point only inside what it was given. */
#include <jansson.h>

#include "fuzz.h"
#include "json-util.h"
#include "json-scan.h"

#define MAX_MEMBERS 6

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    size_t max = fuzz_byte(&in) % (MAX_MEMBERS + 1);
    char *buf = fuzz_copy(in.p, in.n);
    json_scanner s = {buf, buf + in.n};
    json_flat_member m[MAX_MEMBERS];

    int n = json_scan_flat_object(&s, m, max);
    FUZZ_ASSERT(n >= -1 && n <= (int)max);
    FUZZ_ASSERT(in.n == 0 || memcmp(buf, in.p, in.n) == 0);
    if (n >= 0) {
        FUZZ_ASSERT(s.p > buf && s.p <= buf + in.n && s.p[-1] == '}');
        json_error_t err;
        json_t *o = json_util_loadb(buf, (size_t)(s.p - buf), JSON_REJECT_DUPLICATES, &err);
        FUZZ_ASSERT(json_is_object(o));
        FUZZ_ASSERT(json_object_size(o) == (size_t)n);
        for (int i = 0; i < n; i++) {
            FUZZ_ASSERT(m[i].name > buf && m[i].name + m[i].name_len < s.p);
            FUZZ_ASSERT(m[i].value > buf && m[i].value + m[i].value_len < s.p);
            FUZZ_ASSERT(m[i].name[m[i].name_len] == '"' && m[i].value[m[i].value_len] == '"');
            const json_t *v = json_object_getn(o, m[i].name, m[i].name_len);
            FUZZ_ASSERT(json_is_string(v) && json_string_length(v) == m[i].value_len);
            FUZZ_ASSERT(memcmp(json_string_value(v), m[i].value, m[i].value_len) == 0);
        }
        json_decref(o);

        /* The rest of the text as the callers read it: space, then their own end check. */
        json_scan_space(&s);
        FUZZ_ASSERT(s.p <= buf + in.n);
        FUZZ_ASSERT(s.p == buf + in.n || !json_is_space(*s.p));
    }
    free(buf);
    return 0;
}
