/* store-probe: one store_load_stream() through a sink that counts and hashes what it gets,
 * for the end-to-end tests of the S3 backend (tests/e2e/test_s3.py), which cannot reach a
 * sink through the daemon or the CLI. Prints one JSON object on stdout.
 *
 * Usage: store-probe URL [--endpoint URL] [--if-not-version V] [--abort-after BYTES]
 *                        [--again]
 *   --abort-after: data() fails with -ECANCELED once the sink holds at least BYTES;
 *   --again: a second, plain load on the same store afterwards (is it still usable?). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "json-util.h"
#include "store.h"
#include "timeutil.h"

typedef struct probe_sink {
    EVP_MD_CTX *md;
    unsigned long long bytes;
    unsigned begins, datas, datas_after_error;
    long long abort_after; /* < 0: never */
    bool failed;
} probe_sink;

static int probe_begin(void *userdata)
{
    probe_sink *p = userdata;
    p->begins++;
    p->bytes = 0;
    return EVP_DigestInit_ex(p->md, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
}

static int probe_data(void *userdata, const char *buf, size_t len)
{
    probe_sink *p = userdata;
    if (p->failed) {
        p->datas_after_error++;
        return -ECANCELED;
    }
    p->datas++;
    if (p->abort_after >= 0 && p->bytes >= (unsigned long long)p->abort_after) {
        p->failed = true;
        return -ECANCELED;
    }
    p->bytes += len;
    return EVP_DigestUpdate(p->md, buf, len) == 1 ? 0 : -ENOMEM;
}

/* One load; the result as a JSON object. */
static json_t *probe(store *s, const char *if_not_version, long long abort_after)
{
    probe_sink p = {.md = EVP_MD_CTX_new(), .abort_after = abort_after};
    store_sink sink = {.begin = probe_begin, .data = probe_data, .userdata = &p};
    char *version = NULL, *err = NULL;
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned d_len = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1] = "";
    bool exists = false;

    if (!p.md)
        return NULL;
    int64_t t0 = timeutil_monotonic_ms();
    int r = store_load_stream(s, if_not_version, &sink, &exists, &version, &err);
    int64_t ms = timeutil_monotonic_ms() - t0;
    if (r == 0 && p.begins > 0 && EVP_DigestFinal_ex(p.md, d, &d_len) == 1)
        for (unsigned i = 0; i < d_len; i++)
            snprintf(hex + 2 * i, 3, "%02x", d[i]);
    EVP_MD_CTX_free(p.md);

    json_t *o = json_pack("{s:i, s:s?, s:b, s:s?, s:i, s:i, s:i, s:I, s:s, s:I}", "r", r, "errno",
                          r < 0 ? strerror(-r) : NULL, "exists", exists, "version", version,
                          "begins", (int)p.begins, "datas", (int)p.datas, "datas_after_error",
                          (int)p.datas_after_error, "bytes", (json_int_t)p.bytes, "sha256", hex,
                          "ms", (json_int_t)ms);
    if (o && err)
        json_object_set_new(o, "error", json_string(err));
    free(version);
    free(err);
    return o;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"endpoint", required_argument, NULL, 'e'},
        {"if-not-version", required_argument, NULL, 'v'},
        {"abort-after", required_argument, NULL, 'a'},
        {"again", no_argument, NULL, 'g'},
        {},
    };
    store_options opts = {};
    const char *if_not_version = NULL;
    long long abort_after = -1;
    bool again = false;
    int c;

    while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
        switch (c) {
        case 'e':
            opts.s3_endpoint = optarg;
            break;
        case 'v':
            if_not_version = optarg;
            break;
        case 'a':
            abort_after = strtoll(optarg, NULL, 10);
            break;
        case 'g':
            again = true;
            break;
        default:
            return 2;
        }
    if (optind + 1 != argc) {
        fprintf(stderr, "usage: store-probe URL [--endpoint URL] [--if-not-version V] "
                        "[--abort-after BYTES] [--again]\n");
        return 2;
    }

    _cleanup_(store_freep) store *s = NULL;
    char *err = NULL;
    int r = store_open_with(argv[optind], &opts, &s, &err);
    if (r < 0) {
        fprintf(stderr, "store-probe: %s\n", err ? err : strerror(-r));
        free(err);
        return 1;
    }

    _cleanup_json_ json_t *out = probe(s, if_not_version, abort_after);
    if (!out)
        return 1;
    if (again) {
        json_t *second = probe(s, NULL, -1);
        if (!second)
            return 1;
        json_object_set_new(out, "again", second);
    }
    char *text = json_dumps(out, JSON_COMPACT);
    if (!text)
        return 1;
    puts(text);
    free(text);
    return 0;
}
