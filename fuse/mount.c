/*
 * mount: the libfuse3 low-level filesystem over a mount_backend (docs/semantics.md is the
 * user-facing contract; this is how it is kept). This file holds the const operations table,
 * INIT and STATFS, and the mount's life cycle: mount_new, mount_start (the session loop on a
 * thread of its own), mount_stop and mount_delete. The work is done in rooms of one concern each
 * behind fuse/mount_internal.h, which also says which lock guards which field:
 *
 *   mount_lookup.c     what a name is: LOOKUP, GETATTR, listings and directories
 *   mount_file.c       what happens to an open file: OPEN to RELEASE, and SETATTR
 *   mount_stage.c      the bytes of files being written, until the store has them
 *   mount_writeback.c  --upload-delay: close makes the bytes durable, a thread uploads them later
 *   mount_namespace.c  unlink, mkdir, rmdir, rename, and the calls S3 has nothing for
 *   mount_meta.c       keys, versions and attributes of inodes, as every room needs them
 *
 * Shape. As in libfuse's passthrough_ll, each handler in `mount_ops` decodes its request, does
 * the work and replies exactly once. This is the FUSE edge: helpers return 0 or -errno (what the
 * kernel wants) and backend errors arrive as -errno already; only mount_new/start/stop speak the
 * project's shoal_error convention.
 *
 * Stopping. The kernel ends its connection when the last mount of it goes, and the session loop
 * then returns; a copy of the mount in another mount namespace would keep the connection, so
 * mount_stop wakes the loop itself (join_loop) and closing the device ends the connection.
 */
#include "mount_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shoal_error.h"
#include "shoal_log.h"
#include "shoal_thread.h"

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    /* A bucket has no size: report 1 PiB free in 4 KiB blocks so tools that check free space
     * (installers, dataset downloaders) go ahead, and a billion free inodes. */
    struct statvfs sv;
    memset(&sv, 0, sizeof sv);
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_blocks = sv.f_bfree = sv.f_bavail = (1ull << 50) / 4096;
    sv.f_files = sv.f_ffree = sv.f_favail = 1000000000ull;
    sv.f_namemax = MOUNT_NAME_MAX;
    fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    mount_view *m = userdata;
    /* A read-only mount needs nothing at open or close: versions are checked at lookup (an
     * inode stands for one ETag), so mount_op_open answers ENOSYS and the kernel opens files
     * itself. */
    m->no_open = m->cfg.read_only && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT);
    conn->max_write = MOUNT_IO_MAX;
    conn->max_read = MOUNT_IO_MAX;
    conn->max_readahead = MOUNT_READAHEAD;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    /* O_TRUNC must reach open(): a separate truncate to 0 would upload an empty object first. */
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    /* Write-through: every write reaches the stage, so flush sees all the bytes. */
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

/* ---- timing ------------------------------------------------------------------------------------
 *
 * The requests users wait on go through a wrapper that times the handler, which replies before it
 * returns (every handler here answers on the session thread that called it). The mount is read
 * before the call: the reply frees the request. */
#define TIMED(stat, handler, params, args)                                                            \
    static void timed_##handler params                                                                \
    {                                                                                                 \
        mount_view *m = fuse_req_userdata(req);                                                       \
        uint64_t t0 = shoal_clock_mono_us();                                                          \
        handler args;                                                                                 \
        shoal_hist_observe(&m->latency[stat], shoal_clock_mono_us() - t0);                            \
    }
