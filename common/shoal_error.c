/*
 * The last error lives in thread-local storage, as aws-c-common's aws_last_error does: errors are
 * raised deep in a call chain and read at its top, on the same thread, without threading an error
 * object through every signature.
 */
#include "shoal_error.h"

#include <stdio.h>
#include <errno.h>
#include <string.h>

#define SHOAL_ERROR_MSG_MAX 1024

static _Thread_local shoal_err last_code;
static _Thread_local char last_msg[SHOAL_ERROR_MSG_MAX];

int shoal_error_setv(shoal_err code, const char *fmt, va_list ap)
{
    last_code = code;
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    return -1;
}

int shoal_error_set(shoal_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    shoal_error_setv(code, fmt, ap);
    va_end(ap);
    return -1;
}

int shoal_error_errno(int errno_value, const char *fmt, ...)
{
    char what[SHOAL_ERROR_MSG_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    shoal_err code = errno_value == ENOSPC ? SHOAL_ERR_NOSPACE : SHOAL_ERR_IO;
    return shoal_error_set(code, "%s: %s", what, strerror(errno_value));
}

int shoal_error_wrap(const char *fmt, ...)
{
    char prefix[SHOAL_ERROR_MSG_MAX / 2];
    char old[SHOAL_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_msg, sizeof old);
    /* "prefix: old", truncated to the message size (prefix is at most half of it). */
    size_t pl = strnlen(prefix, sizeof prefix - 1);
    size_t ol = strnlen(old, sizeof last_msg - pl - 3);
    memcpy(last_msg, prefix, pl);
    memcpy(last_msg + pl, ": ", 2);
    memcpy(last_msg + pl + 2, old, ol);
    last_msg[pl + 2 + ol] = '\0';
    return -1;
}

shoal_err shoal_error_code(void) { return last_code; }
const char *shoal_error_message(void) { return last_msg; }

void shoal_error_clear(void)
{
    last_code = SHOAL_OK;
    last_msg[0] = '\0';
}

const char *shoal_error_name(shoal_err code)
{
    switch (code) {
#define N(x) case SHOAL_##x: return #x;
    N(OK)
    N(ERR_NOMEM) N(ERR_INVAL) N(ERR_IO) N(ERR_RANGE) N(ERR_TIMEOUT) N(ERR_NOSPACE)
    N(ERR_NOT_FOUND) N(ERR_CLOSED) N(ERR_UNSUPPORTED)
    N(ERR_S3) N(ERR_S3_NO_SUCH_KEY) N(ERR_S3_NO_SUCH_BUCKET) N(ERR_S3_ACCESS_DENIED)
    N(ERR_S3_SIGNATURE) N(ERR_S3_CHANGED) N(ERR_S3_RANGE) N(ERR_S3_THROTTLED)
    N(ERR_S3_TRANSPORT) N(ERR_S3_TRUNCATED) N(ERR_S3_XML) N(ERR_S3_CREDENTIALS)
    N(ERR_GOSSIP) N(ERR_GOSSIP_DECODE) N(ERR_GOSSIP_SEAL) N(ERR_GOSSIP_VERSION) N(ERR_GOSSIP_REFUSED)
    N(ERR_DHT) N(ERR_DHT_NO_OWNER)
    N(ERR_NODE) N(ERR_NODE_CONFIG) N(ERR_NODE_PEER) N(ERR_NODE_CORRUPT)
    N(ERR_MOUNT) N(ERR_SIM)
#undef N
    }
    return "UNKNOWN";
}
