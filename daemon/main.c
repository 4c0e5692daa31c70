/* main: heare-authd's edge: flags and configuration, listening sockets (from systemd or
 * bound here), signals, readiness and an orderly shutdown. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <systemd/sd-daemon.h>

#include "buffers.h"
#include "conf.h"
#include "daemon.h"
#include "errors.h"
#include "http.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"
#include "push.h"
#include "timeutil.h"
#include "verifylog.h"

#define VERIFY_SOCKET_GROUP "heare-auth"
#define MAX_LISTENERS 8

enum {
    OPT_CHECK_CONFIG = 0x100,
    OPT_VERSION,
    OPT_CONF_KEY, /* + index into conf_keys() */
};

typedef struct flag_setting {
    const char *key;
    const char *value;
} flag_setting;

static void usage(FILE *f)
{
    size_t n;
    const conf_key_info *keys = conf_keys(&n);

    fprintf(f,
            "Usage: heare-authd [OPTIONS]\n"
            "\n"
            "Verifies API keys for the services beside it: Varlink on a verify and an admin\n"
            "socket, and optionally HTTP (socket-activated or bound here), keys held in\n"
            "memory from one store (a file, or one S3 object shared by many hosts).\n"
            "\n"
            "  -c, --config PATH     configuration file (default " CONF_DEFAULT_PATH ")\n"
            "  -f, --foreground      stay in the foreground (always: heare-authd never forks)\n"
            "  -v, --verbose         log at debug level\n"
            "      --check-config    validate the configuration, print it, and exit\n"
            "  -h, --help            show this help\n"
            "      --version         show the version\n"
            "\n"
            "Every configuration key is also a flag, --KEY VALUE (flags override the\n"
            "environment, which overrides the file):\n");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "      --%-24s %s (default: %s)%s%s\n", keys[i].key, keys[i].help,
                keys[i].default_str, keys[i].env ? "; env: " : "", keys[i].env ? keys[i].env : "");
}

/* Applies the environment and the flags over the file, in that order (SPEC §10). */
static int load_config(conf *c, const char *path, bool path_given, const flag_setting *flags,
                       size_t n_flags)
{
    _cleanup_free_ char *err = NULL;
    int r = conf_load_file(c, path, path_given, &err);
    if (r < 0) {
        fprintf(stderr, "heare-authd: %s\n", err ? err : strerror(-r));
        return r;
    }
    r = conf_load_env(c, &err);
    if (r < 0) {
        fprintf(stderr, "heare-authd: %s\n", err ? err : strerror(-r));
        return r;
    }
    for (size_t i = 0; i < n_flags; i++) {
        r = conf_set(c, flags[i].key, flags[i].value, &err);
        if (r < 0) {
            fprintf(stderr, "heare-authd: --%s\n", err ? err : strerror(-r));
            return r;
        }
    }
    r = conf_check(c, &err);
    if (r < 0) {
        fprintf(stderr, "heare-authd: %s\n", err ? err : strerror(-r));
        return r;
    }
    if (c->threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        c->threads = cpus > 0 ? (unsigned)cpus : 1;
    }
    return 0;
}

/* Binds path ourselves: creates the directory, replaces a stale socket file, and refuses
 * to take over from a daemon that still answers there. */
