/* output: how heare-auth prints things for people and for scripts: JSON documents, the key
 * table, the key block, the create/rotate banners and the health block (SPEC §8, compat).
 * Strings that come from the daemon or the store are printed with control characters
 * replaced by '?', so a key name cannot drive the terminal. */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* Prints v as indented JSON and a newline. */
void output_json(FILE *f, const json_t *v);

/* v as compact JSON ({"a":"b"}); caller frees. NULL on OOM. */
char *output_json_compact(const json_t *v);

/* Prints s with control characters replaced by '?'. NULL prints nothing. */
void output_text(FILE *f, const char *s);

/* "disabled" if the key is disabled, else "expired" if expires_at <= now, else "active".
 * key is an io.heare.AuthAdmin.Key object. Static string. */
const char *output_key_status(const json_t *key, int64_t now);

/* The aligned table "ID  NAME  CREATED  EXPIRES  STATUS" of an array of Key objects, or
 * "No API keys found." for an empty one. Returns 0 or -ENOMEM. */
int output_key_table(FILE *f, const json_t *keys, int64_t now);

/* The labelled block of one Key (ID, Name, Created, …, Last used), as `show` prints it. */
void output_key_block(FILE *f, const json_t *key, int64_t now);

/* The "Created API key:" banner with the one-time secret. */
void output_created(FILE *f, const json_t *key, const char *secret);

/* The "Rotated API key:" banner; old_expiry NULL means the old secrets are revoked now. */
void output_rotated(FILE *f, const json_t *key, const char *secret, const char *old_expiry);

/* The GetHealth block; members the reply lacks (direct --store mode) are left out. */
void output_health(FILE *f, const json_t *health);
