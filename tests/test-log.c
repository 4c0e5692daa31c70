/* test-log: JSON lines (members, order, escaping, levels, concurrency) and journal fields. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "check.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"

/* stderr goes into a pipe that a thread drains, so that no writer can block on it. */
static struct {
    int saved_stderr;
    int rfd;
    pthread_t reader;
    char *buf;
    size_t len;
} cap;

static void *drain(void *arg)
{
    char chunk[4096];
    ssize_t n;

    while ((n = read(cap.rfd, chunk, sizeof(chunk))) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        char *grown = realloc(cap.buf, cap.len + (size_t)n + 1);
        if (!grown)
            abort();
        cap.buf = grown;
        memcpy(cap.buf + cap.len, chunk, (size_t)n);
        cap.len += (size_t)n;
        cap.buf[cap.len] = '\0';
    }
    return NULL;
}

static void capture_start(void)
{
    int p[2];

    CHECK_INT(pipe(p), 0);
    cap.saved_stderr = dup(STDERR_FILENO);
    CHECK(cap.saved_stderr >= 0);
    CHECK(dup2(p[1], STDERR_FILENO) == STDERR_FILENO);
    close(p[1]);
    cap.rfd = p[0];
    cap.buf = NULL;
    cap.len = 0;
    CHECK_INT(pthread_create(&cap.reader, NULL, drain, NULL), 0);
}

/* Restores stderr and returns what was written (caller frees; "" if nothing). */
static char *capture_stop(void)
{
    CHECK(dup2(cap.saved_stderr, STDERR_FILENO) == STDERR_FILENO);
    close(cap.saved_stderr);
    CHECK_INT(pthread_join(cap.reader, NULL), 0);
    close(cap.rfd);
    return cap.buf ? cap.buf : strdup("");
}

/* Splits out into lines and parses each; returns the count and fills objs. */
static size_t parse_lines(char *out, json_t **objs, size_t max)
{
    size_t n = 0;
    char *save = NULL;

    CHECK(out[0] == '\0' || out[strlen(out) - 1] == '\n');
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        CHECK(n < max);
        objs[n] = json_loads(line, JSON_REJECT_DUPLICATES, &e);
        if (!objs[n] || !json_is_object(objs[n])) {
            fprintf(stderr, "not a JSON object: %s (%s)\n", line, e.text);
            exit(1);
        }
        n++;
    }
    return n;
}

static void check_members(json_t *o, const char *const *names)
{
    size_t i = 0;
    const char *k;
    json_t *v;

    json_object_foreach(o, k, v)
    {
        if (!names[i] || strcmp(k, names[i]) != 0) {
            fprintf(stderr, "member %zu is '%s', expected '%s'\n", i, k,
                    names[i] ? names[i] : "(end)");
            exit(1);
        }
        i++;
    }
    CHECK(names[i] == NULL);
}

static const char *str(json_t *o, const char *name)
{
    return json_string_value(json_object_get(o, name));
}

static void check_timestamp(const char *ts)
{
    /* "2025-10-28T16:45:18.123456Z" */
    CHECK(ts != NULL);
    CHECK_INT(strlen(ts), 27);
    for (size_t i = 0; i < 27; i++) {
        char c = ts[i];
        switch (i) {
        case 4:
        case 7:
            CHECK(c == '-');
            break;
        case 10:
            CHECK(c == 'T');
            break;
        case 13:
        case 16:
            CHECK(c == ':');
            break;
        case 19:
            CHECK(c == '.');
            break;
        case 26:
            CHECK(c == 'Z');
            break;
        default:
            CHECK(c >= '0' && c <= '9');
        }
    }
    /* UTC and now: the same date and hour as gmtime() (a minute of slack at the edge). */
    time_t now = time(NULL);
    struct tm tm;
    char want[32];
    gmtime_r(&now, &tm);
    strftime(want, sizeof(want), "%Y-%m-%dT%H:", &tm);
    if (strncmp(ts, want, 14) != 0) {
        now -= 60;
        gmtime_r(&now, &tm);
        strftime(want, sizeof(want), "%Y-%m-%dT%H:", &tm);
        CHECK(strncmp(ts, want, 14) == 0);
    }
}

