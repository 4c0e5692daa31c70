/* pam_heare_auth: lets a PAM service accept an API key as the password, by asking
 * heare-authd's io.heare.Auth.Verify over the verify socket (libheare-auth's client code,
 * linked in statically).
 *
 * Safe in any host process: no global or static mutable state (everything lives on the
 * stack of one call, or in the PAM handle), no threads, no signal handlers, the socket is
 * SOCK_CLOEXEC and written with MSG_NOSIGNAL, nothing is written to stdio, and the process
 * is never ended. The key is held for one call: every copy the module makes is wiped with
 * explicit_bzero before it returns, and only key ids reach the log. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include <security/pam_ext.h>
#include <security/pam_modules.h>

#include "ids.h"
#include "json-util.h"
#include "pam-options.h"
#include "heare-auth-internal.h"
#include "timeutil.h"

#define PROMPT "API key: "
#define SECRET_PREFIX "sec_"
/* pam_set_data name of what acct_mgmt should say about the key authenticate saw. */
#define DATA_ACCT "pam_heare_auth_acct"
#define LOG_TEXT_MAX 64
#define USER_AGENT_MAX 128

#define EXPORT __attribute__((visibility("default")))

/* The one value stored under DATA_ACCT: a constant, so nothing is allocated and nothing
 * needs a cleanup callback from this module after it may have been unloaded. */
static const char acct_expired[] = "expired";

/* Room for one byte past IDS_PRESENTED_MAX, so an overlong token is seen as such. */
typedef struct key_buf {
    char buf[IDS_PRESENTED_MAX + 2];
    size_t len;
} key_buf;

static void key_buf_wipe(key_buf *k)
{
    explicit_bzero(k, sizeof(*k));
}

static void key_buf_set(key_buf *k, const char *s)
{
    k->len = strnlen(s, IDS_PRESENTED_MAX + 1);
    memcpy(k->buf, s, k->len);
    k->buf[k->len] = '\0';
}

/* A copy of s fit for one log line: at most LOG_TEXT_MAX bytes, control and non-ASCII
 * bytes shown as '?', so a user name chosen by a remote peer cannot forge log lines. */
static const char *log_text(const char *s, char buf[static LOG_TEXT_MAX + 1])
{
    size_t n = 0;

    if (!s)
        return "-";
    for (; s[n] && n < LOG_TEXT_MAX; n++)
        buf[n] = (s[n] < 0x20 || s[n] > 0x7e) ? '?' : s[n];
    buf[n] = '\0';
    return buf;
}

/* Only a token shaped like a secret is sent: a Unix password typed at the prompt, or handed
 * over by an earlier module with try_first_pass, never reaches the daemon (whose failure log
 * keeps the first 8 characters of a rejected key). */
static bool looks_like_key(const key_buf *k)
{
    if (k->len <= strlen(SECRET_PREFIX) || k->len > IDS_PRESENTED_MAX)
        return false;
    if (memcmp(k->buf, SECRET_PREFIX, strlen(SECRET_PREFIX)) != 0)
        return false;
    for (size_t i = 0; i < k->len; i++)
        if (k->buf[i] < 0x21 || k->buf[i] > 0x7e)
            return false;
    return true;
}

static void remember_acct(pam_handle_t *pamh, bool expired)
{
    /* libpam never writes through the pointer; the cast only fits its signature. */
    (void)pam_set_data(pamh, DATA_ACCT, expired ? (void *)acct_expired : NULL, NULL);
}

/* The earlier module's PAM_AUTHTOK, if any, into k (k->len 0 if none). */
static int token_from_stack(pam_handle_t *pamh, key_buf *k)
{
    const void *item = NULL;

    k->len = 0;
    int r = pam_get_item(pamh, PAM_AUTHTOK, &item);
    if (r != PAM_SUCCESS)
        return r;
    if (item)
        key_buf_set(k, item);
    return PAM_SUCCESS;
}

/* Asks through the conversation. What was typed also becomes PAM_AUTHTOK, as pam_unix does,
 * so later modules can use_first_pass; libpam wipes it at pam_end. */
static int token_from_prompt(pam_handle_t *pamh, key_buf *k)
{
    char *resp = NULL;

    k->len = 0;
    int r = pam_prompt(pamh, PAM_PROMPT_ECHO_OFF, &resp, PROMPT);
    if (r != PAM_SUCCESS || !resp) {
        if (resp) {
            explicit_bzero(resp, strlen(resp));
            free(resp);
        }
        if (r == PAM_CONV_AGAIN)
            return PAM_INCOMPLETE;
        return r == PAM_SUCCESS ? PAM_CONV_ERR : r;
    }

    key_buf_set(k, resp);
    r = pam_set_item(pamh, PAM_AUTHTOK, resp);
    explicit_bzero(resp, strlen(resp));
    free(resp);
    return r;
}