static int bind_socket(const char *path, mode_t mode, const char *group, int *ret_fd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    _cleanup_close_ int fd = -1;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        log_error("socket path %s is too long", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);

    /* mkdir -p of the parent: /run/heare-auth normally comes from RuntimeDirectory=. */
    _cleanup_free_ char *dir = strdup(path);
    if (!dir)
        return -ENOMEM;
    for (char *p = dir + 1; (p = strchr(p, '/')); p++) {
        *p = 0;
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
            int r = negative_errno();
            log_error("cannot create directory %s for socket %s: %s", dir, path, strerror(-r));
            return r;
        }
        *p = '/';
    }

    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_error("%s exists and is not a socket: not replacing it", path);
            return -EEXIST;
        }
        _cleanup_close_ int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            log_error("another daemon is answering on %s: not taking it over", path);
            return -EADDRINUSE;
        }
        if (unlink(path) < 0 && errno != ENOENT) {
            int r = negative_errno();
            log_error("cannot remove stale socket %s: %s", path, strerror(-r));
            return r;
        }
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return negative_errno();
    /* Bind under a umask that leaves no window with wider permissions than mode. */
    mode_t old = umask(0777 & ~mode);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r < 0) {
        r = negative_errno();
        log_error("cannot bind %s: %s", path, strerror(-r));
        return r;
    }
    if (chmod(path, mode) < 0) {
        r = negative_errno();
        log_error("cannot chmod %s: %s", path, strerror(-r));
        return r;
    }
    if (group) {
        struct group gr, *res = NULL;
        char buf[4096];
        if (getgrnam_r(group, &gr, buf, sizeof(buf), &res) == 0 && res &&
            chown(path, (uid_t)-1, res->gr_gid) < 0)
            log_warning("cannot give %s to group %s: %s", path, group, strerror(errno));
    }
    if (listen(fd, SOMAXCONN) < 0) {
        r = negative_errno();
        log_error("cannot listen on %s: %s", path, strerror(-r));
        return r;
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

static int set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return negative_errno();
    return 0;
}

/* Binds the TCP listener of http-listen: "HOST:PORT" or "[ADDRESS]:PORT". */
static int bind_tcp(const char *spec, int *ret_fd)
{
    _cleanup_free_ char *host = NULL, *port = NULL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    _cleanup_close_ int fd = -1;

    int r = conf_split_host_port(spec, &host, &port);
    if (r < 0)
        return r;
    r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        log_error("http-listen %s: cannot resolve '%s': %s", spec, host, gai_strerror(r));
        return -EADDRNOTAVAIL;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        r = negative_errno();
        freeaddrinfo(res);
        return r;
    }
    int on = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    /* Accepted connections inherit it: a reply is one write, sent at once. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    r = bind(fd, res->ai_addr, res->ai_addrlen) < 0 ? negative_errno() : 0;
    freeaddrinfo(res);
    if (r < 0) {
        log_error("http-listen %s: cannot bind: %s", spec, strerror(-r));
        return r;
    }
    if (listen(fd, SOMAXCONN) < 0) {
        r = negative_errno();
        log_error("http-listen %s: cannot listen: %s", spec, strerror(-r));
        return r;
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

static void close_listeners(listen_fd *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* Only what we bound is ours to remove; systemd owns the activated ones. */
        if (l[i].path)
            unlink(l[i].path);
        safe_close(l[i].fd);
        free(l[i].path);
    }
}

/* Appends a listener; path, for a socket file bound here (removed at exit), is copied. On
 * failure fd is closed and path removed, as close_listeners would. */
static int add_listener(listen_fd *l, size_t *n, int fd, sock_kind kind, const char *path)
{
    char *copy = NULL;

    if (path && !(copy = strdup(path))) {
        unlink(path);
        safe_close(fd);
        return -ENOMEM;
    }
    l[(*n)++] = (listen_fd){.fd = fd, .kind = kind, .path = copy};
    return 0;
}

