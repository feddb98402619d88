/*
 * mount_writeback: --upload-delay (opt-in). close makes a written file durable and returns; the
 * upload comes later, once the file stayed closed and unchanged for the delay.
 *
 * Stages keep a name, and flush makes a dirty stage durable instead of uploading it
 * (mount_stage_persist: fsync, then a record <stage>.key naming the key) and marks it pending,
 * which holds one use of the stage so it outlives its handles. The write-back thread
 * (mount_writeback_main) uploads a pending stage once it is due (closed and unchanged for the
 * delay) and no handle has it open for writing; a failure is retried with backoff. rename
 * rewrites the record, unlink and replacement drop it, fsync uploads at once; each successful
 * upload or drop ends with mount_stage_settle (record removed, pending use released). mount_new
 * takes up the records a crash left (mount_writeback_recover); mount_delete tries every pending
 * upload once.
 */
#include "mount_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shoal_assert.h"
#include "shoal_log.h"

/* ---- write-back records -------------------------------------------------------------------
 *
 * With --upload-delay a closed file is made durable before close returns: its staged file is
 * fsynced and a record <file>.key beside it names the key it goes to and the attributes it is
 * uploaded with: "shoal-stage 2 R SET MODE UID GID MSEC MNSEC ASEC ANSEC\n" (R, or N when no
 * object existed at the key; the numbers are a mount_attrs), then the key's bytes. Records of
 * the first format ("shoal-stage 1 R\n", no attributes) are still read. The record is
 * written to <file>.key.tmp, fsynced and renamed, and the directory fsynced, so a crash leaves
 * either the old record or the new one. mount_new takes up every record it finds
 * (mount_writeback_recover). */

#define RECORD_MAGIC "shoal-stage "

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Writes (or rewrites) the record of `s` naming `key` (s->lock held). 0 or -errno. */
int mount_stage_record(mount_view *m, mount_stage *s, const char *key, bool remote)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    pthread_mutex_lock(&m->lock);
    mount_attrs a = s->in->info.attrs;
    pthread_mutex_unlock(&m->lock);
    char *rec = NULL, *tmp = NULL;
    int rc = -ENOMEM, fd = -1;
    if (asprintf(&rec, "%s.key", s->file) < 0 || asprintf(&tmp, "%s.key.tmp", s->file) < 0)
        goto out;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    char head[256];
    int n = snprintf(head, sizeof head, "%s2 %c %u %u %u %u %lld %u %lld %u\n", RECORD_MAGIC, remote ? 'R' : 'N',
                     a.set, a.mode, a.uid, a.gid, (long long)a.mtime.sec, a.mtime.nsec, (long long)a.atime.sec,
                     a.atime.nsec);
    rc = mount_write_all(fd, head, (size_t)n, 0);
    if (rc == 0)
        rc = mount_write_all(fd, key, strlen(key), (uint64_t)n);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, rec) != 0)
        rc = -errno;
    if (rc == 0)
        rc = fsync_dir(m->staging_dir);
    if (rc == 0) {
        s->recorded = true;
        s->record_stale = false;
    }
out:
    if (fd >= 0)
        close(fd);
    if (rc && tmp)
        unlink(tmp);
    if (rc)
        LOG_ERROR("mount", "record_failed", "dir=%s errno=%d", m->staging_dir, -rc);
    free(rec);
    free(tmp);
    return rc;
}

/* Removes the record of `s` (s->lock held): its bytes are in the store, or nowhere to go. */
static void stage_unrecord(mount_view *m, mount_stage *s)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    char *rec;
    if (!s->recorded || asprintf(&rec, "%s.key", s->file) < 0)
        return;
    if (unlink(rec) == 0)
        fsync_dir(m->staging_dir); /* an unlinked file must not come back after a crash */
    s->recorded = false;
    free(rec);
}

/* The stage needs no delayed upload any more (s->lock held): drops its record and the use the
 * pending upload held. The caller holds a use of its own, so `s` stays allocated. */
void mount_stage_settle(mount_view *m, mount_stage *s)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    stage_unrecord(m, s);
    pthread_mutex_lock(&m->lock);
    if (s->pending) {
        s->pending = false;
        s->nopen--;
        m->wb.pending--;
    }
    pthread_mutex_unlock(&m->lock);
}

/* Close of a file written with --upload-delay (s->lock held): makes the staged bytes durable
 * (fsync, record) and schedules the upload for when the file stayed closed and unchanged for the
 * delay. 0 or -errno (EIO, ENOSPC: the bytes may not survive a crash). */
