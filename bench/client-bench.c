/* client-bench: one Verify at a time through libheare-auth on one connection, for
 * bench/clients. It cycles through the secrets of a file (one a line), warms up, then
 * measures for a duration and prints the same key=value line as loadgen (latency of a
 * whole heare_auth_verify call, into loadgen's histogram).
 *
 *   client-bench -s SOCKET -k SECRETS -t SECONDS [-w WARMUP] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <heare-auth.h>

#include "hist.h"

#define KEYS_MAX 4096

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static hist h;

int main(int argc, char **argv)
{
    const char *sock = NULL, *keys_path = NULL;
    double seconds = 5, warmup = 0.5;
    static char *keys[KEYS_MAX];
    size_t n = 0;
    int opt;

    while ((opt = getopt(argc, argv, "s:k:t:w:")) != -1) {
        switch (opt) {
        case 's': sock = optarg; break;
        case 'k': keys_path = optarg; break;
        case 't': seconds = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        default: return 2;
        }
    }
    FILE *f = keys_path ? fopen(keys_path, "re") : NULL;
    if (!sock || !f) {
        fprintf(stderr, "usage: client-bench -s SOCKET -k SECRETS -t SECONDS [-w WARMUP]\n");
        return 2;
    }
    char line[600];
    while (n < KEYS_MAX && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        keys[n++] = strdup(line);
    }
    fclose(f);
    if (n == 0)
        return 2;

    heare_auth *c;
    heare_auth_result res;
    int r = heare_auth_open(&c, sock, 1000);
    if (r < 0) {
        fprintf(stderr, "client-bench: %s\n", heare_auth_strerror(r));
        return 1;
    }
    uint64_t start = now_ns(), measure = start + (uint64_t)(warmup * 1e9),
             end = measure + (uint64_t)(seconds * 1e9), t0 = start, calls = 0, invalid = 0;
    for (size_t i = 0; t0 < end; i = (i + 1) % n) {
        r = heare_auth_verify(c, keys[i], NULL, &res);
        uint64_t t1 = now_ns();
        if (r < 0) {
            fprintf(stderr, "client-bench: %s\n", heare_auth_strerror(r));
            return 1;
        }
        if (t0 >= measure) {
            hist_record(&h, t1 - t0);
            calls++;
            invalid += !res.valid;
        }
        t0 = t1;
    }
    heare_auth_close(c);
    printf("rps=%.0f requests=%llu seconds=%.3f p50_us=%.1f p99_us=%.1f invalid=%llu\n",
           (double)calls / seconds, (unsigned long long)calls, seconds,
           (double)hist_percentile(&h, 50) / 1000, (double)hist_percentile(&h, 99) / 1000,
           (unsigned long long)invalid);
    return 0;
}
