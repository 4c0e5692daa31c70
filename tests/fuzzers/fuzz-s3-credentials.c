/* fuzz-s3-credentials: the shared credentials file's INI reader. The input up to its
 * first NUL is the profile's name (none: "default"), the rest the file. Every value it
 * takes is trimmed, and found only if its section was. */
#include <ctype.h>
#include <errno.h>

#include "fuzz.h"
#include "s3-credentials.h"

static void check_trimmed(const char *s)
{
    if (!s || !*s)
        return;
    FUZZ_ASSERT(!isspace((unsigned char)s[0]) && !isspace((unsigned char)s[strlen(s) - 1]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    const uint8_t *nul = size ? memchr(data, 0, size) : NULL;
    char *profile;
    if (nul) {
        profile = fuzz_strndup(data, (size_t)(nul - data));
        in.p = nul + 1;
        in.n = size - (size_t)(nul - data) - 1;
    } else
        profile = fuzz_strndup("default", 7);
    char *text = fuzz_strndup(in.p, in.n);
    s3_credentials c = {0};

    int r = s3_credentials_parse_shared(text, profile, &c);
    FUZZ_ASSERT(r == 0 || r == 1);
    if (r == 0)
        FUZZ_ASSERT(!c.access_key_id && !c.secret_access_key && !c.session_token);
    check_trimmed(c.access_key_id);
    check_trimmed(c.secret_access_key);
    check_trimmed(c.session_token);
    s3_credentials_done(&c);
    free(text);
    free(profile);
    return 0;
}
