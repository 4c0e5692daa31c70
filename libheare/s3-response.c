/* s3-response: see s3-response.h. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "s3-response.h"
#include "secret.h"

int s3_error_body_append(s3_error_body *b, const char *data, size_t n, size_t max)
{
    size_t keep = n < max - b->len ? n : max - b->len;
    if (keep == 0)
        return 0;
    if (!b->text) {
        b->text = malloc(max + 1);
        if (!b->text)
            return -ENOMEM;
        b->alloc = max + 1;
    }
    memcpy(b->text + b->len, data, keep);
    b->len += keep;
    b->text[b->len] = '\0';
    return 0;
}

void s3_error_body_done(s3_error_body *b)
{
    if (b->text)
        secret_wipe(b->text, b->alloc);
    free(b->text);
    *b = (s3_error_body){};
}

void s3_response_header(const char *line, size_t n, char **etag)
{
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0)
        *etag = mfree(*etag);
    else if (n > 5 && strncasecmp(line, "ETag:", 5) == 0) {
        const char *v = line + 5, *end = line + n;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && isspace((unsigned char)end[-1]))
            end--;
        free(*etag);
        *etag = end > v ? strndup(v, (size_t)(end - v)) : NULL;
    }
}

void s3_xml_element(const char *body, const char *tag, char *ret, size_t max)
{
    char open[32], close[32];
    ret[0] = '\0';
    if (!body)
        return;
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *a = strstr(body, open);
    if (!a)
        return;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (!b)
        return;
    size_t j = 0;
    for (const char *p = a; p < b && j + 1 < max; p++)
        ret[j++] = isprint((unsigned char)*p) ? *p : ' ';
    ret[j] = '\0';
}
