/* varlink-client: one blocking Varlink connection with a deadline on every wait. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "json-util.h"
#include "secret.h"
#include "varlink-client.h"
#include "varlink.h"

/* ListKeys without "more" answers with every key in one reply, so replies may be far larger
 * than the 64 KiB a call may be; this only stops a runaway peer. */
#define REPLY_MAX (64u * 1024 * 1024)
#define BUFFER_MIN (16u * 1024)

struct varlink_client {
    int fd;
    int timeout_ms;
    char *buf;       /* received bytes not yet handed out */
    size_t len;      /* bytes in buf */
    size_t alloc;    /* size of buf */
    size_t scanned;  /* buf[0..scanned) holds no NUL */
    bool continuing; /* the last reply said "continues" */
    int broken;      /* < 0 once the stream is out of step; every later call fails */
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t deadline_after(int timeout_ms)
{
    return now_ns() + (int64_t)timeout_ms * 1000000;
}

/* Milliseconds left until deadline, rounded up so poll never wakes just before it; 0 if
 * it has passed. */
static int remaining_ms(int64_t deadline)
{
    int64_t left = deadline - now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Waits for events on fd until deadline. Returns 0 when ready, -ETIMEDOUT, or -errno. */
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
        /* POLLHUP/POLLERR count as ready: the following read or write reports them. */
        if (r > 0)
            return 0;
    }
}

static int connect_fd(int fd, const struct sockaddr_un *sa, int64_t deadline)
{
    for (;;) {
        if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
            return 0;

        if (errno == EAGAIN) {
            /* A Unix socket whose backlog is full: nothing is in progress (polling would
             * report writable at once), so retry the connect after a short pause. */
            int ms = remaining_ms(deadline);
            if (ms == 0)
                return -ETIMEDOUT;
            (void)poll(NULL, 0, ms < 10 ? ms : 10);
            continue;
        }
        if (errno != EINPROGRESS && errno != EINTR)
            return negative_errno();

        int r = wait_fd(fd, POLLOUT, deadline);
        if (r < 0)
            return r;

        int error = 0;
        socklen_t l = sizeof(error);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &l) < 0)
            return negative_errno();
        return error > 0 ? -error : 0;
    }
}

int varlink_client_connect(const char *path, int timeout_ms, varlink_client **ret)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    if (!path || !*path || timeout_ms <= 0)
        return -EINVAL;
    size_t n = strlen(path);
    if (n >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, n);

    int64_t deadline = deadline_after(timeout_ms);

    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return negative_errno();

    int r = connect_fd(fd, &sa, deadline);
    if (r < 0)
        return r;

    varlink_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->fd = TAKE_FD(fd);
    c->timeout_ms = timeout_ms;
    *ret = c;
    return 0;
}

int varlink_client_set_timeout(varlink_client *c, int timeout_ms)
{
    if (!c || timeout_ms <= 0)
        return -EINVAL;
    c->timeout_ms = timeout_ms;
    return 0;
}