static void test_defaults(void)
{
    json_t *objs[8];

    /* Before log_setup: JSON on stderr, at most LOG_INFO. */
    CHECK(log_enabled(LOG_INFO));
    CHECK(log_enabled(LOG_ERR));
    CHECK(!log_enabled(LOG_DEBUG));

    capture_start();
    log_info("hello %d", 42);
    log_debug("dropped %d", 1);
    log_error("boom");
    _cleanup_free_ char *out = capture_stop();

    CHECK_INT(parse_lines(out, objs, ELEMENTSOF(objs)), 2);
    check_members(objs[0], (const char *const[]){"event", "timestamp", "level", NULL});
    CHECK_STR(str(objs[0], "event"), "hello 42");
    CHECK_STR(str(objs[0], "level"), "info");
    check_timestamp(str(objs[0], "timestamp"));
    CHECK_STR(str(objs[1], "event"), "boom");
    CHECK_STR(str(objs[1], "level"), "error");
    for (size_t i = 0; i < 2; i++)
        json_decref(objs[i]);
}

static void test_fields(void)
{
    json_t *objs[8];
    log_fields all = {
        .event = "verification_success",
        .key_id = "key_0001vDmowdgLBqEcDYe",
        .key_name = "MyService",
        .key_prefix = "sec_0001",
        .user_agent = "curl/8.0",
        .code = "VALID",
        .peer_uid = 1000,
        .peer_pid = 4242,
        .peer_unit = "app.service",
        .changed = "name,scopes",
    };
    log_fields some = LOG_FIELDS_INIT;
    some.event = "key_deleted";
    some.key_id = "key_x";
    some.peer_uid = 0;

    log_setup(LOG_TARGET_JSON, LOG_INFO);
    capture_start();
    log_event(LOG_INFO, &all, "verified %s", all.key_id);
    log_event(LOG_NOTICE, &some, "%s", "");
    log_event(LOG_WARNING, NULL, "no fields");
    log_fields noevent = LOG_FIELDS_INIT;
    noevent.key_id = "key_y";
    log_event(LOG_INFO, &noevent, "message as event");
    _cleanup_free_ char *out = capture_stop();

    CHECK_INT(parse_lines(out, objs, ELEMENTSOF(objs)), 4);
    check_members(objs[0],
                  (const char *const[]){"event", "message", "key_id", "key_name", "key_prefix",
                                        "user_agent", "code", "peer_uid", "peer_pid", "peer_unit",
                                        "changed", "timestamp", "level", NULL});
    CHECK_STR(str(objs[0], "event"), "verification_success");
    CHECK_STR(str(objs[0], "message"), "verified key_0001vDmowdgLBqEcDYe");
    CHECK_STR(str(objs[0], "key_name"), "MyService");
    CHECK_STR(str(objs[0], "key_prefix"), "sec_0001");
    CHECK_STR(str(objs[0], "user_agent"), "curl/8.0");
    CHECK_STR(str(objs[0], "code"), "VALID");
    CHECK_INT(json_integer_value(json_object_get(objs[0], "peer_uid")), 1000);
    CHECK_INT(json_integer_value(json_object_get(objs[0], "peer_pid")), 4242);
    CHECK_STR(str(objs[0], "peer_unit"), "app.service");
    CHECK_STR(str(objs[0], "changed"), "name,scopes");

    /* Absent members are left out; uid 0 is a uid, not "absent". */
    check_members(objs[1],
                  (const char *const[]){"event", "key_id", "peer_uid", "timestamp", "level", NULL});
    CHECK_INT(json_integer_value(json_object_get(objs[1], "peer_uid")), 0);
    CHECK_STR(str(objs[1], "level"), "info"); /* notice */
    check_members(objs[2], (const char *const[]){"event", "timestamp", "level", NULL});
    CHECK_STR(str(objs[2], "level"), "warning");
    check_members(objs[3], (const char *const[]){"event", "key_id", "timestamp", "level", NULL});
    CHECK_STR(str(objs[3], "event"), "message as event");
    for (size_t i = 0; i < 4; i++)
        json_decref(objs[i]);
}

