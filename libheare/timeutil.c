/* timeutil: RFC 3339 times and durations, TZ-independent calendar arithmetic. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "timeutil.h"

#define SECS_PER_DAY INT64_C(86400)

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : mdays[m - 1];
}

/* Reads exactly n decimal digits at *p and advances; -1 if they are not all digits. */
static int digits(const char **p, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    return v;
}

static bool expect(const char **p, char c)
{
    if (**p != c)
        return false;
    (*p)++;
    return true;
}

int timeutil_parse_rfc3339(const char *s, bool lenient, int64_t *ret)
{
    const char *p = s;
    int year, mon, day, hour, min, sec, off = 0;

    if (!s)
        return -EINVAL;
    year = digits(&p, 4);
    if (year < 0 || !expect(&p, '-'))
        return -EINVAL;
    mon = digits(&p, 2);
    if (mon < 1 || mon > 12 || !expect(&p, '-'))
        return -EINVAL;
    day = digits(&p, 2);
    if (day < 1 || (unsigned)day > days_in_month(year, (unsigned)mon))
        return -EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -EINVAL;
    p++;
    hour = digits(&p, 2);
    if (hour < 0 || hour > 23 || !expect(&p, ':'))
        return -EINVAL;
    min = digits(&p, 2);
    if (min < 0 || min > 59 || !expect(&p, ':'))
        return -EINVAL;
    sec = digits(&p, 2);
    if (sec < 0 || sec > 60)
        return -EINVAL;

    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        while (*p >= '0' && *p <= '9')
            p++;
    }

    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        oh = digits(&p, 2);
        if (oh < 0 || oh > 23 || !expect(&p, ':'))
            return -EINVAL;
        om = digits(&p, 2);
        if (om < 0 || om > 59)
            return -EINVAL;
        off = sign * (oh * 3600 + om * 60);
    } else if (!lenient || *p != '\0') {
        return -EINVAL;
    }
    if (*p != '\0')
        return -EINVAL;

    /* A leap second (:60) counts as the first second of the next minute, as POSIX time
     * has no room for it. */
    *ret = days_from_civil(year, (unsigned)mon, (unsigned)day) * SECS_PER_DAY + hour * 3600 +
           min * 60 + sec - off;
    return 0;
}

static void put_digits(char *out, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

int timeutil_format_rfc3339(int64_t t, char ret[TIMEUTIL_RFC3339_LEN + 1])
{
    /* 0000-01-01 and 9999-12-31T23:59:59 in Unix seconds. */
    static const int64_t min_t = INT64_C(-62167219200), max_t = INT64_C(253402300799);
    int64_t days, secs, y;
    unsigned m, d;

    if (t < min_t || t > max_t)
        return -ERANGE;
    days = t / SECS_PER_DAY;
    secs = t % SECS_PER_DAY;
    if (secs < 0) {
        secs += SECS_PER_DAY;
        days--;
    }
    civil_from_days(days, &y, &m, &d);
    /* Written digit by digit: the ranges are known, and snprintf cannot prove them. */
    put_digits(ret, (unsigned)y, 4);
    ret[4] = '-';
    put_digits(ret + 5, m, 2);
    ret[7] = '-';
    put_digits(ret + 8, d, 2);
    ret[10] = 'T';
    put_digits(ret + 11, (unsigned)(secs / 3600), 2);
    ret[13] = ':';
    put_digits(ret + 14, (unsigned)(secs / 60 % 60), 2);
    ret[16] = ':';
    put_digits(ret + 17, (unsigned)(secs % 60), 2);
    ret[19] = 'Z';
    ret[20] = '\0';
    return 0;
}

int timeutil_parse_duration(const char *s, int64_t *ret)
{
    int64_t v = 0, mult = 1;
    const char *p = s;

    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        int dgt = *p - '0';
        if (v > (INT64_MAX - dgt) / 10)
            return -EINVAL;
        v = v * 10 + dgt;
    }
    switch (*p) {
    case '\0':
        break;
    case 's':
        break;
    case 'm':
        mult = 60;
        break;
    case 'h':
        mult = 3600;
        break;
    case 'd':
        mult = 86400;
        break;
    case 'w':
        mult = 7 * 86400;
        break;
    default:
        return -EINVAL;
    }
    if (*p != '\0' && p[1] != '\0')
        return -EINVAL;
    if (v > INT64_MAX / mult)
        return -EINVAL;
    *ret = v * mult;
    return 0;
}

int timeutil_parse_when(const char *s, int64_t now, int64_t *ret)
{
    int64_t d;

    if (timeutil_parse_rfc3339(s, false, ret) == 0)
        return 0;
    if (timeutil_parse_duration(s, &d) < 0)
        return -EINVAL;
    if (now > 0 && d > INT64_MAX - now)
        return -EINVAL;
    *ret = now + d;
    return 0;
}

int64_t timeutil_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void timeutil_deadline_ms(struct timespec *ret, uint64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ret);
    ret->tv_sec += (time_t)(ms / 1000);
    ret->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ret->tv_nsec >= 1000000000L) {
        ret->tv_sec++;
        ret->tv_nsec -= 1000000000L;
    }
}

int64_t timeutil_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}
