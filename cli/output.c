/* output: the CLI's printing of JSON documents, key tables and blocks, banners and health. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "output.h"
#include "timeutil.h"

#define SAVE_WARNING "⚠️  Save the SECRET securely - it will not be shown again!\n"

void output_json(FILE *f, const json_t *v)
{
    json_dumpf(v, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', f);
}

char *output_json_compact(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

/* Bytes from the daemon reach a terminal: C0 controls, DEL and the C1 controls (U+0080..
 * U+009F, which some terminals take as CSI) are shown as '?'. */
void output_text(FILE *f, const char *s)
{
    if (!s)
        return;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            fputc('?', f);
        } else if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            fputc('?', f);
            p++;
        } else {
            fputc(*p, f);
        }
    }
}

/* Columns are counted in code points, so names in any script line up (wide CJK glyphs
 * aside). Every string from jansson is valid UTF-8. */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xc0) != 0x80)
            w++;
    return w;
}

static const char *str_member(const json_t *o, const char *name)
{
    return json_string_value(json_object_get(o, name));
}

static void put_padding(FILE *f, size_t n)
{
    while (n-- > 0)
        fputc(' ', f);
}

const char *output_key_status(const json_t *key, int64_t now)
{
    if (json_is_true(json_object_get(key, "disabled")))
        return "disabled";
    const char *exp = str_member(key, "expires_at");
    int64_t t;
    if (exp && timeutil_parse_rfc3339(exp, true, &t) >= 0 && t <= now)
        return "expired";
    return "active";
}

enum { COL_ID, COL_NAME, COL_CREATED, COL_EXPIRES, COL_STATUS, NCOLS };

int output_key_table(FILE *f, const json_t *keys, int64_t now)
{
    static const char *const header[NCOLS] = {"ID", "NAME", "CREATED", "EXPIRES", "STATUS"};
    size_t n = json_array_size(keys);

    if (n == 0) {
        fputs("No API keys found.\n", f);
        return 0;
    }
    if (n >= SIZE_MAX / sizeof(const char *) / NCOLS - 1)
        return -ENOMEM;

    size_t rows = n + 1;
    _cleanup_free_ const char **cells = calloc(rows * NCOLS, sizeof(*cells));
    if (!cells)
        return -ENOMEM;

    memcpy(cells, header, sizeof(header));
    for (size_t i = 0; i < n; i++) {
        const json_t *k = json_array_get(keys, i);
        const char **row = cells + (i + 1) * NCOLS;
        const char *exp = str_member(k, "expires_at");

        row[COL_ID] = str_member(k, "id");
        row[COL_NAME] = str_member(k, "name");
        row[COL_CREATED] = str_member(k, "created_at");
        row[COL_EXPIRES] = exp ? exp : "never";
        row[COL_STATUS] = output_key_status(k, now);
        for (size_t c = 0; c < NCOLS; c++)
            if (!row[c])
                row[c] = "";
    }

    size_t width[NCOLS] = {0};
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < NCOLS; c++) {
            size_t w = text_width(cells[r * NCOLS + c]);
            if (w > width[c])
                width[c] = w;
        }

    for (size_t r = 0; r < rows; r++) {
        for (size_t c = 0; c < NCOLS; c++) {
            const char *cell = cells[r * NCOLS + c];
            output_text(f, cell);
            /* The last column is not padded: no trailing spaces. */
            if (c + 1 < NCOLS)
                put_padding(f, width[c] - text_width(cell) + 2);
        }
        fputc('\n', f);
    }
    return 0;
}

static void put_label(FILE *f, const char *label)
{
    fprintf(f, "%-15s", label);
}

static void put_line(FILE *f, const char *label, const char *value)
{
    put_label(f, label);
    output_text(f, value);
    fputc('\n', f);
}

static void put_int_line(FILE *f, const char *label, const json_t *v)
{
    put_label(f, label);
    fprintf(f, "%" JSON_INTEGER_FORMAT "\n", json_integer_value(v));
}