static void test_escaping(void)
{
    json_t *objs[4];
    static const char tricky[] = "say \"hi\"\nnew line\t\\ back \x01 ctl </script> é";
    log_fields f = LOG_FIELDS_INIT;
    f.event = "escape_test";
    f.user_agent = tricky;
    f.key_name = "name with \"quotes\"\r\n";
    f.key_prefix = "sec_\xff\xfe"; /* not UTF-8 */

    log_setup(LOG_TARGET_JSON, LOG_DEBUG);
    capture_start();
    log_event(LOG_INFO, &f, "%s", tricky);
    _cleanup_free_ char *out = capture_stop();

    /* One line: every newline in the values was escaped. */
    CHECK(strchr(out, '\n') == out + strlen(out) - 1);
    CHECK_INT(parse_lines(out, objs, ELEMENTSOF(objs)), 1);
    CHECK_STR(str(objs[0], "message"), tricky);
    CHECK_STR(str(objs[0], "user_agent"), tricky);
    CHECK_STR(str(objs[0], "key_name"), "name with \"quotes\"\r\n");
    CHECK_STR(str(objs[0], "key_prefix"), "sec_??");
    json_decref(objs[0]);
}

static void test_levels(void)
{
    static const struct {
        int priority;
        const char *level;
    } cases[] = {
        {LOG_EMERG, "critical"}, {LOG_ALERT, "critical"},  {LOG_CRIT, "critical"},
        {LOG_ERR, "error"},      {LOG_WARNING, "warning"}, {LOG_NOTICE, "info"},
        {LOG_INFO, "info"},      {LOG_DEBUG, "debug"},
    };
    json_t *objs[ELEMENTSOF(cases)];

    log_setup(LOG_TARGET_JSON, LOG_DEBUG);
    CHECK(log_enabled(LOG_DEBUG));
    capture_start();
    for (size_t i = 0; i < ELEMENTSOF(cases); i++)
        log_event(cases[i].priority, NULL, "p%d", cases[i].priority);
    _cleanup_free_ char *out = capture_stop();
    CHECK_INT(parse_lines(out, objs, ELEMENTSOF(objs)), ELEMENTSOF(cases));
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        CHECK_STR(str(objs[i], "level"), cases[i].level);
        json_decref(objs[i]);
    }

    /* At warning, info and notice are dropped. */
    log_setup(LOG_TARGET_JSON, LOG_WARNING);
    CHECK(!log_enabled(LOG_NOTICE));
    CHECK(log_enabled(LOG_WARNING));
    capture_start();
    log_info("dropped");
    log_event(LOG_NOTICE, NULL, "dropped too");
    log_debug("dropped as well");
    log_warning("kept");
    _cleanup_free_ char *out2 = capture_stop();
    CHECK_INT(parse_lines(out2, objs, ELEMENTSOF(objs)), 1);
    CHECK_STR(str(objs[0], "event"), "kept");
    json_decref(objs[0]);

    /* At info, debug is dropped. */
    log_setup(LOG_TARGET_JSON, LOG_INFO);
    capture_start();
    log_debug("dropped");
    _cleanup_free_ char *out3 = capture_stop();
    CHECK_STR(out3, "");
}

enum { THREADS = 8, PER_THREAD = 300 };

static void *writer(void *arg)
{
    /* Lines longer than PIPE_BUF (4096) would tear without one locked writer. */
    static char big[6000];
    memset(big, 'x', sizeof(big) - 1);
    /* Half the threads buffer their lines like the serving loops, flushing now and then:
     * those are handed to whichever thread is writing, and must still come out whole and
     * in each thread's order. */
    bool buffered = (intptr_t)arg % 2 == 1;
    if (buffered)
        log_buffer_thread(true);
    for (int i = 0; i < PER_THREAD; i++) {
        log_fields f = LOG_FIELDS_INIT;
        f.event = "stress";
        f.peer_pid = (int64_t)(intptr_t)arg;
        f.peer_uid = i;
        log_event(LOG_INFO, &f, "%s", i % 10 == 0 ? big : "short");
        if (buffered && i % 7 == 0)
            log_flush();
    }
    if (buffered)
        log_buffer_thread(false);
    return NULL;
}

