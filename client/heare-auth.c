/* heare-auth: the client library's one concern, io.heare.Auth.Verify over one blocking Unix
 * socket connection with one deadline a call.
 *
 * Safe inside any host process: no global state, no signal handlers, SOCK_CLOEXEC and
 * MSG_NOSIGNAL, nothing logged. The request (which holds the key) is written into a buffer
 * of the client's that is wiped as soon as it is sent. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "heare-auth-internal.h"
#include "heare-auth.h"

#define EXPORT __attribute__((visibility("default")))

#define DEFAULT_SOCKET "/run/heare-auth/verify.sock"
#define DEFAULT_TIMEOUT_MS 1000
/* The daemon refuses a call over 64 KiB; a Verify reply is a few hundred bytes, but a key's
 * metadata may be large, so a reply may use the whole limit too. */
#define MESSAGE_MAX (64u * 1024)
#define REPLY_MAX (MESSAGE_MAX + 1)
#define VERIFY_METHOD "io.heare.Auth.Verify"
#define INVALID_PARAMETER "org.varlink.service.InvalidParameter"

struct heare_auth {
    int fd;               /* -1 when not connected */
    bool used;            /* fd has carried a reply: a failure on it may be a daemon restart */
    int timeout_ms;
    struct sockaddr_un sa;
    char *out;            /* the request being sent; wiped after each call */
    size_t out_len;
    char in[REPLY_MAX];   /* bytes received; the last reply stays at the front until the
                           * next call (heare_auth__reply_text) */
    size_t in_len;
    size_t last_len;      /* the last reply's length with its NUL, 0 if none */
    /* What the last result points into. */
    char arena[REPLY_MAX]; /* its strings, decoded: never longer than the reply */
    const char **scopes;
    size_t scopes_alloc;
    const char *error;    /* the Varlink error name of the last error reply, or NULL */
};

static int negative_errno(void)
{
    return errno > 0 ? -errno : -EIO;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Milliseconds left until deadline, rounded up so poll never wakes just before it; 0 once
 * it has passed. */
static int remaining_ms(int64_t deadline)
{
    int64_t left = deadline - now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int ms = remaining_ms(deadline);
        if (ms == 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return negative_errno();
        }
        /* POLLHUP and POLLERR count as ready: the read or write that follows reports them. */
        if (r > 0)
            return 0;
    }
}

static void disconnect(heare_auth *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->used = false;
    c->in_len = 0;
    c->last_len = 0;
}

/* Drops the last reply from the front of in[], keeping what came behind it. */
static void consume_last(heare_auth *c)
{
    if (c->last_len == 0)
        return;
    memmove(c->in, c->in + c->last_len, c->in_len - c->last_len);
    c->in_len -= c->last_len;
    c->last_len = 0;
}

static int connect_socket(heare_auth *c, int64_t deadline)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return negative_errno();

    for (;;) {
        if (connect(fd, (const struct sockaddr *)&c->sa, sizeof(c->sa)) == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            /* A Unix socket whose backlog is full: nothing is in progress, so try again
             * after a short pause. */
            int ms = remaining_ms(deadline);
            if (ms == 0) {
                close(fd);
                return -ETIMEDOUT;
            }
            (void)poll(NULL, 0, ms < 10 ? ms : 10);
            continue;
        }
        int r = -errno;
        if (errno == EINPROGRESS) {
            r = wait_fd(fd, POLLOUT, deadline);
            if (r == 0) {
                int error = 0;
                socklen_t l = sizeof(error);
                r = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &l) < 0 ? negative_errno()
                                                                          : -error;
            }
        }
        if (r < 0) {
            close(fd);
            return r;
        }
        break;
    }
    c->fd = fd;
    c->used = false;
    c->in_len = 0;
    c->last_len = 0;
    return 0;
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return negative_errno();
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r < 0)
                return r;
            continue;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads until in[] holds a NUL-terminated message; returns its length without the NUL. End
 * of stream before it is -ECONNRESET; a reply over the limit -EPROTO. */
