/* test-varlink-client: the blocking client against scripted servers on a temporary socket. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "json-util.h"
#include "varlink-client.h"
#include "varlink.h"

#define TIMEOUT_MS 1000

static char socket_dir[] = "/tmp/test-varlink-client.XXXXXX";
static char socket_path[sizeof(struct sockaddr_un) + 64];

typedef struct server server;
struct server {
    int listen_fd;
    void (*script)(server *s, int fd);
    json_t *calls[4]; /* the calls the script read, for the test to look at */
    size_t n_calls;
    pthread_t thread;
};

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        CHECK(k > 0);
        p += k;
        n -= (size_t)k;
    }
}

/* Sends a string including its NUL: one Varlink message. */
static void send_msg(int fd, const char *msg)
{
    write_all(fd, msg, strlen(msg) + 1);
}

/* Reads one NUL-terminated call (byte by byte: the script must not swallow the next one)
 * and keeps it in s->calls. Returns false on EOF. */
static bool read_call(server *s, int fd)
{
    char buf[VARLINK_MESSAGE_MAX + 1];
    size_t n = 0;

    for (;;) {
        ssize_t k = read(fd, buf + n, 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k == 0)
            return false;
        CHECK(k == 1);
        if (buf[n] == '\0')
            break;
        CHECK(++n < sizeof(buf));
    }

    json_error_t error;
    json_t *call = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &error);
    CHECK(json_is_object(call));
    CHECK(s->n_calls < ELEMENTSOF(s->calls));
    s->calls[s->n_calls++] = call;
    return true;
}

/* Blocks until the client hangs up. */
static void wait_eof(int fd)
{
    char c;
    for (;;) {
        ssize_t k = read(fd, &c, 1);
        if (k == 0 || (k < 0 && errno != EINTR))
            return;
    }
}

static void *server_main(void *userdata)
{
    server *s = userdata;
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    CHECK(fd >= 0);
    s->script(s, fd);
    close(fd);
    return NULL;
}

static server *server_start(void (*script)(server *s, int fd))
{
    server *s = calloc(1, sizeof(*s));
    CHECK(s);
    s->script = script;

    unlink(socket_path);
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s->listen_fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    CHECK(strlen(socket_path) < sizeof(sa.sun_path));
    strcpy(sa.sun_path, socket_path);
    CHECK(bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(s->listen_fd, 4) == 0);
    CHECK(pthread_create(&s->thread, NULL, server_main, s) == 0);
    return s;
}