static void test_concurrent(void)
{
    pthread_t t[THREADS];
    static json_t *objs[THREADS * PER_THREAD + 1];

    log_setup(LOG_TARGET_JSON, LOG_INFO);
    capture_start();
    for (intptr_t i = 0; i < THREADS; i++)
        CHECK_INT(pthread_create(&t[i], NULL, writer, (void *)i), 0);
    for (size_t i = 0; i < THREADS; i++)
        CHECK_INT(pthread_join(t[i], NULL), 0);
    _cleanup_free_ char *out = capture_stop();

    size_t n = parse_lines(out, objs, ELEMENTSOF(objs));
    CHECK_INT(n, THREADS * PER_THREAD);
    int next[THREADS] = {0};
    for (size_t i = 0; i < n; i++) {
        int64_t pid = json_integer_value(json_object_get(objs[i], "peer_pid"));
        int64_t seq = json_integer_value(json_object_get(objs[i], "peer_uid"));
        CHECK(pid >= 0 && pid < THREADS);
        CHECK_INT(seq, next[pid]); /* each thread's lines in its own order */
        next[pid]++;
        json_decref(objs[i]);
    }
}

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

/* Finds FIELD in a journal native-protocol datagram ("F=v\n", or "F\n" + le64 length + v +
 * "\n" for values with a newline) and copies its value to out. */
static bool journal_field(const char *d, size_t n, const char *field, char *out, size_t max)
{
    size_t fl = strlen(field);
    const char *p = d, *end = d + n;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!nl)
            return false;
        if (eq && eq < nl) {
            size_t vl = (size_t)(nl - eq - 1);
            if ((size_t)(eq - p) == fl && memcmp(p, field, fl) == 0 && vl < max) {
                memcpy(out, eq + 1, vl);
                out[vl] = '\0';
                return true;
            }
            p = nl + 1;
        } else {
            uint64_t vl = 0;
            if (end - (nl + 1) < 8)
                return false;
            for (int k = 7; k >= 0; k--)
                vl = vl << 8 | (unsigned char)nl[1 + k];
            const char *v = nl + 9;
            if (vl > (uint64_t)(end - v))
                return false;
            if ((size_t)(nl - p) == fl && memcmp(p, field, fl) == 0 && vl < max) {
                memcpy(out, v, vl);
                out[vl] = '\0';
                return true;
            }
            p = v + vl + 1;
        }
    }
    return false;
}

/* In a child with its own mount namespace and an empty /run, a datagram socket stands in
 * for journald and receives what log_event sends. Exit 0: checked; 77: no namespace. */