static int read_message(heare_auth *c, int64_t deadline, size_t *ret_len)
{
    size_t scanned = 0;

    for (;;) {
        const char *nul = memchr(c->in + scanned, '\0', c->in_len - scanned);
        if (nul) {
            *ret_len = (size_t)(nul - c->in);
            return 0;
        }
        scanned = c->in_len;
        if (c->in_len == sizeof(c->in))
            return -EPROTO;

        /* A reply is never there the moment its call went out: wait first, and save the
         * recv that would only say EAGAIN. */
        int w = wait_fd(c->fd, POLLIN, deadline);
        if (w < 0)
            return w;
        ssize_t k = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return negative_errno();
            int r = wait_fd(c->fd, POLLIN, deadline);
            if (r < 0)
                return r;
            continue;
        }
        if (k == 0)
            return -ECONNRESET;
        c->in_len += (size_t)k;
    }
}

/* ---- the request ------------------------------------------------------------------------- */

/* Appends n bytes; the buffer has room for MESSAGE_MAX + 1 bytes and no more. */
static int put(heare_auth *c, const char *s, size_t n)
{
    if (n > MESSAGE_MAX - c->out_len)
        return -EINVAL;
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    return 0;
}

/* Length of the UTF-8 sequence at s (1 to 4), or 0 if it is not valid UTF-8 (overlong
 * forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_len(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (s[0] >= 0xe0 && s[0] <= 0xef) {
        if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f))
            return 0;
        return 3;
    }
    if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
            return 0;
        return 4;
    }
    return 0;
}

/* Appends ,"name":"value" (the first member without the comma) with value escaped as JSON.
 * A value that is not UTF-8 cannot be sent: -EINVAL. */
static int put_member(heare_auth *c, const char *name, const char *value, bool first)
{
    static const char hex[] = "0123456789abcdef";
    int r;

    if (!first && (r = put(c, ",", 1)) < 0)
        return r;
    if ((r = put(c, "\"", 1)) < 0 || (r = put(c, name, strlen(name))) < 0 ||
        (r = put(c, "\":\"", 3)) < 0)
        return r;

    for (const unsigned char *p = (const unsigned char *)value; *p;) {
        char esc[6];
        size_t n = utf8_len(p);
        if (n == 0)
            return -EINVAL;
        if (n > 1) {
            r = put(c, (const char *)p, n);
        } else if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            r = put(c, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 0xf];
            r = put(c, esc, 6);
        } else {
            r = put(c, (const char *)p, 1);
        }
        if (r < 0)
            return r;
        p += n;
    }
    return put(c, "\"", 1);
}

static int build_request(heare_auth *c, const heare_auth_request *req)
{
    static const char head[] = "{\"method\":\"" VERIFY_METHOD "\",\"parameters\":{";
    int r;

    c->out_len = 0;
    if ((r = put(c, head, sizeof(head) - 1)) < 0 || (r = put_member(c, "key", req->key, true)) < 0)
        return r;
    if (req->scope && (r = put_member(c, "scope", req->scope, false)) < 0)
        return r;
    if (req->require && (r = put_member(c, "require", req->require, false)) < 0)
        return r;
    if (req->user_agent && (r = put_member(c, "user_agent", req->user_agent, false)) < 0)
        return r;
    if (req->client_address &&
        (r = put_member(c, "client_address", req->client_address, false)) < 0)
        return r;
    if ((r = put(c, "}}", 2)) < 0)
        return r;
    /* The frame's terminator; put keeps one byte free for it. */
    c->out[c->out_len++] = '\0';
    return 0;
}

static void wipe_request(heare_auth *c)
{
    explicit_bzero(c->out, c->out_len);
    c->out_len = 0;
}

/* ---- the reply --------------------------------------------------------------------------- */

/* A small strict JSON reader for the one reply shape, in place of a general parser: jansson
 * took longer to build and dump a reply's tree than the daemon takes to answer. Strings are
 * decoded into the client's arena (never longer than the reply itself); unknown members are
 * checked and skipped, so a later daemon may add fields. */
typedef struct reader {
    const char *p, *end;
    char *arena;
    size_t used;
} reader;

#define DEPTH_MAX 64

static void skip_ws(reader *rd)
{
    while (rd->p < rd->end && (*rd->p == ' ' || *rd->p == '\t' || *rd->p == '\n' || *rd->p == '\r'))
        rd->p++;
}

/* Consumes c (after white space) if it is next. */
static bool eat(reader *rd, char ch)
{
    skip_ws(rd);
    if (rd->p < rd->end && *rd->p == ch) {
        rd->p++;
        return true;
    }
    return false;
}

