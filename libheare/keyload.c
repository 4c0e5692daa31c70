/* keyload: a keystore from a keys.json (version 2, or version 1 converted on the way)
 * read as a stream of yajl events. Every event goes through one function, step(), that
 * knows where in the document it is. */
#include <errno.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <yajl/yajl_parse.h>

#include "ascii.h"
#include "ids.h"
#include "keydoc.h"
#include "keyload.h"
#include "macro.h"
#include "secret.h"
#include "timeutil.h"

#define NEVER INT64_MAX
/* Deeper metadata than this is left to jansson (which goes to 2048). */
#define META_DEPTH_MAX 64
/* jansson refuses a document nested deeper than 2048; skipped values deeper than this are
 * left to it, with room for the levels above them. */
#define SKIP_DEPTH_MAX 1024
/* An object in metadata with more members than this is left to jansson too: duplicate
 * names are looked for by a linear search. */
#define META_MEMBERS_MAX 64
/* The converted output is handed to the write callback in pieces of about this size. */
#define OUT_FLUSH (64 * 1024)

typedef enum ev_type {
    EV_NULL,
    EV_BOOL,
    EV_INT,
    EV_REAL,
    EV_STRING,
    EV_KEY, /* a member name */
    EV_MAP,
    EV_END_MAP,
    EV_ARRAY,
    EV_END_ARRAY,
} ev_type;

typedef struct ev {
    ev_type type;
    const char *s;
    size_t len;
    long long i;
    double d;
    bool b;
} ev;

/* Where the next event lands. */
typedef enum where {
    W_DOC,       /* before the document */
    W_TOP,       /* in the top object: a member name or its end */
    W_VERSION,   /* the values of members, named after them */
    W_KEYS,
    W_KEYS_ITEM, /* in "keys": a key or the end */
    W_KEY,       /* in a key: a member name or its end */
    W_ID,
    W_NAME,
    W_CREATED,
    W_EXPIRES,
    W_DISABLED,
    W_METADATA,
    W_META_IN, /* inside the metadata object, copying it */
    W_SCOPES,
    W_SCOPES_ITEM,
    W_RATE,
    W_RATE_IN,
    W_RATE_PER_SECOND,
    W_RATE_BURST,
    W_SECRETS,
    W_SECRETS_ITEM,
    W_SECRET,
    W_SECRET_SHA256,
    W_SECRET_CREATED,
    W_SECRET_EXPIRES,
    W_SECRET_PLAIN, /* a version-1 key's "secret" */
    W_SKIP, /* inside a value nobody reads */
    W_END,  /* after the document */
} where;

/* The members each object may have once; a second one of them gives up. */
enum {
    M_VERSION = 1 << 0,
    M_KEYS = 1 << 1,
};
enum {
    K_ID = 1 << 0,
    K_NAME = 1 << 1,
    K_CREATED = 1 << 2,
    K_METADATA = 1 << 3,
    K_SCOPES = 1 << 4,
    K_EXPIRES = 1 << 5,
    K_DISABLED = 1 << 6,
    K_RATE = 1 << 7,
    K_SECRETS = 1 << 8,
    K_SECRET = 1 << 9, /* version 1 */
    K_REQUIRED = K_ID | K_NAME | K_CREATED | K_METADATA | K_SCOPES | K_DISABLED | K_SECRETS,
    K_V1_REQUIRED = K_ID | K_NAME | K_CREATED | K_SECRET,
};
enum {
    S_SHA256 = 1 << 0,
    S_CREATED = 1 << 1,
    S_EXPIRES = 1 << 2,
    R_PER_SECOND = 1 << 3,
    R_BURST = 1 << 4,
};

typedef struct meta_frame {
    bool object, first;
    size_t names; /* offset in meta_names of this object's member names */
    unsigned n_names;
} meta_frame;