TIMED(MOUNT_STATS_LOOKUP, mount_op_lookup, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
TIMED(MOUNT_STATS_GETATTR, mount_op_getattr, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
TIMED(MOUNT_STATS_SETATTR, mount_op_setattr,
      (fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi),
      (req, ino, attr, to_set, fi))
TIMED(MOUNT_STATS_OPEN, mount_op_open, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
TIMED(MOUNT_STATS_CREATE, mount_op_create,
      (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi),
      (req, parent, name, mode, fi))
TIMED(MOUNT_STATS_READ, mount_op_read, (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi),
      (req, ino, size, off, fi))
TIMED(MOUNT_STATS_WRITE, mount_op_write,
      (fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi),
      (req, ino, buf, size, off, fi))
TIMED(MOUNT_STATS_FLUSH, mount_op_flush, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
TIMED(MOUNT_STATS_RELEASE, mount_op_release, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
TIMED(MOUNT_STATS_FSYNC, mount_op_fsync, (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi),
      (req, ino, datasync, fi))
TIMED(MOUNT_STATS_READDIR, mount_op_readdir,
      (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi), (req, ino, size, off, fi))
TIMED(MOUNT_STATS_READDIR, mount_op_readdirplus,
      (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi), (req, ino, size, off, fi))
TIMED(MOUNT_STATS_UNLINK, mount_op_unlink, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
TIMED(MOUNT_STATS_RENAME, mount_op_rename,
      (fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags),
      (req, parent, name, newparent, newname, flags))
TIMED(MOUNT_STATS_MKDIR, mount_op_mkdir, (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode),
      (req, parent, name, mode))
TIMED(MOUNT_STATS_RMDIR, mount_op_rmdir, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
#undef TIMED

void mount_io_stats_get(mount_view *m, mount_io_stats *out)
{
    out->opens = atomic_load_explicit(&m->opens, memory_order_relaxed);
    out->bytes_read = atomic_load_explicit(&m->bytes_read, memory_order_relaxed);
    out->bytes_written = atomic_load_explicit(&m->bytes_written, memory_order_relaxed);
    for (int i = 0; i < MOUNT_STATS_OPS; i++)
        shoal_hist_read(&m->latency[i], &out->latency[i]);
}

static const struct fuse_lowlevel_ops mount_ops = {
    .init = op_init,
    .lookup = timed_mount_op_lookup,
    .forget = mount_op_forget,
    .forget_multi = mount_op_forget_multi,
    .getattr = timed_mount_op_getattr,
    .setattr = timed_mount_op_setattr,
    .readlink = mount_op_readlink,
    .mknod = mount_op_mknod,
    .mkdir = timed_mount_op_mkdir,
    .unlink = timed_mount_op_unlink,
    .rmdir = timed_mount_op_rmdir,
    .symlink = mount_op_symlink,
    .rename = timed_mount_op_rename,
    .link = mount_op_link,
    .open = timed_mount_op_open,
    .read = timed_mount_op_read,
    .write = timed_mount_op_write,
    .flush = timed_mount_op_flush,
    .release = timed_mount_op_release,
    .fsync = timed_mount_op_fsync,
    .opendir = mount_op_opendir,
    .readdir = timed_mount_op_readdir,
    .readdirplus = timed_mount_op_readdirplus,
    .releasedir = mount_op_releasedir,
    .fsyncdir = mount_op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = mount_op_setxattr,
    .getxattr = mount_op_getxattr,
    .listxattr = mount_op_listxattr,
    .removexattr = mount_op_removexattr,
    .create = timed_mount_op_create,
    .fallocate = mount_op_fallocate,
};

/* ---- life cycle --------------------------------------------------------------------------- */

void mount_config_defaults(mount_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->metadata_ttl = 60;
    cfg->negative_ttl = 5;
    cfg->uid = getuid();
    cfg->gid = getgid();
    cfg->file_mode = 0644;
    cfg->dir_mode = 0755;
}

mount_view *mount_new(const mount_config *cfg, const mount_backend *backend, void *ctx)
{
    struct stat st;
    if (!cfg->mountpoint || !*cfg->mountpoint) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount: no mount point given");
        goto fail;
    }
    if (!cfg->staging_dir || !*cfg->staging_dir) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount %s: no staging directory given", cfg->mountpoint);
        goto fail;
    }
    if (!(cfg->upload_delay >= 0) || cfg->upload_delay > 86400 * 365) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount %s: the upload delay must be >= 0 seconds (%g)",
                        cfg->mountpoint, cfg->upload_delay);
        goto fail;
    }
    if (!(cfg->metadata_ttl >= 0) || !(cfg->negative_ttl >= 0)) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount %s: TTLs must be >= 0 seconds (metadata %g, "
                        "negative %g)", cfg->mountpoint, cfg->metadata_ttl, cfg->negative_ttl);
        goto fail;
    }
    if (!backend || !backend->head || !backend->list || !backend->read || !backend->put ||
        !backend->copy || !backend->remove) {
        shoal_error_set(SHOAL_ERR_INVAL, "mount %s: backend table incomplete", cfg->mountpoint);
        goto fail;
    }
    if (mkdir(cfg->staging_dir, 0700) != 0 && errno != EEXIST) {
        shoal_error_errno(errno, "mount: cannot create staging directory %s", cfg->staging_dir);
        goto fail;
    }
    if (stat(cfg->staging_dir, &st) != 0 || !S_ISDIR(st.st_mode) ||
        access(cfg->staging_dir, W_OK) != 0) {
        shoal_error_set(SHOAL_ERR_IO, "mount: staging directory %s is not a writable directory",
                        cfg->staging_dir);
        goto fail;
    }
    mount_view *m = calloc(1, sizeof *m);
    if (!m)
        goto fail_nomem;
    m->cfg = *cfg;
    m->be = backend;
    m->ctx = ctx;
    m->ttl_us = (uint64_t)(cfg->metadata_ttl * 1e6);
    m->neg_ttl_us = (uint64_t)(cfg->negative_ttl * 1e6);
    m->started = time(NULL);
    m->delay_us = (uint64_t)(cfg->upload_delay * 1e6);
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->ra_lock, NULL);
    pthread_mutex_init(&m->once_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    /* mount_writeback_main waits on mount_now_us() deadlines */
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->wb_cond, &ca);
    pthread_condattr_destroy(&ca);
    m->mountpoint = strdup(cfg->mountpoint);
    m->staging_dir = strdup(cfg->staging_dir);
    m->prefix = mount_names_prefix(cfg->prefix);
    m->inodes = mount_inodes_new();
    m->once = calloc(MOUNT_ONCE_SLOTS, sizeof *m->once);
    if (!m->mountpoint || !m->staging_dir || !m->prefix || !m->inodes || !m->once) {
        shoal_error_set(SHOAL_ERR_NOMEM, "mount %s: out of memory", cfg->mountpoint);
        goto fail_mount;
    }
    m->cfg.mountpoint = m->mountpoint;
    m->cfg.staging_dir = m->staging_dir;
    m->cfg.prefix = m->prefix;
    mount_writeback_recover(m);
    if (shoal_thread_start(&m->wb_thread, "mount-wb", mount_writeback_main, m) != 0) {
        shoal_error_wrap("mount %s", cfg->mountpoint);
        goto fail_mount;
    }
    m->wb_running = true;
    return m;

fail_mount:
    mount_delete(m);
    return NULL;
fail_nomem:
    shoal_error_set(SHOAL_ERR_NOMEM, "mount %s: out of memory", cfg->mountpoint);
fail:
    return NULL;
}

/* The signal mount_stop wakes the loop thread with (join_loop). A real-time signal, which nothing
 * else in the daemon uses; its handler does nothing: the wakeup is all it is for. */
#define MOUNT_WAKE_SIGNAL (SIGRTMIN + 4)

static void on_wake_signal(int sig)
{
    (void)sig;
}

/* Installs the wake signal's handler: without one, a real-time signal ends the process. */
static int install_wake_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_wake_signal;
    sigemptyset(&sa.sa_mask);
    return sigaction(MOUNT_WAKE_SIGNAL, &sa, NULL);
}

