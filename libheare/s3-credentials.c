/* s3-credentials: environment, then $CREDENTIALS_DIRECTORY, then the shared credentials
 * file. Every buffer that held a secret is wiped before it is freed. */
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"
#include "macro.h"
#include "s3-credentials.h"
#include "secret.h"
#include "store.h"

#define CRED_FILE_MAX ((size_t)64 * 1024)

void s3_credentials_done(s3_credentials *c)
{
    free(c->access_key_id);
    erase_and_free(c->secret_access_key);
    erase_and_free(c->session_token);
    *c = (s3_credentials){};
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* s without surrounding white space, as a new string. */
static char *strip_dup(const char *s, size_t n)
{
    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    return strndup(s, n);
}

static int from_env(s3_credentials *c, char **reterr)
{
    const char *id = env("AWS_ACCESS_KEY_ID"), *secret = env("AWS_SECRET_ACCESS_KEY");
    if (!id && !secret)
        return 0;
    if (!id || !secret)
        return errors_fail(reterr, -EINVAL,
                           "S3 credentials: %s is set in the environment but %s is not",
                           id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                           id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    c->access_key_id = strdup(id);
    c->secret_access_key = strdup(secret);
    const char *token = env("AWS_SESSION_TOKEN");
    c->session_token = token ? strdup(token) : NULL;
    if (!c->access_key_id || !c->secret_access_key || (token && !c->session_token))
        return -ENOMEM;
    c->source = "environment";
    return 1;
}

/* Reads one credential file of $CREDENTIALS_DIRECTORY: 1 and *ret (stripped), 0 if it does
 * not exist, -errno with *reterr. */
static int read_cred_file(const char *dir, const char *name, char **ret, char **reterr)
{
    _cleanup_free_ char *path = NULL;
    char *buf = NULL;
    size_t len = 0;

    if (asprintf(&path, "%s/%s", dir, name) < 0) {
        path = NULL;
        return -ENOMEM;
    }
    int r = store_read_file(path, CRED_FILE_MAX, &buf, &len);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return errors_fail(reterr, r, "S3 credentials: cannot read %s: %m", path);
    *ret = strip_dup(buf, len);
    secret_wipe(buf, len);
    free(buf);
    if (!*ret)
        return -ENOMEM;
    if (!**ret) {
        *ret = mfree(*ret);
        return errors_fail(reterr, -EINVAL, "S3 credentials: %s is empty", path);
    }
    return 1;
}

static int from_credentials_directory(s3_credentials *c, char **reterr)
{
    const char *dir = env("CREDENTIALS_DIRECTORY");
    if (!dir)
        return 0;

    int r1 = read_cred_file(dir, "aws-access-key-id", &c->access_key_id, reterr);
    if (r1 < 0)
        return r1;
    int r2 = read_cred_file(dir, "aws-secret-access-key", &c->secret_access_key, reterr);
    if (r2 < 0)
        return r2;
    if (r1 == 0 && r2 == 0)
        return 0;
    if (r1 == 0 || r2 == 0)
        return errors_fail(reterr, -EINVAL, "S3 credentials: %s/%s exists but %s does not", dir,
                           r1 ? "aws-access-key-id" : "aws-secret-access-key",
                           r1 ? "aws-secret-access-key" : "aws-access-key-id");
    int r = read_cred_file(dir, "aws-session-token", &c->session_token, reterr);
    if (r < 0)
        return r;
    c->source = "$CREDENTIALS_DIRECTORY";
    return 1;
}

/* Sets *field from "key = value" if key matches; returns -ENOMEM only. */
static int ini_take(const char *key, const char *want, const char *value, size_t value_len,
                    char **field)
{
    if (strcmp(key, want) != 0)
        return 0;
    erase_and_free(*field);
    *field = strip_dup(value, value_len);
    return *field ? 0 : -ENOMEM;
}

int s3_credentials_parse_shared(const char *text, const char *profile, s3_credentials *c)
{
    bool in_profile = false, found = false;

    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        const char *next = end ? end + 1 : NULL;

        while (n > 0 && isspace((unsigned char)*line)) {
            line++;
            n--;
        }
        while (n > 0 && isspace((unsigned char)line[n - 1]))
            n--;

        if (n == 0 || line[0] == '#' || line[0] == ';') {
            /* comment or blank */
        } else if (line[0] == '[' && line[n - 1] == ']') {
            _cleanup_free_ char *name = strip_dup(line + 1, n - 2);
            if (!name)
                return -ENOMEM;
            in_profile = strcmp(name, profile) == 0;
            found |= in_profile;
        } else if (in_profile) {
            const char *eq = memchr(line, '=', n);
            if (eq) {
                _cleanup_free_ char *key = strip_dup(line, (size_t)(eq - line));
                if (!key)
                    return -ENOMEM;
                const char *v = eq + 1;
                size_t vn = n - (size_t)(v - line);
                int r = ini_take(key, "aws_access_key_id", v, vn, &c->access_key_id);
                if (r == 0)
                    r = ini_take(key, "aws_secret_access_key", v, vn, &c->secret_access_key);
                if (r == 0)
                    r = ini_take(key, "aws_session_token", v, vn, &c->session_token);
                if (r < 0)
                    return r;
            }
        }
        line = next;
    }
    return found;
}

static int from_shared_file(s3_credentials *c, char **reterr)
{
    _cleanup_free_ char *path = NULL;
    const char *file = env("AWS_SHARED_CREDENTIALS_FILE");
    const char *profile_env = env("AWS_PROFILE");
    const char *profile = profile_env ? profile_env : "default";

    if (file)
        path = strdup(file);
    else {
        const char *home = env("HOME");
        if (!home) {
            struct passwd *pw = getpwuid(geteuid());
            home = pw && pw->pw_dir && *pw->pw_dir ? pw->pw_dir : NULL;
        }
        if (!home)
            return 0;
        if (asprintf(&path, "%s/.aws/credentials", home) < 0)
            path = NULL;
    }
    if (!path)
        return -ENOMEM;

    char *buf = NULL;
    size_t len = 0;
    int r = store_read_file(path, CRED_FILE_MAX, &buf, &len);
    if (r == -ENOENT && !file && !profile_env)
        return 0;
    if (r < 0)
        return errors_fail(reterr, r, "S3 credentials: cannot read %s: %m", path);

    r = s3_credentials_parse_shared(buf, profile, c);
    secret_wipe(buf, len);
    free(buf);
    if (r < 0)
        return r;
    if (r == 0) {
        if (!profile_env && !file)
            return 0;
        return errors_fail(reterr, -EINVAL, "S3 credentials: %s has no profile [%s]", path,
                           profile);
    }
    if (!c->access_key_id || !*c->access_key_id || !c->secret_access_key ||
        !*c->secret_access_key)
        return errors_fail(reterr, -EINVAL,
                           "S3 credentials: profile [%s] of %s lacks aws_access_key_id or "
                           "aws_secret_access_key",
                           profile, path);
    if (c->session_token && !*c->session_token)
        c->session_token = erase_and_free(c->session_token);
    c->source = "shared credentials file";
    return 1;
}

int s3_credentials_load(s3_credentials *ret, char **reterr)
{
    static int (*const chain[])(s3_credentials *, char **) = {
        from_env,
        from_credentials_directory,
        from_shared_file,
    };
    s3_credentials c = {};

    if (reterr)
        *reterr = NULL;
    for (size_t i = 0; i < ELEMENTSOF(chain); i++) {
        int r = chain[i](&c, reterr);
        if (r > 0) {
            *ret = c;
            return 0;
        }
        s3_credentials_done(&c);
        if (r < 0)
            return r;
    }
    return errors_fail(reterr, -ENOENT,
                       "S3 credentials: none found (set AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY, use LoadCredential= for aws-access-key-id and "
                       "aws-secret-access-key, or a shared credentials file)");
}
