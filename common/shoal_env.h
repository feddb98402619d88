/*
 * shoal_env: the seam through which pure protocol cores (gossip, and the parts of the daemon that
 * are state machines) reach the world: the clock, randomness, a timer, and datagram send.
 *
 * It is a table of function pointers plus a context (Tarantool's raft_vtab form, not link-time
 * swapping), so one process can host thousands of instances each with its own world: the daemon
 * passes a real clock and a UDP socket, tests and shoal-sim pass a virtual clock and a simulated
 * network. A core never calls time(), rand(), sleep or a socket function itself.
 *
 * Time is in microseconds on a monotonic clock whose origin is the env's own.
 */
#ifndef SHOAL_ENV_H
#define SHOAL_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A network address as a small value: IPv4 uses ip[0..3]; family is 4 or 6. */
typedef struct shoal_addr {
    uint8_t family;
    uint8_t ip[16];
    uint16_t port;
} shoal_addr;

#define SHOAL_ADDR_STRLEN 56 /* "[ipv6]:port" with NUL */

/* Parses "a.b.c.d:port", "[v6]:port", or (when default_port != 0) an address without port.
 * Numeric addresses only; -1 with SHOAL_ERR_INVAL and a message naming the text otherwise. */
int shoal_addr_parse(const char *text, uint16_t default_port, shoal_addr *out);
/* Writes "a.b.c.d:port" or "[v6]:port" into out (SHOAL_ADDR_STRLEN bytes); returns out. */
const char *shoal_addr_format(const shoal_addr *a, char *out);
bool shoal_addr_eq(const shoal_addr *a, const shoal_addr *b);
/* Convenience for tests and the simulator: 127.x.y.z or 10.x.y.z style IPv4 from a u32. */
shoal_addr shoal_addr_ipv4(uint32_t host_order_ip, uint16_t port);

typedef struct shoal_env_vtab {
    /* Monotonic time in microseconds. */
    uint64_t (*now)(void *ctx);
    /* 64 uniformly random bits. */
    uint64_t (*random)(void *ctx);
    /* Asks the driver to call the core's tick function at (or soon after) `at` microseconds.
     * A later call replaces an earlier one; the core re-arms on every tick. */
    void (*wakeup_at)(void *ctx, uint64_t at);
    /* Sends one datagram; the bytes are copied before it returns. -1 with a shoal_error on a
     * local failure (a lost datagram is not a failure: the network may drop silently). */
    int (*send)(void *ctx, const shoal_addr *to, const void *data, size_t len);
} shoal_env_vtab;

typedef struct shoal_env {
    const shoal_env_vtab *vt;
    void *ctx;
} shoal_env;

static inline uint64_t shoal_env_now(const shoal_env *e) { return e->vt->now(e->ctx); }
static inline uint64_t shoal_env_random(const shoal_env *e) { return e->vt->random(e->ctx); }
static inline void shoal_env_wakeup_at(const shoal_env *e, uint64_t at) { e->vt->wakeup_at(e->ctx, at); }
static inline int shoal_env_send(const shoal_env *e, const shoal_addr *to, const void *d, size_t n)
{
    return e->vt->send(e->ctx, to, d, n);
}
/* A uniform integer in [0, n) without modulo bias; 0 when n == 0. */
uint64_t shoal_env_uniform(const shoal_env *e, uint64_t n);

/* The real world, for the daemon. */
uint64_t shoal_clock_mono_us(void);  /* CLOCK_MONOTONIC */
uint64_t shoal_clock_wall_ms(void);  /* CLOCK_REALTIME, Unix milliseconds */
uint64_t shoal_random_u64(void);     /* from the kernel's CSPRNG (getrandom) */

#endif