static void free_fd_names(char **names, int n)
{
    if (!names)
        return;
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Sockets from systemd by name, then the kinds it did not pass, bound here. *n counts the
 * listeners in l, on failure too, so that the caller can close them. */
static int collect_listeners(const conf *c, listen_fd *l, size_t *n)
{
    char **names = NULL;
    bool have_verify = false, have_admin = false, have_http = false;
    int fd, r = 0;

    int nfds = sd_listen_fds_with_names(1, &names);
    if (nfds < 0) {
        log_error("socket activation: %s", strerror(-nfds));
        return nfds;
    }
    for (int i = 0; i < nfds; i++) {
        const char *name = names && names[i] ? names[i] : "";
        sock_kind kind;

        fd = SD_LISTEN_FDS_START + i;
        if (strcmp(name, "verify") == 0)
            kind = SOCK_VERIFY;
        else if (strcmp(name, "admin") == 0)
            kind = SOCK_ADMIN;
        else if (strcmp(name, "http") == 0)
            kind = SOCK_HTTP;
        else {
            log_warning("socket activation: ignoring fd %d with unknown name '%s' "
                        "(expected verify, admin or http)",
                        fd, name);
            close(fd);
            continue;
        }
        if (kind == SOCK_HTTP ? sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0
                              : sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
            log_error("socket activation: fd '%s' is not a listening %s stream socket", name,
                      kind == SOCK_HTTP ? "" : "Unix");
            r = -EINVAL;
            break;
        }
        if ((kind == SOCK_VERIFY && have_verify) || (kind == SOCK_ADMIN && have_admin) ||
            (kind == SOCK_HTTP && have_http) || *n >= MAX_LISTENERS) {
            log_error("socket activation: more than one fd named '%s'", name);
            r = -EINVAL;
            break;
        }
        r = set_nonblock(fd);
        if (r < 0)
            break;
        have_verify |= kind == SOCK_VERIFY;
        have_admin |= kind == SOCK_ADMIN;
        have_http |= kind == SOCK_HTTP;
        log_info("listening on socket-activated '%s' (fd %d)", name, fd);
        (void)add_listener(l, n, fd, kind, NULL); /* no copy: cannot fail */
    }
    free_fd_names(names, nfds);
    if (r < 0)
        return r;

    if (!have_verify) {
        r = bind_socket(c->verify_socket, 0660, VERIFY_SOCKET_GROUP, &fd);
        if (r < 0 || (r = add_listener(l, n, fd, SOCK_VERIFY, c->verify_socket)) < 0)
            return r;
        log_info("listening on %s (verify)", c->verify_socket);
    }
    if (!have_admin) {
        r = bind_socket(c->admin_socket, 0600, NULL, &fd);
        if (r < 0 || (r = add_listener(l, n, fd, SOCK_ADMIN, c->admin_socket)) < 0)
            return r;
        log_info("listening on %s (admin)", c->admin_socket);
    }
    if (!have_http && c->http_listen) {
        bool is_unix = strncmp(c->http_listen, "unix:", 5) == 0;
        r = is_unix ? bind_socket(c->http_listen + 5, 0660, VERIFY_SOCKET_GROUP, &fd)
                    : bind_tcp(c->http_listen, &fd);
        if (r < 0 ||
            (r = add_listener(l, n, fd, SOCK_HTTP, is_unix ? c->http_listen + 5 : NULL)) < 0)
            return r;
        log_info("listening on %s (http)", c->http_listen);
    }
    return 0;
}

static int setup_listeners(const conf *c, listen_fd *l, size_t *ret_n)
{
    size_t n = 0;
    int r = collect_listeners(c, l, &n);

    if (r < 0) {
        /* A daemon that does not start leaves nothing behind: no socket file of its own,
         * no descriptor, no copy of a path. */
        close_listeners(l, n);
        return r;
    }
    *ret_n = n;
    return 0;
}

static log_target choose_log_target(const conf *c)
{
    if (c->log_format == CONF_LOG_JOURNAL)
        return LOG_TARGET_JOURNAL;
    if (c->log_format == CONF_LOG_JSON)
        return LOG_TARGET_JSON;
    /* systemd sets JOURNAL_STREAM when stderr is connected to the journal. */
    return getenv("JOURNAL_STREAM") ? LOG_TARGET_JOURNAL : LOG_TARGET_JSON;
}

/* The descriptor table is sized up front to this many slots (or the limit, if lower). */
#define FD_TABLE_PRESIZE 65536

/* One descriptor per connection: the soft limit (1024 under systemd, whatever the unit's
 * LimitNOFILE= hard limit) would make a few hundred idle clients enough to refuse the rest.
 * select() is never used, so nothing here needs descriptors below 1024.
 *
 * Then the table is grown at once, before any thread starts. Linux grows a process's table
 * by doubling it, and in a process of several threads each growth waits for an RCU grace
 * period (tens of milliseconds) with the table locked: every loop that accepts or closes a
 * connection waits with it, so a burst of new connections would stall every client at each
 * of 128, 256, 512... descriptors. A process of one thread grows it without waiting. */
static void setup_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            log_warning("cannot raise the descriptor limit from %llu to %llu: %m",
                        (unsigned long long)was, (unsigned long long)rl.rlim_max);
            rl.rlim_cur = was;
        } else {
            log_debug("descriptor limit raised from %llu to %llu", (unsigned long long)was,
                      (unsigned long long)rl.rlim_max);
        }
    }
    int top = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > FD_TABLE_PRESIZE
                  ? FD_TABLE_PRESIZE - 1
                  : (int)rl.rlim_cur - 1;
    _cleanup_close_ int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, top);
    if (high >= 0)
        close(high);
}