/* One Verify call through the client library, connect, write and read all within one
 * deadline of timeout_ms. Returns 0 with *ret, or -errno (-ETIMEDOUT, -ENOENT, -EPROTO for
 * a reply that is not a Verify answer, ...); *c stays the caller's to close, and after
 * -EINVAL or -EPROTO names the error reply, if that is what came. */
static int verify_key(const pam_options *o, const char *service, const key_buf *k,
                      heare_auth **c, heare_auth_result *ret)
{
    char ua[USER_AGENT_MAX + 1], text[LOG_TEXT_MAX + 1];
    int r;

    snprintf(ua, sizeof(ua), "pam_heare_auth (%s)", log_text(service, text));
    r = heare_auth_open(c, o->socket, o->timeout_ms);
    if (r < 0)
        return r;
    /* looks_like_key let only printable ASCII through: buf is the key as a C string. */
    heare_auth_request req = {.key = k->buf, .scope = o->scope, .user_agent = ua};
    return heare_auth_verify_request(*c, &req, ret);
}

static bool user_matches(const pam_options *o, heare_auth *c, const heare_auth_result *res,
                         const char *user)
{
    const char *want = NULL;

    switch (o->user_match) {
    case USER_MATCH_NONE:
        return true;
    case USER_MATCH_NAME:
        want = res->name;
        break;
    case USER_MATCH_METADATA: {
        _cleanup_json_ json_t *metadata =
            res->metadata_json ? json_loads(res->metadata_json, 0, NULL) : NULL;
        want = json_string_value(json_object_get(metadata, o->user_field));
        return want && user && strcmp(want, user) == 0;
    }
    }
    return want && user && strcmp(want, user) == 0;
}

/* Asks the daemon about k and turns the answer into a PAM code. *ret_expired is set if the
 * key was found expired or disabled. Logs once, with the key id only. */
static int check_key(pam_handle_t *pamh, const pam_options *o, const char *service,
                     const char *user, const key_buf *k, bool *ret_expired)
{
    _cleanup_(heare_auth_closep) heare_auth *c = NULL;
    heare_auth_result res;
    char ubuf[LOG_TEXT_MAX + 1], ibuf[LOG_TEXT_MAX + 1], ebuf[LOG_TEXT_MAX + 1];
    const char *u = log_text(user, ubuf);

    *ret_expired = false;
    if (!looks_like_key(k)) {
        pam_syslog(pamh, LOG_NOTICE,
                   "authentication failure for user %s: not an API key (not sent to the daemon)",
                   u);
        return PAM_AUTH_ERR;
    }

    int64_t t0 = timeutil_monotonic_ms();
    int r = verify_key(o, service, k, &c, &res);
    long long ms = (long long)(timeutil_monotonic_ms() - t0);

    if (r < 0 && heare_auth__error_name(c)) {
        pam_syslog(pamh, LOG_ERR, "cannot verify the key of user %s: %s answered %s", u,
                   o->socket, log_text(heare_auth__error_name(c), ebuf));
        return PAM_AUTHINFO_UNAVAIL;
    }
    if (r == -EPROTO) {
        pam_syslog(pamh, LOG_ERR, "cannot verify the key of user %s: %s sent a reply that is "
                   "not a Verify answer (after %lld ms)", u, o->socket, ms);
        return PAM_AUTHINFO_UNAVAIL;
    }
    if (r < 0) {
        errno = -r;
        pam_syslog(pamh, LOG_ERR, "cannot verify the key of user %s: %s: %m (after %lld ms)", u,
                   o->socket, ms);
        return PAM_AUTHINFO_UNAVAIL;
    }

    const char *id = log_text(res.key_id, ibuf);
    if (o->debug)
        pam_syslog(pamh, LOG_DEBUG, "Verify%s%s on %s: %s, key %s, %lld ms",
                   o->scope ? " scope=" : "", o->scope ? o->scope : "", o->socket,
                   log_text(res.code, ebuf), id, ms);

    if (res.valid && strcmp(res.code, "VALID") == 0) {
        if (!user_matches(o, c, &res, user)) {
            pam_syslog(pamh, LOG_NOTICE,
                       "authentication failure for user %s: key %s belongs to another user", u,
                       id);
            return PAM_AUTH_ERR;
        }
        pam_syslog(pamh, LOG_INFO, "accepted key %s for user %s", id, u);
        return PAM_SUCCESS;
    }

    *ret_expired = strcmp(res.code, "EXPIRED") == 0 || strcmp(res.code, "DISABLED") == 0;
    /* NOT_FOUND and MALFORMED come without a key id. */
    pam_syslog(pamh, LOG_NOTICE, "authentication failure for user %s: %s%s%s", u,
               log_text(res.code, ebuf), res.key_id ? " key " : "", res.key_id ? id : "");
    return PAM_AUTH_ERR;
}

