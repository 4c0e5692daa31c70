/* s3-credentials: the AWS credentials chain of SPEC §4, first found wins:
 *   1. the environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
 *   2. $CREDENTIALS_DIRECTORY (systemd LoadCredential=): files aws-access-key-id,
 *      aws-secret-access-key (+ aws-session-token);
 *   3. the shared credentials file: $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials,
 *      profile $AWS_PROFILE or "default" (aws_access_key_id, aws_secret_access_key,
 *      aws_session_token).
 * The S3 store calls this before every request, so rotated files take effect on the next
 * request without a restart. */
#pragma once

typedef struct s3_credentials {
    char *access_key_id;
    char *secret_access_key; /* wiped by s3_credentials_done() */
    char *session_token;     /* NULL: none; wiped too */
    const char *source;      /* "environment", "$CREDENTIALS_DIRECTORY", "shared credentials
                              * file" (static, for messages) */
} s3_credentials;

/* Fills *ret. Returns 0; -ENOENT with *reterr when no source has credentials; -EINVAL with
 * *reterr for a half-set source (a key id without a secret) or a named profile that is
 * missing; other -errno for a file that cannot be read. Messages name the source, never a
 * value. */
int s3_credentials_load(s3_credentials *ret, char **reterr);

/* Wipes and frees what c holds; c itself is left zeroed. */
void s3_credentials_done(s3_credentials *c);

/* Reads the shared credentials file's INI text (NUL-terminated) for [profile] into c:
 * aws_access_key_id, aws_secret_access_key and aws_session_token, trimmed, the last of
 * each counting; '#' and ';' lines are comments. Returns 1 if the section exists, 0 if not,
 * -ENOMEM. Checks nothing else (s3_credentials_load does): c may be left half-set, to be
 * freed with s3_credentials_done(). */
int s3_credentials_parse_shared(const char *text, const char *profile, s3_credentials *c);
