/* store-s3: the S3 store backend. One object holds the document; its ETag is the version.
 * Reads are GETs with If-None-Match (304: unchanged, nothing transferred); writes are PUTs
 * with If-Match: <etag>, or If-None-Match: * for an object that does not exist yet, so a
 * write based on a stale read fails (412) instead of losing another host's change;
 * store.c's read-modify-write loop retries those. Requests are signed here (sigv4.c) and
 * sent by libcurl over one reused easy handle, so polls reuse the connection. A 200 GET's
 * body goes straight from libcurl's write callback to the caller's sink; only other
 * answers' bodies (S3's XML errors, bounded) are kept.
 *
 * Credentials are resolved at open (none found is an error then) and again before every
 * request: a rotated LoadCredential= file or credentials file takes effect on the next
 * poll, at the cost of reading a few small files every poll-interval. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "errors.h"
#include "s3-credentials.h"
#include "s3-response.h"
#include "s3-url.h"
#include "secret.h"
#include "sigv4.h"
#include "store-backend.h"

/* What is kept of an answer other than a 200 GET: its Code and Message are all we read. */
#define ERROR_BODY_MAX ((size_t)64 << 10)
#define CONNECT_TIMEOUT_MS 5000
#define TIMEOUT_MS 20000
#define MESSAGE_MAX 160

typedef struct s3_store {
    s3_target t;
    char *sse;    /* x-amz-server-side-encryption value, NULL: none */
    char *where;  /* "S3 bucket 'b' object 'o'" for messages */
    long connect_timeout_ms, timeout_ms;
    /* A libcurl handle must not be used by two threads at once; the store is normally
     * used by one thread (the daemon's store thread, the CLI), the mutex makes sure. */
    pthread_mutex_t mutex;
    CURL *curl;
} s3_store;

typedef struct response {
    long status;
    char *etag; /* as sent, quotes included */
    s3_error_body error; /* at most ERROR_BODY_MAX */
    /* A GET's 200 body goes here instead, with one begin() before its first byte. */
    CURL *curl;
    const store_sink *sink;
    bool begun, no_etag;
    int sink_r; /* < 0: the sink failed with it, the transfer was cut */
} response;

