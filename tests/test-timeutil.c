/* test-timeutil: RFC 3339 parsing (strict and lenient), formatting, durations and WHEN. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "macro.h"
#include "timeutil.h"

static const int64_t SENTINEL = INT64_C(0x5EE5EE5EE5);

static void test_parse_good(void)
{
    static const struct {
        const char *s;
        bool lenient_only;
        int64_t want;
    } cases[] = {
        {"1970-01-01T00:00:00Z", false, 0},
        {"2025-10-28T16:45:18Z", false, 1761669918},
        {"2025-10-28t16:45:18z", false, 1761669918},
        {"2025-10-28 16:45:18Z", false, 1761669918},
        {"2025-10-28T16:45:18.123456Z", false, 1761669918},
        {"2025-10-28T16:45:18.9Z", false, 1761669918},
        {"2025-10-28T16:45:18+01:00", false, 1761669918 - 3600},
        {"2025-10-28T16:45:18-01:00", false, 1761669918 + 3600},
        {"2025-10-28T16:45:18+00:00", false, 1761669918},
        {"2025-10-28T16:45:18-00:00", false, 1761669918},
        {"2025-10-28T16:45:18+05:30", false, 1761669918 - 19800},
        {"2025-10-28T16:45:18.5-23:59", false, 1761669918 + 86340},
        {"2000-02-29T12:00:00Z", false, 951825600},
        {"2024-02-29T00:00:00Z", false, 1709164800},
        {"1969-12-31T23:59:59Z", false, -1},
        {"1900-03-01T00:00:00Z", false, -2203891200},
        {"1600-01-01T00:00:00Z", false, -11676096000},
        {"0000-01-01T00:00:00Z", false, -62167219200},
        {"9999-12-31T23:59:59Z", false, 253402300799},
        {"2016-12-31T23:59:60Z", false, 1483228800}, /* leap second = next minute */
        {"2025-10-28T16:45:18", true, 1761669918},
        {"2025-10-28T16:45:18.123456", true, 1761669918},
        {"2025-10-28 16:45:18", true, 1761669918},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        int64_t t = SENTINEL;
        int r = timeutil_parse_rfc3339(cases[i].s, true, &t);
        if (r != 0 || t != cases[i].want) {
            fprintf(stderr, "lenient '%s': r=%d t=%lld, expected %lld\n", cases[i].s, r,
                    (long long)t, (long long)cases[i].want);
            exit(1);
        }
        t = SENTINEL;
        r = timeutil_parse_rfc3339(cases[i].s, false, &t);
        if (cases[i].lenient_only) {
            if (r != -EINVAL || t != SENTINEL) {
                fprintf(stderr, "strict '%s' accepted\n", cases[i].s);
                exit(1);
            }
        } else if (r != 0 || t != cases[i].want) {
            fprintf(stderr, "strict '%s': r=%d t=%lld\n", cases[i].s, r, (long long)t);
            exit(1);
        }
    }
}

static void test_parse_bad(void)
{
    static const char *const bad[] = {
        "",
        "2025",
        "2025-10-28",
        "2025-10-28T",
        "2025-10-28T16:45Z",
        "2025-10-28T16:45:18ZZ",
        "2025-10-28T16:45:18Z ",
        " 2025-10-28T16:45:18Z",
        "2025-10-28X16:45:18Z",
        "2025-10-28T16:45:18.Z",
        "2025-10-28T16:45:18,5Z",
        "2025-10-28T16:45:18+01",
        "2025-10-28T16:45:18+0100",
        "2025-10-28T16:45:18+24:00",
        "2025-10-28T16:45:18+01:60",
        "2025-10-28T16:45:18+1:00",
        "2025-10-28T16:45:18 +01:00",
        "2025-10-28T16:45:18UTC",
        "2025-00-28T16:45:18Z",
        "2025-13-28T16:45:18Z",
        "2025-10-00T16:45:18Z",
        "2025-10-32T16:45:18Z",
        "2025-04-31T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "2025-02-30T00:00:00Z",
        "2025-10-28T24:00:00Z",
        "2025-10-28T16:60:18Z",
        "2025-10-28T16:45:61Z",
        "25-10-28T16:45:18Z",
        "20251-10-28T16:45:18Z",
        "2025-1-28T16:45:18Z",
        "2025-10-2T16:45:18Z",
        "2025-10-28T6:45:18Z",
        "2025/10/28T16:45:18Z",
        "-2025-10-28T16:45:18Z",
        "2025-10-28T16:45:18.123abc",
        "2025-10-28T16:45:18Z\n",
        "9d",
        "now",
    };

    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        for (int lenient = 0; lenient <= 1; lenient++) {
            int64_t t = SENTINEL;
            int r = timeutil_parse_rfc3339(bad[i], lenient, &t);
            if (r != -EINVAL || t != SENTINEL) {
                fprintf(stderr, "'%s' (lenient=%d): r=%d, expected -EINVAL\n", bad[i], lenient, r);
                exit(1);
            }
        }
    }
    int64_t t;
    CHECK_INT(timeutil_parse_rfc3339(NULL, true, &t), -EINVAL);
}

