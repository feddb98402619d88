/*
 * Address helpers and the real clock/random of the environment seam. The timer and datagram
 * parts of a real env belong to whoever owns the socket and the event loop (node/).
 */
#include "shoal_env.h"
#include "shoal_bytes.h"
#include "shoal_error.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static int parse_port(const char *s, uint16_t *port)
{
    char *end;
    if (!*s)
        return -1;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v == 0 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int shoal_addr_parse(const char *text, uint16_t default_port, shoal_addr *out)
{
    char host[64];
    const char *port_s = NULL;
    memset(out, 0, sizeof *out);
    if (!text || !*text)
        return shoal_error_set(SHOAL_ERR_INVAL, "empty address");
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || (size_t)(close - text - 1) >= sizeof host)
            return shoal_error_set(SHOAL_ERR_INVAL, "bad address '%s': unterminated [ipv6]", text);
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        if (close[1] == ':')
            port_s = close + 2;
        else if (close[1])
            return shoal_error_set(SHOAL_ERR_INVAL, "bad address '%s': junk after ]", text);
    } else {
        const char *colon = strrchr(text, ':');
        size_t hl = colon ? (size_t)(colon - text) : strlen(text);
        if (hl >= sizeof host)
            return shoal_error_set(SHOAL_ERR_INVAL, "bad address '%s': too long", text);
        memcpy(host, text, hl);
        host[hl] = '\0';
        if (colon)
            port_s = colon + 1;
    }
    if (port_s) {
        if (parse_port(port_s, &out->port) < 0)
            return shoal_error_set(SHOAL_ERR_INVAL, "bad address '%s': port must be 1-65535", text);
    } else if (default_port) {
        out->port = default_port;
    } else {
        return shoal_error_set(SHOAL_ERR_INVAL, "bad address '%s': expected ADDR:PORT", text);
    }
    if (inet_pton(AF_INET, host, out->ip) == 1) {
        out->family = 4;
    } else if (inet_pton(AF_INET6, host, out->ip) == 1) {
        out->family = 6;
    } else {
        return shoal_error_set(SHOAL_ERR_INVAL, "bad address '%s': '%s' is not a numeric IP address", text, host);
    }
    return 0;
}

const char *shoal_addr_format(const shoal_addr *a, char *out)
{
    char host[INET6_ADDRSTRLEN];
    if (a->family == 6) {
        inet_ntop(AF_INET6, a->ip, host, sizeof host);
        snprintf(out, SHOAL_ADDR_STRLEN, "[%s]:%u", host, a->port);
    } else {
        inet_ntop(AF_INET, a->ip, host, sizeof host);
        snprintf(out, SHOAL_ADDR_STRLEN, "%s:%u", host, a->port);
    }
    return out;
}

bool shoal_addr_eq(const shoal_addr *a, const shoal_addr *b)
{
    if (a->family != b->family || a->port != b->port)
        return false;
    return memcmp(a->ip, b->ip, a->family == 6 ? 16 : 4) == 0;
}

shoal_addr shoal_addr_ipv4(uint32_t ip, uint16_t port)
{
    shoal_addr a = {.family = 4, .port = port};
    shoal_store_be(a.ip, ip, 4);
    return a;
}

uint64_t shoal_env_uniform(const shoal_env *e, uint64_t n)
{
    if (n == 0)
        return 0;
    /* Rejection sampling: discard the top partial range so every residue is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do
        r = shoal_env_random(e);
    while (r >= limit);
    return r % n;
}

uint64_t shoal_clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t shoal_clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t shoal_random_u64(void)
{
    uint64_t v;
    size_t got = 0;
    while (got < sizeof v) {
        ssize_t n = getrandom((uint8_t *)&v + got, sizeof v - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    return v;
}
