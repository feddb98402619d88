/* Tests of shoal_thread: named threads, one error code, and the start handshake. */
#include "shoal_error.h"
#include "shoal_thread.h"
#include "tt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

static void *own_name(void *arg)
{
    char *out = arg;
    pthread_getname_np(pthread_self(), out, 16);
    return out;
}

TT_TEST(test_thread_start_names_the_thread_and_cuts_long_names)
{
    char got[16] = "";
    pthread_t t;
    TT_OK(shoal_thread_start(&t, "peer-io", own_name, got));
    void *ret = NULL;
    pthread_join(t, &ret);
    TT_CHECK(ret == got && strcmp(got, "peer-io") == 0, "the thread ran as 'peer-io', saw '%s'", got);
    TT_OK(shoal_thread_start(&t, "a-name-longer-than-fifteen-bytes", own_name, got));
    pthread_join(t, NULL);
    TT_CHECK(strcmp(got, "a-name-longer-t") == 0, "cut to the kernel's 15 bytes: '%s'", got);
}

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int step;
    char name[16];
} gate;

static void gate_set(gate *g, int step)
{
    pthread_mutex_lock(&g->mu);
    g->step = step;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gate_wait(gate *g, int step)
{
    pthread_mutex_lock(&g->mu);
    while (g->step < step)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void *detached_main(void *arg)
{
    gate *g = arg;
    pthread_getname_np(pthread_self(), g->name, sizeof g->name);
    gate_set(g, 1);
    return NULL;
}

TT_TEST(test_thread_start_without_a_handle_runs_detached)
{
    gate g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    TT_OK(shoal_thread_start(NULL, "ctl-conn", detached_main, &g));
    gate_wait(&g, 1);
    TT_CHECK(strcmp(g.name, "ctl-conn") == 0, "the detached thread ran, named '%s'", g.name);
}

TT_TEST(test_thread_start_refused_by_the_system_reports_io_naming_the_thread)
{
    /* A default stack no machine can map makes pthread_create fail as it does when threads run out. */
    pthread_attr_t a, old;
    pthread_getattr_default_np(&old);
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, (size_t)1 << 46);
    TT_CHECK(pthread_setattr_default_np(&a) == 0, "setting a 64 TiB default stack");
    char got[16] = "";
    pthread_t t;
    shoal_error_clear();
    int rc = shoal_thread_start(&t, "gossip", own_name, got);
    shoal_err code = shoal_error_code();
    char msg[256];
    snprintf(msg, sizeof msg, "%s", shoal_error_message());
    pthread_setattr_default_np(&old);
    pthread_attr_destroy(&a);
    pthread_attr_destroy(&old);
    TT_CHECK(rc == -1, "start failed");
    TT_CHECK(code == SHOAL_ERR_IO && strstr(msg, "cannot start thread 'gossip': "), "IO naming the thread: %s %s",
             shoal_error_name(code), msg);
    TT_CHECK(got[0] == '\0', "the function never ran");
}

typedef struct ready_arg {
    gate g;
    int verdict; /* what the thread says: 0 ready, -1 failed, 1 returns without a word */
    bool set_up; /* done by the thread before it says it is ready */
    atomic_bool ended;
} ready_arg;

static void *ready_main(void *arg, shoal_thread_handshake *hs)
{
    ready_arg *r = arg;
    pthread_getname_np(pthread_self(), r->g.name, sizeof r->g.name);
    if (r->verdict == 1) {
        atomic_store(&r->ended, true);
        return NULL;
    }
    if (r->verdict < 0) {
        shoal_error_set(SHOAL_ERR_NODE_PEER, "the handler could not bind inproc://x");
        shoal_thread_ready(hs, -1);
        atomic_store(&r->ended, true);
        return NULL;
    }
    r->set_up = true;
    shoal_thread_ready(hs, 0);
    gate_wait(&r->g, 1); /* still running after ready, until the test lets it go */
    return r;
}

TT_TEST(test_thread_start_ready_returns_after_the_thread_is_set_up)
{
    ready_arg r = {.g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER}};
    pthread_t t;
    TT_OK(shoal_thread_start_ready(&t, "peer-zap", ready_main, &r));
    TT_CHECK(r.set_up, "what the thread did before signalling is visible when the start returns");
    TT_CHECK(strcmp(r.g.name, "peer-zap") == 0, "named '%s'", r.g.name);
    gate_set(&r.g, 1);
    void *ret = NULL;
    pthread_join(t, &ret);
    TT_CHECK(ret == &r, "the thread went on after ready and is joined by its owner");
}

TT_TEST(test_thread_start_ready_passes_the_threads_error_and_joins_it)
{
    ready_arg r = {.verdict = -1};
    pthread_t t;
    shoal_error_clear();
    TT_CHECK(shoal_thread_start_ready(&t, "peer-zap", ready_main, &r) == -1, "a thread that cannot start fails it");
    TT_CHECK(shoal_error_code() == SHOAL_ERR_NODE_PEER &&
                 strcmp(shoal_error_message(), "the handler could not bind inproc://x") == 0,
             "the thread's own code and message: %s %s", shoal_error_name(shoal_error_code()), shoal_error_message());
    TT_CHECK(atomic_load(&r.ended), "the failed thread was joined before the start returned");
}

TT_TEST(test_thread_start_ready_reports_a_thread_that_never_said_ready)
{
    ready_arg r = {.verdict = 1};
    pthread_t t;
    TT_CHECK(shoal_thread_start_ready(&t, "loop", ready_main, &r) == -1, "no word is a failure, not a hang");
    TT_CHECK(shoal_error_code() == SHOAL_ERR_CLOSED && strstr(shoal_error_message(), "thread 'loop' ended before"),
             "%s %s", shoal_error_name(shoal_error_code()), shoal_error_message());
    TT_CHECK(atomic_load(&r.ended), "and it was joined");
}

TT_MAIN()
