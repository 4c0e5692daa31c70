/* store: where the key document lives (SPEC §4). One interface, two backends: a local file
 * (store-file.c) and one S3 object (store-s3.c). Both implement load-with-version-token and
 * conditional write; read-modify-write is built once, here, on those two. Version tokens
 * are opaque strings; "" means "the object does not exist". The library never logs:
 * failures come back as -errno plus a one-line *reterr (caller frees) naming the store. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

typedef struct store store;

/* What a store URL alone does not say; the file store needs none of it. Zeroed (or a NULL
 * pointer) means every default. The daemon and the CLI fill it from conf (SPEC §10). */
typedef struct store_options {
    const char *s3_region;     /* NULL: "us-east-1" */
    const char *s3_endpoint;   /* "http[s]://host[:port][/path]"; NULL: AWS, https */
    const char *s3_addressing; /* "virtual" | "path"; NULL: virtual for AWS, path for a
                                * custom endpoint */
    const char *s3_sse;        /* "AES256" | "aws:kms" | "none"; NULL: "AES256" */
    int connect_timeout_ms;    /* per connection; 0: 5000 */
    int timeout_ms;            /* per request, all included; 0: 20000 */
} store_options;

/* Opens a store from its URL: "file:///abs/path" (or a bare absolute path) or
 * "s3://BUCKET/OBJECT" (credentials per SPEC §4, see s3-credentials.h: none found is an
 * error here already). Nothing is read or created until the first load/write. */
int store_open_with(const char *url, const store_options *opts, store **ret, char **reterr);
/* The same with every option at its default. */
int store_open(const char *url, store **ret, char **reterr);

/* Frees s. NULL is fine. Returns NULL. */
store *store_free(store *s);
static inline void store_freep(store **s)
{
    store_free(*s);
}

/* The URL it was opened with (borrowed). */
const char *store_url(const store *s);

/* Receives a document as it is read. begin() is called before the first byte of every
 * attempt: an S3 GET that is retried starts over, and whatever data() got before is void.
 * data() gets the bytes in order, in chunks of any size. A callback returning < 0 aborts
 * the load, which returns that value (nothing else is touched: no *reterr, no version).
 * The callbacks run with the store busy: they must not call back into the same store. */
typedef struct store_sink {
    int (*begin)(void *userdata);
    int (*data)(void *userdata, const char *buf, size_t len);
    void *userdata;
} store_sink;

/* store_load(), streaming: the same return values and version semantics (1 = unchanged,
 * nothing sent to the sink). On 0, the sink got the whole document; *ret_exists (may be
 * NULL) is false (and data() was never called) if there is no document. No size limit:
 * the sink sets its own. The file backend reads through one fixed buffer, the S3 backend
 * hands over what libcurl receives. */
int store_load_stream(store *s, const char *if_not_version, const store_sink *sink,
                      bool *ret_exists, char **ret_version, char **reterr);

/* Loads the document. If if_not_version is non-NULL and the object is unchanged since that
 * version, returns 1 and sets nothing (the file backend decides by stat without reading
 * when it can; S3 by If-None-Match: a 304, nothing transferred; "" and still no object is
 * unchanged too). Otherwise returns 0 with *ret_buf (NUL-terminated) and *ret_len (caller
 * frees; NULL, 0 and version "" if the object does not exist) and *ret_version (caller
 * frees). A document over 1 GiB is -EFBIG. Built on store_load_stream(). */
int store_load(store *s, const char *if_not_version, char **ret_buf, size_t *ret_len,
               char **ret_version, char **reterr);

/* Writes buf[0..len) only if the current version equals expected_version ("" = must not
 * exist). Returns 0 with *ret_version (may be NULL) the new version, -ESTALE if the
 * version differs, other -errno on failure. */
int store_write(store *s, const char *expected_version, const char *buf, size_t len,
                char **ret_version, char **reterr);

/* Changes the document with fn and writes it back conditionally: load, keydoc_parse,
 * fn(doc, userdata), keydoc_validate, keydoc_dump, store_write; on -ESTALE it starts over
 * (at most 25 times, with jittered backoff, see store.c) and then returns -ESTALE. The file backend
 * holds its lock file for the whole cycle so local writers never conflict. fn may run more
 * than once and must start from the doc it is given; its error is returned as is (and
 * nothing is written). On success *ret_doc (may be NULL) owns the document as written and
 * *ret_version (may be NULL) its version. */
typedef int (*store_mutator_t)(json_t *doc, void *userdata);
int store_update(store *s, store_mutator_t fn, void *userdata, json_t **ret_doc,
                 char **ret_version, char **reterr);

/* Writes a file atomically, in chunks: the bytes go to "<path>.tmp" (created with the
 * given mode, exactly; truncated if left over from a crash) and only commit puts them at
 * path, so path always holds either the old file or the whole new one. Two writers of the
 * same path at once: the second gets -EBUSY. For the last-known-good cache. */
typedef struct store_file_writer store_file_writer;
/* Starts writing path atomically: a temporary file beside it with the given mode. Returns
 * 0 with *ret, or -errno with *reterr (-ENOENT: the directory does not exist). */
int store_file_writer_open(const char *path, unsigned mode, store_file_writer **ret, char **reterr);
/* Appends buf[0..len). Returns 0 or -errno with *reterr; w stays open (abort it). */
int store_file_writer_write(store_file_writer *w, const char *buf, size_t len, char **reterr);
/* fsync, rename over path, fsync the directory; frees w in every case (on failure the
 * temporary file is removed). Returns 0 or -errno with *reterr. */
int store_file_writer_commit(store_file_writer *w, char **reterr);
/* Removes the temporary file and frees w. NULL is fine. */
void store_file_writer_abort(store_file_writer *w);
static inline void store_file_writer_abortp(store_file_writer **w)
{
    store_file_writer_abort(*w);
}

/* Writes buf atomically to path with the given mode (tmp + fsync + rename + directory
 * fsync), creating nothing but the file: one store_file_writer. Returns 0 or -errno with
 * *reterr. */
int store_write_file_atomic(const char *path, const char *buf, size_t len, unsigned mode,
                            char **reterr);

/* Reads a whole regular file of at most max bytes. Returns 0 with *ret_buf (NUL-terminated,
 * caller frees) and *ret_len, -ENOENT if missing, -EFBIG if larger, other -errno. */
int store_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len);
