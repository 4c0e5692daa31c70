/* s3-url: where an s3://BUCKET/OBJECT store is on the wire: the request URL, the Host
 * header and the canonical path SigV4 signs, for AWS or a custom endpoint (MinIO, Ceph
 * RGW, R2…), path-style or virtual-host addressing. */
#pragma once

#include <stdbool.h>

#include "store.h"

typedef struct s3_target {
    char *bucket;
    char *object;
    char *region;
    char *url;  /* "https://examplebucket.s3.us-east-1.amazonaws.com/keys.json" */
    char *host; /* the Host header, exactly as in url: "host" or "host:port" */
    char *path; /* the URI-encoded path of url, which is also SigV4's canonical URI */
    bool virtual_host;
} s3_target;

/* Parses url ("s3://BUCKET/OBJECT") with opts (region, endpoint, addressing). Returns 0, or
 * -EINVAL with *reterr for a malformed URL, bucket, object or endpoint, or a bucket that
 * cannot be a host name under virtual-host addressing; -ENOMEM. */
int s3_target_parse(const char *url, const store_options *opts, s3_target *ret, char **reterr);

void s3_target_done(s3_target *t);