static void server_join(server *s)
{
    CHECK(pthread_join(s->thread, NULL) == 0);
    close(s->listen_fd);
    for (size_t i = 0; i < s->n_calls; i++)
        json_decref(s->calls[i]);
    free(s);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static varlink_client *connect_or_die(int timeout_ms)
{
    varlink_client *c = NULL;
    CHECK_INT(varlink_client_connect(socket_path, timeout_ms, &c), 0);
    CHECK(c);
    return c;
}

/* --- normal reply ------------------------------------------------------------------- */

static void script_normal(server *s, int fd)
{
    CHECK(read_call(s, fd));
    /* A newline before the NUL is whitespace. */
    send_msg(fd, "{\"parameters\": {\"valid\": true, \"code\": \"VALID\"}}\n");
    CHECK(read_call(s, fd));
    send_msg(fd, "{}");
    wait_eof(fd);
}

static void test_normal(void)
{
    server *s = server_start(script_normal);
    varlink_client *c = connect_or_die(TIMEOUT_MS);

    _cleanup_json_ json_t *params = json_pack("{s:s}", "key", "sec_1abc");
    json_t *reply = NULL;
    char *error = (char *)"untouched";
    bool continues = true;

    CHECK_INT(varlink_client_call(c, "io.heare.Auth.Verify", params, 0, &reply, &error, &continues),
              0);
    CHECK(error == NULL);
    CHECK(!continues);
    CHECK(json_is_true(json_object_get(reply, "valid")));
    CHECK_STR(json_string_value(json_object_get(reply, "code")), "VALID");
    json_decref(reply);
    /* The caller's parameters are referenced, not changed. */
    CHECK_INT(json_object_size(params), 1);

    /* No parameters given: {} sent; no parameters in the reply: {} returned. */
    CHECK_INT(varlink_client_call(c, "io.heare.Auth.GetHealth", NULL, 0, &reply, &error, NULL), 0);
    CHECK(json_is_object(reply));
    CHECK_INT(json_object_size(reply), 0);
    json_decref(reply);

    varlink_client_free(c);
    CHECK(s->n_calls == 2);
    CHECK_STR(json_string_value(json_object_get(s->calls[0], "method")), "io.heare.Auth.Verify");
    CHECK_STR(json_string_value(json_object_get(json_object_get(s->calls[0], "parameters"), "key")),
              "sec_1abc");
    CHECK(json_object_get(s->calls[0], "more") == NULL);
    CHECK(json_object_get(s->calls[0], "oneway") == NULL);
    CHECK(json_is_object(json_object_get(s->calls[1], "parameters")));
    CHECK_INT(json_object_size(json_object_get(s->calls[1], "parameters")), 0);
    server_join(s);
}

/* --- error reply -------------------------------------------------------------------- */

static void script_error(server *s, int fd)
{
    CHECK(read_call(s, fd));
    send_msg(fd, "{\"error\": \"io.heare.AuthAdmin.KeyNotFound\", \"parameters\": {\"id\": "
                 "\"key_x\"}}");
    CHECK(read_call(s, fd));
    send_msg(fd, "{\"error\": \"io.heare.AuthAdmin.PermissionDenied\"}");
    wait_eof(fd);
}

static void test_error(void)
{
    server *s = server_start(script_error);
    varlink_client *c = connect_or_die(TIMEOUT_MS);
    _cleanup_json_ json_t *params = json_pack("{s:s}", "id", "key_x");
    json_t *reply = NULL;
    char *error = NULL;
    bool continues = true;

    CHECK_INT(
        varlink_client_call(c, "io.heare.AuthAdmin.GetKey", params, 0, &reply, &error, &continues),
        1);
    CHECK_STR(error, "io.heare.AuthAdmin.KeyNotFound");
    CHECK_STR(json_string_value(json_object_get(reply, "id")), "key_x");
    CHECK(!continues);
    free(error);
    json_decref(reply);

    /* An error without parameters still hands back {}; the connection stays usable. */
    CHECK_INT(varlink_client_call(c, "io.heare.AuthAdmin.GetKey", params, 0, &reply, &error, NULL),
              1);
    CHECK_STR(error, "io.heare.AuthAdmin.PermissionDenied");
    CHECK(json_is_object(reply));
    free(error);
    json_decref(reply);

    varlink_client_free(c);
    server_join(s);
}

/* --- "more": three replies ---------------------------------------------------------- */

static void script_more(server *s, int fd)
{
    CHECK(read_call(s, fd));
    send_msg(fd, "{\"parameters\": {\"n\": 1}, \"continues\": true}");
    usleep(20 * 1000);
    send_msg(fd, "{\"parameters\": {\"n\": 2}, \"continues\": true}");
    usleep(20 * 1000);
    send_msg(fd, "{\"parameters\": {\"n\": 3}}");
    CHECK(read_call(s, fd));
    send_msg(fd, "{\"parameters\": {\"after\": true}}");
    wait_eof(fd);
}

static void test_more(void)
{
    server *s = server_start(script_more);
    varlink_client *c = connect_or_die(TIMEOUT_MS);
    json_t *reply = NULL;
    char *error = NULL;
    bool continues = false;

    /* Nothing to continue yet. */
    CHECK_INT(varlink_client_next(c, &reply, &error, &continues), -EINVAL);

    CHECK_INT(varlink_client_call(c, "io.heare.AuthAdmin.ListKeys", NULL, VARLINK_CALL_MORE, &reply,
                                  &error, &continues),
              0);
    CHECK(continues);
    CHECK_INT(json_integer_value(json_object_get(reply, "n")), 1);
    json_decref(reply);

    /* A new call while replies are still due would be answered out of step. */
    CHECK_INT(varlink_client_call(c, "a.B", NULL, 0, &reply, &error, &continues), -EBUSY);

    CHECK_INT(varlink_client_next(c, &reply, &error, &continues), 0);
    CHECK(continues);
    CHECK_INT(json_integer_value(json_object_get(reply, "n")), 2);
    json_decref(reply);

    CHECK_INT(varlink_client_next(c, &reply, &error, &continues), 0);
    CHECK(!continues);
    CHECK(error == NULL);
    CHECK_INT(json_integer_value(json_object_get(reply, "n")), 3);
    json_decref(reply);

    CHECK_INT(varlink_client_next(c, &reply, &error, &continues), -EINVAL);

    CHECK_INT(varlink_client_call(c, "a.B", NULL, 0, &reply, &error, &continues), 0);
    CHECK(json_is_true(json_object_get(reply, "after")));
    json_decref(reply);

    varlink_client_free(c);
    CHECK(json_is_true(json_object_get(s->calls[0], "more")));
    server_join(s);
}

/* --- two replies in one write ------------------------------------------------------- */

static void script_pipelined(server *s, int fd)
{
    static const char two[] = "{\"parameters\": {\"n\": 1}, \"continues\": true}\0"
                              "{\"parameters\": {\"n\": 2}, \"continues\": false}";
    CHECK(read_call(s, fd));
    write_all(fd, two, sizeof(two)); /* both NULs */
    /* Hang up at once: the second reply exists only in the client's buffer. */
}

static void test_pipelined(void)
{
    server *s = server_start(script_pipelined);
    varlink_client *c = connect_or_die(TIMEOUT_MS);
    json_t *reply = NULL;
    char *error = NULL;
    bool continues = false;

    CHECK_INT(varlink_client_call(c, "io.heare.AuthAdmin.ListKeys", NULL, VARLINK_CALL_MORE, &reply,
                                  &error, &continues),
              0);
    CHECK(continues);
    CHECK_INT(json_integer_value(json_object_get(reply, "n")), 1);
    json_decref(reply);
    server_join(s); /* the server is gone now */

    CHECK_INT(varlink_client_next(c, &reply, &error, &continues), 0);
    CHECK(!continues);
    CHECK_INT(json_integer_value(json_object_get(reply, "n")), 2);
    json_decref(reply);

    varlink_client_free(c);
}

/* --- a server that never answers ---------------------------------------------------- */

static void script_silent(server *s, int fd)
{
    CHECK(read_call(s, fd));
    wait_eof(fd);
}

static void test_timeout(void)
{
    const int timeout = 300;
    server *s = server_start(script_silent);
    varlink_client *c = connect_or_die(timeout);
    json_t *reply = NULL;
    char *error = NULL;

    int64_t t0 = now_ms();
    CHECK_INT(varlink_client_call(c, "io.heare.Auth.GetHealth", NULL, 0, &reply, &error, NULL),
              -ETIMEDOUT);
    int64_t elapsed = now_ms() - t0;
    fprintf(stderr, "timeout after %lld ms\n", (long long)elapsed);
    CHECK(elapsed >= timeout);
    CHECK(elapsed < timeout + 500);

    /* The stream is out of step now: every later call fails at once. */
    t0 = now_ms();
    CHECK_INT(varlink_client_call(c, "io.heare.Auth.GetHealth", NULL, 0, &reply, &error, NULL),
              -ENOTCONN);
    CHECK(now_ms() - t0 < 100);

    varlink_client_free(c);
    server_join(s);

    /* A shorter budget set after connecting applies to the next call. */
    s = server_start(script_silent);
    c = connect_or_die(5000);
    CHECK_INT(varlink_client_set_timeout(c, 0), -EINVAL);
    CHECK_INT(varlink_client_set_timeout(NULL, 100), -EINVAL);
    CHECK_INT(varlink_client_set_timeout(c, 200), 0);
    t0 = now_ms();
    CHECK_INT(varlink_client_call(c, "io.heare.Auth.GetHealth", NULL, 0, &reply, &error, NULL),
              -ETIMEDOUT);
    elapsed = now_ms() - t0;
    CHECK(elapsed >= 200);
    CHECK(elapsed < 200 + 500);
    varlink_client_free(c);
    server_join(s);
}

/* --- a server that hangs up --------------------------------------------------------- */

static void script_close_at_once(server *s, int fd)
{
}

/* The peer is gone before the call is sent: send fails with EPIPE, which must come back as
 * an error and not as SIGPIPE (at its default action it would kill a PAM host process). */
static void test_sigpipe(void)
{
    struct sigaction dfl = {.sa_handler = SIG_DFL}, old;
    CHECK(sigaction(SIGPIPE, &dfl, &old) == 0);

    server *s = server_start(script_close_at_once);
    varlink_client *c = connect_or_die(TIMEOUT_MS);
    server_join(s); /* accepted and closed: nobody reads any more */
    json_t *reply = NULL;
    char *error = NULL;

    int r = varlink_client_call(c, "a.B", NULL, 0, &reply, &error, NULL);
    CHECK(r == -EPIPE || r == -ECONNRESET);
    varlink_client_free(c);
    CHECK(sigaction(SIGPIPE, &old, NULL) == 0);
}

static void script_close(server *s, int fd)
{
    CHECK(read_call(s, fd));
}

static void script_close_midway(server *s, int fd)
{
    static const char part[] = "{\"parameters\": {";
    CHECK(read_call(s, fd));
    write_all(fd, part, sizeof(part) - 1);
}

static void test_closed(void)
{
    void (*scripts[])(server *, int) = {script_close, script_close_midway};

    for (size_t i = 0; i < ELEMENTSOF(scripts); i++) {
        server *s = server_start(scripts[i]);
        varlink_client *c = connect_or_die(TIMEOUT_MS);
        json_t *reply = NULL;
        char *error = NULL;

        CHECK_INT(varlink_client_call(c, "a.B", NULL, 0, &reply, &error, NULL), -ECONNRESET);
        varlink_client_free(c);
        server_join(s);
    }
}

/* --- nobody there ------------------------------------------------------------------- */

static void test_missing(void)
{
    varlink_client *c = NULL;
    char path[sizeof(socket_dir) + 16];

    snprintf(path, sizeof(path), "%s/nothing.sock", socket_dir);
    CHECK_INT(varlink_client_connect(path, TIMEOUT_MS, &c), -ENOENT);
    CHECK(c == NULL);

    /* A socket file nobody listens on. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(path, sizeof(path), "%s/dead.sock", socket_dir);
    strcpy(sa.sun_path, path);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    close(fd);
    CHECK_INT(varlink_client_connect(path, TIMEOUT_MS, &c), -ECONNREFUSED);
    unlink(path);

    char long_path[200];
    memset(long_path, 'x', sizeof(long_path) - 1);
    long_path[0] = '/';
    long_path[sizeof(long_path) - 1] = '\0';
    CHECK_INT(varlink_client_connect(long_path, TIMEOUT_MS, &c), -ENAMETOOLONG);
    CHECK_INT(varlink_client_connect(socket_path, 0, &c), -EINVAL);
    CHECK(c == NULL);
}

/* --- replies that are not Varlink --------------------------------------------------- */

static const char *const bad_replies[] = {
    "not json",
    "[1, 2]",
    "\"parameters\"",
    "{\"parameters\": 1}",
    "{\"parameters\": []}",
    "{\"error\": 42}",
    "{\"error\": null}",
    "{\"parameters\": {}, \"continues\": \"yes\"}",
    "{\"parameters\": {}, \"parameters\": {}}",
    "{\"parameters\": {}} trailing",
};

static size_t bad_reply_index;

static void script_bad_reply(server *s, int fd)
{
    CHECK(read_call(s, fd));
    send_msg(fd, bad_replies[bad_reply_index]);
    wait_eof(fd);
}

static void test_bad_replies(void)
{
    for (bad_reply_index = 0; bad_reply_index < ELEMENTSOF(bad_replies); bad_reply_index++) {
        server *s = server_start(script_bad_reply);
        varlink_client *c = connect_or_die(TIMEOUT_MS);
        json_t *reply = (json_t *)"untouched";
        char *error = (char *)"untouched";

        fprintf(stderr, "bad reply: %s\n", bad_replies[bad_reply_index]);
        CHECK_INT(varlink_client_call(c, "a.B", NULL, 0, &reply, &error, NULL), -EPROTO);
        CHECK(reply == (json_t *)"untouched");
        CHECK(error == (char *)"untouched");
        varlink_client_free(c);
        server_join(s);
    }
}

/* --- sizes -------------------------------------------------------------------------- */

static void script_big(server *s, int fd)
{
    /* A reply far over the 64 KiB call limit is still fine for a reply. */
    size_t n = 1024 * 1024;
    char *big = malloc(n + 64);
    CHECK(big);
    int k = snprintf(big, 64, "{\"parameters\": {\"blob\": \"");
    memset(big + k, 'a', n);
    strcpy(big + k + n, "\"}}");
    CHECK(read_call(s, fd));
    send_msg(fd, big);
    free(big);
    wait_eof(fd);
}

static void test_big_reply(void)
{
    server *s = server_start(script_big);
    varlink_client *c = connect_or_die(5000);
    json_t *reply = NULL;

    CHECK_INT(varlink_client_call(c, "a.B", NULL, 0, &reply, NULL, NULL), 0);
    CHECK_INT(json_string_length(json_object_get(reply, "blob")), 1024 * 1024);
    json_decref(reply);
    varlink_client_free(c);
    server_join(s);
}

static void script_runaway(server *s, int fd)
{
    size_t chunk = 1024 * 1024, total = 64 * chunk + 1;
    char *b = malloc(chunk);
    CHECK(b);
    memset(b, ' ', chunk);
    CHECK(read_call(s, fd));
    /* The client gives up once it has 64 MiB + 1 bytes without a NUL, then closes. */
    while (total > 0) {
        size_t n = total < chunk ? total : chunk;
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        total -= (size_t)k;
    }
    free(b);
    wait_eof(fd);
}

static void test_runaway_reply(void)
{
    server *s = server_start(script_runaway);
    varlink_client *c = connect_or_die(10000);
    json_t *reply = NULL;

    CHECK_INT(varlink_client_call(c, "a.B", NULL, 0, &reply, NULL, NULL), -EMSGSIZE);
    varlink_client_free(c);
    server_join(s);
}

static void script_oneway(server *s, int fd)
{
    CHECK(read_call(s, fd));
    CHECK(read_call(s, fd));
    send_msg(fd, "{\"parameters\": {\"second\": true}}");
    wait_eof(fd);
}

static void test_oneway_and_too_large(void)
{
    server *s = server_start(script_oneway);
    varlink_client *c = connect_or_die(TIMEOUT_MS);
    json_t *reply = NULL;
    char *error = NULL;
    bool continues = true;

    /* A call over 64 KiB is refused before anything is sent. */
    char *blob = malloc(VARLINK_MESSAGE_MAX + 1);
    CHECK(blob);
    memset(blob, 'b', VARLINK_MESSAGE_MAX);
    blob[VARLINK_MESSAGE_MAX] = '\0';
    _cleanup_json_ json_t *big = json_pack("{s:s}", "blob", blob);
    free(blob);
    CHECK_INT(varlink_client_call(c, "a.B", big, 0, &reply, &error, NULL), -EMSGSIZE);

    CHECK_INT(varlink_client_call(c, "a.B", NULL, VARLINK_CALL_ONEWAY | VARLINK_CALL_MORE, &reply,
                                  &error, NULL),
              -EINVAL);
    CHECK_INT(varlink_client_call(c, "a.B", big, 0, &reply, &error, NULL), -EMSGSIZE);

    /* Oneway: nothing is read; the next call gets its own reply. */
    CHECK_INT(
        varlink_client_call(c, "a.First", NULL, VARLINK_CALL_ONEWAY, &reply, &error, &continues),
        0);
    CHECK(error == NULL);
    CHECK(!continues);
    CHECK_INT(json_object_size(reply), 0);
    json_decref(reply);

    CHECK_INT(varlink_client_call(c, "a.Second", NULL, 0, &reply, &error, &continues), 0);
    CHECK(json_is_true(json_object_get(reply, "second")));
    json_decref(reply);

    varlink_client_free(c);
    CHECK(s->n_calls == 2);
    CHECK_STR(json_string_value(json_object_get(s->calls[0], "method")), "a.First");
    CHECK(json_is_true(json_object_get(s->calls[0], "oneway")));
    CHECK_STR(json_string_value(json_object_get(s->calls[1], "method")), "a.Second");
    server_join(s);
}

int main(void)
{
    CHECK(mkdtemp(socket_dir));
    snprintf(socket_path, sizeof(socket_path), "%s/test.sock", socket_dir);

    varlink_client_free(NULL);
    test_normal();
    test_error();
    test_more();
    test_pipelined();
    test_timeout();
    test_closed();
    test_sigpipe();
    test_missing();
    test_bad_replies();
    test_big_reply();
    test_runaway_reply();
    test_oneway_and_too_large();

    unlink(socket_path);
    rmdir(socket_dir);
    fprintf(stderr, "ok\n");
    return 0;
}