int mount_stage_persist(mount_view *m, mount_stage *s)
{
    SHOAL_ASSERT_LOCKED(&s->lock);
    if (!s->dirty || !s->file)
        return 0;
    if (fsync(s->fd) != 0)
        return -errno;
    pthread_mutex_lock(&m->lock);
    bool orphan = s->in->detached, remote = s->in->remote;
    char *key = orphan ? NULL : mount_key_of(m, s->in->path, false);
    pthread_mutex_unlock(&m->lock);
    if (orphan)
        return 0;
    int rc = key ? 0 : -ENOMEM;
    if (rc == 0 && (!s->recorded || s->record_stale))
        rc = mount_stage_record(m, s, key, remote);
    free(key);
    if (rc)
        return rc;
    pthread_mutex_lock(&m->lock);
    if (!s->pending) {
        s->pending = true;
        s->nopen++;
        m->wb.pending++;
    }
    s->tries = 0;
    s->due_us = mount_now_us() + m->delay_us;
    pthread_cond_signal(&m->wb_cond);
    pthread_mutex_unlock(&m->lock);
    return 0;
}
/* ---- write-back (--upload-delay) ---------------------------------------------------------- */

#define WB_BACKOFF_MIN_US (200u * 1000u) /* first retry of a failed delayed upload */
#define WB_BACKOFF_MAX_US (30u * 1000000u)

/* The write-back thread: uploads each pending stage once it has been closed and unchanged for
 * the delay and no descriptor has it open for writing. A failed upload stays pending and is
 * tried again with a doubling backoff (logged, counted in mount_writeback_stats.retries); the
 * staged file and its record stay until the store acknowledged the bytes. */