struct keyload {
    yajl_handle yajl;
    keyload_options opts;
    keystore *ks; /* NULL with convert_only */
    int error; /* why a callback stopped the parse */
    where at;
    bool v2, v1;
    bool top_other; /* a top-level member other than "version" came before "keys" */
    unsigned top_seen, key_seen, sub_seen;
    /* W_SKIP */
    unsigned skip_depth;
    where skip_return;
    /* W_META_IN */
    meta_frame meta[META_DEPTH_MAX];
    unsigned meta_depth;
    keystore_text meta_names; /* per name: its length (size_t), then its bytes */
    /* The key being read, and its secret being read. */
    keystore_entry e;
    uint8_t digest[SECRET_DIGEST_LEN];
    int64_t secret_expires;
    keystore_text tmp; /* a NUL-terminated copy for the parsers that want one; never a secret */
    size_t n_keys;
    keystore_text out; /* converted output not written yet (digests only, no plaintext) */
    /* A backslash escape cut by the end of a chunk: how far into "\ud8" it got. */
    unsigned escape;
};

static int give_up(keyload *l)
{
    if (!l->error)
        l->error = -EBADMSG;
    return 0;
}

static int oom(keyload *l)
{
    l->error = -ENOMEM;
    return 0;
}

static bool is(const ev *e, const char *name)
{
    return e->len == strlen(name) && memcmp(e->s, name, e->len) == 0;
}

/* jansson refuses a NUL in a string and bytes that are not UTF-8; yajl lets a NUL (\u0000)
 * through and checks UTF-8 more loosely. So strings are checked again here, the way
 * jansson checks them, without a copy (a string may be a version-1 secret). */
static bool string_ok(const char *s, size_t len)
{
    /* The usual string is all printable ASCII: eight bytes at a time. */
    size_t i = ascii_plain_span(s, len);

    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : utf8_sequence_len((const unsigned char *)s + i, len - i);
        if (n == 0 || c == 0)
            return false;
        i += n;
    }
    return true;
}

/* Replaces t's text with s, NUL-terminated (the NUL is not counted). */
static int text_set(keystore_text *t, const char *s, size_t len)
{
    t->len = 0;
    if (keystore_text_put(t, s, len) < 0 || keystore_text_put(t, "", 1) < 0)
        return -ENOMEM;
    t->len--;
    return 0;
}

/* Parses an RFC 3339 string event (lenient: as timeutil_parse_rfc3339() takes it). Returns
 * 0, -EINVAL or -ENOMEM. */
static int parse_time(keyload *l, const ev *e, bool lenient, int64_t *ret)
{
    if (text_set(&l->tmp, e->s, e->len) < 0)
        return -ENOMEM;
    return timeutil_parse_rfc3339(l->tmp.s, lenient, ret);
}

static int time_member(keyload *l, const ev *e, keystore_text *text, int64_t *ret, where next)
{
    int64_t t;
    int r;

    if (e->type != EV_STRING)
        return give_up(l);
    r = parse_time(l, e, false, &t);
    if (r == -ENOMEM)
        return oom(l);
    if (r < 0)
        return give_up(l);
    if (text && text_set(text, e->s, e->len) < 0)
        return oom(l);
    if (ret)
        *ret = t;
    l->at = next;
    return 1;
}

/* A version-1 key's "created_at": read leniently (Python's isoformat() of a naive time has
 * no zone) and written back as version 2 has it, as keydoc_parse() converts it. */
static int created_v1(keyload *l, const ev *e)
{
    char created[TIMEUTIL_RFC3339_LEN + 1];
    int64_t t;
    int r;

    if (e->type != EV_STRING)
        return give_up(l);
    r = parse_time(l, e, true, &t);
    if (r == -ENOMEM)
        return oom(l);
    if (r < 0 || timeutil_format_rfc3339(t, created) < 0)
        return give_up(l);
    if (text_set(&l->e.created_at, created, strlen(created)) < 0)
        return oom(l);
    l->at = W_KEY;
    return 1;
}

/* Enters a member of an object: the value goes to at, unless the member was seen already
 * (give up: jansson keeps the last one, we would keep the first). */
static int member(keyload *l, unsigned *seen, unsigned bit, where at)
{
    if (*seen & bit)
        return give_up(l);
    *seen |= bit;
    l->at = at;
    return 1;
}

static int skip_value(keyload *l, where back)
{
    l->at = W_SKIP;
    l->skip_depth = 0;
    l->skip_return = back;
    return 1;
}

