/* sigv4: AWS Signature Version 4 (header-based), with OpenSSL's HMAC-SHA256 and SHA-256.
 * The steps and their names follow AWS's "Signature Calculations for the Authorization
 * Header" (S3 API reference). */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "macro.h"
#include "secret.h"
#include "sigv4.h"

#define MAX_HEADERS 32

static void hex(const uint8_t *d, size_t n, char *ret)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        ret[2 * i] = digits[d[i] >> 4];
        ret[2 * i + 1] = digits[d[i] & 0xF];
    }
    ret[2 * n] = '\0';
}

void sigv4_sha256_hex(const void *buf, size_t len, char ret[SIGV4_HEX_LEN + 1])
{
    uint8_t d[SECRET_DIGEST_LEN];
    secret_digest(buf, len, d);
    hex(d, sizeof(d), ret);
}

int sigv4_amz_date(time_t t, char ret[SIGV4_DATE_LEN + 1])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(ret, SIGV4_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) !=
                                  SIGV4_DATE_LEN)
        return -EOVERFLOW;
    return 0;
}

static bool unreserved(unsigned char c)
{
    return isascii(c) && (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~');
}

char *sigv4_uri_encode(const char *s, bool keep_slash)
{
    size_t n = strlen(s);
    if (n > (SIZE_MAX - 1) / 3)
        return NULL;
    char *out = malloc(3 * n + 1), *p = out;
    if (!out)
        return NULL;
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if (unreserved(*q) || (keep_slash && *q == '/'))
            *p++ = (char)*q;
        else
            p += sprintf(p, "%%%02X", *q);
    }
    *p = '\0';
    return out;
}

/* A header as it is signed: lowercased name, value trimmed with inner space runs as one. */
typedef struct canon_header {
    char *name, *value;
} canon_header;

static bool token_char(unsigned char c)
{
    return isascii(c) && (isalnum(c) || strchr("!#$%&'*+-.^_`|~", c));
}

static int canon_one(const sigv4_header *h, canon_header *ret)
{
    size_t n = strlen(h->name);
    if (n == 0)
        return -EINVAL;
    char *name = malloc(n + 1);
    if (!name)
        return -ENOMEM;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && !token_char((unsigned char)h->name[i])) {
            free(name);
            return -EINVAL;
        }
        name[i] = (char)tolower((unsigned char)h->name[i]);
    }

    const char *v = h->value ? h->value : "";
    char *value = malloc(strlen(v) + 1), *p = value;
    if (!value) {
        free(name);
        return -ENOMEM;
    }
    while (*v == ' ' || *v == '\t')
        v++;
    for (; *v; v++) {
        bool space = *v == ' ' || *v == '\t';
        if (space && (p == value || p[-1] == ' '))
            continue;
        *p++ = space ? ' ' : *v;
    }
    while (p > value && p[-1] == ' ')
        p--;
    *p = '\0';

    *ret = (canon_header){.name = name, .value = value};
    return 0;
}

static int cmp_header(const void *a, const void *b)
{
    return strcmp(((const canon_header *)a)->name, ((const canon_header *)b)->name);
}

