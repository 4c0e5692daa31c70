/* s3-url: s3://BUCKET/OBJECT plus endpoint and addressing → URL, Host and canonical path. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "macro.h"
#include "s3-url.h"
#include "sigv4.h"

#define OBJECT_MAX 1024 /* S3's limit on a key, in bytes */
#define BUCKET_MAX 255

void s3_target_done(s3_target *t)
{
    free(t->bucket);
    free(t->object);
    free(t->region);
    free(t->url);
    free(t->host);
    free(t->path);
    *t = (s3_target){};
}

/* What may follow "s3://" as a bucket: S3's rules are stricter (3–63 lowercase), other
 * stores are laxer; this is what is safe in a path and a host name label set. */
static bool valid_bucket(const char *b, size_t n)
{
    if (n == 0 || n > BUCKET_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isascii((unsigned char)b[i]) ||
            !(isalnum((unsigned char)b[i]) || b[i] == '-' || b[i] == '.' || b[i] == '_'))
            return false;
    return true;
}

/* A bucket usable as the leftmost labels of a host name. */
static bool dns_bucket(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63 || b[0] == '.' || b[0] == '-' || b[n - 1] == '.' || b[n - 1] == '-')
        return false;
    for (const char *p = b; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-' || *p == '.'))
            return false;
    return !strstr(b, "..");
}

/* Printable ASCII only: the endpoint goes as it is into the URL, the Host header and the
 * canonical request that is signed, where a space, a control byte or a byte above 0x7e
 * would end a line, split it, or be encoded otherwise by the server. */
static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* "http[s]://authority[/base]" → scheme, authority (host lowercased), base path without a
 * trailing '/'. */
static int parse_endpoint(const char *ep, char **ret_scheme, char **ret_authority,
                          char **ret_base, char **reterr)
{
    const char *rest;
    if (strncmp(ep, "https://", 8) == 0) {
        *ret_scheme = strdup("https");
        rest = ep + 8;
    } else if (strncmp(ep, "http://", 7) == 0) {
        *ret_scheme = strdup("http");
        rest = ep + 7;
    } else
        return errors_fail(reterr, -EINVAL,
                           "s3-endpoint '%s' is not an http:// or https:// URL", ep);
    if (!*ret_scheme)
        return -ENOMEM;

    size_t n = strcspn(rest, "/");
    if (n == 0 || strpbrk(ep, "@?#") || !printable(ep))
        return errors_fail(reterr, -EINVAL,
                           "s3-endpoint '%s' must be http[s]://HOST[:PORT][/PATH] (no user, "
                           "query or fragment), in printable ASCII without spaces",
                           ep);
    *ret_authority = strndup(rest, n);
    if (!*ret_authority)
        return -ENOMEM;
    for (char *p = *ret_authority; *p; p++)
        *p = (char)tolower((unsigned char)*p);

    const char *base = rest + n;
    size_t bn = strlen(base);
    while (bn > 0 && base[bn - 1] == '/')
        bn--;
    *ret_base = strndup(base, bn);
    return *ret_base ? 0 : -ENOMEM;
}

int s3_target_parse(const char *url, const store_options *opts, s3_target *ret, char **reterr)
{
    _cleanup_free_ char *scheme = NULL, *authority = NULL, *base = NULL, *enc_bucket = NULL,
                        *enc_object = NULL;
    s3_target t = {};
    int r;

    if (strncmp(url, "s3://", 5) != 0)
        return errors_fail(reterr, -EINVAL, "'%s' is not an s3://BUCKET/OBJECT URL", url);
    const char *b = url + 5, *slash = strchr(b, '/');
    if (!slash || !valid_bucket(b, (size_t)(slash - b)))
        return errors_fail(reterr, -EINVAL,
                           "'%s': bad bucket name (expected s3://BUCKET/OBJECT, the bucket of "
                           "letters, digits, '.', '-' and '_')",
                           url);
    const char *o = slash + 1;
    if (!*o || strlen(o) > OBJECT_MAX)
        return errors_fail(reterr, -EINVAL, "'%s': the object name must be 1 to %d bytes", url,
                           OBJECT_MAX);
    for (const char *p = o; *p; p++)
        if (iscntrl((unsigned char)*p))
            return errors_fail(reterr, -EINVAL, "'%s': the object name has a control character",
                               url);

    t.bucket = strndup(b, (size_t)(slash - b));
    t.object = strdup(o);
    t.region = strdup(opts->s3_region && *opts->s3_region ? opts->s3_region : "us-east-1");
    if (!t.bucket || !t.object || !t.region) {
        r = -ENOMEM;
        goto fail;
    }

    bool aws = !opts->s3_endpoint || !*opts->s3_endpoint;
    if (aws) {
        scheme = strdup("https");
        base = strdup("");
        if (asprintf(&authority, "s3.%s.amazonaws.com", t.region) < 0)
            authority = NULL;
        if (!scheme || !base || !authority) {
            r = -ENOMEM;
            goto fail;
        }
    } else {
        r = parse_endpoint(opts->s3_endpoint, &scheme, &authority, &base, reterr);
        if (r < 0)
            goto fail;
    }

    if (opts->s3_addressing && *opts->s3_addressing) {
        if (strcmp(opts->s3_addressing, "virtual") == 0)
            t.virtual_host = true;
        else if (strcmp(opts->s3_addressing, "path") != 0) {
            r = errors_fail(reterr, -EINVAL, "s3-addressing '%s' is not virtual or path",
                            opts->s3_addressing);
            goto fail;
        }
    } else
        t.virtual_host = aws;

    if (t.virtual_host && !dns_bucket(t.bucket)) {
        r = errors_fail(reterr, -EINVAL,
                        "bucket '%s' cannot be a host name (virtual-host addressing needs 3 to "
                        "63 lowercase letters, digits, '.' and '-'); set s3-addressing = path",
                        t.bucket);
        goto fail;
    }

    enc_bucket = sigv4_uri_encode(t.bucket, false);
    enc_object = sigv4_uri_encode(t.object, true);
    if (!enc_bucket || !enc_object) {
        r = -ENOMEM;
        goto fail;
    }
    if (t.virtual_host) {
        if (asprintf(&t.host, "%s.%s", t.bucket, authority) < 0)
            t.host = NULL;
        if (asprintf(&t.path, "%s/%s", base, enc_object) < 0)
            t.path = NULL;
    } else {
        t.host = strdup(authority);
        if (asprintf(&t.path, "%s/%s/%s", base, enc_bucket, enc_object) < 0)
            t.path = NULL;
    }
    if (!t.host || !t.path || asprintf(&t.url, "%s://%s%s", scheme, t.host, t.path) < 0) {
        t.url = NULL;
        r = -ENOMEM;
        goto fail;
    }

    *ret = t;
    return 0;
fail:
    s3_target_done(&t);
    return r;
}