static int step_skip(keyload *l, const ev *e)
{
    switch (e->type) {
    case EV_MAP:
    case EV_ARRAY:
        if (++l->skip_depth > SKIP_DEPTH_MAX)
            return give_up(l);
        return 1;
    case EV_END_MAP:
    case EV_END_ARRAY:
        l->skip_depth--;
        break;
    case EV_KEY:
        return 1;
    default:
        break;
    }
    if (l->skip_depth == 0)
        l->at = l->skip_return;
    return 1;
}

static int meta_put(keyload *l, const char *s, size_t n)
{
    return keystore_text_put(&l->e.metadata, s, n) < 0 ? oom(l) : 1;
}

/* A name already in the innermost metadata object? Adds it if not. */
static int meta_name(keyload *l, const ev *e)
{
    meta_frame *f = &l->meta[l->meta_depth - 1];
    /* Not meta_names.s + names before the first name: that is NULL + 0, undefined in C. */
    const char *p = f->n_names ? l->meta_names.s + f->names : NULL;

    for (unsigned i = 0; i < f->n_names; i++) {
        size_t len;
        memcpy(&len, p, sizeof(len));
        if (len == e->len && memcmp(p + sizeof(len), e->s, len) == 0)
            return give_up(l);
        p += sizeof(len) + len;
    }
    if (++f->n_names > META_MEMBERS_MAX)
        return give_up(l);
    if (keystore_text_put(&l->meta_names, (const char *)&e->len, sizeof(e->len)) < 0 ||
        keystore_text_put(&l->meta_names, e->s, e->len) < 0)
        return oom(l);
    return 1;
}

/* Copies the metadata value as compact JSON, the way keystore_text_put_value() writes it. */
static int step_meta(keyload *l, const ev *e)
{
    meta_frame *f = l->meta_depth ? &l->meta[l->meta_depth - 1] : NULL;
    char num[32];

    if (e->type == EV_KEY) {
        if ((!f->first && !meta_put(l, ",", 1)) || !meta_name(l, e))
            return 0;
        f->first = false;
        if (keystore_text_put_string(&l->e.metadata, e->s, e->len) < 0)
            return oom(l);
        return meta_put(l, ":", 1);
    }
    if (e->type == EV_END_MAP || e->type == EV_END_ARRAY) {
        if (!meta_put(l, e->type == EV_END_MAP ? "}" : "]", 1))
            return 0;
        if (f->object)
            l->meta_names.len = f->names;
        if (--l->meta_depth == 0)
            l->at = W_KEY;
        return 1;
    }
    /* A value: in an array, after a comma unless it is the first. */
    if (f && !f->object) {
        if (!f->first && !meta_put(l, ",", 1))
            return 0;
        f->first = false;
    }
    switch (e->type) {
    case EV_MAP:
    case EV_ARRAY:
        if (l->meta_depth == META_DEPTH_MAX)
            return give_up(l);
        l->meta[l->meta_depth++] = (meta_frame){
            .object = e->type == EV_MAP,
            .first = true,
            .names = l->meta_names.len,
        };
        return meta_put(l, e->type == EV_MAP ? "{" : "[", 1);
    case EV_NULL:
        return meta_put(l, "null", 4);
    case EV_BOOL:
        return e->b ? meta_put(l, "true", 4) : meta_put(l, "false", 5);
    case EV_INT: {
        int n = snprintf(num, sizeof(num), "%lld", e->i);
        return meta_put(l, num, (size_t)n);
    }
    case EV_REAL: {
        /* Through jansson, so a real reads back as it does from the tree. */
        _cleanup_(json_decrefp) json_t *v = json_real(e->d);
        if (!v || keystore_text_put_value(&l->e.metadata, v) < 0)
            return oom(l);
        return 1;
    }
    case EV_STRING:
        return keystore_text_put_string(&l->e.metadata, e->s, e->len) < 0 ? oom(l) : 1;
    default:
        return give_up(l);
    }
}

/* Hands the converted output over to the write callback. */
static int out_flush(keyload *l)
{
    int r;

    if (l->out.len == 0)
        return 1;
    r = l->opts.write(l->opts.userdata, l->out.s, l->out.len);
    l->out.len = 0;
    if (r < 0) {
        l->error = r;
        return 0;
    }
    return 1;
}

