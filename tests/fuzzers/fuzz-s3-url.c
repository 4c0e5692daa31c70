/* fuzz-s3-url: where an s3:// store is on the wire. The input's lines are the store URL,
 * the region, the endpoint and the addressing, each set through conf_set() as the daemon
 * and the CLI set them (an empty line: left at its default); what the configuration takes
 * goes to s3_target_parse(). A target it accepts has a URL made of its scheme, Host and
 * path, with nothing in them that ends or splits a request line or a header; a refused
 * one says why. */
#include <errno.h>

#include "conf.h"
#include "fuzz.h"
#include "s3-url.h"

static bool set(conf *c, const char *key, const char *value)
{
    char *err = NULL;
    int r = *value ? conf_set(c, key, value, &err) : 0;
    free(err);
    return r == 0;
}

static void check_wire_text(const char *s)
{
    for (; *s; s++)
        FUZZ_ASSERT(*s > 0x20 && *s < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size), *parts[4] = {text, "", "", ""};
    conf c;

    for (size_t i = 1; i < 4; i++) {
        char *nl = strchr(parts[i - 1], '\n');
        if (!nl)
            break;
        *nl = '\0';
        parts[i] = nl + 1;
    }
    FUZZ_ASSERT(conf_init(&c) == 0);
    if (set(&c, "store", parts[0]) && strncmp(c.store, "s3://", 5) == 0 &&
        set(&c, "s3-region", parts[1]) && set(&c, "s3-endpoint", parts[2]) &&
        set(&c, "s3-addressing", parts[3])) {
        store_options opts = {.s3_region = c.s3_region,
                              .s3_endpoint = c.s3_endpoint,
                              .s3_addressing = c.s3_addressing};
        s3_target t = {};
        char *err = NULL;
        int r = s3_target_parse(c.store, &opts, &t, &err);
        FUZZ_ASSERT(r == 0 || r == -EINVAL);
        if (r < 0)
            FUZZ_ASSERT(err && *err && !t.url);
        else {
            FUZZ_ASSERT(!err && t.bucket && *t.bucket && t.object && *t.object && t.region);
            FUZZ_ASSERT(t.path[0] == '/');
            size_t hl = strlen(t.host);
            const char *after = strstr(t.url, "://");
            FUZZ_ASSERT(after && strncmp(after + 3, t.host, hl) == 0);
            FUZZ_ASSERT(strcmp(after + 3 + hl, t.path) == 0);
            check_wire_text(t.url);
            s3_target_done(&t);
        }
        free(err);
    }
    conf_done(&c);
    free(text);
    return 0;
}
