/* push: sends the metrics, aggregated, every metrics-interval from a thread of its own, as
 * StatsD lines (SPEC §9, the Python service's names): over UDP in datagrams of at most 1432
 * bytes, or in one HTTP(S) POST with a bearer token. Verifies never wait for it: it reads
 * the counters' snapshot like any reader. A failed push is counted and dropped. */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "daemon.h"
#include "errors.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "push.h"
#include "timeutil.h"

/* A datagram that fits a 1500-byte Ethernet MTU after the IPv6 and UDP headers. */
#define UDP_MAX_DATAGRAM 1432
#define HTTP_CONNECT_TIMEOUT_MS 2000
#define HTTP_TIMEOUT_MS 5000

static const conf *g_conf;
static pthread_t g_thread;
static bool g_running;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond;
static bool g_stop; /* guarded by g_lock */

/* The push thread's own state. */
static bool g_udp;
static char *g_udp_host, *g_udp_port;
static int g_udp_fd = -1; /* -1 until the name resolves (again, after a failure) */
static struct sockaddr_storage g_udp_addr;
static socklen_t g_udp_addr_len;
static CURL *g_curl;
static struct curl_slist *g_headers;
static bool g_failing; /* the last push failed: say so once, not every interval */

/* ---- the lines ---- */

typedef struct lines {
    char *buf;
    size_t len;
    FILE *f;
} lines;

static void line(lines *l, const char *name, uint64_t value, const char *type)
{
    fprintf(l->f, "%s.%s:%" PRIu64 "|%s\n", g_conf->metrics_prefix, name, value, type);
}

/* What happened since prev; counters that did not move are left out. */
static int build(const metrics_snapshot *now, const metrics_snapshot *prev, bool startup,
                 bool shutdown, char **ret, size_t *ret_len)
{
    lines l = {0};
    uint64_t total = 0, prev_total = 0;

    l.f = open_memstream(&l.buf, &l.len);
    if (!l.f)
        return -ENOMEM;
    for (size_t i = 0; i < _VERIFY_CODE_MAX; i++) {
        total += now->verify[i];
        prev_total += prev->verify[i];
    }
    uint64_t requests = total - prev_total;
    uint64_t success = now->verify[VERIFY_VALID] - prev->verify[VERIFY_VALID];
    uint64_t reads_ok = now->reads[METRICS_READ_CHANGED] + now->reads[METRICS_READ_UNCHANGED] -
                        prev->reads[METRICS_READ_CHANGED] - prev->reads[METRICS_READ_UNCHANGED];
    uint64_t reads_failed = now->reads[METRICS_READ_ERROR] - prev->reads[METRICS_READ_ERROR];
    uint64_t health = now->health_requests - prev->health_requests;

    if (startup)
        line(&l, "startup", 1, "c");
    if (requests) {
        line(&l, "verify.requests", requests, "c");
        if (success)
            line(&l, "verify.success", success, "c");
        if (requests > success)
            line(&l, "verify.failure", requests - success, "c");
        /* A timer sample per interval: the mean of its verifications, in ms. */
        double mean_ms = (double)(now->duration_ns - prev->duration_ns) / (double)requests / 1e6;
        fprintf(l.f, "%s.verify.duration:%.6f|ms\n", g_conf->metrics_prefix, mean_ms);
    }
    if (reads_ok)
        line(&l, "refresh.success", reads_ok, "c");
    if (reads_failed)
        line(&l, "refresh.failure", reads_failed, "c");
    if (health)
        line(&l, "health.requests", health, "c");
    line(&l, "keys.count", now->keys, "g");
    if (shutdown)
        line(&l, "shutdown", 1, "c");

    bool failed = ferror(l.f);
    if (fclose(l.f) != 0 || failed) {
        free(l.buf);
        return -ENOMEM;
    }
    *ret = l.buf;
    *ret_len = l.len;
    return 0;
}

/* ---- transports ---- */

/* Splits "udp://HOST:PORT" ("[ADDR]:PORT" for IPv6). The name is resolved by the push
 * thread, so that a resolver that is down at start costs pushes, not the daemon. */
static int udp_open(const char *url, char **reterr)
{
    int r = conf_split_host_port(url + strlen("udp://"), &g_udp_host, &g_udp_port);
    if (r == -EINVAL)
        return errors_fail(reterr, r, "'%s' has no port", url);
    if (r < 0)
        return r;
    g_udp = true;
    return 0;
}

static int udp_resolve(char **reterr)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV}, *res = NULL;

    int r = getaddrinfo(g_udp_host, g_udp_port, &hints, &res);
    if (r != 0)
        return errors_fail(reterr, -EADDRNOTAVAIL, "cannot resolve %s: %s", g_udp_host,
                           gai_strerror(r));
    g_udp_fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (g_udp_fd < 0) {
        freeaddrinfo(res);
        return errors_fail(reterr, negative_errno(), "socket: %m");
    }
    memcpy(&g_udp_addr, res->ai_addr, res->ai_addrlen);
    g_udp_addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* Whole lines per datagram, each datagram at most UDP_MAX_DATAGRAM bytes. */
static int udp_send(const char *buf, size_t len, char **reterr)
{
    size_t off = 0;
    if (g_udp_fd < 0) {
        int r = udp_resolve(reterr);
        if (r < 0)
            return r;
    }
    while (off < len) {
        size_t end = off, n = 0;
        while (end < len) {
            const char *nl = memchr(buf + end, '\n', len - end);
            size_t next = nl ? (size_t)(nl - buf) + 1 : len;
            if (next - off - 1 > UDP_MAX_DATAGRAM && end > off)
                break;
            end = next;
        }
        n = end - off;
        if (n > 0 && buf[off + n - 1] == '\n')
            n--; /* no trailing newline in a datagram */
        if (n > 0 && sendto(g_udp_fd, buf + off, n, MSG_NOSIGNAL, (struct sockaddr *)&g_udp_addr,
                            g_udp_addr_len) < 0) {
            int r = errors_fail(reterr, negative_errno(), "sendto: %m");
            g_udp_fd = safe_close(g_udp_fd); /* resolve again next time */
            return r;
        }
        off = end;
    }
    return 0;
}