static void test_format(void)
{
    static const struct {
        int64_t t;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00Z"},
        {1761669918, "2025-10-28T16:45:18Z"},
        {-1, "1969-12-31T23:59:59Z"},
        {951825600, "2000-02-29T12:00:00Z"},
        {-2203891200, "1900-03-01T00:00:00Z"},
        {-62167219200, "0000-01-01T00:00:00Z"},
        {253402300799, "9999-12-31T23:59:59Z"},
        {4102444800, "2100-01-01T00:00:00Z"},
    };
    char buf[TIMEUTIL_RFC3339_LEN + 1];

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        CHECK_INT(timeutil_format_rfc3339(cases[i].t, buf), 0);
        CHECK_STR(buf, cases[i].want);
        int64_t back = SENTINEL;
        CHECK_INT(timeutil_parse_rfc3339(buf, false, &back), 0);
        CHECK_INT(back, cases[i].t);
    }
    CHECK_INT(timeutil_format_rfc3339(253402300800, buf), -ERANGE);
    CHECK_INT(timeutil_format_rfc3339(-62167219201, buf), -ERANGE);
    CHECK_INT(timeutil_format_rfc3339(INT64_MAX, buf), -ERANGE);
    CHECK_INT(timeutil_format_rfc3339(INT64_MIN, buf), -ERANGE);

    /* Round trip over a spread of times, every day boundary included. */
    for (int64_t t = -62167219200; t <= 253402300799; t += 86399 * 37 + 13) {
        int64_t back = SENTINEL;
        CHECK_INT(timeutil_format_rfc3339(t, buf), 0);
        CHECK_INT(timeutil_parse_rfc3339(buf, false, &back), 0);
        CHECK_INT(back, t);
    }
}

static void test_durations(void)
{
    static const struct {
        const char *s;
        int r;
        int64_t want;
    } cases[] = {
        {"0", 0, 0},
        {"1", 0, 1},
        {"3600", 0, 3600},
        {"3600s", 0, 3600},
        {"30m", 0, 1800},
        {"12h", 0, 43200},
        {"90d", 0, 7776000},
        {"2w", 0, 1209600},
        {"007s", 0, 7},
        {"9223372036854775807", 0, INT64_MAX},
        {"9223372036854775807s", 0, INT64_MAX},
        {"153722867280912930m", 0, INT64_C(153722867280912930) * 60},
        {"", -EINVAL, 0},
        {"-5", -EINVAL, 0},
        {"-5s", -EINVAL, 0},
        {"+5", -EINVAL, 0},
        {"1.5h", -EINVAL, 0},
        {"10x", -EINVAL, 0},
        {"h", -EINVAL, 0},
        {"s", -EINVAL, 0},
        {"10ss", -EINVAL, 0},
        {"10 s", -EINVAL, 0},
        {" 10s", -EINVAL, 0},
        {"10s ", -EINVAL, 0},
        {"1h30m", -EINVAL, 0},
        {"10S", -EINVAL, 0},
        {"10ms", -EINVAL, 0},
        {"9223372036854775808", -EINVAL, 0},
        {"99999999999999999999999", -EINVAL, 0},
        {"153722867280912931m", -EINVAL, 0},
        {"2562047788015216h", -EINVAL, 0},
        {"106751991167301d", -EINVAL, 0},
        {"15250284452472w", -EINVAL, 0},
    };

    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        int64_t d = SENTINEL;
        int r = timeutil_parse_duration(cases[i].s, &d);
        int64_t want = cases[i].r == 0 ? cases[i].want : SENTINEL;
        if (r != cases[i].r || d != want) {
            fprintf(stderr, "duration '%s': r=%d d=%lld, expected r=%d d=%lld\n", cases[i].s, r,
                    (long long)d, cases[i].r, (long long)want);
            exit(1);
        }
    }
    int64_t d;
    CHECK_INT(timeutil_parse_duration(NULL, &d), -EINVAL);
    /* 106751991167300d still fits. */
    CHECK_INT(timeutil_parse_duration("106751991167300d", &d), 0);
    CHECK_INT(d, INT64_C(106751991167300) * 86400);
}

