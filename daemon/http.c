/* http: SPEC §6 on h2o. h2o parses HTTP/1.1 (and HTTP/2), enforces the request timeout and
 * the body limit, and runs keep-alive and pipelining; this file routes the five paths and
 * answers them from the same verify, health, refresh and metrics code as the Varlink
 * methods. Bodies are the Python service's (*compat*). */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "buffers.h"
#include "daemon.h"
#include "errors.h"
#include "http.h"
#include "http-parse.h"
#include "json-lenient.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "secret.h"
#include "turns.h"

#define JSON_TYPE "application/json"


struct http_loop {
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_linklist_t conns; /* tracked */
    size_t n_conns;
    atomic_size_t *load; /* the loop's count of connections, shared with the others */
    /* held_req: requests held for a turn (turns.h), the ones the loop's budget stopped
     * first; and requests held back by buffers-max. */
    h2o_linklist_t ready_first, ready;
    h2o_linklist_t waiting;
    turns *turns; /* the serving loop's, shared with its Varlink connections */
};

/* One per connection, to count it and to find its descriptor at drain time. h2o calls
 * on_close whichever way the connection ends (HTTP/1 or HTTP/2). */
typedef struct tracked {
    h2o_linklist_t link;
    http_loop *hl;
    h2o_socket_t *sock;
    uint64_t held; /* bytes counted in buffers.h: h2o's input buffer, as allocated */
    turn_share share;
} tracked;

/* A request answered later, for its turn or for buffers-max. In the request's pool: when
 * h2o disposes of the request (its connection gone), it leaves its queue. */
typedef struct held_req {
    h2o_linklist_t link;
    h2o_req_t *req;
    tracked *t;
} held_req;

static h2o_globalconf_t g_config;
static bool g_config_inited;

/* ---- answers ---- */

/* h2o keeps a pointer to a header's value until the response is sent (for HTTP/2, after
 * this handler returned): a value must be a literal or live in the request's pool. */
static void add_header(h2o_req_t *req, const h2o_token_t *token, const char *value, size_t len)
{
    h2o_add_header(&req->pool, &req->res.headers, token, NULL, value, len);
}

static void add_header_str(h2o_req_t *req, const char *name, const char *value, size_t len)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL, value,
                          len);
}

static const char *reason_of(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "";
    }
}

static void respond(h2o_req_t *req, int status, const char *type, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason_of(status);
    if (type)
        add_header(req, H2O_TOKEN_CONTENT_TYPE, type, strlen(type));
    /* A known length keeps the connection alive whatever the status (h2o closes it after a
     * chunked non-200). */
    req->res.content_length = len;
    h2o_send_inline(req, body ? body : "", len);
}

static void respond_str(h2o_req_t *req, int status, const char *json)
{
    respond(req, status, JSON_TYPE, json, strlen(json));
}

static void respond_oom(h2o_req_t *req)
{
    respond_str(req, 500, "{\"detail\":\"out of memory\"}");
}

/* Sends a JSON value (consumed). */
static void respond_json(h2o_req_t *req, int status, json_t *v)
{
    _cleanup_json_ json_t *owned = v;
    _cleanup_free_ char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    if (!text) {
        respond_oom(req);
        return;
    }
    respond(req, status, JSON_TYPE, text, strlen(text));
}

static void set_retry_after(h2o_req_t *req, int64_t retry_ms)
{
    char s[24];
    int n = snprintf(s, sizeof(s), "%" PRId64, (retry_ms + 999) / 1000);
    h2o_iovec_t v = h2o_strdup(&req->pool, s, (size_t)n);
    add_header(req, H2O_TOKEN_RETRY_AFTER, v.base, v.len);
}

/* ---- the peer ---- */

typedef struct http_peer {
    struct sockaddr_storage sa;
    socklen_t len;
    char addr[NI_MAXHOST];
    verify_peer v;
} http_peer;

/* want_addr: format the address, for the log. inet_ntop goes through sprintf (4 % of a
 * request's user time under wrk), so not when nothing will log it. */
