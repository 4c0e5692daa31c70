/* heare-auth-json: the last reply of a client as a jansson tree, for the CLI (which prints
 * it as the daemon sent it) and the PAM module (which reads a metadata field); kept out of
 * libheare-auth.so, which needs no JSON library. */
#include "heare-auth-internal.h"

json_t *heare_auth__reply(const heare_auth *c)
{
    size_t len;
    const char *text = heare_auth__reply_text(c, &len);
    json_error_t error;

    if (!text)
        return NULL;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &error);
    json_t *params = json_incref(json_object_get(doc, "parameters"));
    json_decref(doc);
    if (!json_is_object(params)) {
        json_decref(params);
        return NULL;
    }
    return params;
}
