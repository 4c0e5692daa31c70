/* fuzz-timeutil: RFC 3339 times (every created_at and expires_at of a store document) and
 * durations (the configuration's intervals, the CLI's WHEN). A time read strictly reads
 * the same leniently; one that can be written out reads back to the same second; a
 * duration is never negative. */
#include <errno.h>

#include "fuzz.h"
#include "timeutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_strndup(data, size);
    int64_t strict = 0, lenient = 0, d = 0, when = 0;

    int rs = timeutil_parse_rfc3339(s, false, &strict);
    int rl = timeutil_parse_rfc3339(s, true, &lenient);
    FUZZ_ASSERT(rs == 0 || rs == -EINVAL);
    FUZZ_ASSERT(rl == 0 || rl == -EINVAL);
    if (rs == 0) {
        FUZZ_ASSERT(rl == 0 && lenient == strict);
        char out[TIMEUTIL_RFC3339_LEN + 1];
        int64_t back = 0;
        if (timeutil_format_rfc3339(strict, out) == 0) {
            FUZZ_ASSERT(strlen(out) == TIMEUTIL_RFC3339_LEN);
            FUZZ_ASSERT(timeutil_parse_rfc3339(out, false, &back) == 0 && back == strict);
        }
    }

    int rd = timeutil_parse_duration(s, &d);
    FUZZ_ASSERT(rd == 0 || rd == -EINVAL);
    if (rd == 0)
        FUZZ_ASSERT(d >= 0);
    const int64_t now = INT64_C(1761670000);
    int rw = timeutil_parse_when(s, now, &when);
    if (rs == 0)
        FUZZ_ASSERT(rw == 0 && when == strict);
    else if (rd == 0 && d <= INT64_MAX - now)
        FUZZ_ASSERT(rw == 0 && when == now + d);
    else
        FUZZ_ASSERT(rw == -EINVAL);
    free(s);
    return 0;
}
