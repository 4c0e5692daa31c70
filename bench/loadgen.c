/* loadgen: a closed-loop Varlink load generator. N connections to a Unix socket, each with
 * D calls of io.heare.Auth.Verify in flight (NUL framing), a fixed mix of valid, unknown and
 * malformed keys, for a warm-up and then a measured duration. It prints one line of
 * key=value pairs: requests/s and p50/p99/p99.9/max latency from a histogram.
 *
 * Every message is rendered once at start into one buffer; the run itself allocates
 * nothing: each connection has a fixed input buffer, a fixed output buffer and a ring of
 * send times. A call's latency is from the write that carried it to the read that carried
 * its reply (one clock read per batch). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"

#define MSG_RING 4096          /* distinct messages cycled through */
#define IN_CAP (256 * 1024)    /* per connection; a reply is a few hundred bytes */
#define MSG_MAX 256

typedef struct opts {
    const char *socket;
    const char *keys;
    unsigned conns, depth, threads;
    double duration, warmup;
    unsigned valid, unknown, malformed; /* percentages of the mix */
    uint64_t count; /* stop after this many replies (0: run for duration) */
} opts;

typedef struct msgs {
    char *buf;
    uint32_t off[MSG_RING];
    uint16_t len[MSG_RING];
} msgs;

typedef struct conn {
    int fd;
    unsigned next_msg;
    unsigned inflight;
    uint64_t *sent; /* ring of depth send times */
    unsigned sent_head, sent_tail;
    char *in;
    size_t in_len;
    char *out;
    size_t out_len, out_off;
} conn;

typedef struct worker {
    pthread_t tid;
    const opts *o;
    const msgs *m;
    conn *conns;
    unsigned n_conns;
    hist h;
    uint64_t replies, valid, not_found, malformed, other;
    int err;
} worker;

static volatile int g_phase; /* 0 warm-up, 1 measure, 2 stop */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static const char B62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* Reads the valid secrets (one per line) and renders the message ring from the mix:
 * unknown keys are well-formed legacy (generation 0, no checksum) secrets that no store
 * holds; malformed ones are generation-1 secrets with a wrong checksum. */
static int build_msgs(const opts *o, msgs *m)
{
    char **secrets = NULL;
    size_t n = 0, cap = 0;
    char line[MSG_MAX];
    FILE *f = fopen(o->keys, "re");
    if (!f) {
        fprintf(stderr, "loadgen: %s: %s\n", o->keys, strerror(errno));
        return -1;
    }
    while (n < MSG_RING && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            secrets = realloc(secrets, cap * sizeof(*secrets));
            if (!secrets)
                abort();
        }
        secrets[n++] = strdup(line);
    }
    fclose(f);
    if (n == 0 && o->valid > 0) {
        fprintf(stderr, "loadgen: %s: no secrets\n", o->keys);
        return -1;
    }
    m->buf = malloc((size_t)MSG_RING * MSG_MAX);
    if (!m->buf)
        abort();
    uint64_t seed = 42;
    size_t pos = 0;
    for (unsigned i = 0; i < MSG_RING; i++) {
        char key[64];
        unsigned r = (unsigned)(splitmix(&seed) % 100);
        if (r < o->valid) {
            snprintf(key, sizeof(key), "%s", secrets[i % n]);
        } else if (r < o->valid + o->unknown) {
            memcpy(key, "sec_0", 5);
            for (int k = 0; k < 18; k++)
                key[5 + k] = B62[splitmix(&seed) % 62];
            key[23] = 0;
        } else {
            memcpy(key, "sec_1", 5);
            for (int k = 0; k < 38; k++)
                key[5 + k] = B62[splitmix(&seed) % 62];
            key[43] = 0; /* 38 random characters: the checksum cannot match but by chance */
        }
        int len = snprintf(m->buf + pos, MSG_MAX,
                           "{\"method\":\"io.heare.Auth.Verify\",\"parameters\":{\"key\":\"%s\"}}",
                           key);
        m->off[i] = (uint32_t)pos;
        m->len[i] = (uint16_t)(len + 1); /* with the NUL */
        pos += (size_t)len + 1;
    }
    for (size_t i = 0; i < n; i++)
        free(secrets[i]);
    free(secrets);
    return 0;
}