static int out_put(keyload *l, const char *s)
{
    return keystore_text_put(&l->out, s, strlen(s)) < 0 ? oom(l) : 1;
}

static int out_string(keyload *l, const keystore_text *t)
{
    return keystore_text_put_string(&l->out, t->s, t->len) < 0 ? oom(l) : 1;
}

static bool converting(const keyload *l)
{
    return l->v1 && l->opts.write;
}

/* Writes the version-2 form of the version-1 key just read: every member a version-2 key
 * has, its one secret created with the key and never expiring. */
static int out_key(keyload *l)
{
    const keystore_entry *k = &l->e;
    char hex[SECRET_HEX_LEN + 1];

    secret_hex(l->digest, hex);
    if (!out_put(l, l->n_keys > 0 ? ",\n{\"id\":" : "{\"id\":") || !out_string(l, &k->id) ||
        !out_put(l, ",\"name\":") || !out_string(l, &k->name) ||
        !out_put(l, ",\"created_at\":") || !out_string(l, &k->created_at) ||
        !out_put(l, ",\"metadata\":"))
        return 0;
    if (keystore_text_put(&l->out, k->metadata.s, k->metadata.len) < 0)
        return oom(l);
    if (!out_put(l, ",\"scopes\":[],\"expires_at\":null,\"disabled\":false,"
                    "\"rate_limit\":null,\"secrets\":[{\"sha256\":\"") ||
        !out_put(l, hex) || !out_put(l, "\",\"created_at\":") || !out_string(l, &k->created_at) ||
        !out_put(l, ",\"expires_at\":null}]}"))
        return 0;
    return l->out.len >= OUT_FLUSH ? out_flush(l) : 1;
}

static int end_key(keyload *l)
{
    keystore_entry *k = &l->e;
    int r;

    if (l->v1) {
        if ((l->key_seen & K_V1_REQUIRED) != K_V1_REQUIRED)
            return give_up(l);
        /* Absent, like null, is an empty object. */
        if (!(l->key_seen & K_METADATA) && text_set(&k->metadata, "{}", 2) < 0)
            return oom(l);
        if (keystore_entry_add_secret(k, l->digest, NEVER) < 0)
            return oom(l);
        if (converting(l) && !out_key(l))
            return 0;
    } else if ((l->key_seen & K_REQUIRED) != K_REQUIRED || k->n_secrets == 0)
        return give_up(l);
    if (l->ks) {
        r = keystore_add(l->ks, k, NULL);
        if (r == -ENOMEM)
            return oom(l);
        if (r < 0)
            return give_up(l);
    }
    l->n_keys++;
    l->at = W_KEYS_ITEM;
    return 1;
}

/* The members a key may have, each once. */
typedef struct key_member_entry {
    const char *name;
    size_t len;
    unsigned bit;
    where at;
} key_member_entry;
#define MEMBER(name, bit, at) {name, sizeof(name) - 1, bit, at}

static const key_member_entry v2_members[] = {
    MEMBER("id", K_ID, W_ID),
    MEMBER("name", K_NAME, W_NAME),
    MEMBER("created_at", K_CREATED, W_CREATED),
    MEMBER("metadata", K_METADATA, W_METADATA),
    MEMBER("scopes", K_SCOPES, W_SCOPES),
    MEMBER("expires_at", K_EXPIRES, W_EXPIRES),
    MEMBER("disabled", K_DISABLED, W_DISABLED),
    MEMBER("rate_limit", K_RATE, W_RATE),
    MEMBER("secrets", K_SECRETS, W_SECRETS),
    {},
};

/* A version-1 key has these members and no other: the tree path keeps any other member,
 * which the conversion here would lose. */
static const key_member_entry v1_members[] = {
    MEMBER("id", K_ID, W_ID),
    MEMBER("secret", K_SECRET, W_SECRET_PLAIN),
    MEMBER("name", K_NAME, W_NAME),
    MEMBER("created_at", K_CREATED, W_CREATED),
    MEMBER("metadata", K_METADATA, W_METADATA),
    {},
};

