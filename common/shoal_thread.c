/*
 * Every thread starts in a small trampoline that names it (from inside, where naming cannot fail
 * for lack of /proc) and then calls the caller's function. A plain start hands the trampoline a
 * heap record, so the starter returns at once; a start that waits keeps the record on its own
 * stack, since it does not return before the thread has signalled. After signalling, the thread
 * never touches that record again: the handshake it holds lives on its own stack and remembers
 * that it has signalled, so a function that returns without signalling is reported as a failure
 * instead of leaving its starter waiting forever.
 */
#include "shoal_thread.h"
#include "shoal_assert.h"
#include "shoal_error.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREAD_MSG_MAX 1024

typedef struct start_rec {
    void *(*fn)(void *);
    shoal_thread_ready_fn ready_fn;
    void *arg;
    char name[SHOAL_THREAD_NAME_MAX + 1];
    /* the wait of shoal_thread_start_ready */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool signalled;
    int rc;
    shoal_err code;
    char msg[THREAD_MSG_MAX];
} start_rec;

struct shoal_thread_handshake {
    start_rec *rec; /* NULL once signalled */
};

static void *plain_main(void *p)
{
    start_rec *rec = p;
    void *(*fn)(void *) = rec->fn;
    void *arg = rec->arg;
    pthread_setname_np(pthread_self(), rec->name);
    free(rec);
    return fn(arg);
}

static void *ready_main(void *p)
{
    start_rec *rec = p;
    char name[SHOAL_THREAD_NAME_MAX + 1];
    memcpy(name, rec->name, sizeof name);
    pthread_setname_np(pthread_self(), name);
    shoal_thread_handshake hs = {rec};
    void *ret = rec->ready_fn(rec->arg, &hs);
    if (hs.rec) {
        shoal_error_set(SHOAL_ERR_CLOSED, "thread '%s' ended before it said it was ready", name);
        shoal_thread_ready(&hs, -1);
    }
    return ret;
}

void shoal_thread_ready(shoal_thread_handshake *hs, int rc)
{
    SHOAL_ASSERT(hs->rec != NULL); /* once only: after the first, the starter may have gone */
    start_rec *rec = hs->rec;
    hs->rec = NULL;
    pthread_mutex_lock(&rec->mu);
    rec->rc = rc;
    if (rc != 0 && shoal_error_code() != SHOAL_OK) {
        rec->code = shoal_error_code();
        snprintf(rec->msg, sizeof rec->msg, "%s", shoal_error_message());
    } else if (rc != 0) {
        rec->code = SHOAL_ERR_IO;
        snprintf(rec->msg, sizeof rec->msg, "thread '%s' could not start (it gave no reason)", rec->name);
    }
    rec->signalled = true;
    pthread_cond_signal(&rec->cv);
    pthread_mutex_unlock(&rec->mu);
}

static void rec_name(start_rec *rec, const char *name)
{
    snprintf(rec->name, sizeof rec->name, "%s", name ? name : "shoal");
}

static int create(pthread_t *thread, const char *name, void *(*entry)(void *), start_rec *rec)
{
    pthread_t t;
    pthread_attr_t attr;
    int err = pthread_attr_init(&attr);
    if (err == 0 && !thread)
        err = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (err == 0)
        err = pthread_create(&t, &attr, entry, rec);
    pthread_attr_destroy(&attr);
    if (err != 0)
        return shoal_error_set(SHOAL_ERR_IO, "cannot start thread '%s': %s", name, strerror(err));
    if (thread)
        *thread = t;
    return 0;
}

int shoal_thread_start(pthread_t *thread, const char *name, void *(*fn)(void *), void *arg)
{
    start_rec *rec = malloc(sizeof *rec);
    if (!rec)
        return shoal_error_set(SHOAL_ERR_NOMEM, "cannot start thread '%s': out of memory", name);
    rec->fn = fn;
    rec->arg = arg;
    rec_name(rec, name);
    if (create(thread, rec->name, plain_main, rec) != 0) {
        free(rec);
        return -1;
    }
    return 0;
}

int shoal_thread_start_ready(pthread_t *thread, const char *name, shoal_thread_ready_fn fn, void *arg)
{
    start_rec rec = {.ready_fn = fn, .arg = arg};
    rec_name(&rec, name);
    pthread_t t;
    pthread_mutex_init(&rec.mu, NULL);
    pthread_cond_init(&rec.cv, NULL);
    int rc = create(&t, rec.name, ready_main, &rec);
    if (rc == 0) {
        pthread_mutex_lock(&rec.mu);
        while (!rec.signalled)
            pthread_cond_wait(&rec.cv, &rec.mu);
        pthread_mutex_unlock(&rec.mu);
        if (rec.rc != 0) {
            pthread_join(t, NULL);
            rc = shoal_error_set(rec.code, "%s", rec.msg);
        } else {
            *thread = t;
        }
    }
    pthread_cond_destroy(&rec.cv);
    pthread_mutex_destroy(&rec.mu);
    return rc;
}