static void get_peer(h2o_req_t *req, http_peer *p, bool want_addr)
{
    p->len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&p->sa);
    p->v = (verify_peer){.uid = -1, .pid = -1};
    if (p->len > 0 && p->sa.ss_family == AF_UNIX) {
        /* A local process: judged by its uid, like on the Varlink sockets. */
        struct ucred cred;
        socklen_t n = sizeof(cred);
        h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
        if (sock &&
            getsockopt(h2o_socket_get_fd(sock), SOL_SOCKET, SO_PEERCRED, &cred, &n) == 0) {
            p->v.throttle = cred.uid;
            p->v.uid = cred.uid;
            p->v.pid = cred.pid;
        }
        return;
    }
    if (p->len == 0) {
        p->v.throttle = UINT32_MAX;
    } else {
        p->v.throttle = throttle_peer_addr((struct sockaddr *)&p->sa);
    }
    if (!want_addr)
        return;
    if (p->len == 0 ||
        h2o_socket_getnumerichost((struct sockaddr *)&p->sa, p->len, p->addr) == SIZE_MAX)
        strcpy(p->addr, "unknown");
    p->v.addr = p->addr;
}

/* The verify log needs the peer's address. */
static bool verify_logged(void)
{
    return state_conf()->log_verify != CONF_LOG_VERIFY_NONE;
}

/* Loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) or a local Unix socket peer: judged on
 * the address the kernel gave, never on a header. */
static bool peer_is_local(const http_peer *p)
{
    if (p->len == 0)
        return false;
    switch (p->sa.ss_family) {
    case AF_UNIX:
        return true;
    case AF_INET:
        return (ntohl(((const struct sockaddr_in *)&p->sa)->sin_addr.s_addr) >> 24) == 127;
    case AF_INET6: {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)&p->sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    default:
        return false;
    }
}

/* ---- request helpers ---- */

/* The value of a request header as a NUL-terminated copy in the request's pool, or NULL. */
static char *header_dup(h2o_req_t *req, const h2o_token_t *token, const char *name)
{
    ssize_t i = token ? h2o_find_header(&req->headers, token, -1)
                      : h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    if (i < 0)
        return NULL;
    h2o_iovec_t v = req->headers.entries[i].value;
    return h2o_strdup(&req->pool, v.base, v.len).base;
}

/* The first value of a query parameter, percent- and '+'-decoded into the request's pool;
 * NULL if absent or if it decodes to something with a NUL in it. */
static char *query_param(h2o_req_t *req, const char *name)
{
    if (req->query_at == SIZE_MAX)
        return NULL;
    size_t at = req->query_at + 1, len;
    const char *v = http_query_find(req->path.base + at, req->path.len - at, name, &len);
    if (!v)
        return NULL;
    char *out = h2o_mem_alloc_pool(&req->pool, len + 1);
    return http_query_decode(v, len, out) ? out : NULL;
}

/* ---- POST /verify ---- */

static void respond_unprocessable(h2o_req_t *req, const char *field, const char *msg,
                                  const char *type)
{
    respond_json(req, 422,
                 json_pack("{s:[{s:[s,s],s:s,s:s}]}", "detail", "loc", "body", field, "msg",
                           msg, "type", type));
}

static void respond_verify_failure(h2o_req_t *req, int status, const char *error,
                                   const verify_result *r)
{
    /* Copied together rather than printed (snprintf was 9 % of a request's user time with
     * one request in five refused). The parts are short literals, so the body fits. */
    char body[256];
    const char *code = keystore_code_name(r->code);
    size_t n = 0;
#define PUT(s, len) (memcpy(body + n, s, len), n += (len))
#define PUT_LIT(lit) PUT(lit, sizeof(lit) - 1)
    PUT_LIT("{\"detail\":{\"valid\":false,\"error\":\"");
    PUT(error, strlen(error));
    PUT_LIT("\",\"code\":\"");
    PUT(code, strlen(code));
    PUT_LIT("\"");
    if (r->code == VERIFY_RATE_LIMITED) {
        char num[32];
        int k = snprintf(num, sizeof(num), ",\"retry_after_ms\":%" PRId64, r->retry_after_ms);
        PUT(num, (size_t)k);
        set_retry_after(req, r->retry_after_ms);
    }
    PUT_LIT("}}");
#undef PUT_LIT
#undef PUT
    respond(req, status, JSON_TYPE, body, n); /* h2o copies it */
}