static int key_member(keyload *l, const ev *e)
{
    for (const key_member_entry *m = l->v1 ? v1_members : v2_members; m->name; m++)
        if (e->len == m->len && memcmp(e->s, m->name, m->len) == 0)
            return member(l, &l->key_seen, m->bit, m->at);
    /* An unknown member of a version-2 key is kept by a rewrite; nobody here reads it. */
    return l->v1 ? give_up(l) : skip_value(l, W_KEY);
}

static bool is_scope(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static int rate_value(keyload *l, const ev *e, uint32_t *ret)
{
    if (e->type != EV_INT || e->i < 1 || e->i > KEYDOC_RATE_MAX)
        return give_up(l);
    *ret = (uint32_t)e->i;
    l->at = W_RATE_IN;
    return 1;
}

static int step(keyload *l, const ev *e)
{
    keystore_entry *k = &l->e;

    if ((e->type == EV_STRING || e->type == EV_KEY) && !string_ok(e->s, e->len))
        return give_up(l);

    switch (l->at) {
    case W_SKIP:
        return step_skip(l, e);
    case W_META_IN:
        return step_meta(l, e);

    case W_DOC:
        if (e->type != EV_MAP)
            return give_up(l);
        l->at = W_TOP;
        return 1;
    case W_TOP:
        if (e->type == EV_END_MAP) {
            if (!(l->top_seen & M_KEYS) || (l->v2 && !(l->top_seen & M_VERSION)))
                return give_up(l);
            if (converting(l) && !out_put(l, "\n]}\n"))
                return 0;
            /* The rest is ours to read: yajl takes a string still open at the end for
             * whitespace after the document (jansson refuses it). */
            l->at = W_END;
            return 0;
        }
        if (is(e, "version")) {
            /* After the keys of a document without one: version 1 only if it says so,
             * which is for the tree path to find out. */
            if (l->top_seen & M_KEYS)
                return give_up(l);
            return member(l, &l->top_seen, M_VERSION, W_VERSION);
        }
        if (is(e, "keys")) {
            if (!l->v2) {
                /* No "version" before the keys, or 1: a version-1 document, which has
                 * nothing else the conversion could keep. */
                if (l->top_other)
                    return give_up(l);
                l->v1 = true;
            }
            return member(l, &l->top_seen, M_KEYS, W_KEYS);
        }
        if (l->v1)
            return give_up(l);
        if (!l->v2)
            l->top_other = true;
        return skip_value(l, W_TOP);
    case W_VERSION:
        if (e->type != EV_INT || (e->i != 1 && e->i != 2))
            return give_up(l);
        l->v2 = e->i == 2;
        l->v1 = e->i == 1;
        if (l->v1 && l->top_other)
            return give_up(l);
        l->at = W_TOP;
        return 1;
    case W_KEYS:
        if (e->type != EV_ARRAY)
            return give_up(l);
        if (converting(l) && !out_put(l, "{\"version\":2,\"keys\":[\n"))
            return 0;
        l->at = W_KEYS_ITEM;
        return 1;
    case W_KEYS_ITEM:
        if (e->type == EV_END_ARRAY) {
            l->at = W_TOP;
            return 1;
        }
        if (e->type != EV_MAP)
            return give_up(l);
        keystore_entry_reset(k);
        l->key_seen = 0;
        l->at = W_KEY;
        return 1;
    case W_KEY:
        if (e->type == EV_END_MAP)
            return end_key(l);
        return key_member(l, e);

    case W_ID:
        if (e->type != EV_STRING)
            return give_up(l);
        if (text_set(&k->id, e->s, e->len) < 0)
            return oom(l);
        if (!ids_is_key_id(k->id.s))
            return give_up(l);
        l->at = W_KEY;
        return 1;
    case W_NAME:
        if (e->type != EV_STRING || e->len == 0 || e->len > KEYDOC_NAME_MAX)
            return give_up(l);
        if (text_set(&k->name, e->s, e->len) < 0)
            return oom(l);
        l->at = W_KEY;
        return 1;
    case W_CREATED:
        if (l->v1)
            return created_v1(l, e);
        return time_member(l, e, &k->created_at, NULL, W_KEY);
    case W_EXPIRES:
        if (e->type == EV_NULL) {
            k->expires_at.len = 0;
            k->expires_t = NEVER;
            l->at = W_KEY;
            return 1;
        }
        return time_member(l, e, &k->expires_at, &k->expires_t, W_KEY);
    case W_DISABLED:
        if (e->type != EV_BOOL)
            return give_up(l);
        k->disabled = e->b;
        l->at = W_KEY;
        return 1;
    case W_METADATA:
        if (l->v1 && e->type == EV_NULL) {
            /* The Python service writes null for a key created without metadata. */
            if (text_set(&k->metadata, "{}", 2) < 0)
                return oom(l);
            l->at = W_KEY;
            return 1;
        }
        if (e->type != EV_MAP)
            return give_up(l);
        k->metadata.len = 0;
        l->at = W_META_IN;
        return step_meta(l, e);

    case W_SCOPES:
        if (e->type != EV_ARRAY)
            return give_up(l);
        l->at = W_SCOPES_ITEM;
        return 1;
    case W_SCOPES_ITEM:
        if (e->type == EV_END_ARRAY) {
            l->at = W_KEY;
            return 1;
        }
        if (e->type != EV_STRING || !is_scope(e->s, e->len))
            return give_up(l);
        if (keystore_text_put(&k->scopes, e->s, e->len) < 0 ||
            keystore_text_put(&k->scopes, "", 1) < 0)
            return oom(l);
        k->n_scopes++;
        return 1;

    case W_RATE:
        k->per_second = k->burst = 0;
        if (e->type == EV_NULL) {
            l->at = W_KEY;
            return 1;
        }
        if (e->type != EV_MAP)
            return give_up(l);
        l->sub_seen = 0;
        l->at = W_RATE_IN;
        return 1;
    case W_RATE_IN:
        if (e->type == EV_END_MAP) {
            if ((l->sub_seen & (R_PER_SECOND | R_BURST)) != (R_PER_SECOND | R_BURST))
                return give_up(l);
            l->at = W_KEY;
            return 1;
        }
        if (is(e, "per_second"))
            return member(l, &l->sub_seen, R_PER_SECOND, W_RATE_PER_SECOND);
        if (is(e, "burst"))
            return member(l, &l->sub_seen, R_BURST, W_RATE_BURST);
        return skip_value(l, W_RATE_IN);
    case W_RATE_PER_SECOND:
        return rate_value(l, e, &k->per_second);
    case W_RATE_BURST:
        return rate_value(l, e, &k->burst);

    case W_SECRETS:
        if (e->type != EV_ARRAY)
            return give_up(l);
        l->at = W_SECRETS_ITEM;
        return 1;
    case W_SECRETS_ITEM:
        if (e->type == EV_END_ARRAY) {
            l->at = W_KEY;
            return 1;
        }
        if (e->type != EV_MAP)
            return give_up(l);
        l->sub_seen = 0;
        l->secret_expires = NEVER;
        l->at = W_SECRET;
        return 1;
    case W_SECRET:
        if (e->type == EV_END_MAP) {
            if ((l->sub_seen & (S_SHA256 | S_CREATED)) != (S_SHA256 | S_CREATED))
                return give_up(l);
            if (keystore_entry_add_secret(k, l->digest, l->secret_expires) < 0)
                return oom(l);
            l->at = W_SECRETS_ITEM;
            return 1;
        }
        if (is(e, "sha256"))
            return member(l, &l->sub_seen, S_SHA256, W_SECRET_SHA256);
        if (is(e, "created_at"))
            return member(l, &l->sub_seen, S_CREATED, W_SECRET_CREATED);
        if (is(e, "expires_at"))
            return member(l, &l->sub_seen, S_EXPIRES, W_SECRET_EXPIRES);
        return skip_value(l, W_SECRET);
    case W_SECRET_SHA256: {
        char hex[SECRET_HEX_LEN + 1];
        if (e->type != EV_STRING || e->len != SECRET_HEX_LEN)
            return give_up(l);
        memcpy(hex, e->s, SECRET_HEX_LEN);
        hex[SECRET_HEX_LEN] = 0;
        if (secret_unhex(hex, l->digest) < 0)
            return give_up(l);
        l->at = W_SECRET;
        return 1;
    }
    case W_SECRET_PLAIN:
        /* Hashed where yajl has it (the caller's chunk, or yajl's own buffer, wiped when
         * freed); only the digest is kept. string_ok() above copied nothing. */
        if (e->type != EV_STRING || e->len == 0)
            return give_up(l);
        secret_digest(e->s, e->len, l->digest);
        l->at = W_KEY;
        return 1;
    case W_SECRET_CREATED:
        return time_member(l, e, NULL, NULL, W_SECRET);
    case W_SECRET_EXPIRES:
        if (e->type == EV_NULL) {
            l->secret_expires = NEVER;
            l->at = W_SECRET;
            return 1;
        }
        return time_member(l, e, NULL, &l->secret_expires, W_SECRET);

    case W_END:
        break;
    }
    return give_up(l);
}

static int on_null(void *ctx)
{
    return step(ctx, &(ev){.type = EV_NULL});
}

static int on_boolean(void *ctx, int b)
{
    return step(ctx, &(ev){.type = EV_BOOL, .b = b != 0});
}

static int on_integer(void *ctx, long long i)
{
    return step(ctx, &(ev){.type = EV_INT, .i = i});
}

static int on_double(void *ctx, double d)
{
    return step(ctx, &(ev){.type = EV_REAL, .d = d});
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    return step(ctx, &(ev){.type = EV_STRING, .s = (const char *)s, .len = len});
}

static int on_map_key(void *ctx, const unsigned char *s, size_t len)
{
    return step(ctx, &(ev){.type = EV_KEY, .s = (const char *)s, .len = len});
}

static int on_start_map(void *ctx)
{
    return step(ctx, &(ev){.type = EV_MAP});
}

static int on_end_map(void *ctx)
{
    return step(ctx, &(ev){.type = EV_END_MAP});
}

static int on_start_array(void *ctx)
{
    return step(ctx, &(ev){.type = EV_ARRAY});
}

static int on_end_array(void *ctx)
{
    return step(ctx, &(ev){.type = EV_END_ARRAY});
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_integer = on_integer,
    .yajl_double = on_double,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end_map,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end_array,
};

/* yajl's allocator: every block remembers its size and is wiped before it is freed, or
 * left behind by a realloc. yajl copies into its own blocks a token cut by the end of a
 * chunk and every string with an escape, so a version-1 secret may sit in them. */
#define BLOCK_HEADER alignof(max_align_t)

static void *wiping_malloc(void *ctx, size_t n)
{
    char *b;

    if (n > SIZE_MAX - BLOCK_HEADER)
        return NULL;
    b = malloc(BLOCK_HEADER + n);
    if (!b)
        return NULL;
    memcpy(b, &n, sizeof(n));
    return b + BLOCK_HEADER;
}

static size_t block_size(const void *p)
{
    size_t n;
    memcpy(&n, (const char *)p - BLOCK_HEADER, sizeof(n));
    return n;
}

static void wiping_free(void *ctx, void *p)
{
    const keyload *l = ctx;
    size_t n;

    if (!p)
        return;
    n = block_size(p);
    if (l->opts.test_release)
        l->opts.test_release(p, n, false);
    secret_wipe(p, n);
    if (l->opts.test_release)
        l->opts.test_release(p, n, true);
    free((char *)p - BLOCK_HEADER);
}

static void *wiping_realloc(void *ctx, void *p, size_t n)
{
    void *q;
    size_t old;

    if (!p)
        return wiping_malloc(ctx, n);
    q = wiping_malloc(ctx, n);
    if (!q)
        return NULL;
    old = block_size(p);
    memcpy(q, p, old < n ? old : n);
    wiping_free(ctx, p);
    return q;
}

int keyload_new_with(uint64_t generation, const keyload_options *opts, keyload **ret)
{
    keyload *l = calloc(1, sizeof(*l));

    if (!l)
        return -ENOMEM;
    if (opts)
        l->opts = *opts;
    yajl_alloc_funcs afs = {
        .malloc = wiping_malloc,
        .realloc = wiping_realloc,
        .free = wiping_free,
        .ctx = l,
    };
    if (!l->opts.convert_only && !(l->ks = keystore_new_empty(generation))) {
        keyload_free(l);
        return -ENOMEM;
    }
    /* yajl copies the functions; ctx stays l, which outlives the handle. */
    l->yajl = yajl_alloc(&callbacks, &afs, l);
    if (!l->yajl) {
        keyload_free(l);
        return -ENOMEM;
    }
    *ret = l;
    return 0;
}

int keyload_new(uint64_t generation, keyload **ret)
{
    return keyload_new_with(generation, NULL, ret);
}

keyload *keyload_free(keyload *l)
{
    if (!l)
        return NULL;
    if (l->yajl)
        yajl_free(l->yajl);
    keystore_free(l->ks);
    keystore_entry_done(&l->e);
    free(l->meta_names.s);
    free(l->tmp.s);
    free(l->out.s);
    secret_wipe(l->digest, sizeof(l->digest));
    free(l);
    return NULL;
}

/* True if buf has an escaped UTF-16 surrogate ("\ud800" to "\udfff"). yajl turns a lone
 * one into '?', where jansson refuses the document; pairs are rare enough in a keys file
 * that any of them is left to jansson. Backslashes only occur in strings, so a scan of
 * the raw bytes is exact; l->escape carries an escape cut by the end of a chunk. */
static bool has_surrogate_escape(keyload *l, const char *buf, size_t len)
{
    size_t i = 0;

    while (i < len) {
        if (l->escape == 0) {
            const char *b = memchr(buf + i, '\\', len - i);
            if (!b)
                return false;
            i = (size_t)(b - buf) + 1;
            l->escape = 1;
            continue;
        }
        char c = buf[i++];
        switch (l->escape) {
        case 1: /* after '\': any character ends a two-character escape, but 'u' */
            l->escape = c == 'u' ? 2 : 0;
            break;
        case 2:
            l->escape = c == 'd' || c == 'D' ? 3 : 0;
            break;
        default:
            if ((c >= '8' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
                return true;
            l->escape = 0;
            break;
        }
    }
    return false;
}

/* yajl takes '\v' and '\f' for white space, RFC 8259 and jansson do not: a document with
 * either byte anywhere is left to the tree path, which refuses it (in a string neither may
 * stand unescaped, so the raw bytes are all there is to look at). Two memchr() passes over
 * a chunk the read just brought into cache cost about 1 % of a 1 M-key load. */
static bool has_odd_space(const char *buf, size_t len)
{
    return len > 0 && (memchr(buf, '\v', len) || memchr(buf, '\f', len));
}

/* After the document only JSON whitespace may follow, as jansson has it. */
static bool only_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

int keyload_feed(keyload *l, const char *buf, size_t len)
{
    yajl_status st;

    if (l->error)
        return l->error;
    if (l->at == W_END)
        return only_space(buf, len) ? 0 : (l->error = -EBADMSG);
    if (has_surrogate_escape(l, buf, len) || has_odd_space(buf, len))
        return l->error = -EBADMSG;
    st = yajl_parse(l->yajl, (const unsigned char *)buf, len);
    if (st == yajl_status_client_canceled && !l->error && l->at == W_END) {
        /* The end of the top object stopped the parse just after its '}'. */
        size_t used = yajl_get_bytes_consumed(l->yajl);
        if (used > len || !only_space(buf + used, len - used))
            return l->error = -EBADMSG;
        return 0;
    }
    if (st != yajl_status_ok)
        return give_up(l), l->error;
    return 0;
}

bool keyload_is_v2(const keyload *l)
{
    return l->v2 && !l->error;
}

bool keyload_is_v1(const keyload *l)
{
    return l->v1 && !l->error;
}

int keyload_finish(keyload *l, keystore **ret)
{
    int r;

    if (l->error)
        return l->error;
    /* The end of the document is seen while it is fed ('}' is never cut by a chunk). */
    if (l->at != W_END)
        return give_up(l), l->error;
    if (converting(l) && !out_flush(l))
        return l->error;
    if (!l->ks)
        return 0; /* convert_only */
    r = keystore_seal(l->ks, NULL);
    if (r < 0)
        return l->error = r == -ENOMEM ? r : -EBADMSG;
    *ret = TAKE_PTR(l->ks);
    return 0;
}
