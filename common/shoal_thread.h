/*
 * shoal_thread: one way to start a thread.
 *
 *   if (shoal_thread_start(&c->thread, "gossip", cluster_thread, c) != 0)
 *       goto fail;                                       (the error is set: code and reason)
 *
 * The thread gets a name that `top -H`, `ps -L` and gdb show, and every failure reports the
 * project's error code with the thread's name in the message.
 *
 * Some threads must finish their own setup before their owner may go on: the ZAP handler must be
 * bound before the peer socket binds, or a peer's first handshake would find no authenticator.
 * For those, shoal_thread_start_ready works like czmq's zactor_new: it returns only when the new
 * thread has said it is ready, with that thread's verdict. The thread's function takes the
 * handshake as a second argument and calls shoal_thread_ready() once:
 *
 *   static void *zap_main(void *arg, shoal_thread_handshake *hs)
 *   {
 *       if (bind(...) != 0) {
 *           shoal_error_set(...);             (this thread's error travels to the starter)
 *           shoal_thread_ready(hs, -1);
 *           return NULL;                      (and the thread ends at once)
 *       }
 *       shoal_thread_ready(hs, 0);
 *       serve...
 */
#ifndef SHOAL_THREAD_H
#define SHOAL_THREAD_H

#include <pthread.h>

/* Names are cut to the 15 bytes the kernel keeps. */
#define SHOAL_THREAD_NAME_MAX 15

/* Starts fn(arg) on a new thread named `name`. With thread != NULL the caller joins it
 * (pthread_join(*thread, ...)); with NULL the thread is detached and nobody joins it. 0, or -1
 * with SHOAL_ERR_IO (the system refused a thread; the message names the thread and says why) or
 * SHOAL_ERR_NOMEM; fn then never runs and arg stays the caller's. */
int shoal_thread_start(pthread_t *thread, const char *name, void *(*fn)(void *), void *arg);

typedef struct shoal_thread_handshake shoal_thread_handshake;
typedef void *(*shoal_thread_ready_fn)(void *arg, shoal_thread_handshake *hs);

/* Starts fn(arg, hs) on a new thread named `name` and waits until it calls shoal_thread_ready(hs,
 * rc). rc 0: the thread goes on, *thread is set, the caller joins it later; returns 0. rc -1 (or fn
 * returned without calling it): the thread has ended and is joined here; returns -1 with the
 * error the thread had set (code and message) when it signalled. Otherwise fails as
 * shoal_thread_start does. */
int shoal_thread_start_ready(pthread_t *thread, const char *name, shoal_thread_ready_fn fn, void *arg);

/* Called exactly once by a thread started with shoal_thread_start_ready, from that thread: rc 0
 * when ready, -1 when it cannot start (set this thread's shoal_error first, then return from fn
 * without touching what the starter owns: the starter may be freeing it). */
void shoal_thread_ready(shoal_thread_handshake *hs, int rc);

#endif