/* Verifies key[0..key_len) (which verify_run wipes) and answers. */
static void verify_entity(h2o_req_t *req, char *key, size_t key_len, const char *scope)
{
    http_peer peer;
    verify_result r;
    get_peer(req, &peer, verify_logged());
    verify_run(key, key_len, scope, header_dup(req, H2O_TOKEN_USER_AGENT, NULL), &peer.v, &r);

    switch (r.code) {
    case VERIFY_VALID: {
        char stack[2048];
        size_t n = verify_render(&r, stack, sizeof(stack));
        if (n < sizeof(stack)) {
            respond(req, 200, JSON_TYPE, stack, n);
        } else {
            /* A key with very large metadata: render into the request's pool. */
            char *buf = h2o_mem_alloc_pool(&req->pool, n + 1);
            verify_render(&r, buf, n + 1);
            respond(req, 200, JSON_TYPE, buf, n);
        }
        return;
    }
    case VERIFY_FORBIDDEN:
        respond_verify_failure(req, 403, "Insufficient scope", &r);
        return;
    case VERIFY_RATE_LIMITED:
        respond_verify_failure(req, 429, "Rate limit exceeded", &r);
        return;
    default:
        respond_verify_failure(req, 401, "Invalid API key", &r);
        return;
    }
}

static void handle_verify(h2o_req_t *req)
{
    json_error_t jerr;
    _cleanup_json_ json_t *body = NULL;
    char *key;
    size_t key_len;
    const char *scope;

    if (req->entity.base &&
        http_scan_verify_body(req->entity.base, req->entity.len, &key, &key_len, &scope)) {
        verify_entity(req, key, key_len, scope);
        secret_wipe(req->entity.base, req->entity.len);
        return;
    }
    if (req->entity.base)
        body = json_util_loadb(req->entity.base, req->entity.len, JSON_DECODE_ANY, &jerr);
    if (req->entity.base && !body) {
        /* Valid JSON that jansson refuses (an escaped NUL, a lone surrogate, a number
         * beyond a double) is not "not JSON": its api_key is then MALFORMED, or not a
         * string. */
        json_t *unfit;
        if (json_lenient_load(req->entity.base, req->entity.len, 0, &body, &unfit) < 0)
            body = NULL;
    }
    /* The body holds the key: the parsed copy is all we need from here on. */
    if (req->entity.base)
        secret_wipe(req->entity.base, req->entity.len);
    if (!body) {
        respond_str(req, 400, "{\"detail\":\"request body is not valid JSON\"}");
        return;
    }
    json_t *jkey = json_is_object(body) ? json_object_get(body, "api_key") : NULL;
    json_t *jscope = json_is_object(body) ? json_object_get(body, "scope") : NULL;
    if (!json_is_string(jkey)) {
        respond_unprocessable(req, "api_key", "field required", "value_error.missing");
        return;
    }
    /* A scope holding a NUL is no C string: refused like one of another type. */
    if (jscope && !json_is_null(jscope) &&
        !(json_is_string(jscope) && strlen(json_string_value(jscope)) == json_string_length(jscope))) {
        respond_unprocessable(req, "scope", "str type expected", "type_error.str");
        return;
    }
    verify_entity(req, (char *)json_string_value(jkey), json_string_length(jkey),
                  json_string_value(jscope));
}

/* ---- any method /auth ---- */

/* A key's name as a header value: control characters, which would end the header, become
 * spaces. */
static h2o_iovec_t header_safe(h2o_req_t *req, const char *s)
{
    h2o_iovec_t v = h2o_strdup(&req->pool, s, SIZE_MAX);
    for (size_t i = 0; i < v.len; i++)
        if ((unsigned char)v.base[i] < 0x20 || v.base[i] == 0x7f)
            v.base[i] = ' ';
    return v;
}

static void respond_auth_ok(h2o_req_t *req, const keystore_key *k)
{
    /* Copies in the request's pool: the keystore may be retired before h2o sends them. */
    h2o_iovec_t id = h2o_strdup(&req->pool, keystore_key_id(k), SIZE_MAX);
    h2o_iovec_t name = header_safe(req, keystore_key_name(k));
    size_t n = keystore_key_n_scopes(k), len = 0, i;

    for (i = 0; i < n; i++)
        len += strlen(keystore_key_scope(k, i)) + 1;
    char *list = h2o_mem_alloc_pool(&req->pool, len + 1);
    len = 0;
    for (i = 0; i < n; i++) {
        const char *s = keystore_key_scope(k, i);
        if (len)
            list[len++] = ',';
        memcpy(list + len, s, strlen(s));
        len += strlen(s);
    }
    add_header_str(req, "x-auth-key-id", id.base, id.len);
    add_header_str(req, "x-auth-key-name", name.base, name.len);
    add_header_str(req, "x-auth-scopes", list, len);
    respond(req, 200, NULL, "", 0);
}

