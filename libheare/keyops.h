/* keyops: the admin operations of io.heare.AuthAdmin applied to a document, shared by the
 * daemon (inside the store's read-modify-write) and the CLI's --store direct mode. Each
 * takes the method's Varlink parameters as a JSON object, validates all of them through a
 * field table before changing anything, and leaves doc unchanged on failure.
 *
 * Errors: -EINVAL with *reterr_param naming the offending parameter (a static string, or a
 * member name borrowed from params that stays valid while params lives; an
 * unknown parameter, a wrong type, an empty name, a bad timestamp); -ENOKEY for an unknown
 * id; -ENOMEM. */
#pragma once

#include <stdint.h>

#include <jansson.h>

/* CreateKey(name, metadata?, scopes?, expires_at?, rate_limit?). Generates the id and the
 * secret; *ret_reply = {"key": Key, "secret": "sec_…"} (caller owns; wipe the secret by
 * json_decref only after use). */
int keyops_create(json_t *doc, const json_t *params, int64_t now, json_t **ret_reply,
                  const char **reterr_param);

/* UpdateKey(id, name?, metadata?, scopes?, expires_at?, clear_expiry?, disabled?,
 * rate_limit?, clear_rate_limit?). *ret_reply = {"key": Key}. */
int keyops_update(json_t *doc, const json_t *params, int64_t now, json_t **ret_reply,
                  const char **reterr_param);

/* RotateKey(id, grace_seconds? = 86400, >= 0): adds a new secret, sets every older secret's
 * expires_at to now + grace (an earlier existing expiry is kept). *ret_reply = {"key": Key,
 * "secret": "sec_…"}. */
int keyops_rotate(json_t *doc, const json_t *params, int64_t now, json_t **ret_reply,
                  const char **reterr_param);

/* DeleteKey(id). *ret_reply = {}. */
int keyops_delete(json_t *doc, const json_t *params, int64_t now, json_t **ret_reply,
                  const char **reterr_param);

/* The io.heare.AuthAdmin.Key object for a document key object: id, name, created_at,
 * metadata, scopes, expires_at, disabled, rate_limit, secrets (count of secrets not yet
 * expired at now), verifications 0, last_used_at null (the daemon fills in its counters).
 * NULL on OOM. */
json_t *keyops_render_key(const json_t *key, int64_t now);
