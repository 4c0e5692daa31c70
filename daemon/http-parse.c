/* http-parse: see http-parse.h. */
#include <string.h>
#include <strings.h>

#include "http-parse.h"
#include "json-scan.h"
#include "macro.h"

bool http_scan_verify_body(char *body, size_t len, char **ret_key, size_t *ret_key_len,
                           const char **ret_scope)
{
    json_scanner s = {body, body + len};
    json_flat_member m[2];
    const json_flat_member *key = NULL, *scope = NULL;

    int n = json_scan_flat_object(&s, m, ELEMENTSOF(m));
    json_scan_space(&s);
    if (n <= 0 || s.p != s.end)
        return false;
    for (int i = 0; i < n; i++) {
        if (JSON_SAME_NAME(m[i].name, m[i].name_len, "api_key"))
            key = &m[i];
        else if (JSON_SAME_NAME(m[i].name, m[i].name_len, "scope"))
            scope = &m[i];
        else
            return false; /* other members are jansson's to read */
    }
    if (!key)
        return false;
    key->value[key->value_len] = '\0';
    *ret_key = key->value;
    *ret_key_len = key->value_len;
    *ret_scope = NULL;
    if (scope) {
        scope->value[scope->value_len] = '\0';
        *ret_scope = scope->value;
    }
    return true;
}

static bool name_is(const char *p, size_t len, const char *lit)
{
    return len == strlen(lit) && strncasecmp(p, lit, len) == 0;
}

/* RFC 9112, section 6.3: a request with more than one Content-Length (even equal ones),
 * with both Transfer-Encoding and Content-Length, or with a folded header line is refused,
 * because a proxy in front may frame it otherwise than h2o does and pass on a second
 * request hidden in the body. h2o 2.2.5 takes such a request: it frames it by the first
 * Content-Length, or by Transfer-Encoding over Content-Length, and keeps neither header in
 * req->headers. So the caller hands over the head as h2o read it. */
bool http_framing_ok(const char *head, size_t len, const char *method, size_t method_len)
{
    const char *p = head, *end = head + len, *nl;
    size_t n_length = 0, n_encoding = 0;

    if (len == 0)
        return false;
    /* picohttpparser skips empty lines before a request. */
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    if ((size_t)(end - p) < method_len || memcmp(p, method, method_len) != 0)
        return false;
    nl = memchr(p, '\n', (size_t)(end - p)); /* the request line */
    if (!nl)
        return false;
    for (p = nl + 1;; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return false;
        size_t n = (size_t)(nl - p);
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (n == 0)
            break; /* the end of the head */
        if (*p == ' ' || *p == '\t')
            return false; /* obsolete line folding */
        const char *colon = memchr(p, ':', n);
        if (!colon)
            return false;
        size_t name_len = (size_t)(colon - p);
        if (name_is(p, name_len, "content-length"))
            n_length++;
        else if (name_is(p, name_len, "transfer-encoding"))
            n_encoding++;
    }
    return n_length <= 1 && !(n_length > 0 && n_encoding > 0);
}

const char *http_query_find(const char *query, size_t len, const char *name, size_t *ret_len)
{
    const char *p = query, *end = query + len;
    size_t name_len = strlen(name);

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > name_len && memcmp(p, name, name_len) == 0 && p[name_len] == '=') {
            *ret_len = (size_t)(stop - p) - name_len - 1;
            return p + name_len + 1;
        }
        if (!amp)
            break;
        p = amp + 1; /* not stop + 1, which is past the end after the last one */
    }
    return NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

bool http_query_decode(const char *v, size_t len, char *out)
{
    const char *stop = v + len;
    size_t n = 0;

    for (; v < stop; v++) {
        int hi, lo;
        if (*v == '%' && stop - v >= 3 && (hi = hexval(v[1])) >= 0 && (lo = hexval(v[2])) >= 0) {
            out[n++] = (char)(hi << 4 | lo);
            v += 2;
        } else {
            out[n++] = *v == '+' ? ' ' : *v;
        }
    }
    out[n] = 0;
    return strlen(out) == n;
}

bool http_bearer_token(char *v, size_t len, char **ret, size_t *ret_len)
{
    if (len <= 7 || strncasecmp(v, "bearer ", 7) != 0)
        return false;
    char *p = v + 7, *end = v + len;
    while (p < end && *p == ' ')
        p++;
    while (end > p && end[-1] == ' ')
        end--;
    if (end == p)
        return false;
    *ret = p;
    *ret_len = (size_t)(end - p);
    return true;
}
