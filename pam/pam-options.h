/* pam-options: the module arguments of pam_heare_auth.so, parsed and checked as a whole
 * before the module does anything. Kept apart from the PAM entry points so the unit test
 * can drive it without libpam. */
#pragma once

#include <stdbool.h>

#define PAM_OPTIONS_DEFAULT_SOCKET "/run/heare-auth/verify.sock"
#define PAM_OPTIONS_DEFAULT_TIMEOUT_MS 2000
#define PAM_OPTIONS_MAX_TIMEOUT_MS 60000
#define PAM_OPTIONS_DEFAULT_USER_FIELD "unix_user"

typedef enum user_match_mode {
    USER_MATCH_NONE,     /* any valid key will do, whoever PAM_USER is */
    USER_MATCH_NAME,     /* the key's name must equal PAM_USER */
    USER_MATCH_METADATA, /* the key's metadata[user_field] must be a string equal to PAM_USER */
} user_match_mode;

typedef enum authtok_mode {
    AUTHTOK_PROMPT,         /* always ask through the conversation */
    AUTHTOK_TRY_FIRST_PASS, /* the earlier module's PAM_AUTHTOK; ask if none or rejected */
    AUTHTOK_USE_FIRST_PASS, /* the earlier module's PAM_AUTHTOK only; never ask */
} authtok_mode;

/* Every string points into argv (borrowed) or at a static default. */
typedef struct pam_options {
    const char *socket;
    const char *scope; /* NULL: no scope asked */
    user_match_mode user_match;
    const char *user_field; /* for USER_MATCH_METADATA */
    int timeout_ms;
    authtok_mode authtok;
    bool debug;
} pam_options;

/* Parses argv[0..argc). Each option may be given more than once: the last one counts.
 * Returns 0 and fills *ret, or -EINVAL, leaving *ret unspecified and pointing *ret_bad at
 * the offending argument and *ret_reason at static words on what is wrong with it. */
int pam_options_parse(int argc, const char *const *argv, pam_options *ret, const char **ret_bad,
                      const char **ret_reason);