static void *loop_main(void *arg)
{
    mount_view *m = arg;
    sigset_t wake;
    sigemptyset(&wake);
    sigaddset(&wake, MOUNT_WAKE_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &wake, NULL); /* whatever the starting thread blocked */
    struct fuse_loop_config lc = {.clone_fd = 0, .max_idle_threads = 16};
    int rc = fuse_session_loop_mt(m->se, &lc);
    LOG_INFO("mount", "loop_ended", "mountpoint=%s rc=%d", m->mountpoint, rc);
    atomic_store(&m->loop_over, true);
    return NULL;
}

bool mount_unmounted(mount_view *m)
{
    return m && atomic_load(&m->loop_over) && !atomic_load(&m->stopping);
}

/* Runs `fusermount3 -u -z path` (for users who may not call umount2) and waits. 0 on success. */
static int run_fusermount(const char *path)
{
    pid_t pid;
    int status;
    char *argv[] = {"fusermount3", "-u", "-z", (char *)path, NULL};
    if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) != 0)
        return -1;
    if (waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int mount_cleanup_stale(const char *mountpoint)
{
    struct stat st;
    struct statfs sf;
    /* statfs, not stat: the kernel may answer stat from cached attributes of a dead mount, but
     * always asks the daemon for statfs, and a dead connection answers ENOTCONN. */
    if (statfs(mountpoint, &sf) == 0)
        return 0;
    if (errno != ENOTCONN)
        return shoal_error_errno(errno, "mount: mount point %s", mountpoint);
    LOG_WARN("mount", "stale_mount", "mountpoint=%s action=\"lazy unmount\"", mountpoint);
    if (umount2(mountpoint, MNT_DETACH) != 0 && run_fusermount(mountpoint) != 0)
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount: cannot unmount the stale mount at %s "
                               "(try: fusermount3 -u -z %s)", mountpoint, mountpoint);
    if (stat(mountpoint, &st) != 0)
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount: %s still unusable after unmounting a "
                               "stale mount: %s", mountpoint, strerror(errno));
    return 0;
}

