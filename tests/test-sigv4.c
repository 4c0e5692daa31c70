/* test-sigv4: the signer against AWS's published example values.
 *
 * Sources:
 * - S3 API reference, "Signature Calculations for the Authorization Header: Transferring
 *   Payload in a Single Chunk (AWS Signature Version 4)", section "Examples: Signature
 *   Calculations", https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
 *   (GET Object, PUT Object, GET Bucket (List Objects)): access key AKIAIOSFODNN7EXAMPLE,
 *   secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, bucket examplebucket, us-east-1,
 *   20130524T000000Z. The canonical request, the string to sign and the signature are all
 *   printed on that page.
 * - The aws-sig-v4-test-suite case "get-vanilla" (AWS General Reference, "Signature Version
 *   4 test suite"): AKIDEXAMPLE, wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, service
 *   "service", us-east-1, 20150830T123600Z. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "macro.h"
#include "sigv4.h"

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const sigv4_key s3_example_key = {
    .access_key_id = "AKIAIOSFODNN7EXAMPLE",
    .secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    .region = "us-east-1",
    .service = "s3",
};

static void test_get_object(void)
{
    /* Header names in mixed case and out of order: the signer lowercases and sorts. */
    const sigv4_header h[] = {
        {"X-Amz-Date", "20130524T000000Z"},
        {"Range", "bytes=0-9"},
        {"Host", "examplebucket.s3.amazonaws.com"},
        {"x-amz-content-sha256", EMPTY_SHA256},
    };
    sigv4_request req = {.method = "GET", .path = "/test.txt", .query = "", .headers = h,
                         .n_headers = ELEMENTSOF(h), .payload_hash = EMPTY_SHA256};
    char *canonical = NULL, *signed_headers = NULL, *sts = NULL, *auth = NULL;

    CHECK_INT(sigv4_canonical_request(&req, &canonical, &signed_headers), 0);
    CHECK_STR(canonical, "GET\n"
                         "/test.txt\n"
                         "\n"
                         "host:examplebucket.s3.amazonaws.com\n"
                         "range:bytes=0-9\n"
                         "x-amz-content-sha256:" EMPTY_SHA256 "\n"
                         "x-amz-date:20130524T000000Z\n"
                         "\n"
                         "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA256);
    CHECK_STR(signed_headers, "host;range;x-amz-content-sha256;x-amz-date");

    CHECK_INT(sigv4_string_to_sign("20130524T000000Z", "us-east-1", "s3", canonical, &sts), 0);
    CHECK_STR(sts, "AWS4-HMAC-SHA256\n"
                   "20130524T000000Z\n"
                   "20130524/us-east-1/s3/aws4_request\n"
                   "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");

    CHECK_INT(sigv4_authorization(&req, &s3_example_key, "20130524T000000Z", &auth), 0);
    CHECK_STR(auth, "AWS4-HMAC-SHA256 "
                    "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                    "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                    "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    free(canonical);
    free(signed_headers);
    free(sts);
    free(auth);
}

static void test_put_object(void)
{
    static const char body[] = "Welcome to Amazon S3.";
    char payload[SIGV4_HEX_LEN + 1];
    sigv4_sha256_hex(body, strlen(body), payload);
    CHECK_STR(payload, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");

    /* The object name "test$file.text" is sent encoded. */
    char *path = sigv4_uri_encode("/test$file.text", true);
    CHECK_STR(path, "/test%24file.text");

    const sigv4_header h[] = {
        {"Host", "examplebucket.s3.amazonaws.com"},
        {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
        {"x-amz-date", "20130524T000000Z"},
        {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
        {"x-amz-content-sha256", payload},
    };
    sigv4_request req = {.method = "PUT", .path = path, .headers = h,
                         .n_headers = ELEMENTSOF(h), .payload_hash = payload};
    char *canonical = NULL, *signed_headers = NULL, *sts = NULL, *auth = NULL;

    CHECK_INT(sigv4_canonical_request(&req, &canonical, &signed_headers), 0);
    CHECK_INT(sigv4_string_to_sign("20130524T000000Z", "us-east-1", "s3", canonical, &sts), 0);
    CHECK_STR(sts, "AWS4-HMAC-SHA256\n"
                   "20130524T000000Z\n"
                   "20130524/us-east-1/s3/aws4_request\n"
                   "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
    CHECK_INT(sigv4_authorization(&req, &s3_example_key, "20130524T000000Z", &auth), 0);
    CHECK(check_contains(auth, "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;"
                               "x-amz-storage-class, "));
    CHECK(check_contains(
        auth, "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"));
    free(path);
    free(canonical);
    free(signed_headers);
    free(sts);
    free(auth);
}

static void test_list_objects(void)
{
    const sigv4_header h[] = {
        {"host", "examplebucket.s3.amazonaws.com"},
        {"x-amz-content-sha256", EMPTY_SHA256},
        {"x-amz-date", "20130524T000000Z"},
    };
    sigv4_request req = {.method = "GET", .path = "/", .query = "max-keys=2&prefix=J",
                         .headers = h, .n_headers = ELEMENTSOF(h), .payload_hash = EMPTY_SHA256};
    char *auth = NULL;

    CHECK_INT(sigv4_authorization(&req, &s3_example_key, "20130524T000000Z", &auth), 0);
    CHECK(check_contains(
        auth, "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"));
    free(auth);
}

static void test_get_vanilla(void)
{
    const sigv4_header h[] = {
        {"Host", "example.amazonaws.com"},
        {"X-Amz-Date", "20150830T123600Z"},
    };
    sigv4_request req = {.method = "GET", .path = "/", .headers = h, .n_headers = ELEMENTSOF(h),
                         .payload_hash = EMPTY_SHA256};
    sigv4_key key = {.access_key_id = "AKIDEXAMPLE",
                     .secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                     .region = "us-east-1",
                     .service = "service"};
    char *auth = NULL;

    CHECK_INT(sigv4_authorization(&req, &key, "20150830T123600Z", &auth), 0);
    CHECK_STR(auth, "AWS4-HMAC-SHA256 "
                    "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                    "SignedHeaders=host;x-amz-date, "
                    "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    free(auth);

    /* A different secret gives a different signature (the check above is not vacuous). */
    key.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ";
    CHECK_INT(sigv4_authorization(&req, &key, "20150830T123600Z", &auth), 0);
    CHECK(!check_contains(auth, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"));
    free(auth);
}

static void test_canonical_values(void)
{
    /* Values are trimmed and inner runs of spaces become one. */
    const sigv4_header h[] = {
        {"Host", "  a.example  "},
        {"X-Amz-Meta-X", "a   b \t c"},
        {"x-amz-date", "20150830T123600Z"},
    };
    sigv4_request req = {.method = "GET", .path = "/", .headers = h, .n_headers = ELEMENTSOF(h),
                         .payload_hash = EMPTY_SHA256};
    char *canonical = NULL, *signed_headers = NULL;
    CHECK_INT(sigv4_canonical_request(&req, &canonical, &signed_headers), 0);
    CHECK(check_contains(canonical, "\nhost:a.example\nx-amz-date:20150830T123600Z\n"
                                    "x-amz-meta-x:a b c\n\n"));
    free(canonical);
    free(signed_headers);
}

static void test_bad_input(void)
{
    char *a = NULL, *b = NULL;
    const sigv4_header dup[] = {{"Host", "a"}, {"host", "b"}};
    sigv4_request req = {.method = "GET", .path = "/", .headers = dup, .n_headers = 2,
                         .payload_hash = EMPTY_SHA256};
    CHECK_INT(sigv4_canonical_request(&req, &a, &b), -EINVAL);

    const sigv4_header bad[] = {{"Ho st", "a"}};
    req.headers = bad;
    req.n_headers = 1;
    CHECK_INT(sigv4_canonical_request(&req, &a, &b), -EINVAL);

    const sigv4_header empty[] = {{"", "a"}};
    req.headers = empty;
    CHECK_INT(sigv4_canonical_request(&req, &a, &b), -EINVAL);

    const sigv4_header ok[] = {{"host", "a"}};
    req.headers = ok;
    CHECK_INT(sigv4_authorization(&req, &s3_example_key, "2013-05-24", &a), -EINVAL);
    CHECK_INT(sigv4_authorization(&req, &s3_example_key, "20130524T000000", &a), -EINVAL);
    sigv4_key nokey = s3_example_key;
    nokey.access_key_id = "";
    CHECK_INT(sigv4_authorization(&req, &nokey, "20130524T000000Z", &a), -EINVAL);
}

static void test_helpers(void)
{
    char d[SIGV4_DATE_LEN + 1];
    CHECK_INT(sigv4_amz_date(1369353600, d), 0); /* 2013-05-24T00:00:00Z */
    CHECK_STR(d, "20130524T000000Z");

    char *e = sigv4_uri_encode("a b/c~d_e.f-g+h=ü", false);
    CHECK_STR(e, "a%20b%2Fc~d_e.f-g%2Bh%3D%C3%BC");
    free(e);
    e = sigv4_uri_encode("dir/keys.json", true);
    CHECK_STR(e, "dir/keys.json");
    free(e);
}

int main(void)
{
    test_get_object();
    test_put_object();
    test_list_objects();
    test_get_vanilla();
    test_canonical_values();
    test_bad_input();
    test_helpers();
    return 0;
}
