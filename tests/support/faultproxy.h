/*
 * tests/s3/faultproxy.py from C: a FAULT INJECTOR (a fake on purpose) in front of the real local
 * S3 server. It forwards every request unchanged unless a rule says to answer what no healthy
 * server produces on demand (503 SlowDown, 403, 412, a 200 carrying <Error>), drop or reset the
 * connection, truncate a body or stall, or let the server act on a request and then lose its
 * answer ("lost": the connection closes) or send it too late ("late" with ms=N: later requests
 * wait until the server has answered, then the answer is held N ms), or add user metadata
 * headers to an answer ("addmeta"); the rules and counters are in faultproxy.py's docstring.
 */
#ifndef SHOAL_TT_FAULTPROXY_H
#define SHOAL_TT_FAULTPROXY_H

#include <stddef.h>
#include <sys/types.h>

typedef struct tt_proxy {
    pid_t pid;
    int port;
    int stdin_fd;
    char endpoint[64]; /* "http://127.0.0.1:PORT" (https with a certificate) */
} tt_proxy;

/* Starts the proxy in front of the server on port `upstream`; over HTTPS with cert/key when cert
 * is not NULL. Skips the test (77) when /usr/bin/python3 is missing. */
void tt_proxy_start(tt_proxy *p, int upstream, const char *cert, const char *key);
void tt_proxy_stop(tt_proxy *p);
/* Appends a rule, e.g. "action=status&status=503&code=SlowDown&count=2&method=GET". */
void tt_proxy_rule(tt_proxy *p, const char *query);
/* A counter of /_fault/stats ("GET", "PUT", "faults", ...). */
long tt_proxy_stat(tt_proxy *p, const char *field);
/* A string field of the stats ("last_host", "last_target") into out. */
void tt_proxy_stat_str(tt_proxy *p, const char *field, char *out, size_t cap);

#endif