static void respond_auth_unauthorized(h2o_req_t *req)
{
    static const char challenge[] = "Bearer realm=\"heare-auth\"";
    add_header(req, H2O_TOKEN_WWW_AUTHENTICATE, challenge, sizeof(challenge) - 1);
    respond(req, 401, NULL, "", 0);
}

/* The key from "Authorization: Bearer <key>", else from "X-API-Key". The returned bytes are
 * the request's own (so they can be wiped once used). */
static bool auth_key(h2o_req_t *req, char **ret, size_t *ret_len)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (http_bearer_token(v.base, v.len, ret, ret_len))
            return true;
    }
    i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-api-key"), -1);
    if (i >= 0 && req->headers.entries[i].value.len > 0) {
        *ret = req->headers.entries[i].value.base;
        *ret_len = req->headers.entries[i].value.len;
        return true;
    }
    return false;
}

static void handle_auth(h2o_req_t *req)
{
    char *key;
    size_t key_len;

    if (!auth_key(req, &key, &key_len)) {
        respond_auth_unauthorized(req);
        return;
    }
    char *scope = header_dup(req, NULL, "x-auth-scope");
    if (!scope || !*scope)
        scope = query_param(req, "scope");
    if (scope && !*scope)
        scope = NULL; /* an empty scope asks for none */

    http_peer peer;
    verify_result r;
    get_peer(req, &peer, verify_logged());
    verify_run(key, key_len, scope, header_dup(req, H2O_TOKEN_USER_AGENT, NULL), &peer.v, &r);

    switch (r.code) {
    case VERIFY_VALID:
        respond_auth_ok(req, r.key);
        return;
    case VERIFY_FORBIDDEN:
        respond(req, 403, NULL, "", 0);
        return;
    case VERIFY_RATE_LIMITED:
        set_retry_after(req, r.retry_after_ms);
        respond(req, 429, NULL, "", 0);
        return;
    default:
        respond_auth_unauthorized(req);
        return;
    }
}

/* ---- GET /health, GET /metrics ---- */

static void handle_health(h2o_req_t *req)
{
    const char *status = NULL;
    json_t *reply = health_reply(&status);
    respond_json(req, status && strcmp(status, "unhealthy") == 0 ? 503 : 200, reply);
}