static size_t discard_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    return size * nmemb;
}

static int http_open(const char *url, const char *secret, char **reterr)
{
    g_curl = curl_easy_init();
    if (!g_curl)
        return errors_fail(reterr, -ENOMEM, "cannot create a curl handle");
    g_headers = curl_slist_append(NULL, "Content-Type: text/plain");
    if (g_headers && secret) {
        _cleanup_free_ char *auth = NULL;
        if (asprintf(&auth, "Authorization: Bearer %s", secret) < 0)
            return -ENOMEM;
        struct curl_slist *h = curl_slist_append(g_headers, auth);
        explicit_bzero(auth, strlen(auth));
        if (!h)
            return -ENOMEM;
        g_headers = h;
    }
    if (!g_headers)
        return -ENOMEM;
    curl_easy_setopt(g_curl, CURLOPT_URL, url);
    curl_easy_setopt(g_curl, CURLOPT_HTTPHEADER, g_headers);
    curl_easy_setopt(g_curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(g_curl, CURLOPT_CONNECTTIMEOUT_MS, (long)HTTP_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(g_curl, CURLOPT_TIMEOUT_MS, (long)HTTP_TIMEOUT_MS);
    curl_easy_setopt(g_curl, CURLOPT_WRITEFUNCTION, discard_body);
    curl_easy_setopt(g_curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(g_curl, CURLOPT_USERAGENT, "heare-authd/" HEARE_VERSION);
    return 0;
}

static int http_send(const char *buf, size_t len, char **reterr)
{
    long status = 0;
    curl_easy_setopt(g_curl, CURLOPT_POSTFIELDS, buf);
    curl_easy_setopt(g_curl, CURLOPT_POSTFIELDSIZE, (long)len);
    CURLcode rc = curl_easy_perform(g_curl);
    if (rc != CURLE_OK)
        return errors_fail(reterr, -EIO, "%s", curl_easy_strerror(rc));
    curl_easy_getinfo(g_curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299)
        return errors_fail(reterr, -EIO, "HTTP status %ld", status);
    return 0;
}

/* ---- the thread ---- */

static void push(const metrics_snapshot *now, const metrics_snapshot *prev, bool startup,
                 bool shutdown)
{
    _cleanup_free_ char *buf = NULL, *err = NULL;
    size_t len;
    int r = build(now, prev, startup, shutdown, &buf, &len);
    if (r >= 0)
        r = g_udp ? udp_send(buf, len, &err) : http_send(buf, len, &err);
    metrics_count_push(r >= 0);
    if (r < 0 && !g_failing)
        log_warning("metrics push to %s failed: %s (dropped; further failures are counted "
                    "quietly until one succeeds)",
                    g_conf->metrics_url, err ? err : strerror(-r));
    else if (r >= 0 && g_failing)
        log_info("metrics push to %s works again", g_conf->metrics_url);
    g_failing = r < 0;
}

static void *push_thread(void *arg)
{
    metrics_snapshot prev = {0}, now;
    struct timespec deadline;
    bool startup = true;

    pthread_setname_np(pthread_self(), "heare-push");
    for (;;) {
        metrics_snapshot_take(&now);
        pthread_mutex_lock(&g_lock);
        bool stop = g_stop;
        pthread_mutex_unlock(&g_lock);
        push(&now, &prev, startup, stop);
        prev = now;
        startup = false;
        if (stop)
            break;

        timeutil_deadline_ms(&deadline, (uint64_t)g_conf->metrics_interval_ms);
        pthread_mutex_lock(&g_lock);
        while (!g_stop && pthread_cond_timedwait(&g_cond, &g_lock, &deadline) != ETIMEDOUT)
            ;
        pthread_mutex_unlock(&g_lock);
    }
    return NULL;
}

int push_start(const conf *c, char **reterr)
{
    pthread_condattr_t attr;
    int r;

    if (!c->metrics_url)
        return 0;
    g_conf = c;
    r = strncmp(c->metrics_url, "udp://", 6) == 0 ? udp_open(c->metrics_url, reterr)
                                                   : http_open(c->metrics_url, c->metrics_secret,
                                                               reterr);
    if (r < 0)
        return r;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&g_cond, &attr);
    pthread_condattr_destroy(&attr);
    r = -pthread_create(&g_thread, NULL, push_thread, NULL);
    if (r < 0)
        return errors_fail(reterr, r, "cannot start the push thread: %m");
    g_running = true;
    return 0;
}

void push_stop(void)
{
    if (g_running) {
        pthread_mutex_lock(&g_lock);
        g_stop = true;
        pthread_cond_signal(&g_cond);
        pthread_mutex_unlock(&g_lock);
        /* It sends the last batch, with "shutdown", before it returns. */
        pthread_join(g_thread, NULL);
        g_running = false;
        pthread_cond_destroy(&g_cond);
    }
    g_udp_fd = safe_close(g_udp_fd);
    g_udp_host = mfree(g_udp_host);
    g_udp_port = mfree(g_udp_port);
    g_udp = false;
    if (g_curl)
        curl_easy_cleanup(g_curl);
    g_curl = NULL;
    /* One of them holds the bearer token. */
    for (struct curl_slist *h = g_headers; h; h = h->next)
        explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(g_headers);
    g_headers = NULL;
}
