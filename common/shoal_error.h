/*
 * shoal_error: the project's one error enum and a per-thread "last error" with a message.
 *
 * Every module owns a range of codes (common 1-999, s3 1000-1999, gossip 2000-2999, dht 3000-3999,
 * node 4000-4999, mount 5000-5999, sim 6000-6999). A function that fails returns -1 (or NULL),
 * after calling shoal_error_set() with the code and a message that carries the context (which
 * operation, which key, which peer). The caller reads shoal_error_code()/shoal_error_message()
 * or passes the failure up. Only the FUSE edge maps codes to errno, only main() to exit codes.
 * Messages never contain secrets.
 */
#ifndef SHOAL_ERROR_H
#define SHOAL_ERROR_H

#include <stdarg.h>

typedef enum shoal_err {
    SHOAL_OK = 0,

    /* common: 1-999 */
    SHOAL_ERR_NOMEM = 1,        /* allocation failed */
    SHOAL_ERR_INVAL,            /* invalid argument or value */
    SHOAL_ERR_IO,               /* system call failed; the message names it and strerror(errno) */
    SHOAL_ERR_RANGE,            /* value out of range / buffer too small */
    SHOAL_ERR_TIMEOUT,          /* an operation did not complete in time */
    SHOAL_ERR_NOSPACE,          /* no space left (disk or bounded queue) */
    SHOAL_ERR_NOT_FOUND,        /* named thing does not exist */
    SHOAL_ERR_CLOSED,           /* object shut down while the call was pending */
    SHOAL_ERR_UNSUPPORTED,      /* operation not supported */

    /* s3: 1000-1999 */
    SHOAL_ERR_S3 = 1000,        /* S3 answered with an error; message has op, bucket, key, status, code, request id */
    SHOAL_ERR_S3_NO_SUCH_KEY,   /* 404 NoSuchKey / NotFound */
    SHOAL_ERR_S3_NO_SUCH_BUCKET,
    SHOAL_ERR_S3_ACCESS_DENIED, /* 403 AccessDenied */
    SHOAL_ERR_S3_SIGNATURE,     /* 403 SignatureDoesNotMatch */
    SHOAL_ERR_S3_CHANGED,       /* 412 PreconditionFailed: the object changed (If-Match) */
    SHOAL_ERR_S3_RANGE,         /* 416 InvalidRange */
    SHOAL_ERR_S3_THROTTLED,     /* 503 SlowDown after all retries */
    SHOAL_ERR_S3_TRANSPORT,     /* connection reset, timeout, DNS, TLS after all retries */
    SHOAL_ERR_S3_TRUNCATED,     /* body shorter than Content-Length / the range asked */
    SHOAL_ERR_S3_XML,           /* a response document could not be parsed */
    SHOAL_ERR_S3_CREDENTIALS,   /* no usable credentials */

    /* gossip: 2000-2999 */
    SHOAL_ERR_GOSSIP = 2000,
    SHOAL_ERR_GOSSIP_DECODE,    /* malformed packet */
    SHOAL_ERR_GOSSIP_SEAL,      /* packet does not open with the cluster key */
    SHOAL_ERR_GOSSIP_VERSION,   /* protocol version mismatch */
    SHOAL_ERR_GOSSIP_REFUSED,   /* join refused (block size, version, duplicate id) */

    /* dht: 3000-3999 */
    SHOAL_ERR_DHT = 3000,
    SHOAL_ERR_DHT_NO_OWNER,     /* no alive serving member */

    /* node: 4000-4999 */
    SHOAL_ERR_NODE = 4000,
    SHOAL_ERR_NODE_CONFIG,      /* bad flag or config value */
    SHOAL_ERR_NODE_PEER,        /* a peer failed or sent garbage */
    SHOAL_ERR_NODE_CORRUPT,     /* a stored block failed its checksum */

    /* mount: 5000-5999 */
    SHOAL_ERR_MOUNT = 5000,

    /* sim: 6000-6999 */
    SHOAL_ERR_SIM = 6000,
} shoal_err;

/* Records code and a printf-style message as this thread's last error. Always returns -1 so a
 * failing function can `return shoal_error_set(...)`. */
int shoal_error_set(shoal_err code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int shoal_error_setv(shoal_err code, const char *fmt, va_list ap);

/* Like shoal_error_set, appending ": <strerror(errno_value)>" to the message; code SHOAL_ERR_IO. */
int shoal_error_errno(int errno_value, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "what: " to the current message, keeping the code (context on the way up). */
int shoal_error_wrap(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* This thread's last error code (SHOAL_OK when none) and message ("" when none). The message
 * stays valid until the next shoal_error_* call on this thread. */
shoal_err shoal_error_code(void);
const char *shoal_error_message(void);
void shoal_error_clear(void);

/* Static name of a code, e.g. "S3_CHANGED". Never NULL. */
const char *shoal_error_name(shoal_err code);

#endif