/* The kernel caps FUSE read-ahead at the backing device's default (128 KiB) whatever INIT asks
 * for, so reads would reach the backend in 128 KiB pieces. Root may raise it through sysfs;
 * others keep the default (logged). */
static void raise_readahead(mount_view *m)
{
    struct stat st;
    char path[96];
    if (stat(m->mountpoint, &st) != 0)
        return;
    snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", major(st.st_dev),
             minor(st.st_dev));
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%u", MOUNT_READAHEAD / 1024) < 0) {
        LOG_INFO("mount", "readahead_default", "mountpoint=%s reason=\"%s not writable\"",
                 m->mountpoint, path);
    }
    if (f)
        fclose(f);
}

/* True when fuse.conf (`path`) has a user_allow_other line: fusermount3 then lets a user that is
 * not root mount with allow_other. */
static bool fuse_conf_allows_other(const char *path)
{
    FILE *f = fopen(path, "re");
    char line[256];
    bool yes = false;
    while (f && !yes && fgets(line, sizeof line, f)) {
        char *p = line + strspn(line, " \t");
        yes = strncmp(p, "user_allow_other", 16) == 0 && (p[16] == '\0' || strchr(" \t\r\n", p[16]));
    }
    if (f)
        fclose(f);
    return yes;
}

int mount_start(mount_view *m)
{
    char opts[256];
    if (m->running)
        return 0;
    atomic_store(&m->loop_over, false);
    atomic_store(&m->stopping, false);
    if (m->cfg.allow_other && geteuid() != 0 && !fuse_conf_allows_other("/etc/fuse.conf"))
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: --allow-other needs a line 'user_allow_other' in "
                               "/etc/fuse.conf when the daemon does not run as root", m->mountpoint);
    if (mount_cleanup_stale(m->mountpoint) != 0)
        return -1;
    if (access("/dev/fuse", R_OK | W_OK) != 0)
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: /dev/fuse: %s", m->mountpoint,
                               strerror(errno));
    snprintf(opts, sizeof opts, "fsname=shoal,subtype=shoal,default_permissions,max_read=%u%s%s",
             MOUNT_IO_MAX, m->cfg.allow_other ? ",allow_other" : "",
             m->cfg.read_only ? ",ro" : "");
    if (install_wake_handler() != 0)
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: cannot install the handler of signal %d: %s",
                               m->mountpoint, MOUNT_WAKE_SIGNAL, strerror(errno));
    char *argv[] = {"shoald", "-o", opts, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    m->se = fuse_session_new(&args, &mount_ops, sizeof mount_ops, m);
    fuse_opt_free_args(&args); /* libfuse may have copied argv while parsing */
    if (!m->se)
        return shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: cannot create the FUSE session "
                               "(options %s)", m->mountpoint, opts);
    if (fuse_session_mount(m->se, m->mountpoint) != 0) {
        shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: mounting failed (not permitted, or the mount "
                        "point is busy; libfuse printed the reason)", m->mountpoint);
        goto fail_session;
    }
    if (shoal_thread_start(&m->thread, "mount-loop", loop_main, m) != 0) {
        shoal_error_wrap("mount %s", m->mountpoint);
        goto fail_mounted;
    }
    m->running = true;
    raise_readahead(m);
    LOG_INFO("mount", "mounted", "mountpoint=%s prefix=%s read_only=%d", m->mountpoint,
             *m->prefix ? m->prefix : "/", m->cfg.read_only);
    return 0;

fail_mounted:
    fuse_session_unmount(m->se);
fail_session:
    fuse_session_destroy(m->se);
    m->se = NULL;
    return -1;
}

/* Unmounts as root: a plain unmount ends the connection at once when no file is open; while
 * files stay open (EBUSY) it retries for MOUNT_STOP_WAIT_S, then MNT_FORCE aborts the FUSE
 * connection (the open files get ENOTCONN) and MNT_DETACH removes the mount. True when the
 * connection is over; false when not permitted (the caller falls back to fusermount3). */
static bool unmount_as_root(mount_view *m)
{
    for (int i = 0; i < MOUNT_STOP_WAIT_S * 10; i++) {
        if (umount2(m->mountpoint, 0) == 0)
            return true;
        if (errno != EBUSY)
            return false;
        usleep(100 * 1000);
    }
    LOG_WARN("mount", "abort_connection", "mountpoint=%s reason=\"files still open\"",
             m->mountpoint);
    if (umount2(m->mountpoint, MNT_FORCE) != 0 && errno != EBUSY)
        return false;
    umount2(m->mountpoint, MNT_DETACH);
    return true;
}

