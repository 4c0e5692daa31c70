/* heare-auth: the client library's one concern, io.heare.Auth.Verify over one blocking Unix
 * socket connection with one deadline a call.
 *
 * Safe inside any host process: no global state, no signal handlers, SOCK_CLOEXEC and
 * MSG_NOSIGNAL, nothing logged. The request (which holds the key) is written into a buffer
 * of the client's that is wiped as soon as it is sent. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

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
    char in[REPLY_MAX];   /* bytes received and not yet consumed */
    size_t in_len;
    /* What the last result points into. */
    json_t *reply;        /* its parameters */
    char *metadata_json;
    const char **scopes;
    char *error;          /* the Varlink error name of the last error reply, or NULL */
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

static void drop_result(heare_auth *c)
{
    json_decref(c->reply);
    c->reply = NULL;
    free(c->metadata_json);
    c->metadata_json = NULL;
    free(c->scopes);
    c->scopes = NULL;
    free(c->error);
    c->error = NULL;
}

/* A member that must be a string or absent (null counts as absent). */
static int opt_string(const json_t *params, const char *name, const char **ret)
{
    const json_t *v = json_object_get(params, name);
    if (!v || json_is_null(v)) {
        *ret = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return -EPROTO;
    *ret = json_string_value(v);
    return 0;
}

/* Parses one reply into c's result fields and *ret. An error reply is -EINVAL for
 * InvalidParameter (an argument the daemon refused) and -EPROTO for any other. */
static int parse_reply(heare_auth *c, const char *msg, size_t len, heare_auth_result *ret)
{
    heare_auth_result res = {.retry_after_ms = -1};
    json_error_t jerr;
    int r = -EPROTO;

    json_t *doc = json_loadb(msg, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc))
        goto out;

    const json_t *e = json_object_get(doc, "error");
    if (e) {
        if (!json_is_string(e))
            goto out;
        c->error = strdup(json_string_value(e));
        if (!c->error) {
            r = -ENOMEM;
            goto out;
        }
        r = strcmp(c->error, INVALID_PARAMETER) == 0 ? -EINVAL : -EPROTO;
        json_t *p = json_object_get(doc, "parameters");
        if (json_is_object(p))
            c->reply = json_incref(p); /* for heare_auth__reply */
        goto out;
    }
    if (json_is_true(json_object_get(doc, "continues")))
        goto out;

    json_t *params = json_object_get(doc, "parameters");
    if (!json_is_object(params))
        goto out;
    const json_t *valid = json_object_get(params, "valid");
    const json_t *code = json_object_get(params, "code");
    if (!json_is_boolean(valid) || !json_is_string(code))
        goto out;
    res.valid = json_is_true(valid);
    res.code = json_string_value(code);
    if (opt_string(params, "key_id", &res.key_id) < 0 ||
        opt_string(params, "name", &res.name) < 0 ||
        opt_string(params, "expires_at", &res.expires_at) < 0)
        goto out;

    const json_t *retry = json_object_get(params, "retry_after_ms");
    if (json_is_integer(retry))
        res.retry_after_ms = json_integer_value(retry);
    else if (retry && !json_is_null(retry))
        goto out;

    const json_t *metadata = json_object_get(params, "metadata");
    if (json_is_object(metadata)) {
        c->metadata_json = json_dumps(metadata, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!c->metadata_json) {
            r = -ENOMEM;
            goto out;
        }
        res.metadata_json = c->metadata_json;
    } else if (metadata && !json_is_null(metadata)) {
        goto out;
    }

    const json_t *scopes = json_object_get(params, "scopes");
    if (json_is_array(scopes)) {
        size_t n = json_array_size(scopes);
        c->scopes = calloc(n + 1, sizeof(*c->scopes));
        if (!c->scopes) {
            r = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            const json_t *s = json_array_get(scopes, i);
            if (!json_is_string(s))
                goto out;
            c->scopes[i] = json_string_value(s);
        }
        res.scopes = c->scopes;
    } else if (scopes && !json_is_null(scopes)) {
        goto out;
    }

    /* The strings above belong to params, which the client keeps until the next call. */
    c->reply = json_incref(params);
    *ret = res;
    r = 0;
out:
    json_decref(doc);
    if (r < 0 && !c->error)
        drop_result(c);
    return r;
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
    drop_result(c);

    int64_t deadline = now_ns() + (int64_t)c->timeout_ms * 1000000;
    r = build_request(c, req);
    if (r >= 0)
        r = exchange(c, deadline, &len);
    wipe_request(c);
    if (r < 0)
        return r;

    r = parse_reply(c, c->in, len, ret);
    /* Keep whatever was sent behind this reply (nothing, from a daemon that follows the
     * protocol) for the next call to find. */
    memmove(c->in, c->in + len + 1, c->in_len - len - 1);
    c->in_len -= len + 1;
    if (r == -EPROTO)
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
    drop_result(c);
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

const json_t *heare_auth__reply(const heare_auth *c)
{
    return c ? c->reply : NULL;
}