void *mount_writeback_main(void *arg)
{
    mount_view *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->wb_stop) {
        uint64_t now = mount_now_us(), next = UINT64_MAX;
        mount_stage *due = NULL;
        for (mount_stage *s = m->stages; s && !due; s = s->next) {
            if (!s->pending || s->writers)
                continue;
            if (s->due_us <= now)
                due = s;
            else if (s->due_us < next)
                next = s->due_us;
        }
        if (!due) {
            if (next == UINT64_MAX) {
                pthread_cond_wait(&m->wb_cond, &m->lock);
            } else {
                struct timespec ts = {(time_t)(next / 1000000u), (long)(next % 1000000u) * 1000};
                pthread_cond_timedwait(&m->wb_cond, &m->lock, &ts);
            }
            continue;
        }
        due->nopen++;
        pthread_mutex_unlock(&m->lock);
        int rc = mount_stage_upload(m, due);
        pthread_mutex_lock(&m->lock);
        if (rc != 0 && due->pending) {
            unsigned shift = due->tries < 8 ? due->tries : 8;
            uint64_t wait = (uint64_t)WB_BACKOFF_MIN_US << shift;
            if (wait > WB_BACKOFF_MAX_US)
                wait = WB_BACKOFF_MAX_US;
            due->tries++;
            due->due_us = mount_now_us() + wait;
            m->wb.retries++;
            char q[512];
            LOG_WARN("mount", "upload_retry", "path=%s errno=%d tries=%u next_ms=%llu",
                     shoal_log_q(q, sizeof q, due->in->path), -rc, due->tries,
                     (unsigned long long)(wait / 1000));
        }
        pthread_mutex_unlock(&m->lock);
        mount_stage_put(m, due);
        pthread_mutex_lock(&m->lock);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* Reads the record `rec` (a path): its key (heap) and whether an object existed there. */
/* Reads a record: the key (a new string) and, from its first line, whether an object existed
 * and the attributes (none in a first-format record). NULL when the record is unreadable. */
static char *record_read(const char *rec, bool *remote, mount_attrs *a)
{
    size_t len = 0;
    char *buf = NULL;
    FILE *f = fopen(rec, "re");
    if (!f)
        return NULL;
    buf = malloc(65536 + 1);
    if (buf)
        len = fread(buf, 1, 65536, f);
    fclose(f);
    char *nl = buf ? memchr(buf, '\n', len) : NULL;
    if (!nl || memchr(buf, '\0', len) || (size_t)(nl - buf) + 1 == len) {
        free(buf);
        return NULL;
    }
    *nl = '\0';
    memset(a, 0, sizeof *a);
    char kind = 0;
    long long ms = 0, as = 0;
    int got = sscanf(buf, RECORD_MAGIC "2 %c %u %u %u %u %lld %u %lld %u", &kind, &a->set, &a->mode, &a->uid,
                     &a->gid, &ms, &a->mtime.nsec, &as, &a->atime.nsec);
    if (got != 9) {
        memset(a, 0, sizeof *a);
        got = sscanf(buf, RECORD_MAGIC "1 %c", &kind) == 1 && strlen(buf) == strlen(RECORD_MAGIC) + 3 ? 1 : 0;
    }
    if (!got || (kind != 'R' && kind != 'N')) {
        free(buf);
        return NULL;
    }
    a->mtime.sec = ms;
    a->atime.sec = as;
    *remote = kind == 'R';
    buf[len] = '\0';
    size_t head = (size_t)(nl - buf) + 1;
    memmove(buf, buf + head, len - head + 1);
    return buf;
}

/* Takes up one record left by a previous run (m->lock held; mount_new): the staged file `file`
 * becomes a pending stage of its path, due at once. A record this mount cannot use (another
 * prefix, unreadable) is left on disk and logged: never dropped. */
static void recover_one(mount_view *m, const char *file)
{
    SHOAL_ASSERT_LOCKED(&m->lock);
    char *rec = NULL, *key = NULL, q[512];
    bool remote = false;
    mount_attrs attrs;
    struct stat st;
    if (asprintf(&rec, "%s.key", file) < 0)
        return;
    key = record_read(rec, &remote, &attrs);
    size_t plen = strlen(m->prefix);
    const char *path = key ? key + plen : NULL;
    if (!key || strncmp(key, m->prefix, plen) != 0 || !*path || path[strlen(path) - 1] == '/') {
        LOG_ERROR("mount", "record_kept", "record=%s reason=\"%s\"", shoal_log_q(q, sizeof q, rec),
                  key ? "the key is outside this mount's prefix" : "unreadable record");
        goto out;
    }
    mount_inode *in = mount_inodes_find(m->inodes, path);
    int fd = in && in->stage ? -1 : open(file, O_RDWR | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        LOG_ERROR("mount", "record_kept", "record=%s reason=\"%s\"", shoal_log_q(q, sizeof q, rec),
                  fd < 0 && in ? "another record names the same key" : "staged file unreadable");
        if (fd >= 0)
            close(fd);
        goto out;
    }
    char *name = strdup(file);
    mount_stage *s = NULL;
    in = mount_inodes_get_path(m->inodes, path, false);
    if (!name || !in || !(s = mount_stage_link(m, in, fd, name))) {
        free(name);
        close(fd);
        goto out;
    }
    s->size = s->reserved = (uint64_t)st.st_size;
    m->staged_bytes += s->reserved;
    s->filled = s->dirty = s->recorded = s->pending = true;
    s->nopen = 1; /* the pending upload's use */
    in->remote = remote;
    in->info.size = s->size;
    in->info.mtime = st.st_mtim.tv_sec;
    in->info.has_attrs = attrs.set != 0;
    in->info.attrs = attrs;
    m->wb.pending++;
    m->wb.recovered++;
    LOG_INFO("mount", "upload_recovered", "key=%s size=%llu", shoal_log_q(q, sizeof q, key),
             (unsigned long long)s->size);
out:
    free(rec);
    free(key);
}

static int is_stage_name(const struct dirent *e)
{
    return strncmp(e->d_name, "stage-", 6) == 0;
}

/* At mount_new: takes up every record in the staging directory (recover_one), then removes what
 * no record names (files open for writing when the previous run ended, half-written records). */
void mount_writeback_recover(mount_view *m)
{
    struct dirent **names;
    int n = scandir(m->staging_dir, &names, is_stage_name, alphasort);
    if (n < 0)
        return;
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < n; i++) {
        const char *dot = strchr(names[i]->d_name, '.');
        char *file;
        if (!dot || strcmp(dot, ".key") != 0 ||
            asprintf(&file, "%s/%.*s", m->staging_dir, (int)(dot - names[i]->d_name),
                     names[i]->d_name) < 0)
            continue;
        recover_one(m, file);
        free(file);
    }
    for (int i = 0; i < n; i++) {
        char *p, *rec;
        if (asprintf(&p, "%s/%s", m->staging_dir, names[i]->d_name) < 0)
            continue;
        bool named = strchr(names[i]->d_name, '.') != NULL;
        if (!named && asprintf(&rec, "%s.key", p) >= 0) {
            named = access(rec, F_OK) == 0; /* a record kept (recover_one logged why) */
            free(rec);
        }
        if (!named || strstr(names[i]->d_name, ".key.tmp"))
            unlink(p);
        free(p);
        free(names[i]);
    }
    free(names);
    pthread_mutex_unlock(&m->lock);
}

void mount_writeback_stats_get(mount_view *m, mount_writeback_stats *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->wb;
    pthread_mutex_unlock(&m->lock);
}
