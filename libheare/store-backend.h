/* store-backend: what a store backend implements; seen only by store.c and the backends. */
#pragma once

#include "macro.h"
#include "store.h"

typedef struct store_backend {
    const char *scheme; /* "file", "s3" */
    /* Opens from the URL; *ret_impl is the backend's state. opts is never NULL. */
    int (*open)(const char *url, const store_options *opts, void **ret_impl, char **reterr);
    void (*free)(void *impl);
    /* store_load_stream(): sink is never NULL; *ret_exists is always set on 0. */
    int (*load)(void *impl, const char *if_not_version, const store_sink *sink, bool *ret_exists,
                char **ret_version, char **reterr);
    /* Conditional write; store.c calls it with the lock held (if the backend has one). */
    int (*write)(void *impl, const char *expected_version, const char *buf, size_t len,
                 char **ret_version, char **reterr);
    /* Optional: held across a read-modify-write (file: flock on <path>.lock). Returns a
     * token for unlock, or -errno. */
    int (*lock)(void *impl, char **reterr);
    void (*unlock)(void *impl, int token);
} store_backend;

extern const store_backend store_backend_file;
extern const store_backend store_backend_s3;
