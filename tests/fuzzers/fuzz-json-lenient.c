/* fuzz-json-lenient: the reader of valid JSON that jansson refuses, against jansson as the
 * project calls it (json_util_loadb). What jansson reads, json_lenient_load() must read to
 * the same tree with no marker; what it calls not JSON, jansson must refuse too; what it
 * reads that jansson refuses must hold something unfit (an escaped NUL, a lone surrogate,
 * a number beyond range), unless a repeated name overwrote it. */
#include <errno.h>

#include <jansson.h>

#include "fuzz.h"
#include "json-lenient.h"
#include "json-util.h"

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
    /* jansson as the project calls it: json_util_loadb() refuses the NUL byte that jansson
     * 2.14 drops after a number or a literal ("[1\0]"). */
    json_t *j = json_util_loadb(text, in.n, jflags, &err);
    if (j) {
        FUZZ_ASSERT(r == 0);
        FUZZ_ASSERT(marker == NULL);
        FUZZ_ASSERT(json_equal(j, tree));
        FUZZ_ASSERT(!json_lenient_holds_unfit(tree, NULL, false));
    } else if (r == 0 && (flags & JSON_LENIENT_REJECT_DUPLICATES)) {
        FUZZ_ASSERT(json_lenient_holds_unfit(tree, marker, false));
    } else if (r == 0) {
        /* The last of a repeated name counts: what made jansson refuse the text may have
         * been overwritten ({"a":1e999,"a":1}). Without repeats it is still there. */
        json_t *strict = NULL, *strict_marker = NULL;
        if (json_lenient_load(text, in.n, JSON_LENIENT_REJECT_DUPLICATES, &strict,
                              &strict_marker) == 0)
            FUZZ_ASSERT(json_lenient_holds_unfit(strict, strict_marker, false));
        json_decref(strict);
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