void output_key_block(FILE *f, const json_t *key, int64_t now)
{
    const char *exp = str_member(key, "expires_at");
    const char *last = str_member(key, "last_used_at");
    const json_t *scopes = json_object_get(key, "scopes");
    const json_t *metadata = json_object_get(key, "metadata");
    const json_t *rl = json_object_get(key, "rate_limit");

    put_line(f, "ID:", str_member(key, "id"));
    put_line(f, "Name:", str_member(key, "name"));
    put_line(f, "Created:", str_member(key, "created_at"));
    put_line(f, "Expires:", exp ? exp : "never");
    put_line(f, "Status:", output_key_status(key, now));

    put_label(f, "Scopes:");
    if (json_array_size(scopes) == 0)
        fputs("(none)", f);
    for (size_t i = 0; i < json_array_size(scopes); i++) {
        if (i > 0)
            fputs(", ", f);
        output_text(f, json_string_value(json_array_get(scopes, i)));
    }
    fputc('\n', f);

    put_label(f, "Metadata:");
    if (json_is_object(metadata)) {
        _cleanup_free_ char *m = output_json_compact(metadata);
        output_text(f, m ? m : "?");
    } else {
        fputs("{}", f);
    }
    fputc('\n', f);

    put_label(f, "Rate limit:");
    if (json_is_object(rl))
        fprintf(f, "%" JSON_INTEGER_FORMAT "/s, burst %" JSON_INTEGER_FORMAT "\n",
                json_integer_value(json_object_get(rl, "per_second")),
                json_integer_value(json_object_get(rl, "burst")));
    else
        fputs("none\n", f);

    put_int_line(f, "Secrets:", json_object_get(key, "secrets"));
    put_int_line(f, "Verifications:", json_object_get(key, "verifications"));
    put_line(f, "Last used:", last ? last : "never");
}

static void put_banner_head(FILE *f, const char *title, const json_t *key, const char *secret)
{
    fprintf(f, "%s\n", title);
    fputs("  ID:     ", f);
    output_text(f, str_member(key, "id"));
    fputs("\n  Secret: ", f);
    output_text(f, secret);
    fputc('\n', f);
}

void output_created(FILE *f, const json_t *key, const char *secret)
{
    put_banner_head(f, "Created API key:", key, secret);
    fputs("  Name:   ", f);
    output_text(f, str_member(key, "name"));
    fputs("\n  Created: ", f);
    output_text(f, str_member(key, "created_at"));
    fputs("\n\n" SAVE_WARNING, f);
}

void output_rotated(FILE *f, const json_t *key, const char *secret, const char *old_expiry)
{
    put_banner_head(f, "Rotated API key:", key, secret);
    if (old_expiry)
        fprintf(f, "  Old secrets: expire at %s\n", old_expiry);
    else
        fputs("  Old secrets: revoked now\n", f);
    fputs("\n" SAVE_WARNING, f);
}

static void put_health_line(FILE *f, const char *label, const json_t *v, const char *if_null)
{
    fprintf(f, "%-13s", label);
    if (json_is_string(v))
        output_text(f, json_string_value(v));
    else if (json_is_integer(v))
        fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else
        fputs(if_null, f);
    fputc('\n', f);
}

void output_health(FILE *f, const json_t *health)
{
    static const struct {
        const char *member, *label, *if_null;
    } lines[] = {
        {"status", "Status:", "?"},         {"keys_loaded", "Keys loaded:", "?"},
        {"generation", "Generation:", "?"}, {"loaded_at", "Loaded at:", "never"},
        {"store", "Store:", "?"},           {"last_error", "Last error:", "none"},
        {"uptime_seconds", "Uptime:", "?"}, {"version", "Version:", "?"},
    };

    for (size_t i = 0; i < ELEMENTSOF(lines); i++) {
        const json_t *v = json_object_get(health, lines[i].member);
        if (!v)
            continue;
        if (strcmp(lines[i].member, "uptime_seconds") == 0 && json_is_integer(v)) {
            fprintf(f, "%-13s%" JSON_INTEGER_FORMAT "s\n", lines[i].label, json_integer_value(v));
            continue;
        }
        put_health_line(f, lines[i].label, v, lines[i].if_null);
    }

    /* With --verbose: one sample a line, as Prometheus writes them. */
    const json_t *metrics = json_object_get(health, "metrics");
    size_t i;
    const json_t *m;
    if (json_array_size(metrics) > 0)
        fputs("Metrics:\n", f);
    json_array_foreach(metrics, i, m) {
        const char *label;
        const json_t *value;
        fprintf(f, "  %s", json_string_value(json_object_get(m, "name")) ?: "?");
        json_object_foreach((json_t *)json_object_get(m, "labels"), label, value)
            fprintf(f, "{%s=\"%s\"}", label, json_string_value(value) ?: "");
        fprintf(f, " %.17g\n", json_number_value(json_object_get(m, "value")));
    }
}