static bool eat_word(reader *rd, const char *w, size_t n)
{
    skip_ws(rd);
    if ((size_t)(rd->end - rd->p) < n || memcmp(rd->p, w, n) != 0)
        return false;
    rd->p += n;
    return true;
}

static int hex4(const char *p, unsigned *ret)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9')
            v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            v |= (unsigned)(ch - 'A' + 10);
        else
            return -EPROTO;
    }
    *ret = v;
    return 0;
}

/* A string, decoded into the arena and NUL-terminated (ret may be NULL to only check it).
 * A \u0000 inside is refused: the result hands out C strings. */
static int read_string(reader *rd, const char **ret)
{
    if (!eat(rd, '"'))
        return -EPROTO;
    char *out = rd->arena + rd->used, *o = out;

    for (;;) {
        if (rd->p >= rd->end)
            return -EPROTO;
        unsigned char ch = (unsigned char)*rd->p++;
        if (ch == '"')
            break;
        if (ch < 0x20)
            return -EPROTO;
        if (ch != '\\') {
            *o++ = (char)ch;
            continue;
        }
        if (rd->p >= rd->end)
            return -EPROTO;
        ch = (unsigned char)*rd->p++;
        switch (ch) {
        case '"': case '\\': case '/': *o++ = (char)ch; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (rd->end - rd->p < 4 || hex4(rd->p, &cp) < 0)
                return -EPROTO;
            rd->p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (rd->end - rd->p < 6 || rd->p[0] != '\\' || rd->p[1] != 'u' ||
                    hex4(rd->p + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                    return -EPROTO;
                rd->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if ((cp >= 0xdc00 && cp <= 0xdfff) || cp == 0) {
                return -EPROTO;
            }
            /* At most 4 bytes for the 6 or 12 read: the arena keeps up. */
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xc0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xe0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                *o++ = (char)(0x80 | (cp & 0x3f));
            } else {
                *o++ = (char)(0xf0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                *o++ = (char)(0x80 | (cp & 0x3f));
            }
            break;
        }
        default:
            return -EPROTO;
        }
    }
    *o++ = '\0';
    if (ret) {
        *ret = out;
        rd->used += (size_t)(o - out);
    }
    return 0;
}

static int skip_number(reader *rd)
{
    skip_ws(rd);
    const char *p = rd->p;
    if (p < rd->end && *p == '-')
        p++;
    if (p >= rd->end || *p < '0' || *p > '9')
        return -EPROTO;
    if (*p == '0')
        p++;
    else
        while (p < rd->end && *p >= '0' && *p <= '9')
            p++;
    if (p < rd->end && *p == '.') {
        const char *d = ++p;
        while (p < rd->end && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return -EPROTO;
    }
    if (p < rd->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < rd->end && (*p == '+' || *p == '-'))
            p++;
        const char *d = p;
        while (p < rd->end && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return -EPROTO;
    }
    rd->p = p;
    return 0;
}

static int skip_value(reader *rd, int depth)
{
    int r;

    if (depth > DEPTH_MAX)
        return -EPROTO;
    skip_ws(rd);
    if (rd->p >= rd->end)
        return -EPROTO;
    switch (*rd->p) {
    case '"':
        return read_string(rd, NULL);
    case '{':
        rd->p++;
        if (eat(rd, '}'))
            return 0;
        do {
            if ((r = read_string(rd, NULL)) < 0)
                return r;
            if (!eat(rd, ':'))
                return -EPROTO;
            if ((r = skip_value(rd, depth + 1)) < 0)
                return r;
        } while (eat(rd, ','));
        return eat(rd, '}') ? 0 : -EPROTO;
    case '[':
        rd->p++;
        if (eat(rd, ']'))
            return 0;
        do {
            if ((r = skip_value(rd, depth + 1)) < 0)
                return r;
        } while (eat(rd, ','));
        return eat(rd, ']') ? 0 : -EPROTO;
    case 't':
        return eat_word(rd, "true", 4) ? 0 : -EPROTO;
    case 'f':
        return eat_word(rd, "false", 5) ? 0 : -EPROTO;
    case 'n':
        return eat_word(rd, "null", 4) ? 0 : -EPROTO;
    default:
        return skip_number(rd);
    }
}

static int read_bool(reader *rd, bool *ret)
{
    if (eat_word(rd, "true", 4))
        *ret = true;
    else if (eat_word(rd, "false", 5))
        *ret = false;
    else
        return -EPROTO;
    return 0;
}

/* A string or null (NULL). */
static int read_opt_string(reader *rd, const char **ret)
{
    if (eat_word(rd, "null", 4)) {
        *ret = NULL;
        return 0;
    }
    return read_string(rd, ret);
}

/* An integer (no fraction, no exponent, within long long) or null (-1). */
static int read_opt_int(reader *rd, long long *ret)
{
    if (eat_word(rd, "null", 4)) {
        *ret = -1;
        return 0;
    }
    skip_ws(rd);
    const char *p = rd->p;
    bool neg = p < rd->end && *p == '-';
    unsigned long long v = 0, max = neg ? (unsigned long long)LLONG_MAX + 1 : LLONG_MAX;
    if (neg)
        p++;
    const char *digits = p;
    while (p < rd->end && *p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p++ - '0');
        if (v > (max - d) / 10)
            return -EPROTO;
        v = v * 10 + d;
    }
    if (p == digits || (*digits == '0' && p - digits > 1) ||
        (p < rd->end && (*p == '.' || *p == 'e' || *p == 'E')))
        return -EPROTO;
    rd->p = p;
    *ret = neg ? (long long)(0 - v) : (long long)v;
    return 0;
}

/* The metadata object, kept as the daemon wrote it, or null. */
static int read_opt_object_text(reader *rd, const char **ret)
{
    if (eat_word(rd, "null", 4)) {
        *ret = NULL;
        return 0;
    }
    skip_ws(rd);
    const char *start = rd->p;
    if (start >= rd->end || *start != '{')
        return -EPROTO;
    int r = skip_value(rd, 0);
    if (r < 0)
        return r;
    size_t n = (size_t)(rd->p - start);
    char *out = rd->arena + rd->used;
    memcpy(out, start, n);
    out[n] = '\0';
    rd->used += n + 1;
    *ret = out;
    return 0;
}

/* The scopes array, or null: the strings into the arena, the pointers into c->scopes. */
static int read_opt_scopes(heare_auth *c, reader *rd, const char *const **ret)
{
    size_t n = 0;
    int r;

    if (eat_word(rd, "null", 4)) {
        *ret = NULL;
        return 0;
    }
    if (!eat(rd, '['))
        return -EPROTO;
    if (!eat(rd, ']')) {
        do {
            const char *s;
            if ((r = read_string(rd, &s)) < 0)
                return r;
            if (n + 1 >= c->scopes_alloc) {
                size_t m = c->scopes_alloc ? c->scopes_alloc * 2 : 16;
                const char **a = realloc(c->scopes, m * sizeof(*a));
                if (!a)
                    return -ENOMEM;
                c->scopes = a;
                c->scopes_alloc = m;
            }
            c->scopes[n++] = s;
        } while (eat(rd, ','));
        if (!eat(rd, ']'))
            return -EPROTO;
    }
    if (n + 1 > c->scopes_alloc) {
        const char **a = realloc(c->scopes, 16 * sizeof(*a));
        if (!a)
            return -ENOMEM;
        c->scopes = a;
        c->scopes_alloc = 16;
    }
    c->scopes[n] = NULL;
    *ret = c->scopes;
    return 0;
}

enum {
    F_VALID = 1u << 0,
    F_CODE = 1u << 1,
    F_KEY_ID = 1u << 2,
    F_NAME = 1u << 3,
    F_METADATA = 1u << 4,
    F_SCOPES = 1u << 5,
    F_EXPIRES_AT = 1u << 6,
    F_RETRY = 1u << 7,
};

/* The parameters object of a Verify reply. A member seen twice is refused. */
static int read_params(heare_auth *c, reader *rd, heare_auth_result *res)
{
    unsigned seen = 0;
    bool valid = false;
    int r;

    if (eat_word(rd, "null", 4))
        return -EPROTO;
    if (!eat(rd, '{'))
        return -EPROTO;
    if (eat(rd, '}'))
        return -EPROTO;
    do {
        const char *name;
        size_t mark = rd->used;
        unsigned bit = 0;

        if ((r = read_string(rd, &name)) < 0)
            return r;
        if (!eat(rd, ':'))
            return -EPROTO;
        if (strcmp(name, "valid") == 0) {
            bit = F_VALID;
            r = read_bool(rd, &valid);
        } else if (strcmp(name, "code") == 0) {
            bit = F_CODE;
            r = read_string(rd, &res->code);
        } else if (strcmp(name, "key_id") == 0) {
            bit = F_KEY_ID;
            r = read_opt_string(rd, &res->key_id);
        } else if (strcmp(name, "name") == 0) {
            bit = F_NAME;
            r = read_opt_string(rd, &res->name);
        } else if (strcmp(name, "metadata") == 0) {
            bit = F_METADATA;
            r = read_opt_object_text(rd, &res->metadata_json);
        } else if (strcmp(name, "scopes") == 0) {
            bit = F_SCOPES;
            r = read_opt_scopes(c, rd, &res->scopes);
        } else if (strcmp(name, "expires_at") == 0) {
            bit = F_EXPIRES_AT;
            r = read_opt_string(rd, &res->expires_at);
        } else if (strcmp(name, "retry_after_ms") == 0) {
            bit = F_RETRY;
            r = read_opt_int(rd, &res->retry_after_ms);
        } else {
            rd->used = mark; /* the name is not kept */
            r = skip_value(rd, 1);
        }
        if (r < 0)
            return r;
        if (seen & bit)
            return -EPROTO;
        seen |= bit;
    } while (eat(rd, ','));
    if (!eat(rd, '}'))
        return -EPROTO;
    if ((seen & (F_VALID | F_CODE)) != (F_VALID | F_CODE))
        return -EPROTO;
    res->valid = valid;
    return 0;
}

/* Parses one reply into *ret. An error reply is -EINVAL for InvalidParameter (an argument
 * the daemon refused) and -EPROTO for any other; its name is kept in c->error. */
static int parse_reply(heare_auth *c, const char *msg, size_t len, heare_auth_result *ret)
{
    heare_auth_result res = {.retry_after_ms = -1};
    reader rd = {.p = msg, .end = msg + len, .arena = c->arena};
    const char *error = NULL;
    bool have_error = false, have_continues = false, continues = false;
    int params = 0; /* 1: a Verify answer; 2: present, but not one */
    int r;

    if (!eat(&rd, '{') || eat(&rd, '}'))
        return -EPROTO;
    do {
        const char *name;
        size_t mark = rd.used;

        if ((r = read_string(&rd, &name)) < 0)
            return r;
        if (!eat(&rd, ':'))
            return -EPROTO;
        if (strcmp(name, "parameters") == 0) {
            if (params)
                return -EPROTO;
            params = 1;
            /* Read as a Verify answer only if no error came first; an error's parameters
             * (any shape) are skipped. */
            if (have_error)
                r = skip_value(&rd, 1);
            else {
                const char *at = rd.p;
                r = read_params(c, &rd, &res);
                if (r == -EPROTO) {
                    /* Perhaps an error reply whose "error" member comes later. */
                    rd.p = at;
                    rd.used = mark;
                    r = skip_value(&rd, 1);
                    params = 2;
                }
            }
        } else if (strcmp(name, "error") == 0) {
            if (have_error)
                return -EPROTO;
            have_error = true;
            r = read_string(&rd, &error);
        } else if (strcmp(name, "continues") == 0) {
            if (have_continues)
                return -EPROTO;
            have_continues = true;
            r = read_bool(&rd, &continues);
        } else {
            rd.used = mark;
            r = skip_value(&rd, 1);
        }
        if (r < 0)
            return r;
    } while (eat(&rd, ','));
    if (!eat(&rd, '}'))
        return -EPROTO;
    skip_ws(&rd);
    if (rd.p != rd.end)
        return -EPROTO;

    if (have_error) {
        c->error = error;
        return strcmp(error, INVALID_PARAMETER) == 0 ? -EINVAL : -EPROTO;
    }
    if (params != 1 || continues)
        return -EPROTO;
    *ret = res;
    return 0;
}

/* ---- the calls --------------------------------------------------------------------------- */

/* A failure that a restarted daemon explains: the old connection is gone. */
static bool broken_connection(int r)
{
    return r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN;
}

/* Connects if need be, sends the request and reads one reply; on a connection that had
 * already carried a reply and turns out broken, connects again once. Every failure drops the
 * connection: a late reply to this call would otherwise be taken for the next call's. */
static int exchange(heare_auth *c, int64_t deadline, size_t *ret_len)
{
    for (int attempt = 0;; attempt++) {
        int r;
        bool reused = c->fd >= 0 && c->used;

        if (c->fd < 0 && (r = connect_socket(c, deadline)) < 0)
            return r;
        r = send_all(c->fd, c->out, c->out_len, deadline);
        if (r == 0)
            r = read_message(c, deadline, ret_len);
        if (r == 0) {
            c->used = true;
            return 0;
        }
        disconnect(c);
        if (!(reused && attempt == 0 && broken_connection(r)))
            return r;
    }
}

EXPORT int heare_auth_verify_request(heare_auth *c, const heare_auth_request *req,
                                     heare_auth_result *ret)
{
    size_t len;
    int r;

    if (!c || !req || !req->key || !ret)
        return -EINVAL;
    consume_last(c);
    c->error = NULL;

    int64_t deadline = now_ns() + (int64_t)c->timeout_ms * 1000000;
    r = build_request(c, req);
    if (r >= 0)
        r = exchange(c, deadline, &len);
    wipe_request(c);
    if (r < 0)
        return r;

    /* The reply stays at the front of in[] until the next call, with whatever came behind
     * it (nothing, from a daemon that follows the protocol). */
    c->last_len = len + 1;
    r = parse_reply(c, c->in, len, ret);
    if (r == -EPROTO && !c->error)
        disconnect(c); /* a peer that does not speak Verify: start afresh next time */
    return r;
}

EXPORT int heare_auth_verify(heare_auth *c, const char *key, const char *scope,
                             heare_auth_result *ret)
{
    heare_auth_request req = {.key = key, .scope = scope};
    return heare_auth_verify_request(c, &req, ret);
}

EXPORT int heare_auth_open(heare_auth **ret, const char *socket_path, int timeout_ms)
{
    if (!ret)
        return -EINVAL;
    if (!socket_path) {
        socket_path = getenv("HEARE_AUTH_VERIFY_SOCKET");
        if (!socket_path || !*socket_path)
            socket_path = DEFAULT_SOCKET;
    }
    if (!*socket_path)
        return -EINVAL;

    heare_auth *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    size_t n = strlen(socket_path);
    if (n >= sizeof(c->sa.sun_path)) {
        free(c);
        return -ENAMETOOLONG;
    }
    c->sa.sun_family = AF_UNIX;
    memcpy(c->sa.sun_path, socket_path, n);
    c->out = malloc(MESSAGE_MAX + 1);
    if (!c->out) {
        free(c);
        return -ENOMEM;
    }
    c->fd = -1;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
    *ret = c;
    return 0;
}

EXPORT void heare_auth_close(heare_auth *c)
{
    if (!c)
        return;
    disconnect(c);
    free(c->scopes);
    explicit_bzero(c->out, MESSAGE_MAX + 1);
    free(c->out);
    free(c);
}

EXPORT const char *heare_auth_strerror(int err)
{
    switch (err < 0 ? -err : err) {
    case 0:
        return "success";
    case ETIMEDOUT:
        return "heare-authd did not answer in time";
    case ECONNREFUSED:
        return "nothing listens on the heare-authd socket (is heare-authd running?)";
    case ENOENT:
        return "no heare-authd socket at that path (is heare-authd running?)";
    case EACCES:
        return "permission denied on the heare-authd socket (is the caller in group heare-auth?)";
    case EPROTO:
        return "heare-authd sent a reply that is not a Verify answer";
    case EINVAL:
        return "invalid argument (a NULL key, a string that is not UTF-8, a request over "
               "64 KiB, or a parameter heare-authd refused)";
    case ENAMETOOLONG:
        return "socket path too long";
    case ENOMEM:
        return "out of memory";
    case ECONNRESET:
    case EPIPE:
        return "heare-authd closed the connection";
    }
    /* strerrordesc_np, unlike strerror, is thread-safe and never formats into a buffer. */
    const char *s = strerrordesc_np(err < 0 ? -err : err);
    return s ? s : "unknown error";
}

const char *heare_auth__error_name(const heare_auth *c)
{
    return c ? c->error : NULL;
}

const char *heare_auth__reply_text(const heare_auth *c, size_t *ret_len)
{
    if (!c || c->last_len == 0)
        return NULL;
    *ret_len = c->last_len - 1;
    return c->in;
}