static void response_done(response *resp)
{
    s3_error_body_done(&resp->error);
    free(resp->etag);
    *resp = (response){};
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void s3_free(void *impl)
{
    s3_store *s = impl;
    if (!s)
        return;
    if (s->curl)
        curl_easy_cleanup(s->curl);
    pthread_mutex_destroy(&s->mutex);
    s3_target_done(&s->t);
    free(s->sse);
    free(s->where);
    free(s);
}

static int s3_open(const char *url, const store_options *opts, void **ret_impl, char **reterr)
{
    s3_credentials cred = {};

    if (opts->s3_sse && *opts->s3_sse && strcmp(opts->s3_sse, "AES256") != 0 &&
        strcmp(opts->s3_sse, "aws:kms") != 0 && strcmp(opts->s3_sse, "none") != 0)
        return errors_fail(reterr, -EINVAL, "s3-sse '%s' is not AES256, aws:kms or none",
                           opts->s3_sse);

    s3_store *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    pthread_mutex_init(&s->mutex, NULL);
    s->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms
                                                         : CONNECT_TIMEOUT_MS;
    s->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : TIMEOUT_MS;

    int r = s3_target_parse(url, opts, &s->t, reterr);
    if (r < 0)
        goto fail;
    const char *sse = opts->s3_sse && *opts->s3_sse ? opts->s3_sse : "AES256";
    if (strcmp(sse, "none") != 0 && !(s->sse = strdup(sse))) {
        r = -ENOMEM;
        goto fail;
    }
    if (asprintf(&s->where, "S3 bucket '%s' object '%s'", s->t.bucket, s->t.object) < 0) {
        s->where = NULL;
        r = -ENOMEM;
        goto fail;
    }

    /* Fail at start, with the reason, rather than at the first poll. */
    r = s3_credentials_load(&cred, reterr);
    s3_credentials_done(&cred);
    if (r < 0)
        goto fail;

    pthread_once(&curl_once, curl_init);
    if (curl_init_result != CURLE_OK || !(s->curl = curl_easy_init())) {
        r = errors_fail(reterr, -ENOMEM, "%s: cannot initialize libcurl", s->where);
        goto fail;
    }

    *ret_impl = s;
    return 0;
fail:
    s3_free(s);
    return r;
}

/* --- one request ------------------------------------------------------------------ */

/* Starts the sink's document, once per answer. */
static bool sink_begin(response *resp)
{
    if (!resp->begun) {
        resp->begun = true;
        int r = resp->sink->begin(resp->sink->userdata);
        if (r < 0) {
            resp->sink_r = r;
            return false;
        }
    }
    return true;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    response *resp = userdata;
    size_t n = size * nmemb;

    if (resp->sink) {
        /* The headers are all in by the first byte of the body. */
        long status = 0;
        curl_easy_getinfo(resp->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status == 200) {
            if (!resp->begun && (!resp->etag || !*resp->etag)) {
                /* Unusable without a version: stop now, say why after. */
                resp->no_etag = true;
                return n == 0 ? CURL_WRITEFUNC_ERROR : 0;
            }
            if (!sink_begin(resp))
                return n == 0 ? CURL_WRITEFUNC_ERROR : 0; /* cuts the transfer */
            if (n > 0) {
                int r = resp->sink->data(resp->sink->userdata, data, n);
                if (r < 0) {
                    resp->sink_r = r;
                    return 0;
                }
            }
            return n;
        }
    }

    /* An error answer: keep what fits, for its Code and Message. */
    if (s3_error_body_append(&resp->error, data, n, ERROR_BODY_MAX) < 0)
        return n == 0 ? CURL_WRITEFUNC_ERROR : 0;
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    response *resp = userdata;
    size_t n = size * nmemb;

    s3_response_header(data, n, &resp->etag);
    return n;
}

static int errno_for_curl(CURLcode c)
{
    switch (c) {
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

static void slist_free_wiped(struct curl_slist *l)
{
    /* Entries carry the session token. */
    for (struct curl_slist *p = l; p; p = p->next)
        secret_wipe(p->data, strlen(p->data));
    curl_slist_free_all(l);
}

static int add_header(struct curl_slist **list, const char *name, const char *value)
{
    _cleanup_free_ char *line = NULL;
    if (asprintf(&line, "%s:%s%s", name, value ? " " : "", value ? value : "") < 0)
        return -ENOMEM;
    struct curl_slist *l = curl_slist_append(*list, line);
    secret_wipe(line, strlen(line));
    if (!l)
        return -ENOMEM;
    *list = l;
    return 0;
}

/* Sends one signed request. Returns 0 with *resp filled (any HTTP status), or -errno with
 * *reterr for a failure to get an answer at all. */
static int s3_request(s3_store *s, const char *method, const char *body, size_t body_len,
                      const char *if_match, const char *if_none_match, const store_sink *sink,
                      response *resp, char **reterr)
{
    s3_credentials cred = {};
    struct curl_slist *list = NULL;
    _cleanup_free_ char *auth = NULL;
    char date[SIGV4_DATE_LEN + 1], payload[SIGV4_HEX_LEN + 1], errbuf[CURL_ERROR_SIZE] = "";
    bool put = strcmp(method, "PUT") == 0;
    int r;

    *resp = (response){.curl = s->curl, .sink = sink};
    r = s3_credentials_load(&cred, reterr);
    if (r < 0)
        return r;

    r = sigv4_amz_date(time(NULL), date);
    if (r < 0)
        goto out;
    sigv4_sha256_hex(body ? body : "", body ? body_len : 0, payload);

    sigv4_header h[8];
    size_t n = 0;
    h[n++] = (sigv4_header){"host", s->t.host};
    h[n++] = (sigv4_header){"x-amz-date", date};
    h[n++] = (sigv4_header){"x-amz-content-sha256", payload};
    if (cred.session_token)
        h[n++] = (sigv4_header){"x-amz-security-token", cred.session_token};
    if (if_match)
        h[n++] = (sigv4_header){"if-match", if_match};
    if (if_none_match)
        h[n++] = (sigv4_header){"if-none-match", if_none_match};
    if (put) {
        h[n++] = (sigv4_header){"content-type", "application/json"};
        if (s->sse)
            h[n++] = (sigv4_header){"x-amz-server-side-encryption", s->sse};
    }

    sigv4_request req = {.method = method, .path = s->t.path, .query = "", .headers = h,
                         .n_headers = n, .payload_hash = payload};
    sigv4_key key = {.access_key_id = cred.access_key_id,
                     .secret_access_key = cred.secret_access_key,
                     .region = s->t.region,
                     .service = "s3"};
    r = sigv4_authorization(&req, &key, date, &auth);
    if (r < 0) {
        r = errors_fail(reterr, r, "%s: cannot sign the request: %m", s->where);
        goto out;
    }

    for (size_t i = 0; i < n && r >= 0; i++)
        r = add_header(&list, h[i].name, h[i].value);
    if (r >= 0)
        r = add_header(&list, "authorization", auth);
    /* No "Expect: 100-continue" round trip before a PUT body. */
    if (r >= 0)
        r = add_header(&list, "expect", NULL);
    if (r < 0)
        goto out;

    CURL *c = s->curl;
    curl_easy_reset(c); /* keeps the connection cache */
    curl_easy_setopt(c, CURLOPT_URL, s->t.url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "heare-auth/" HEARE_VERSION);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
    if (put) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    } else
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);

    CURLcode cc = curl_easy_perform(c);
    /* Nothing of ours may stay behind in the handle: it still points at the header list
     * and, for a PUT, the body. */
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    if (resp->sink_r < 0) {
        /* The sink's own error, whatever became of the transfer it cut. */
        r = resp->sink_r;
        response_done(resp);
        goto out;
    }
    if (resp->no_etag) {
        r = errors_fail(reterr, -EIO, "%s: %s failed: HTTP %ld (no ETag in the answer)", s->where,
                        method, resp->status);
        response_done(resp);
        goto out;
    }
    if (cc != CURLE_OK) {
        r = errors_fail(reterr, errno_for_curl(cc), "%s: %s %s: %s", s->where, method, s->t.url,
                        errbuf[0] ? errbuf : curl_easy_strerror(cc));
        response_done(resp);
        goto out;
    }
    r = 0;
out:
    slist_free_wiped(list);
    s3_credentials_done(&cred);
    return r;
}

/* The one line for an answer we did not want: bucket, object, method, HTTP status, S3
 * error code and message. Never the request's headers: they hold the signature. */
static int s3_fail(s3_store *s, int err, const char *method, const response *resp,
                   const char *code, char **reterr)
{
    char message[MESSAGE_MAX];
    s3_xml_element(resp->error.text, "Message", message, sizeof(message));
    return errors_fail(reterr, err, "%s: %s failed: HTTP %ld%s%s%s%s%s", s->where, method,
                       resp->status, code[0] ? " " : "", code, message[0] ? " (" : "", message,
                       message[0] ? ")" : "");
}

/* -errno for an HTTP status other than the ones the caller handles. */
static int errno_for_status(long status)
{
    if (status == 401 || status == 403)
        return -EACCES;
    if (status == 404)
        return -ENOENT;
    if (status == 429 || status == 503)
        return -EAGAIN;
    return -EIO;
}

static int s3_load_locked(s3_store *s, const char *if_not_version, const store_sink *sink,
                          bool *ret_exists, char **ret_version, char **reterr)
{
    response resp;
    char code[64];
    bool conditional = if_not_version && *if_not_version;

    int r = s3_request(s, "GET", NULL, 0, NULL, conditional ? if_not_version : NULL, sink, &resp,
                       reterr);
    if (r < 0)
        return r;
    s3_xml_element(resp.error.text, "Code", code, sizeof(code));

    if (resp.status == 304 && conditional)
        r = 1;
    else if (resp.status == 200) {
        if (!resp.etag || !*resp.etag)
            r = s3_fail(s, -EIO, "GET", &resp, "(no ETag in the answer)", reterr);
        else if (!sink_begin(&resp)) /* an empty object: its begin() is still due */
            r = resp.sink_r;
        else {
            *ret_exists = true;
            *ret_version = TAKE_PTR(resp.etag);
            r = 0;
        }
    } else if (resp.status == 404 && strcmp(code, "NoSuchKey") == 0) {
        /* No object: an empty store (SPEC §4), as a missing file is. */
        if (if_not_version && !*if_not_version)
            r = 1;
        else if (!(*ret_version = strdup("")))
            r = -ENOMEM;
        else {
            *ret_exists = false;
            r = 0;
        }
    } else
        r = s3_fail(s, errno_for_status(resp.status), "GET", &resp, code, reterr);

    response_done(&resp);
    return r;
}

static int s3_load(void *impl, const char *if_not_version, const store_sink *sink,
                   bool *ret_exists, char **ret_version, char **reterr)
{
    s3_store *s = impl;
    pthread_mutex_lock(&s->mutex);
    int r = s3_load_locked(s, if_not_version, sink, ret_exists, ret_version, reterr);
    pthread_mutex_unlock(&s->mutex);
    return r;
}

static int s3_write_locked(s3_store *s, const char *expected_version, const char *buf,
                           size_t len, char **ret_version, char **reterr)
{
    response resp;
    char code[64];
    bool exists = expected_version && *expected_version;

    int r = s3_request(s, "PUT", buf, len, exists ? expected_version : NULL, exists ? NULL : "*",
                       NULL, &resp, reterr);
    if (r < 0)
        return r;
    s3_xml_element(resp.error.text, "Code", code, sizeof(code));

    if (resp.status == 200) {
        r = 0;
        if (ret_version)
            *ret_version = TAKE_PTR(resp.etag); /* NULL if none was sent: reread next time */
    } else if (resp.status == 412 || resp.status == 409 ||
               (resp.status == 404 && exists && strcmp(code, "NoSuchKey") == 0))
        /* 412: someone else wrote first; 409: a concurrent conditional write is in flight
         * (S3's ConditionalRequestConflict); 404 on If-Match: it was deleted. */
        r = errors_fail(reterr, -ESTALE, "%s: changed since it was read (HTTP %ld%s%s)",
                        s->where, resp.status, code[0] ? " " : "", code);
    else
        r = s3_fail(s, errno_for_status(resp.status), "PUT", &resp, code, reterr);

    response_done(&resp);
    return r;
}

static int s3_write(void *impl, const char *expected_version, const char *buf, size_t len,
                    char **ret_version, char **reterr)
{
    s3_store *s = impl;
    pthread_mutex_lock(&s->mutex);
    int r = s3_write_locked(s, expected_version, buf, len, ret_version, reterr);
    pthread_mutex_unlock(&s->mutex);
    return r;
}

const store_backend store_backend_s3 = {
    .scheme = "s3",
    .open = s3_open,
    .free = s3_free,
    .load = s3_load,
    .write = s3_write,
};