static int conn_open(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Queues k more calls; send times are stamped when the write goes out. */
static void conn_queue(worker *w, conn *c, unsigned k)
{
    /* Unsent bytes never exceed depth messages: keep them at the front. */
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    for (unsigned i = 0; i < k; i++) {
        unsigned idx = c->next_msg++ % MSG_RING;
        memcpy(c->out + c->out_len, w->m->buf + w->m->off[idx], w->m->len[idx]);
        c->out_len += w->m->len[idx];
    }
}

static int conn_write(worker *w, conn *c, unsigned new_calls, uint64_t t)
{
    for (unsigned i = 0; i < new_calls; i++) {
        c->sent[c->sent_tail] = t;
        c->sent_tail = (c->sent_tail + 1) % w->o->depth;
    }
    c->inflight += new_calls;
    while (c->out_off < c->out_len) {
        ssize_t r = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 1; /* the rest goes with EPOLLOUT */
            return -1;
        }
        c->out_off += (size_t)r;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

static void classify(worker *w, const char *msg, size_t len)
{
    if (len > 30 && memcmp(msg, "{\"parameters\":{\"valid\":true", 27) == 0)
        w->valid++;
    else if (memmem(msg, len, "\"NOT_FOUND\"", 11))
        w->not_found++;
    else if (memmem(msg, len, "\"MALFORMED\"", 11))
        w->malformed++;
    else
        w->other++;
}

/* Returns the number of replies read, or -1 when the connection failed. */
static int conn_read(worker *w, conn *c, uint64_t t, bool record)
{
    int done = 0;
    for (;;) {
        ssize_t r = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return -1;
        }
        if (r == 0)
            return -1;
        c->in_len += (size_t)r;
        size_t start = 0;
        for (;;) {
            char *nul = memchr(c->in + start, 0, c->in_len - start);
            if (!nul)
                break;
            size_t len = (size_t)(nul - (c->in + start));
            if (record) {
                classify(w, c->in + start, len);
                hist_record(&w->h, t - c->sent[c->sent_head]);
                w->replies++;
            }
            c->sent_head = (c->sent_head + 1) % w->o->depth;
            c->inflight--;
            done++;
            start += len + 1;
        }
        memmove(c->in, c->in + start, c->in_len - start);
        c->in_len -= start;
        if (c->in_len == IN_CAP)
            return -1; /* a reply larger than the buffer: not a Verify answer */
        if ((size_t)r < IN_CAP / 2)
            break;
    }
    return done;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    const opts *o = w->o;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        w->err = errno;
        return NULL;
    }
    for (unsigned i = 0; i < w->n_conns; i++) {
        conn *c = &w->conns[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        conn_queue(w, c, o->depth);
        if (conn_write(w, c, o->depth, now_ns()) < 0) {
            w->err = errno ? errno : EPIPE;
            return NULL;
        }
        if (c->out_len) {
            ev.events = EPOLLIN | EPOLLOUT;
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    struct epoll_event evs[64];
    while (g_phase < 2) {
        int n = epoll_wait(ep, evs, 64, 100);
        if (n < 0 && errno != EINTR) {
            w->err = errno;
            break;
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            bool record = g_phase == 1;
            uint64_t t = now_ns();
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                int k = conn_read(w, c, t, record);
                if (k < 0) {
                    w->err = EPIPE;
                    g_phase = 2;
                    break;
                }
                if (o->count && w->replies >= o->count)
                    g_phase = 2;
                if (k > 0 && g_phase < 2) {
                    bool was_pending = c->out_len > 0;
                    conn_queue(w, c, (unsigned)k);
                    if (!was_pending) {
                        int r = conn_write(w, c, (unsigned)k, t);
                        if (r < 0) {
                            w->err = EPIPE;
                            g_phase = 2;
                            break;
                        }
                        if (r > 0) {
                            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                        }
                    } else {
                        /* Stamped now; they leave with the pending bytes. */
                        for (int j = 0; j < k; j++) {
                            c->sent[c->sent_tail] = t;
                            c->sent_tail = (c->sent_tail + 1) % o->depth;
                        }
                        c->inflight += (unsigned)k;
                    }
                }
            }
            if ((evs[i].events & EPOLLOUT) && c->out_len) {
                int r = conn_write(w, c, 0, t);
                if (r < 0) {
                    w->err = EPIPE;
                    g_phase = 2;
                    break;
                }
                if (r == 0) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
        }
    }
    close(ep);
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen -s SOCKET -k SECRETS [-c CONNS] [-d DEPTH] [-t SECONDS] [-w SECONDS]\n"
            "               [-T THREADS] [-m VALID:UNKNOWN:MALFORMED] [-n COUNT]\n"
            "  SECRETS: valid secrets, one per line (bench/keygen -S)\n"
            "  -m: the mix in percent (default 80:15:5)\n"
            "  -n: stop after COUNT replies (no warm-up), for callgrind\n");
}

int main(int argc, char **argv)
{
    opts o = {.conns = 1, .depth = 1, .threads = 1, .duration = 5, .warmup = 1,
              .valid = 80, .unknown = 15, .malformed = 5};
    int ch;
    while ((ch = getopt(argc, argv, "s:k:c:d:t:w:T:m:n:h")) >= 0) {
        switch (ch) {
        case 's': o.socket = optarg; break;
        case 'k': o.keys = optarg; break;
        case 'c': o.conns = (unsigned)atoi(optarg); break;
        case 'd': o.depth = (unsigned)atoi(optarg); break;
        case 't': o.duration = atof(optarg); break;
        case 'w': o.warmup = atof(optarg); break;
        case 'T': o.threads = (unsigned)atoi(optarg); break;
        case 'n': o.count = strtoull(optarg, NULL, 10); break;
        case 'm':
            if (sscanf(optarg, "%u:%u:%u", &o.valid, &o.unknown, &o.malformed) != 3 ||
                o.valid + o.unknown + o.malformed != 100) {
                fprintf(stderr, "loadgen: -m wants three percentages adding up to 100\n");
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!o.socket || !o.keys || o.conns < 1 || o.depth < 1 || o.depth > 4096 ||
        o.threads < 1 || o.threads > o.conns || o.duration <= 0) {
        usage(stderr);
        return 2;
    }
    if (o.count)
        o.warmup = 0;

    msgs m;
    if (build_msgs(&o, &m) < 0)
        return 1;

    worker *ws = calloc(o.threads, sizeof(*ws));
    if (!ws)
        abort();
    for (unsigned t = 0; t < o.threads; t++) {
        worker *w = &ws[t];
        w->o = &o;
        w->m = &m;
        w->n_conns = o.conns / o.threads + (t < o.conns % o.threads);
        w->conns = calloc(w->n_conns, sizeof(conn));
        if (!w->conns)
            abort();
        for (unsigned i = 0; i < w->n_conns; i++) {
            conn *c = &w->conns[i];
            c->fd = conn_open(o.socket);
            if (c->fd < 0) {
                fprintf(stderr, "loadgen: connect %s: %s\n", o.socket, strerror(errno));
                return 1;
            }
            c->next_msg = (t * 7919u + i * 104729u) % MSG_RING;
            c->sent = calloc(o.depth, sizeof(uint64_t));
            c->in = malloc(IN_CAP);
            c->out = malloc((size_t)o.depth * 2 * MSG_MAX);
            if (!c->sent || !c->in || !c->out)
                abort();
            /* Non-blocking from here on. */
            fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        }
    }

    g_phase = o.warmup > 0 ? 0 : 1;
    for (unsigned t = 0; t < o.threads; t++)
        pthread_create(&ws[t].tid, NULL, worker_main, &ws[t]);
    if (o.warmup > 0) {
        struct timespec wt = {(time_t)o.warmup, (long)((o.warmup - (double)(time_t)o.warmup) * 1e9)};
        nanosleep(&wt, NULL);
        g_phase = 1;
    }
    uint64_t t0 = now_ns();
    if (o.count) {
        /* Run until the count is reached, or for at most the duration. */
        while (g_phase < 2 && (double)(now_ns() - t0) / 1e9 < o.duration) {
            struct timespec st = {0, 1000000};
            nanosleep(&st, NULL);
        }
    } else {
        struct timespec dt = {(time_t)o.duration,
                              (long)((o.duration - (double)(time_t)o.duration) * 1e9)};
        nanosleep(&dt, NULL);
    }
    g_phase = 2;
    uint64_t t1 = now_ns();
    for (unsigned t = 0; t < o.threads; t++)
        pthread_join(ws[t].tid, NULL);

    hist *h = calloc(1, sizeof(hist));
    uint64_t valid = 0, nf = 0, mal = 0, other = 0;
    int err = 0;
    for (unsigned t = 0; t < o.threads; t++) {
        hist_merge(h, &ws[t].h);
        valid += ws[t].valid;
        nf += ws[t].not_found;
        mal += ws[t].malformed;
        other += ws[t].other;
        if (ws[t].err)
            err = ws[t].err;
    }
    double secs = (double)(t1 - t0) / 1e9;
    printf("rps=%.0f requests=%" PRIu64 " seconds=%.3f p50_us=%.1f p99_us=%.1f p999_us=%.1f "
           "max_us=%.1f valid=%" PRIu64 " not_found=%" PRIu64 " malformed=%" PRIu64
           " other=%" PRIu64 " conns=%u depth=%u\n",
           (double)h->count / secs, h->count, secs, hist_percentile(h, 50) / 1e3,
           hist_percentile(h, 99) / 1e3, hist_percentile(h, 99.9) / 1e3, h->max / 1e3, valid, nf,
           mal, other, o.conns, o.depth);
    if (err) {
        fprintf(stderr, "loadgen: connection failed: %s\n", strerror(err));
        return 1;
    }
    return 0;
}
