/* fuzz-json-lenient: the reader of valid JSON that jansson refuses, against jansson. What
 * jansson reads, json_lenient_load() must read to the same tree with no marker; what it
 * calls not JSON, jansson must refuse too; what it reads that jansson refuses must hold
 * something unfit (an escaped NUL, a lone surrogate, a number beyond range). */
#include <errno.h>

#include <jansson.h>

#include "fuzz.h"
#include "json-lenient.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    unsigned flags = fuzz_byte(&in) & 1 ? JSON_LENIENT_REJECT_DUPLICATES : 0;
    char *text = fuzz_copy(in.p, in.n);
    json_t *tree = NULL, *marker = NULL;
    json_error_t err;

    int r = json_lenient_load(text, in.n, flags, &tree, &marker);
    FUZZ_ASSERT(r == 0 || r == -EPROTO || r == -EEXIST || r == -E2BIG);
    FUZZ_ASSERT(in.n == 0 || memcmp(text, in.p, in.n) == 0);
    if (r < 0)
        FUZZ_ASSERT(!tree && !marker);
    if (r == -EEXIST)
        FUZZ_ASSERT(flags & JSON_LENIENT_REJECT_DUPLICATES);

    size_t jflags =
        JSON_DECODE_ANY | (flags & JSON_LENIENT_REJECT_DUPLICATES ? JSON_REJECT_DUPLICATES : 0);
    json_t *j = json_loadb(text, in.n, jflags, &err);
    if (j && memchr(text, '\0', in.n)) {
        /* jansson 2.14 takes a top-level number or literal followed by a NUL and white
         * space ("9\0", "true\0\n"), which is not JSON. Never an object or an array, so
         * no caller (they all want an object) reads anything from it. */
        FUZZ_ASSERT(!json_is_object(j) && !json_is_array(j));
        json_decref(j);
        j = NULL;
    }
    if (j) {
        FUZZ_ASSERT(r == 0);
        FUZZ_ASSERT(marker == NULL);
        FUZZ_ASSERT(json_equal(j, tree));
        FUZZ_ASSERT(!json_lenient_holds_unfit(tree, NULL, false));
    } else if (r == 0) {
        FUZZ_ASSERT(json_lenient_holds_unfit(tree, marker, false));
    }
    if (r == -EPROTO)
        FUZZ_ASSERT(!j);
    if (r == 0) {
        /* inner_only only ever looks at less. */
        FUZZ_ASSERT(!json_lenient_holds_unfit(tree, marker, true) ||
                    json_lenient_holds_unfit(tree, marker, false));
        /* The tree is a real one: jansson writes it out (strings with NULs included). */
        char *dumped = json_dumps(tree, JSON_ENCODE_ANY | JSON_COMPACT);
        FUZZ_ASSERT(dumped != NULL);
        free(dumped);
    }
    json_decref(j);
    json_decref(tree);
    free(text);
    return 0;
}
