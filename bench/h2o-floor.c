/* h2o-floor: the floor of the HTTP path. The same h2o (libh2o-evloop 2.2.5) that
 * heare-authd uses, set up the same way (one evloop per thread, each with its own
 * descriptor of the shared listening socket, each new connection handed to the loop that
 * serves the fewest, one handler on "/"), answering every request with 200 and a constant
 * JSON body of the size of a real /verify answer, without reading the body. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>

static const char body[] =
    "{\"valid\":true,\"code\":\"VALID\",\"key_id\":\"key_0T4xXCe00000000001\",\"name\":\"bench-1\","
    "\"metadata\":{\"team\":\"bench\"},\"scopes\":[\"bench.read\"],\"expires_at\":null}";

static h2o_globalconf_t g_config;
static int g_listen_fd;

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_send_inline(req, body, sizeof(body) - 1);
    return 0;
}

typedef struct loop {
    h2o_evloop_t *evloop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t handoff;
    atomic_size_t load; /* connections served or handed over */
    atomic_bool ready;
} loop;

typedef struct handoff {
    h2o_multithread_message_t super;
    h2o_socket_export_t sock;
} handoff;

#define THREADS_MAX 256
static loop g_loops[THREADS_MAX];
static long g_threads;

static void on_close(void *data)
{
    atomic_fetch_sub(&((loop *)data)->load, 1);
}

static void serve(loop *l, h2o_socket_t *sock)
{
    sock->on_close.cb = on_close;
    sock->on_close.data = l;
    h2o_accept(&l->accept_ctx, sock);
}

/* The loop with the fewest connections, self on a tie, counted as having one more. */
static loop *choose_loop(loop *self)
{
    loop *best = self;
    size_t least = atomic_load(&self->load);
    for (long i = 0; i < g_threads && least > 0; i++) {
        size_t n = atomic_load(&g_loops[i].load);
        if (n < least && atomic_load(&g_loops[i].ready)) {
            best = &g_loops[i];
            least = n;
        }
    }
    atomic_fetch_add(&best->load, 1);
    return best;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    loop *l = listener->data;
    if (err)
        return;
    for (int i = 0; i < 64; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (!sock)
            break;
        loop *to = choose_loop(l);
        handoff *h;
        if (to == l)
            serve(l, sock);
        else if ((h = calloc(1, sizeof(*h))) && h2o_socket_export(sock, &h->sock) == 0)
            h2o_multithread_send_message(&to->handoff, &h->super);
        else {
            if (!h)
                h2o_socket_close(sock);
            free(h);
            atomic_fetch_sub(&to->load, 1);
        }
    }
}

static void on_handoff(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    loop *l = H2O_STRUCT_FROM_MEMBER(loop, handoff, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        handoff *h = H2O_STRUCT_FROM_MEMBER(handoff, super.link, messages->next);
        h2o_linklist_unlink(&h->super.link);
        serve(l, h2o_socket_import(l->evloop, &h->sock));
        free(h);
    }
}

static void *loop_main(void *arg)
{
    loop *l = arg;
    l->evloop = h2o_evloop_create();
    l->queue = h2o_multithread_create_queue(l->evloop);
    h2o_multithread_register_receiver(l->queue, &l->handoff, on_handoff);
    h2o_context_init(&l->ctx, l->evloop, &g_config);
    l->accept_ctx.ctx = &l->ctx;
    l->accept_ctx.hosts = g_config.hosts;
    int fd = fcntl(g_listen_fd, F_DUPFD_CLOEXEC, 3);
    h2o_socket_t *sock = h2o_evloop_socket_create(l->evloop, fd, H2O_SOCKET_FLAG_DONT_READ);
    sock->data = l;
    atomic_store(&l->ready, true);
    h2o_socket_read_start(sock, on_accept);
    for (;;)
        h2o_evloop_run(l->evloop, INT32_MAX);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: h2o-floor PORT [THREADS]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    long threads = argc > 2 ? atol(argv[2]) : sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1 || threads > THREADS_MAX) {
        fprintf(stderr, "h2o-floor: THREADS must be 1 … %d\n", THREADS_MAX);
        return 2;
    }
    g_threads = threads;
    signal(SIGPIPE, SIG_IGN);

    h2o_config_init(&g_config);
    g_config.server_name = h2o_iovec_init(H2O_STRLIT("h2o-floor"));
    h2o_hostconf_t *host =
        h2o_config_register_host(&g_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = on_req;

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    g_listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(g_listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (g_listen_fd < 0 || bind(g_listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(g_listen_fd, 4096) < 0) {
        fprintf(stderr, "h2o-floor: 127.0.0.1:%d: %s\n", port, strerror(errno));
        return 1;
    }
    pthread_t tid;
    for (long i = 1; i < threads; i++)
        pthread_create(&tid, NULL, loop_main, &g_loops[i]);
    loop_main(&g_loops[0]);
    return 0;
}
