/* floor: the physical floor of the Varlink socket path. It listens on the same kind of
 * socket (AF_UNIX stream) with the same framing (NUL-terminated messages) and answers every
 * message with one fixed reply of the size of a real Verify answer: no parsing, no lookup,
 * no logging. Like heare-authd it runs one thread per CPU, each with its own epoll set and
 * its own descriptor of the shared listening socket, and places each new connection on the
 * thread that serves the fewest (whichever thread accepts it); it reads whatever has
 * arrived, answers every complete message in it with one write, and so pays only the
 * system calls the daemon cannot avoid either. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define IN_CAP (64 * 1024 + 1)
#define OUT_CAP (1024 * 1024)

/* The size and shape of the daemon's answer for a VALID key with small metadata. */
static const char default_reply[] =
    "{\"parameters\":{\"valid\":true,\"code\":\"VALID\",\"key_id\":\"key_0T4xXCe00000000001\","
    "\"name\":\"bench-1\",\"metadata\":{\"team\":\"bench\"},\"scopes\":[\"bench.read\"],"
    "\"expires_at\":null}}";

typedef struct conn {
    int fd;
    char in[IN_CAP];
    size_t in_len;
    char *out;
    size_t out_len, out_off;
    int want_out;
    int owner; /* the thread whose epoll set has it */
} conn;

#define THREADS_MAX 256
static int g_ep[THREADS_MAX];
static atomic_size_t g_load[THREADS_MAX];
static long g_threads;

static int g_listen_fd;
static const char *g_reply = default_reply;
static size_t g_reply_len; /* with its NUL */

static void conn_close(int ep, conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    atomic_fetch_sub(&g_load[c->owner], 1);
    free(c->out);
    free(c);
}

/* Returns -1 when the connection is to be closed. */
static int conn_flush(int ep, conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t r = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (!c->want_out) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    c->want_out = 1;
                }
                return 0;
            }
            return -1;
        }
        c->out_off += (size_t)r;
    }
    if (c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = 0;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

static int conn_read(int ep, conn *c)
{
    /* Back-pressure like the daemon: no reading while much output waits. */
    if (c->out_len - c->out_off > OUT_CAP / 2)
        return 0;
    ssize_t r = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
    if (r < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (r == 0)
        return -1;
    c->in_len += (size_t)r;
    size_t start = 0;
    for (;;) {
        char *nul = memchr(c->in + start, 0, c->in_len - start);
        if (!nul)
            break;
        if (c->out_len + g_reply_len > OUT_CAP)
            return -1;
        memcpy(c->out + c->out_len, g_reply, g_reply_len);
        c->out_len += g_reply_len;
        start = (size_t)(nul - c->in) + 1;
    }
    if (start == 0 && c->in_len == IN_CAP)
        return -1; /* over 64 KiB without a terminator */
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    return conn_flush(ep, c);
}

/* The thread with the fewest connections, self on a tie, counted as having one more. */
static int choose_thread(int self)
{
    int best = self;
    size_t least = atomic_load(&g_load[self]);
    for (int i = 0; i < g_threads && least > 0; i++) {
        size_t n = atomic_load(&g_load[i]);
        if (n < least) {
            best = i;
            least = n;
        }
    }
    atomic_fetch_add(&g_load[best], 1);
    return best;
}

static void *worker_main(void *arg)
{
    int self = (int)(long)arg;
    int ep = g_ep[self];
    int lfd = fcntl(g_listen_fd, F_DUPFD_CLOEXEC, 3);
    if (lfd < 0) {
        perror("floor: epoll");
        exit(1);
    }
    struct epoll_event lev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    c = malloc(sizeof(*c));
                    char *out = malloc(OUT_CAP);
                    if (!c || !out) {
                        free(c);
                        free(out);
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    c->in_len = c->out_len = c->out_off = 0;
                    c->want_out = 0;
                    c->out = out;
                    c->owner = choose_thread(self);
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(g_ep[c->owner], EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            int r = 0;
            if (evs[i].events & EPOLLOUT)
                r = conn_flush(ep, c);
            if (r == 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                r = conn_read(ep, c);
            if (r < 0)
                conn_close(ep, c);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    int ch;
    while ((ch = getopt(argc, argv, "s:T:r:h")) >= 0) {
        switch (ch) {
        case 's': path = optarg; break;
        case 'T': threads = atol(optarg); break;
        case 'r': g_reply = optarg; break;
        default:
            fprintf(stderr, "usage: floor -s SOCKET [-T THREADS] [-r REPLY]\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    if (!path || threads < 1 || threads > THREADS_MAX) {
        fprintf(stderr, "usage: floor -s SOCKET [-T THREADS] [-r REPLY]\n");
        return 2;
    }
    g_reply_len = strlen(g_reply) + 1;
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "floor: socket path too long\n");
        return 2;
    }
    strcpy(sa.sun_path, path);
    unlink(path);
    g_listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (g_listen_fd < 0 || bind(g_listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(g_listen_fd, 4096) < 0) {
        fprintf(stderr, "floor: %s: %s\n", path, strerror(errno));
        return 1;
    }
    g_threads = threads;
    for (long i = 0; i < threads; i++)
        if ((g_ep[i] = epoll_create1(EPOLL_CLOEXEC)) < 0) {
            perror("floor: epoll");
            return 1;
        }
    pthread_t tid;
    for (long i = 1; i < threads; i++)
        pthread_create(&tid, NULL, worker_main, (void *)i);
    worker_main((void *)0L);
    return 0;
}