int sigv4_canonical_request(const sigv4_request *req, char **ret_canonical,
                            char **ret_signed_headers)
{
    canon_header hs[MAX_HEADERS] = {};
    char *canonical = NULL, *signed_headers = NULL;
    size_t canonical_len = 0, signed_len = 0;
    int r = 0;

    if (!req->method || !req->path || !req->payload_hash || req->n_headers == 0 ||
        req->n_headers > MAX_HEADERS)
        return -EINVAL;

    size_t n = req->n_headers;
    for (size_t i = 0; i < n; i++) {
        r = canon_one(&req->headers[i], &hs[i]);
        if (r < 0)
            goto out;
    }
    qsort(hs, n, sizeof(hs[0]), cmp_header);
    for (size_t i = 1; i < n; i++)
        if (strcmp(hs[i - 1].name, hs[i].name) == 0) {
            r = -EINVAL;
            goto out;
        }

    FILE *sig = open_memstream(&signed_headers, &signed_len);
    if (!sig) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        fprintf(sig, "%s%s", i ? ";" : "", hs[i].name);
    if (fclose(sig) != 0) {
        r = -ENOMEM;
        goto out;
    }

    FILE *f = open_memstream(&canonical, &canonical_len);
    if (!f) {
        r = -ENOMEM;
        goto out;
    }
    fprintf(f, "%s\n%s\n%s\n", req->method, req->path, req->query ? req->query : "");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s:%s\n", hs[i].name, hs[i].value);
    fprintf(f, "\n%s\n%s", signed_headers, req->payload_hash);
    if (fclose(f) != 0) {
        r = -ENOMEM;
        goto out;
    }

    *ret_canonical = TAKE_PTR(canonical);
    *ret_signed_headers = TAKE_PTR(signed_headers);
out:
    for (size_t i = 0; i < n; i++) {
        free(hs[i].name);
        free(hs[i].value);
    }
    free(canonical);
    free(signed_headers);
    return r;
}

static bool valid_date(const char *d)
{
    if (!d || strlen(d) != SIGV4_DATE_LEN || d[8] != 'T' || d[15] != 'Z')
        return false;
    for (size_t i = 0; i < 15; i++)
        if (i != 8 && !isdigit((unsigned char)d[i]))
            return false;
    return true;
}

int sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
                         const char *canonical_request, char **ret)
{
    char h[SIGV4_HEX_LEN + 1];

    if (!valid_date(amz_date) || !region || !*region || !service || !*service)
        return -EINVAL;
    sigv4_sha256_hex(canonical_request, strlen(canonical_request), h);
    if (asprintf(ret, "AWS4-HMAC-SHA256\n%s\n%.8s/%s/%s/aws4_request\n%s", amz_date, amz_date,
                 region, service, h) < 0) {
        *ret = NULL;
        return -ENOMEM;
    }
    return 0;
}

static bool hmac(const void *key, size_t key_len, const char *data, uint8_t ret[32])
{
    unsigned len = 0;
    return HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, strlen(data), ret,
                &len) && len == 32;
}

int sigv4_authorization(const sigv4_request *req, const sigv4_key *key, const char *amz_date,
                        char **ret_authorization)
{
    _cleanup_free_ char *canonical = NULL, *signed_headers = NULL, *to_sign = NULL;
    _cleanup_erase_ char *k_secret = NULL;
    uint8_t k[32], sig[32];
    char date[9], sig_hex[SIGV4_HEX_LEN + 1];
    int r;

    if (!key->access_key_id || !*key->access_key_id || !key->secret_access_key)
        return -EINVAL;
    r = sigv4_canonical_request(req, &canonical, &signed_headers);
    if (r < 0)
        return r;
    r = sigv4_string_to_sign(amz_date, key->region, key->service, canonical, &to_sign);
    if (r < 0)
        return r;

    if (asprintf(&k_secret, "AWS4%s", key->secret_access_key) < 0) {
        k_secret = NULL;
        return -ENOMEM;
    }
    memcpy(date, amz_date, 8);
    date[8] = '\0';

    /* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
     * "aws4_request"); the signature is HMAC(kSigning, string to sign). */
    bool ok = hmac(k_secret, strlen(k_secret), date, k) && hmac(k, 32, key->region, k) &&
              hmac(k, 32, key->service, k) && hmac(k, 32, "aws4_request", k) &&
              hmac(k, 32, to_sign, sig);
    secret_wipe(k, sizeof(k));
    if (!ok)
        return -EIO;
    hex(sig, sizeof(sig), sig_hex);

    if (asprintf(ret_authorization,
                 "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
                 "Signature=%s",
                 key->access_key_id, date, key->region, key->service, signed_headers,
                 sig_hex) < 0) {
        *ret_authorization = NULL;
        return -ENOMEM;
    }
    return 0;
}