static void test_when(void)
{
    const int64_t now = 1761669918;
    int64_t t = SENTINEL;

    CHECK_INT(timeutil_parse_when("90d", now, &t), 0);
    CHECK_INT(t, now + 90 * 86400);
    CHECK_INT(timeutil_parse_when("3600", now, &t), 0);
    CHECK_INT(t, now + 3600);
    CHECK_INT(timeutil_parse_when("2030-01-01T00:00:00Z", now, &t), 0);
    CHECK_INT(t, 1893456000);
    CHECK_INT(timeutil_parse_when("2030-01-01T01:00:00+01:00", now, &t), 0);
    CHECK_INT(t, 1893456000);

    static const char *const bad[] = {
        "", "tomorrow", "2030-01-01T00:00:00", "2030-01-01", "-1d", "1.5h", "9223372036854775807",
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        t = SENTINEL;
        int r = timeutil_parse_when(bad[i], now, &t);
        if (r != -EINVAL || t != SENTINEL) {
            fprintf(stderr, "when '%s': r=%d\n", bad[i], r);
            exit(1);
        }
    }
}

static void test_tz_independent(void)
{
    int64_t a, b;
    char buf[TIMEUTIL_RFC3339_LEN + 1];

    CHECK_INT(setenv("TZ", "America/New_York", 1), 0);
    CHECK_INT(timeutil_parse_rfc3339("2025-10-28T16:45:18", true, &a), 0);
    CHECK_INT(timeutil_format_rfc3339(a, buf), 0);
    CHECK_INT(setenv("TZ", "Asia/Kolkata", 1), 0);
    CHECK_INT(timeutil_parse_rfc3339("2025-10-28T16:45:18", true, &b), 0);
    CHECK_INT(a, 1761669918);
    CHECK_INT(b, 1761669918);
    CHECK_STR(buf, "2025-10-28T16:45:18Z");
    unsetenv("TZ");

    int64_t now = timeutil_now();
    CHECK(now > 1700000000); /* after 2023-11 */
}

static void test_deadline(void)
{
    struct timespec before, deadline, after;
    clock_gettime(CLOCK_MONOTONIC, &before);
    timeutil_deadline_ms(&deadline, 1999);
    clock_gettime(CLOCK_MONOTONIC, &after);
    CHECK(deadline.tv_nsec >= 0 && deadline.tv_nsec < 1000000000L);
    int64_t lo = (int64_t)before.tv_sec * 1000000000 + before.tv_nsec + 1999000000LL;
    int64_t hi = (int64_t)after.tv_sec * 1000000000 + after.tv_nsec + 1999000000LL;
    int64_t d = (int64_t)deadline.tv_sec * 1000000000 + deadline.tv_nsec;
    CHECK(d >= lo && d <= hi);
}

int main(void)
{
    test_parse_good();
    test_deadline();
    test_parse_bad();
    test_format();
    test_durations();
    test_when();
    test_tz_independent();
    return 0;
}