static int parse_or_log(pam_handle_t *pamh, int argc, const char **argv, pam_options *ret)
{
    const char *bad = NULL, *reason = NULL;
    char buf[LOG_TEXT_MAX + 1];

    if (pam_options_parse(argc, argv, ret, &bad, &reason) < 0) {
        pam_syslog(pamh, LOG_ERR, "refusing to run: option \"%s\": %s", log_text(bad, buf),
                   reason);
        return PAM_SERVICE_ERR;
    }
    return PAM_SUCCESS;
}

EXPORT int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    _cleanup_(key_buf_wipe) key_buf key = {};
    const void *item = NULL;
    const char *user = NULL, *service = NULL;
    bool from_stack = false, expired = false;
    pam_options o;
    int r;

    r = parse_or_log(pamh, argc, argv, &o);
    if (r != PAM_SUCCESS)
        return r;
    /* Whatever an earlier authenticate on this handle found no longer counts. */
    remember_acct(pamh, false);

    if (o.user_match != USER_MATCH_NONE) {
        r = pam_get_user(pamh, &user, NULL);
        if (r == PAM_CONV_AGAIN)
            return PAM_INCOMPLETE;
        if (r != PAM_SUCCESS)
            return r;
        if (!user || !*user) {
            pam_syslog(pamh, LOG_NOTICE, "authentication failure: no user name");
            return PAM_AUTH_ERR;
        }
    } else if (pam_get_item(pamh, PAM_USER, &item) == PAM_SUCCESS)
        user = item;
    if (pam_get_item(pamh, PAM_SERVICE, &item) == PAM_SUCCESS)
        service = item;

    if (o.authtok != AUTHTOK_PROMPT) {
        r = token_from_stack(pamh, &key);
        if (r != PAM_SUCCESS)
            return r;
        from_stack = key.len > 0;
        if (!from_stack && o.authtok == AUTHTOK_USE_FIRST_PASS) {
            char ubuf[LOG_TEXT_MAX + 1];
            pam_syslog(pamh, LOG_NOTICE,
                       "authentication failure for user %s: use_first_pass, but no earlier "
                       "module set a password",
                       log_text(user, ubuf));
            return PAM_AUTH_ERR;
        }
    }
    if (!from_stack) {
        r = token_from_prompt(pamh, &key);
        if (r != PAM_SUCCESS)
            return r;
    }

    r = check_key(pamh, &o, service, user, &key, &expired);
    if (r == PAM_AUTH_ERR && from_stack && o.authtok == AUTHTOK_TRY_FIRST_PASS) {
        /* The earlier module's password is not a key for this user: ask for one. */
        key_buf_wipe(&key);
        r = token_from_prompt(pamh, &key);
        if (r != PAM_SUCCESS)
            return r;
        r = check_key(pamh, &o, service, user, &key, &expired);
    }

    remember_acct(pamh, expired);
    return r;
}

EXPORT int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    /* A key grants no credentials beyond the authentication itself. */
    return PAM_SUCCESS;
}

EXPORT int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    const void *data = NULL;
    pam_options o;
    int r;

    r = parse_or_log(pamh, argc, argv, &o);
    if (r != PAM_SUCCESS)
        return r;

    if (pam_get_data(pamh, DATA_ACCT, &data) == PAM_SUCCESS && data == acct_expired) {
        const void *user = NULL;
        char ubuf[LOG_TEXT_MAX + 1];
        (void)pam_get_item(pamh, PAM_USER, &user);
        pam_syslog(pamh, LOG_NOTICE, "account of user %s: the key given is expired or disabled",
                   log_text(user, ubuf));
        return PAM_ACCT_EXPIRED;
    }
    return PAM_SUCCESS;
}