int main(int argc, char **argv)
{
    size_t n_keys;
    const conf_key_info *keys = conf_keys(&n_keys);
    const char *config_path = CONF_DEFAULT_PATH;
    bool config_given = false, check_only = false, verbose = false;
    _cleanup_free_ struct option *opts = NULL;
    _cleanup_free_ flag_setting *flags = NULL;
    size_t n_flags = 0;
    static const struct option fixed[] = {
        {"config", required_argument, NULL, 'c'},
        {"foreground", no_argument, NULL, 'f'},
        {"verbose", no_argument, NULL, 'v'},
        {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
    };

    opts = calloc(ELEMENTSOF(fixed) + n_keys + 1, sizeof(*opts));
    flags = calloc((size_t)argc, sizeof(*flags));
    if (!opts || !flags) {
        fprintf(stderr, "heare-authd: out of memory\n");
        return 1;
    }
    memcpy(opts, fixed, sizeof(fixed));
    for (size_t i = 0; i < n_keys; i++)
        opts[ELEMENTSOF(fixed) + i] =
            (struct option){keys[i].key, required_argument, NULL, OPT_CONF_KEY + (int)i};

    int o;
    while ((o = getopt_long(argc, argv, "c:fvh", opts, NULL)) >= 0) {
        switch (o) {
        case 'c':
            config_path = optarg;
            config_given = true;
            break;
        case 'f':
            break;
        case 'v':
            verbose = true;
            break;
        case OPT_CHECK_CONFIG:
            check_only = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("heare-authd %s\n", HEARE_VERSION);
            return 0;
        case '?':
            fprintf(stderr, "Try 'heare-authd --help'.\n");
            return EXIT_USAGE;
        default:
            flags[n_flags++] = (flag_setting){keys[o - OPT_CONF_KEY].key, optarg};
            break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "heare-authd: unexpected argument '%s'\nTry 'heare-authd --help'.\n",
                argv[optind]);
        return EXIT_USAGE;
    }

    conf c;
    if (conf_init(&c) < 0) {
        fprintf(stderr, "heare-authd: out of memory\n");
        return 1;
    }
    if (load_config(&c, config_path, config_given, flags, n_flags) < 0) {
        conf_done(&c);
        return EXIT_USAGE;
    }
    if (verbose)
        c.log_level = LOG_DEBUG;

    if (check_only) {
        _cleanup_free_ char *dump = conf_dump(&c);
        fputs(dump ? dump : "", stdout);
        printf("# configuration OK\n");
        conf_done(&c);
        return 0;
    }

    log_target target = choose_log_target(&c);
    log_setup(target, c.log_level);
    /* The journal limits the unit as a whole: a line per verification would have it drop
     * lines, the audit events among them. */
    if (c.log_verify == CONF_LOG_VERIFY_AUTO)
        c.log_verify = target == LOG_TARGET_JOURNAL ? CONF_LOG_VERIFY_SUMMARY
                                                    : CONF_LOG_VERIFY_ALL;
    setup_fd_limit();

    /* Signals are taken synchronously by this thread; every thread inherits the mask. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Before any thread: libcurl's global state (the metrics push over HTTP). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("cannot initialise libcurl");
        conf_done(&c);
        return 1;
    }

    listen_fd listeners[MAX_LISTENERS];
    size_t n_listeners = 0;
    int exit_code = 1;
    _cleanup_free_ char *err = NULL;

    int r = setup_listeners(&c, listeners, &n_listeners);
    if (r < 0)
        goto finish;

    r = state_init(&c, &err);
    if (r < 0) {
        log_error("store %s: %s", c.store, err ? err : strerror(-r));
        goto finish;
    }
    for (size_t i = 0; i < n_listeners; i++)
        if (listeners[i].kind == SOCK_HTTP && (r = http_init(&c)) < 0) {
            log_error("cannot set up HTTP: %s", strerror(-r));
            goto finish;
        }
    r = server_start(&c, listeners, n_listeners);
    if (r < 0) {
        log_error("cannot start the serving loops: %s", strerror(-r));
        goto finish;
    }
    r = state_start();
    if (r < 0) {
        log_error("cannot start the store thread: %s", strerror(-r));
        goto finish;
    }
    r = push_start(&c, &err);
    if (r < 0) {
        log_error("metrics-url %s: %s", c.metrics_url, err ? err : strerror(-r));
        goto finish;
    }

    state_health h;
    state_get_health(&h);
    sd_notifyf(0, "READY=1\nSTATUS=%s: %zu keys from %s", h.status, h.keys_loaded, c.store);
    log_event(LOG_INFO, &(log_fields){.event = "startup", .peer_uid = -1, .peer_pid = -1},
              "heare-authd %s ready: %zu keys, %s, %u threads", HEARE_VERSION, h.keys_loaded,
              h.status, c.threads);
    free(h.last_error);

    /* The watchdog is fed from here, but only while every serving loop shows progress; and
     * freed memory is given back from here (malloc_trim takes milliseconds with a large
     * heap, which a serving loop would make its clients wait). */
    uint64_t watchdog_usec = 0;
    if (sd_watchdog_enabled(false, &watchdog_usec) <= 0)
        watchdog_usec = 0;
    uint64_t wake_usec = watchdog_usec > 0 && watchdog_usec / 2 < 1000000 ? watchdog_usec / 2
                                                                          : 1000000;
    bool stuck_reported = false;

    for (;;) {
        siginfo_t si;
        struct timespec wake = {.tv_sec = (time_t)(wake_usec / 1000000),
                                .tv_nsec = (long)(wake_usec % 1000000) * 1000};
        int sig = sigtimedwait(&mask, &si, &wake);
        if (sig < 0 && errno == EAGAIN) {
            buffers_maybe_trim();
            if (c.log_verify == CONF_LOG_VERIFY_SUMMARY)
                verifylog_flush(timeutil_monotonic_ms(), c.metrics_interval_ms);
            if (watchdog_usec == 0)
                continue;
            unsigned stuck;
            if (server_progressing(watchdog_usec / 1000, &stuck)) {
                sd_notify(0, "WATCHDOG=1");
                stuck_reported = false;
            } else if (!stuck_reported) {
                log_error("serving loop %u has made no progress for %" PRIu64
                          " ms: no longer feeding the watchdog",
                          stuck, watchdog_usec / 1000);
                stuck_reported = true;
            }
            continue;
        }
        if (sig < 0) {
            if (errno == EINTR)
                continue;
            log_error("sigtimedwait: %s", strerror(errno));
            break;
        }
        if (si.si_signo == SIGHUP) {
            state_request_reload();
            continue;
        }
        log_info("%s: draining and exiting", strsignal(si.si_signo));
        break;
    }

    sd_notify(0, "STOPPING=1");
    server_stop();
    if (!server_wait())
        log_warning("exiting with admin calls still in flight");
    push_stop();
    if (c.log_verify == CONF_LOG_VERIFY_SUMMARY)
        verifylog_finish();
    state_finish();
    server_free();
    http_free();
    metrics_free();
    log_event(LOG_INFO, &(log_fields){.event = "shutdown", .peer_uid = -1, .peer_pid = -1},
              "heare-authd stopped");
    exit_code = 0;

finish:
    push_stop();
    close_listeners(listeners, n_listeners);
    curl_global_cleanup();
    conf_done(&c);
    return exit_code;
}