varlink_client *varlink_client_free(varlink_client *c)
{
    if (!c)
        return NULL;
    safe_close(c->fd);
    /* Replies may carry secrets (CreateKey, RotateKey). */
    secret_wipe(c->buf, c->alloc);
    free(c->buf);
    free(c);
    return NULL;
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

/* Grows buf so at least one more byte fits, never beyond REPLY_MAX + 1 (the terminator).
 * The old block is wiped because it may hold a secret. */
static int grow_buffer(varlink_client *c)
{
    if (c->len < c->alloc)
        return 0;
    if (c->alloc >= REPLY_MAX + 1)
        return -EMSGSIZE;

    size_t n = c->alloc < BUFFER_MIN ? BUFFER_MIN : c->alloc * 2;
    if (n > REPLY_MAX + 1)
        n = REPLY_MAX + 1;

    char *b = malloc(n);
    if (!b)
        return -ENOMEM;
    if (c->len > 0)
        memcpy(b, c->buf, c->len);
    secret_wipe(c->buf, c->alloc);
    free(c->buf);
    c->buf = b;
    c->alloc = n;
    return 0;
}

/* Reads until buf holds a NUL-terminated message. Returns its length (without the NUL). */
static int read_message(varlink_client *c, int64_t deadline, size_t *ret_len)
{
    for (;;) {
        const char *nul =
            c->len > c->scanned ? memchr(c->buf + c->scanned, '\0', c->len - c->scanned) : NULL;
        if (nul) {
            *ret_len = (size_t)(nul - c->buf);
            return 0;
        }
        c->scanned = c->len;

        int r = grow_buffer(c);
        if (r < 0)
            return r;

        ssize_t k = recv(c->fd, c->buf + c->len, c->alloc - c->len, MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return negative_errno();
            r = wait_fd(c->fd, POLLIN, deadline);
            if (r < 0)
                return r;
            continue;
        }
        if (k == 0)
            return -ECONNRESET;
        c->len += (size_t)k;
    }
}

/* Drops the first n bytes of buf (a message and its NUL), keeping what was pipelined
 * behind it, and wipes the vacated tail. */
static void consume(varlink_client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    secret_wipe(c->buf + (c->len - n), n);
    c->len -= n;
    c->scanned = 0;
}

/* Parses one reply. Returns 0 or 1 as varlink_client_call does, or -EPROTO. */
static int parse_reply(const char *msg, size_t len, json_t **ret_params, char **ret_error,
                       bool *ret_continues)
{
    json_error_t error;
    _cleanup_json_ json_t *reply = json_util_loadb(msg, len, JSON_REJECT_DUPLICATES, &error);
    if (!json_is_object(reply))
        return -EPROTO;

    const json_t *e = json_object_get(reply, "error");
    if (e && !json_is_string(e))
        return -EPROTO;

    json_t *params = json_object_get(reply, "parameters");
    if (json_is_null(params))
        params = NULL;
    if (params && !json_is_object(params))
        return -EPROTO;

    const json_t *cont = json_object_get(reply, "continues");
    if (cont && !json_is_boolean(cont))
        return -EPROTO;

    _cleanup_free_ char *name = NULL;
    if (e) {
        name = strdup(json_string_value(e));
        if (!name)
            return -ENOMEM;
    }

    _cleanup_json_ json_t *p = params ? json_incref(params) : json_object();
    if (!p)
        return -ENOMEM;

    if (ret_params)
        *ret_params = TAKE_PTR(p);
    if (ret_error)
        *ret_error = e ? TAKE_PTR(name) : NULL;
    *ret_continues = !e && json_is_true(cont);
    return e ? 1 : 0;
}

/* Reads and parses the next reply within deadline; any failure puts the connection out of
 * step for good. */
static int receive_reply(varlink_client *c, int64_t deadline, json_t **ret_params, char **ret_error,
                         bool *ret_continues)
{
    size_t len;
    bool continues;

    int r = read_message(c, deadline, &len);
    if (r < 0)
        return (c->broken = r);

    r = parse_reply(c->buf, len, ret_params, ret_error, &continues);
    consume(c, len + 1);
    if (r < 0)
        return (c->broken = r);

    c->continuing = continues;
    if (ret_continues)
        *ret_continues = continues;
    return r;
}

int varlink_client_call(varlink_client *c, const char *method, const json_t *params, unsigned flags,
                        json_t **ret_params, char **ret_error, bool *ret_continues)
{
    if (!c || !method)
        return -EINVAL;
    if ((flags & VARLINK_CALL_ONEWAY) && (flags & VARLINK_CALL_MORE))
        return -EINVAL;
    if (params && !json_is_object(params))
        return -EINVAL;
    if (c->broken < 0)
        return -ENOTCONN;
    /* Replies of an unfinished "more" call would be taken for this call's. */
    if (c->continuing)
        return -EBUSY;

    int64_t deadline = deadline_after(c->timeout_ms);

    _cleanup_json_ json_t *m = json_object();
    if (!m)
        return -ENOMEM;
    json_t *name = json_string(method);
    if (!name)
        return -EINVAL; /* not UTF-8 */
    if (json_object_set_new(m, "method", name) < 0)
        return -ENOMEM;
    /* Referenced, not copied: a copy of a secret parameter would be freed unwiped. The
     * const is cast away only to take a reference, which jansson counts atomically. */
    if (json_object_set_new(m, "parameters",
                            params ? json_incref((json_t *)params) : json_object()) < 0)
        return -ENOMEM;
    if ((flags & VARLINK_CALL_ONEWAY) && json_object_set_new(m, "oneway", json_true()) < 0)
        return -ENOMEM;
    if ((flags & VARLINK_CALL_MORE) && json_object_set_new(m, "more", json_true()) < 0)
        return -ENOMEM;

    /* json_dumpb into one buffer of the right size: json_dumps would grow its buffer by
     * realloc and leave unwiped copies of a secret parameter behind. */
    size_t n = json_dumpb(m, NULL, 0, JSON_COMPACT);
    if (n == 0)
        return -ENOMEM;
    if (n > VARLINK_MESSAGE_MAX)
        return -EMSGSIZE; /* nothing was sent; the connection is still usable */
    char *s = malloc(n + 1);
    if (!s)
        return -ENOMEM;
    if (json_dumpb(m, s, n, JSON_COMPACT) != n) {
        secret_wipe(s, n);
        free(s);
        return -ENOMEM;
    }
    s[n] = '\0'; /* the terminator: json_dumpb escapes any NUL inside strings */

    int r = send_all(c->fd, s, n + 1, deadline);
    secret_wipe(s, n + 1);
    free(s);
    if (r < 0)
        return (c->broken = r);

    if (flags & VARLINK_CALL_ONEWAY) {
        json_t *empty = json_object();
        if (!empty)
            return -ENOMEM;
        if (ret_params)
            *ret_params = empty;
        else
            json_decref(empty);
        if (ret_error)
            *ret_error = NULL;
        if (ret_continues)
            *ret_continues = false;
        return 0;
    }

    return receive_reply(c, deadline, ret_params, ret_error, ret_continues);
}

int varlink_client_next(varlink_client *c, json_t **ret_params, char **ret_error,
                        bool *ret_continues)
{
    if (!c)
        return -EINVAL;
    if (c->broken < 0)
        return -ENOTCONN;
    if (!c->continuing)
        return -EINVAL;

    return receive_reply(c, deadline_after(c->timeout_ms), ret_params, ret_error, ret_continues);
}
