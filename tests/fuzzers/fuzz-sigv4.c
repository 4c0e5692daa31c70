/* fuzz-sigv4: the request signer, on requests whose parts come from the input: lines are
 * the method, path, query, x-amz-date, region, then "name:value" headers (up to 40, past
 * the limit of 32). A request it signs has headers with token names, none twice, listed
 * sorted and lowercased; one it refuses gets -EINVAL. The URI encoder must write only
 * unreserved bytes and %XX, and decode back to its input. */
#include <ctype.h>
#include <errno.h>

#include "fuzz.h"
#include "sigv4.h"

#define MAX_LINES 45

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void check_uri_encode(const char *s, bool keep_slash)
{
    char *e = sigv4_uri_encode(s, keep_slash);
    FUZZ_ASSERT(e != NULL);
    size_t n = 0;
    for (const char *p = e; *p; n++) {
        if (*p == '%') {
            FUZZ_ASSERT(hexval(p[1]) >= 0 && hexval(p[2]) >= 0);
            FUZZ_ASSERT((char)(hexval(p[1]) << 4 | hexval(p[2])) == s[n]);
            p += 3;
        } else {
            FUZZ_ASSERT(isalnum((unsigned char)*p) || strchr("-._~", *p) ||
                        (keep_slash && *p == '/'));
            FUZZ_ASSERT(*p == s[n]);
            p++;
        }
    }
    FUZZ_ASSERT(s[n] == '\0');
    free(e);
}

static bool token_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isascii((unsigned char)*s) ||
            !(isalnum((unsigned char)*s) || strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size), *lines[MAX_LINES];
    size_t n = 0;

    for (char *p = text; n < MAX_LINES;) {
        lines[n++] = p;
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    check_uri_encode(lines[0], false);
    check_uri_encode(lines[0], true);
    if (n < 5) {
        free(text);
        return 0;
    }

    sigv4_header h[MAX_LINES];
    size_t nh = 0;
    bool names_ok = true;
    for (size_t i = 5; i < n; i++) {
        char *colon = strchr(lines[i], ':');
        if (colon)
            *colon = '\0';
        h[nh] = (sigv4_header){lines[i], colon ? colon + 1 : NULL};
        names_ok &= token_name(h[nh].name);
        nh++;
    }
    char payload[SIGV4_HEX_LEN + 1];
    sigv4_sha256_hex(data, size, payload);
    sigv4_request req = {.method = lines[0],
                         .path = lines[1],
                         .query = lines[2],
                         .headers = h,
                         .n_headers = nh,
                         .payload_hash = payload};
    char *canonical = NULL, *signed_headers = NULL;
    int r = sigv4_canonical_request(&req, &canonical, &signed_headers);
    FUZZ_ASSERT(r == 0 || r == -EINVAL);
    if (nh == 0 || nh > 32 || !names_ok)
        FUZZ_ASSERT(r == -EINVAL);
    if (r == 0) {
        /* Sorted, lowercased, no name twice. */
        size_t count = 1;
        for (const char *p = signed_headers; *p; p++) {
            FUZZ_ASSERT(!isupper((unsigned char)*p));
            count += *p == ';';
        }
        FUZZ_ASSERT(count == nh);
        char *prev = NULL, *save = NULL,
             *copy = fuzz_strndup(signed_headers, strlen(signed_headers));
        for (char *t = strtok_r(copy, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
            FUZZ_ASSERT(!prev || strcmp(prev, t) < 0);
            prev = t;
        }
        free(copy);
        FUZZ_ASSERT(strncmp(canonical, lines[0], strlen(lines[0])) == 0);
        size_t cl = strlen(canonical);
        FUZZ_ASSERT(cl >= SIGV4_HEX_LEN && strcmp(canonical + cl - SIGV4_HEX_LEN, payload) == 0);

        sigv4_key key = {.access_key_id = "AKIDEXAMPLE",
                         .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                         .region = lines[4],
                         .service = "s3"};
        char *auth = NULL;
        int ra = sigv4_authorization(&req, &key, lines[3], &auth);
        FUZZ_ASSERT(ra == 0 || ra == -EINVAL);
        if (ra == 0) {
            FUZZ_ASSERT(strncmp(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/", 40) == 0);
            FUZZ_ASSERT(strstr(auth, signed_headers) != NULL);
            free(auth);
        } else
            FUZZ_ASSERT(!auth);
    }
    free(canonical);
    free(signed_headers);
    free(text);
    return 0;
}