static void handle_metrics(h2o_req_t *req)
{
    _cleanup_free_ char *text = NULL;
    size_t len;
    metrics_snapshot m;
    metrics_snapshot_take(&m);
    if (metrics_render_prometheus(&m, &text, &len) < 0) {
        respond_oom(req);
        return;
    }
    respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* ---- POST /refresh: answered when the store thread is done ---- */

/* The request may go away (its connection closed) while the store thread works: the pool
 * object below is disposed with the request and cuts the link, so the answer is dropped. */
typedef struct refresh_wait {
    h2o_req_t *req;
    struct refresh_link *link;
} refresh_wait;

typedef struct refresh_link {
    refresh_wait *wait;
} refresh_link;

static void on_refresh_req_disposed(void *p)
{
    refresh_link *link = p;
    if (link->wait)
        link->wait->req = NULL;
}

static void on_refresh_done(job *j, void *userdata)
{
    refresh_wait *w = userdata;
    h2o_req_t *req = w->req;

    if (req) {
        w->link->wait = NULL;
        if (j->r < 0) {
            respond_json(req, 503,
                         json_pack("{s:b,s:s}", "success", false, "detail",
                                   j->error_reason ? j->error_reason : errors_str(j->r)));
        } else {
            json_t *n = json_object_get(j->reply, "keys_loaded");
            respond_json(req, 200,
                         json_pack("{s:b,s:I}", "success", true, "keys_loaded",
                                   json_integer_value(n)));
        }
    }
    free(w);
}

static void handle_refresh(h2o_req_t *req)
{
    http_peer peer;
    get_peer(req, &peer, true);
    if (!peer_is_local(&peer)) {
        log_event(LOG_NOTICE,
                  &(log_fields){.event = "refresh_refused", .peer_addr = peer.addr,
                                .peer_uid = -1, .peer_pid = -1},
                  "refused POST /refresh from %s: not a loopback peer", peer.addr);
        respond_str(req, 403, "{\"detail\":\"refresh is allowed from loopback peers only\"}");
        return;
    }

    job *j = job_new(JOB_REFRESH, NULL);
    refresh_wait *w = calloc(1, sizeof(*w));
    if (!j || !w) {
        free(w);
        job_free(j);
        respond_oom(req);
        return;
    }
    w->req = req;
    w->link = h2o_mem_alloc_shared(&req->pool, sizeof(*w->link), on_refresh_req_disposed);
    w->link->wait = w;
    if (loop_submit(j, on_refresh_done, w) < 0) {
        w->link->wait = NULL;
        free(w);
        job_free(j);
        respond_oom(req);
    }
}

/* ---- framing ---- */

/* The request head is read again where h2o parsed it: at the start of the connection's
 * input, which h2o consumes only once the response is sent (see http_framing_ok). False
 * (refuse) as well if there is no input to read it from. */
static bool framing_ok(h2o_req_t *req)
{
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    if (!sock || !sock->input)
        return false;
    return http_framing_ok(sock->input->bytes, sock->input->size, req->method.base,
                           req->method.len);
}

/* ---- routing ---- */

static bool path_is(const h2o_req_t *req, const char *path)
{
    return h2o_memis(req->path_normalized.base, req->path_normalized.len, path, strlen(path));
}

static bool method_is(const h2o_req_t *req, const char *method)
{
    return h2o_memis(req->method.base, req->method.len, method, strlen(method));
}

/* "/auth", or under it: Envoy's ext_authz puts the original path after its path_prefix. */
static bool path_is_auth(const h2o_req_t *req)
{
    h2o_iovec_t p = req->path_normalized;
    return p.len >= 5 && memcmp(p.base, "/auth", 5) == 0 && (p.len == 5 || p.base[5] == '/');
}

static void route(h2o_req_t *req)
{
    bool get = method_is(req, "GET") || method_is(req, "HEAD");

    if (path_is(req, "/verify") && method_is(req, "POST"))
        handle_verify(req);
    else if (path_is_auth(req))
        handle_auth(req);
    else if (path_is(req, "/health") && get)
        handle_health(req);
    else if (path_is(req, "/refresh") && method_is(req, "POST"))
        handle_refresh(req);
    else if (path_is(req, "/metrics") && get)
        handle_metrics(req);
    else
        respond_str(req, 404, "{\"detail\":\"Not Found\"}");
}

/* ---- turns and buffers ---- */

static void on_conn_close(void *data);

/* The tracked connection a request came on (HTTP/1 or HTTP/2), or NULL. */
static tracked *tracked_of(h2o_req_t *req)
{
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    return sock && sock->on_close.cb == on_conn_close ? sock->on_close.data : NULL;
}

/* Which queue a request waits in for its turn, or NULL: answer it now (counted). */
static h2o_linklist_t *turn_queue(tracked *t)
{
    http_loop *hl = t->hl;
    switch (turns_take(hl->turns, &t->share, TURN_HTTP_REQUEST)) {
    case TURN_GO:
        return NULL;
    case TURN_AFTER_POLL:
        return &hl->ready_first;
    case TURN_NEXT_ROUND:
    default:
        return &hl->ready;
    }
}

static void on_held_req_disposed(void *p)
{
    held_req *h = p;
    if (h2o_linklist_is_linked(&h->link))
        h2o_linklist_unlink(&h->link);
}

/* Queues req to be answered later; false on OOM (then it is answered now). h2o reads no more
 * from an HTTP/1 connection while its request is unanswered, so a held request also holds
 * back its connection's input. */
static bool hold(h2o_req_t *req, tracked *t, h2o_linklist_t *queue)
{
    held_req *h = h2o_mem_alloc_shared(&req->pool, sizeof(*h), on_held_req_disposed);
    if (!h)
        return false;
    *h = (held_req){.req = req, .t = t};
    h2o_linklist_insert(queue, &h->link);
    return true;
}

/* Whether the connection's peer is gone (reset, or closed both ways). */
static bool peer_gone(const tracked *t)
{
    struct pollfd p = {.fd = h2o_socket_get_fd(t->sock), .events = POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

/* Answers a held request, or holds it again. A request whose client is gone is answered at
 * once, the last on its connection: h2o 2.2.5 goes on to the next pipelined request after a
 * failed write, and would otherwise work through all a dead client sent. */
static void release(held_req *h)
{
    h2o_linklist_unlink(&h->link);
    tracked *t = h->t;
    if (peer_gone(t)) {
        h->req->http1_is_persistent = 0;
        route(h->req);
        return;
    }
    if (!buffers_may_grow(t->held)) {
        h2o_linklist_insert(&t->hl->waiting, &h->link);
        return;
    }
    h2o_linklist_t *queue = turn_queue(t);
    if (queue) {
        h2o_linklist_insert(queue, &h->link);
        return;
    }
    route(h->req);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (req->version < 0x200 && !framing_ok(req)) {
        /* Whatever follows on this connection may be the rest of a request framed otherwise:
         * nothing more is read from it. */
        req->http1_is_persistent = 0;
        respond_str(req, 400, "{\"detail\":\"ambiguous request framing\"}");
        return 0;
    }
    tracked *t = tracked_of(req);
    if (t) {
        /* The buffer holding what h2o read and has not consumed: this request and any
         * pipelined after it. Updated at each request: between them (idle, or answering)
         * the count may stay above what is held, never below. */
        const h2o_buffer_t *in = t->sock->input;
        buffers_set(&t->held, in->bytes ? in->capacity : 0);
        if (!buffers_may_grow(t->held) && hold(req, t, &t->hl->waiting))
            return 0;
        h2o_linklist_t *queue = turn_queue(t);
        if (queue && hold(req, t, queue))
            return 0;
    }
    route(req);
    return 0;
}

/* Answers now, the last on their connection, the held requests whose client is gone: it is
 * not read meanwhile, so nothing else would notice. */
static void release_hung_up(http_loop *hl)
{
    h2o_linklist_t *node = hl->waiting.next;
    while (node != &hl->waiting) {
        held_req *h = H2O_STRUCT_FROM_MEMBER(held_req, link, node);
        node = node->next;
        if (peer_gone(h->t)) {
            h2o_linklist_unlink(&h->link);
            h->req->http1_is_persistent = 0;
            route(h->req);
        }
    }
}

/* Answers the requests of queue in order while the turn's budget lasts; the ones not
 * reached keep their place. */
static void serve_queue(http_loop *hl, h2o_linklist_t *queue)
{
    h2o_linklist_t list;
    h2o_linklist_init_anchor(&list);
    h2o_linklist_insert_list(&list, queue);
    while (!h2o_linklist_is_empty(&list) && !turns_over(hl->turns))
        release(H2O_STRUCT_FROM_MEMBER(held_req, link, list.next));
    h2o_linklist_insert_list(queue->next, &list);
}

void http_loop_run_ready(http_loop *hl)
{
    if (!hl)
        return;
    serve_queue(hl, &hl->ready_first);
    serve_queue(hl, &hl->ready);
}

void http_loop_run_waiting(http_loop *hl, bool hangups)
{
    if (!hl)
        return;
    if (hangups)
        release_hung_up(hl);
    h2o_linklist_t list;
    h2o_linklist_init_anchor(&list);
    h2o_linklist_insert_list(&list, &hl->waiting);
    while (!h2o_linklist_is_empty(&list))
        release(H2O_STRUCT_FROM_MEMBER(held_req, link, list.next));
}

bool http_loop_has_ready(http_loop *hl)
{
    return hl && (!h2o_linklist_is_empty(&hl->ready_first) || !h2o_linklist_is_empty(&hl->ready));
}

bool http_loop_has_waiting(http_loop *hl)
{
    return hl && !h2o_linklist_is_empty(&hl->waiting);
}

/* ---- configuration and loops ---- */

int http_init(const conf *c)
{
    h2o_config_init(&g_config);
    g_config_inited = true;
    g_config.server_name = h2o_iovec_init(H2O_STRLIT("heare-auth"));
    g_config.max_request_entity_size = HTTP_MAX_BODY;
    uint64_t timeout = (uint64_t)c->idle_timeout_ms;
    g_config.http1.req_timeout = timeout < HTTP_REQUEST_TIMEOUT_MS ? timeout
                                                                   : HTTP_REQUEST_TIMEOUT_MS;
    g_config.http2.idle_timeout = g_config.http1.req_timeout;

    h2o_hostconf_t *host = h2o_config_register_host(&g_config, h2o_iovec_init(H2O_STRLIT("default")),
                                                    65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    if (!handler)
        return -ENOMEM;
    handler->on_req = on_req;
    return 0;
}

void http_free(void)
{
    if (g_config_inited)
        h2o_config_dispose(&g_config);
    g_config_inited = false;
}

http_loop *http_loop_new(h2o_evloop_t *loop, atomic_size_t *load, turns *loop_turns)
{
    http_loop *hl = calloc(1, sizeof(*hl));
    if (!hl)
        return NULL;
    h2o_context_init(&hl->ctx, loop, &g_config);
    hl->accept_ctx.ctx = &hl->ctx;
    hl->accept_ctx.hosts = g_config.hosts;
    h2o_linklist_init_anchor(&hl->conns);
    h2o_linklist_init_anchor(&hl->ready_first);
    h2o_linklist_init_anchor(&hl->ready);
    h2o_linklist_init_anchor(&hl->waiting);
    hl->load = load;
    hl->turns = loop_turns;
    return hl;
}

void http_loop_free(http_loop *hl)
{
    if (!hl)
        return;
    /* h2o_context_request_shutdown() armed HTTP/2's GOAWAY timer, which h2o never
     * disarms itself; a timeout may not be disposed with entries on it. */
    if (h2o_timeout_is_linked(&hl->ctx.http2._graceful_shutdown_timeout))
        h2o_timeout_unlink(&hl->ctx.http2._graceful_shutdown_timeout);
    h2o_context_dispose(&hl->ctx);
    free(hl);
}

static void on_conn_close(void *data)
{
    tracked *t = data;
    buffers_set(&t->held, 0);
    h2o_linklist_unlink(&t->link);
    t->hl->n_conns--;
    atomic_fetch_sub_explicit(t->hl->load, 1, memory_order_relaxed);
    free(t);
}

void http_accept(http_loop *hl, h2o_socket_t *sock)
{
    tracked *t = calloc(1, sizeof(*t));
    if (!t) {
        h2o_socket_close(sock);
        atomic_fetch_sub_explicit(hl->load, 1, memory_order_relaxed);
        return;
    }
    t->hl = hl;
    t->sock = sock;
    h2o_linklist_insert(&hl->conns, &t->link);
    hl->n_conns++;
    sock->on_close.cb = on_conn_close;
    sock->on_close.data = t;
    h2o_accept(&hl->accept_ctx, sock);
}

void http_listener_setup(int fd, const conf *c)
{
    /* h2o reads all a socket holds, and Linux grows a TCP receive buffer to megabytes: a
     * loop with a hundred pipelining clients readable at once then copied in tens of
     * megabytes in one iteration (40 ms of CPU) while others waited. A sixteenth of
     * connection-buffer-max (64 KiB by default; what one read then brings) bounds that,
     * keeps h2o's input buffer far within connection-buffer-max, and is plenty for
     * requests of at most 64 KiB. Set on the listener, so that every connection has it
     * from its first segment on (the window is advertised from it). */
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);
    int rcvbuf = (int)(c->connection_buffer_max / 16);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0 && sa.ss_family != AF_UNIX &&
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0)
        log_warning("http: cannot set SO_RCVBUF on the listener: %m");
}

size_t http_loop_conns(const http_loop *hl)
{
    return hl ? hl->n_conns : 0;
}

static void shutdown_all(http_loop *hl, int how)
{
    for (h2o_linklist_t *n = hl->conns.next; n != &hl->conns; n = n->next) {
        tracked *t = H2O_STRUCT_FROM_MEMBER(tracked, link, n);
        shutdown(h2o_socket_get_fd(t->sock), how);
    }
}

void http_loop_shutdown(http_loop *hl)
{
    if (!hl)
        return;
    /* Responses from now on say "Connection: close". Shutting the read side makes every
     * connection that waits for a request see EOF, so h2o closes it; one whose request is
     * being answered still gets its answer. */
    h2o_context_request_shutdown(&hl->ctx);
    shutdown_all(hl, SHUT_RD);
}

void http_loop_abort(http_loop *hl)
{
    if (hl)
        shutdown_all(hl, SHUT_RDWR);
}
