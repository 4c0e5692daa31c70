/* keygen: writes a keys.json of N keys, version 2 (SHA-256 of each secret) or version 1
 * (the Python service's plaintext secrets), and optionally a file of some of the secrets,
 * spread evenly over the document, for the load generators. The output is deterministic
 * for a given N and seed: same keys, same secrets, so runs are comparable.
 *
 * Secrets are generation-1 secrets with a correct CRC32 checksum (SPEC §2), so they go
 * through the full check and lookup. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "secret.h"
#include "timeutil.h"

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* 2025-10-28T16:45:18Z, so every file is byte-for-byte the same. */
#define CREATED 1761669918

static void make_key(uint64_t i, uint64_t seed, char id[IDS_KEY_ID_LEN + 1],
                     char sec[IDS_SECRET_LEN + 1])
{
    const size_t body = IDS_SECRET_LEN - IDS_CHECKSUM_LEN;
    uint64_t s = seed ^ (i * 0x632be59bd9b4e019u);

    memcpy(id, "key_0", 5);
    ids_base62_encode(CREATED, IDS_TIMESTAMP_LEN, id + 5);
    ids_base62_encode(i, IDS_KEY_ENTROPY_LEN, id + 5 + IDS_TIMESTAMP_LEN);
    id[IDS_KEY_ID_LEN] = 0;

    memcpy(sec, "sec_1", 5);
    ids_base62_encode(CREATED, IDS_TIMESTAMP_LEN, sec + 5);
    for (size_t k = 5 + IDS_TIMESTAMP_LEN; k < body; k++)
        sec[k] = ids_base62_alphabet[splitmix(&s) % 62];
    ids_base62_encode(ids_crc32(sec, body), IDS_CHECKSUM_LEN, sec + body);
    sec[IDS_SECRET_LEN] = 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: keygen -n COUNT [-v 1|2] -o KEYS.json [-S SECRETS.txt] [-s COUNT] "
               "[--seed N]\n"
               "  -S: also write -s secrets (default 4096), spread over the keys, one a line\n");
}

int main(int argc, char **argv)
{
    uint64_t n = 0, n_secrets = 4096, seed = 1;
    int version = 2;
    const char *out = NULL, *secrets_out = NULL;
    static const struct option longopts[] = {{"seed", required_argument, NULL, 'x'}, {}};
    int ch;

    while ((ch = getopt_long(argc, argv, "n:v:o:S:s:h", longopts, NULL)) >= 0) {
        switch (ch) {
        case 'n': n = strtoull(optarg, NULL, 10); break;
        case 'v': version = atoi(optarg); break;
        case 'o': out = optarg; break;
        case 'S': secrets_out = optarg; break;
        case 's': n_secrets = strtoull(optarg, NULL, 10); break;
        case 'x': seed = strtoull(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (n == 0 || !out || (version != 1 && version != 2) || n_secrets == 0) {
        usage(stderr);
        return 2;
    }
    if (n_secrets > n)
        n_secrets = n;

    char created[TIMEUTIL_RFC3339_LEN + 1];
    timeutil_format_rfc3339(CREATED, created);

    FILE *f = fopen(out, "we");
    FILE *sf = secrets_out ? fopen(secrets_out, "we") : NULL;
    if (!f || (secrets_out && !sf)) {
        fprintf(stderr, "keygen: %s: %s\n", !f ? out : secrets_out, strerror(errno));
        return 1;
    }
    static char buf[1 << 20];
    setvbuf(f, buf, _IOFBF, sizeof(buf));

    fputs(version == 2 ? "{\"version\":2,\"keys\":[\n" : "{\"keys\":[\n", f);
    uint64_t stride = n / n_secrets;
    for (uint64_t i = 0; i < n; i++) {
        char id[IDS_KEY_ID_LEN + 1], sec[IDS_SECRET_LEN + 1];
        make_key(i, seed, id, sec);
        if (sf && i % stride == 0 && i / stride < n_secrets)
            fprintf(sf, "%s\n", sec);
        if (version == 2) {
            uint8_t d[SECRET_DIGEST_LEN];
            char hex[SECRET_HEX_LEN + 1];
            secret_digest(sec, strlen(sec), d);
            secret_hex(d, hex);
            fprintf(f,
                    "{\"id\":\"%s\",\"name\":\"bench-%" PRIu64 "\",\"created_at\":\"%s\","
                    "\"metadata\":{\"team\":\"bench\"},\"scopes\":[\"bench.read\"],"
                    "\"expires_at\":null,\"disabled\":false,\"rate_limit\":null,"
                    "\"secrets\":[{\"sha256\":\"%s\",\"created_at\":\"%s\",\"expires_at\":null}]}"
                    "%s\n",
                    id, i, created, hex, created, i + 1 < n ? "," : "");
        } else {
            /* The Python service's shape: microseconds, no zone. */
            fprintf(f,
                    "{\"id\":\"%s\",\"secret\":\"%s\",\"name\":\"bench-%" PRIu64 "\","
                    "\"created_at\":\"%.19s.000000\",\"metadata\":{\"team\":\"bench\"}}%s\n",
                    id, sec, i, created, i + 1 < n ? "," : "");
        }
        secret_wipe(sec, sizeof(sec));
    }
    fputs("]}\n", f);
    if (fclose(f) != 0 || (sf && fclose(sf) != 0)) {
        fprintf(stderr, "keygen: write: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}