/* After a lazy unmount that open files keep alive: aborts the connection through the fusectl
 * filesystem when it is mounted. True when that was done. */
static bool abort_connection(const struct stat *st)
{
    char path[64];
    snprintf(path, sizeof path, "/sys/fs/fuse/connections/%u/abort", minor(st->st_dev));
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    fputs("1", f);
    fclose(f);
    return true;
}

/* Waits for the loop thread of a session marked exited whose mount is gone from this namespace.
 * The loop ends by itself when the kernel ends the connection, which it does when the last mount
 * of it goes; but a copy of the mount can outlive ours (a mount namespace made while we were
 * mounted: `unshare -m`, a container's start), and then the device stays silent and the loop
 * would wait for a request forever. libfuse's loop thread waits for its workers in an
 * interruptible sem_wait: a signal lets it see the exit flag, cancel the workers blocked in a read
 * of the device and join them once their handlers in flight (an upload) have returned. The signal
 * is sent again until the thread has ended, since one that arrives just before the thread starts
 * waiting wakes nothing. Closing the device afterwards (fuse_session_destroy) ends the connection,
 * so the copies answer ENOTCONN instead of hanging. */
static void join_loop(mount_view *m)
{
    for (;;) {
        pthread_kill(m->thread, MOUNT_WAKE_SIGNAL);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        if (pthread_timedjoin_np(m->thread, NULL, &until) == 0)
            return;
    }
}

int mount_stop(mount_view *m)
{
    struct stat st;
    int rc = 0;
    if (!m || !m->running)
        return 0;
    bool have_dev = stat(m->mountpoint, &st) == 0; /* names the connection, for fusectl */
    atomic_store(&m->stopping, true);
    fuse_session_exit(m->se);
    bool over = unmount_as_root(m);
    if (!over)
        run_fusermount(m->mountpoint); /* a lazy unmount, as a user without CAP_SYS_ADMIN may */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += MOUNT_STOP_WAIT_S;
    bool joined = false;
    if (!over && pthread_timedjoin_np(m->thread, NULL, &deadline) == 0)
        joined = over = true;
    if (!over && have_dev)
        over = abort_connection(&st);
    /* Our mount is gone or the connection aborted: only handlers in flight (an upload) may keep
     * the loop, or a copy of the mount elsewhere (join_loop). */
    if (over && !joined)
        join_loop(m);
    if (!over) {
        rc = shoal_error_set(SHOAL_ERR_MOUNT, "mount %s: files are still open and the FUSE "
                             "connection cannot be aborted", m->mountpoint);
        pthread_detach(m->thread);
    }
    m->running = false;
    if (rc == 0) {
        /* Only now that no worker reads the device: libfuse closes it here (and finds the
         * mount already gone). */
        fuse_session_unmount(m->se);
        fuse_session_destroy(m->se);
        m->se = NULL;
        LOG_INFO("mount", "unmounted", "mountpoint=%s", m->mountpoint);
    }
    return rc;
}

void mount_delete(mount_view *m)
{
    if (!m)
        return;
    if (mount_stop(m) != 0) {
        /* The loop thread may still touch the mount: leaking it is the only safe choice. */
        LOG_ERROR("mount", "delete_leaked", "mountpoint=%s reason=\"%s\"", m->mountpoint,
                  shoal_error_message());
        return;
    }
    if (m->wb_running) {
        pthread_mutex_lock(&m->lock);
        m->wb_stop = true;
        pthread_cond_signal(&m->wb_cond);
        pthread_mutex_unlock(&m->lock);
        pthread_join(m->wb_thread, NULL);
    }
    /* Pending delayed uploads get one try now; what fails stays on disk for the next start. */
    for (mount_stage *s = m->stages; s; s = s->next)
        if (s->pending)
            mount_stage_upload(m, s);
    while (m->handles) {
        mount_handle *h = m->handles;
        m->handles = h->next;
        mount_listing_unref(h->listing);
        free(h->key);
        free(h);
    }
    while (m->stages) {
        mount_stage *s = m->stages;
        m->stages = s->next;
        s->in->stage = NULL;
        mount_stage_free(s);
    }
    mount_inodes_delete(m->inodes);
    if (m->once)
        for (size_t i = 0; i < MOUNT_ONCE_SLOTS; i++)
            free(m->once[i]);
    free(m->once);
    free(m->mountpoint);
    free(m->staging_dir);
    free(m->prefix);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->ra_lock);
    pthread_mutex_destroy(&m->once_lock);
    pthread_cond_destroy(&m->wb_cond);
    free(m);
}
