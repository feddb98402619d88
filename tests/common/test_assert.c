/* Tests of SHOAL_ASSERT and the lock-owner check behind SHOAL_ASSERT_LOCKED. */
#include "shoal_assert.h"
#include "tt.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

TT_TEST(test_assert_aborts_naming_the_condition_only_in_assert_builds)
{
    int fds[2];
    TT_CHECK(pipe(fds) == 0, "pipe");
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        int evaluated = 0;
        SHOAL_ASSERT(++evaluated == 99);
        _exit(evaluated == 0 ? 0 : 3); /* reached only with asserts off: the condition never ran */
    }
    close(fds[1]);
    char out[512] = "";
    size_t got = 0;
    ssize_t n;
    while (got < sizeof out - 1 && (n = read(fds[0], out + got, sizeof out - 1 - got)) > 0)
        got += (size_t)n;
    close(fds[0]);
    int status = 0;
    TT_CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    if (SHOAL_ASSERTS) {
        TT_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "a false assert aborts (status %#x)", status);
        TT_CHECK(strstr(out, "assertion failed: ++evaluated == 99 at ") && strstr(out, "test_assert.c:") &&
                     strstr(out, "in test_assert_aborts_naming_the_condition_only_in_assert_builds()"),
                 "the message names condition, place and function: '%s'", out);
    } else {
        TT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                 "with asserts off the condition is not evaluated and nothing aborts (status %#x)", status);
        TT_CHECK(got == 0, "nothing printed: '%s'", out);
    }
    SHOAL_ASSERT(got < sizeof out); /* a true assert passes in every build */
}

typedef struct holder {
    pthread_mutex_t *mu;
    pthread_barrier_t holding, let_go; /* the thread holds mu between the two */
    bool held_inside;
} holder;

static void *hold_main(void *arg)
{
    holder *h = arg;
    pthread_mutex_lock(h->mu);
    h->held_inside = shoal_mutex_held(h->mu);
    pthread_barrier_wait(&h->holding);
    pthread_barrier_wait(&h->let_go);
    pthread_mutex_unlock(h->mu);
    return NULL;
}

TT_TEST(test_mutex_held_is_true_only_for_the_owning_thread)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    TT_CHECK(!shoal_mutex_held(&mu), "a fresh mutex is not held");
    pthread_mutex_lock(&mu);
    TT_CHECK(shoal_mutex_held(&mu), "held after lock");
    pthread_mutex_unlock(&mu);
    TT_CHECK(!shoal_mutex_held(&mu), "not held after unlock");
    TT_CHECK(pthread_mutex_trylock(&mu) == 0 && shoal_mutex_held(&mu), "held after a successful trylock");
    pthread_mutex_unlock(&mu);

    holder h = {.mu = &mu};
    pthread_barrier_init(&h.holding, NULL, 2);
    pthread_barrier_init(&h.let_go, NULL, 2);
    pthread_t t;
    TT_CHECK(pthread_create(&t, NULL, hold_main, &h) == 0, "pthread_create");
    pthread_barrier_wait(&h.holding);
    TT_CHECK(h.held_inside, "the other thread sees it holds the mutex");
    TT_CHECK(!shoal_mutex_held(&mu), "held by another thread is not held by this one");
    pthread_barrier_wait(&h.let_go);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&h.holding);
    pthread_barrier_destroy(&h.let_go);
    TT_CHECK(!shoal_mutex_held(&mu), "not held after the other thread let go");

    /* A condition wait gives the mutex up and takes it back: held again on return. */
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    pthread_mutex_lock(&mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&cv, &mu, &ts);
    TT_CHECK(shoal_mutex_held(&mu), "held after a condition wait returns");
    pthread_mutex_unlock(&mu);

    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_t rec;
    pthread_mutex_init(&rec, &a);
    pthread_mutexattr_destroy(&a);
    pthread_mutex_lock(&rec);
    pthread_mutex_lock(&rec);
    pthread_mutex_unlock(&rec);
    TT_CHECK(shoal_mutex_held(&rec), "a recursive mutex locked twice, unlocked once, is still held");
    pthread_mutex_unlock(&rec);
    TT_CHECK(!shoal_mutex_held(&rec), "and not held after the last unlock");
    pthread_mutex_destroy(&rec);
}

TT_TEST(test_assert_locked_passes_for_the_owner_and_aborts_for_others)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    SHOAL_ASSERT_LOCKED(&mu);
    pthread_mutex_unlock(&mu);
    SHOAL_ASSERT_UNLOCKED(&mu);
    if (!SHOAL_ASSERTS)
        return;
    pid_t pid = fork();
    TT_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDERR_FILENO);
        SHOAL_ASSERT_LOCKED(&mu); /* a comment saying "lock held" where it is not */
        _exit(0);
    }
    int status = 0;
    TT_CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    TT_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "an unheld lock asserted held aborts (%#x)", status);
}

TT_MAIN()