static int journal_child(void)
{
    if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") < 0)
        return 77;
    CHECK_INT(mkdir("/run/systemd", 0755), 0);
    CHECK_INT(mkdir("/run/systemd/journal", 0755), 0);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET};
    CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

    log_fields f = LOG_FIELDS_INIT;
    f.event = "verification_failure";
    f.key_prefix = "sec_0001";
    f.user_agent = "agent\nwith newline";
    f.code = "NOT_FOUND";
    f.peer_uid = 0;
    f.peer_pid = 77;
    f.peer_unit = "app.service";
    log_setup(LOG_TARGET_JOURNAL, LOG_INFO);
    capture_start();
    log_event(LOG_NOTICE, &f, "failed verify from uid %d", 0);
    log_debug("dropped");
    _cleanup_free_ char *out = capture_stop();
    CHECK_STR(out, ""); /* nothing on stderr */

    static char d[65536];
    char v[256];
    ssize_t n = recv(fd, d, sizeof(d), MSG_DONTWAIT);
    CHECK(n > 0);
    CHECK(journal_field(d, (size_t)n, "MESSAGE", v, sizeof(v)));
    CHECK_STR(v, "failed verify from uid 0");
    CHECK(journal_field(d, (size_t)n, "PRIORITY", v, sizeof(v)));
    CHECK_STR(v, "5");
    CHECK(journal_field(d, (size_t)n, "HEARE_EVENT", v, sizeof(v)));
    CHECK_STR(v, "verification_failure");
    CHECK(journal_field(d, (size_t)n, "HEARE_KEY_PREFIX", v, sizeof(v)));
    CHECK_STR(v, "sec_0001");
    CHECK(journal_field(d, (size_t)n, "HEARE_USER_AGENT", v, sizeof(v)));
    CHECK_STR(v, "agent\nwith newline");
    CHECK(journal_field(d, (size_t)n, "HEARE_CODE", v, sizeof(v)));
    CHECK_STR(v, "NOT_FOUND");
    CHECK(journal_field(d, (size_t)n, "HEARE_PEER_UID", v, sizeof(v)));
    CHECK_STR(v, "0");
    CHECK(journal_field(d, (size_t)n, "HEARE_PEER_PID", v, sizeof(v)));
    CHECK_STR(v, "77");
    CHECK(journal_field(d, (size_t)n, "HEARE_PEER_UNIT", v, sizeof(v)));
    CHECK_STR(v, "app.service");
    /* Fields that were not set are not sent. */
    CHECK(!journal_field(d, (size_t)n, "HEARE_KEY_ID", v, sizeof(v)));
    CHECK(!journal_field(d, (size_t)n, "HEARE_KEY_NAME", v, sizeof(v)));
    CHECK(!journal_field(d, (size_t)n, "HEARE_CHANGED", v, sizeof(v)));
    /* Only one datagram: the debug message was dropped. */
    CHECK(recv(fd, d, sizeof(d), MSG_DONTWAIT) < 0);
    close(fd);
    return 0;
}

static void test_journal_target(void)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(journal_child());
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 77);
    if (WEXITSTATUS(status) == 0)
        return;

    /* No mount namespace for us (not root): check the other half of the contract instead.
     * Without a journal socket the event falls back to a JSON line on stderr; with one, it
     * goes to the journal and stderr stays empty. */
    log_fields f = LOG_FIELDS_INIT;
    f.event = "journal_test";
    bool have_journal = access(JOURNAL_SOCKET, F_OK) == 0;
    log_setup(LOG_TARGET_JOURNAL, LOG_INFO);
    capture_start();
    log_event(LOG_INFO, &f, "to the journal");
    log_debug("dropped");
    _cleanup_free_ char *out = capture_stop();
    log_setup(LOG_TARGET_JSON, LOG_INFO);
    if (have_journal) {
        CHECK_STR(out, "");
    } else {
        json_t *objs[2];
        CHECK_INT(parse_lines(out, objs, ELEMENTSOF(objs)), 1);
        CHECK_STR(str(objs[0], "event"), "journal_test");
        json_decref(objs[0]);
    }
}

/* The journal is not reachable here (no socket in this test's view of /run): events
 * still reach stderr as JSON. */
static void test_journal_fallback(void)
{
    if (access(JOURNAL_SOCKET, F_OK) == 0)
        return; /* a real journal: test_journal_target covered the journal path */
    log_fields f = LOG_FIELDS_INIT;
    f.event = "fallback_test";
    log_setup(LOG_TARGET_JOURNAL, LOG_INFO);
    capture_start();
    log_event(LOG_INFO, &f, "kept");
    _cleanup_free_ char *out = capture_stop();
    log_setup(LOG_TARGET_JSON, LOG_INFO);
    json_t *objs[2];
    CHECK_INT(parse_lines(out, objs, ELEMENTSOF(objs)), 1);
    CHECK_STR(str(objs[0], "event"), "fallback_test");
    json_decref(objs[0]);
}

int main(void)
{
    test_defaults();
    test_fields();
    test_escaping();
    test_levels();
    test_concurrent();
    test_journal_target();
    test_journal_fallback();
    return 0;
}
