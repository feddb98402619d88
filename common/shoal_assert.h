/*
 * SHOAL_ASSERT: an invariant said in code, beside the comment that gives its reason (as Tarantool's
 * swim.c asserts `member != swim->self` under the comment that explains why).
 *
 *   // Forgets the listing of the directory holding `path`; m->lock held.
 *   static void forget_parent(mount *m, const char *path)
 *   {
 *       SHOAL_ASSERT_LOCKED(&m->lock);
 *
 * Asserts are on in Debug builds and in the sanitizer and fuzzing builds (CMake defines
 * SHOAL_ASSERTS=1 there), so the whole suite checks them; in a release build the condition is
 * compiled (it must stay valid code) but never evaluated, so it must have no side effects. A
 * failed assert prints the condition, file, line and function on stderr and aborts: an invariant
 * that does not hold means the process's state can no longer be trusted.
 */
#ifndef SHOAL_ASSERT_H
#define SHOAL_ASSERT_H

#include <pthread.h>
#include <stdbool.h>

#ifndef SHOAL_ASSERTS
#define SHOAL_ASSERTS 0
#endif

#if SHOAL_ASSERTS
#define SHOAL_ASSERT(cond) ((cond) ? (void)0 : shoal_assert_fail(#cond, __FILE__, __LINE__, __func__))
#else
#define SHOAL_ASSERT(cond) ((void)sizeof(!(cond)))
#endif

/* The calling thread holds `mu` (a comment's "lock held", checked). */
#define SHOAL_ASSERT_LOCKED(mu) SHOAL_ASSERT(shoal_mutex_held(mu))
/* The calling thread does not hold `mu` (a comment's "lock not held": the callee takes it). */
#define SHOAL_ASSERT_UNLOCKED(mu) SHOAL_ASSERT(!shoal_mutex_held(mu))

/* Prints "assertion failed: <cond> at <file>:<line> in <func>()" on stderr and aborts. */
void shoal_assert_fail(const char *cond, const char *file, int line, const char *func) __attribute__((noreturn));

/*
 * True when the calling thread holds `mu`, false when it is unlocked or held by another thread.
 * Any thread may ask, at any time, without disturbing the lock.
 *
 * How: glibc records the kernel thread id of the owner in every pthread mutex it locks, for the
 * default kind too (`__data.__owner`, set by lock and by a condition wait's relock, cleared by
 * unlock); the answer compares it with the caller's id. Only the owner can write its own id
 * there, so the answer about the caller is exact even while other threads take and drop the lock.
 * The alternatives were worse: a wrapper type with a debug-only owner field would have to replace
 * every lock, unlock and condition wait of every mutex (and miss any call that bypasses it), and
 * pthread_mutex_trylock answers "someone holds it", not "I hold it", and takes the lock when it
 * is free. tests/common checks the answer on this libc (held, free, held by another thread, after
 * a condition wait). On a libc without the field the answer is always true (nothing is checked);
 * so it is with glibc's lock elision switched on (GLIBC_TUNABLES=glibc.elision.enable=1, off by
 * default), which records no owner: do not run an assert build that way.
 */
bool shoal_mutex_held(pthread_mutex_t *mu);

#endif
