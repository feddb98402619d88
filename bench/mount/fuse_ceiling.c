/*
 * fuse_ceiling: the least a FUSE file system can do to serve a file's bytes, to measure what the
 * kernel's FUSE path alone allows on a machine (docs/benchmarks.md, "big files from the disk
 * cache").
 *
 *   fuse_ceiling [--splice] SOURCE_DIR MOUNTPOINT
 *
 * Mounts the regular files directly in SOURCE_DIR, read-only, and serves each read with one pread
 * of the file into a buffer and fuse_reply_buf: what Shoal's mount does for a stored block, without
 * the block store, the chunk checks or anything else. --splice replies with the file's descriptor
 * instead (fuse_reply_data of an fd buffer: libfuse splices the pages to the kernel, no copy
 * through user memory), the cheapest a reply can be. The FUSE options are the mount's: reads of up
 * to 1 MiB (max_read, max_pages), 4 MiB of kernel read-ahead, asynchronous reads, the same
 * multi-threaded session loop. It runs in the foreground until unmounted (umount MOUNTPOINT).
 *
 * Nothing here is part of Shoal: it exists so the ratio "mount / local disk" can be read against
 * "any FUSE file system / local disk" on the same kernel and disk.
 */
#define FUSE_USE_VERSION 35
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define IO_MAX (1u << 20)
#define READAHEAD (4u << 20)

static int src_fd = -1;
static int use_splice = 0;

/* Inode numbers are the source's; the root is FUSE_ROOT_ID. */
static int stat_of(fuse_ino_t ino, const char *name, struct stat *st)
{
    if (ino == FUSE_ROOT_ID && name == NULL)
        return fstat(src_fd, st) == 0 ? 0 : -errno;
    return fstatat(src_fd, name, st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno;
}

/* The name of inode `ino` in the source directory (a linear scan: a handful of files). */
static int name_of(fuse_ino_t ino, char *out, size_t cap)
{
    int dfd = dup(src_fd);
    DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
    int rc = -ENOENT;
    if (d == NULL)
        return -errno;
    rewinddir(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_ino == ino && e->d_type == DT_REG) {
            snprintf(out, cap, "%s", e->d_name);
            rc = 0;
            break;
        }
    }
    closedir(d);
    return rc;
}

static void op_init(void *ud, struct fuse_conn_info *conn)
{
    (void)ud;
    conn->max_read = IO_MAX;
    conn->max_readahead = READAHEAD;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    if (use_splice && (conn->capable & FUSE_CAP_SPLICE_WRITE))
        conn->want |= FUSE_CAP_SPLICE_WRITE;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    int rc = parent == FUSE_ROOT_ID ? stat_of(parent, name, &e.attr) : -ENOENT;
    if (rc == 0 && !S_ISREG(e.attr.st_mode))
        rc = -ENOENT;
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    e.ino = e.attr.st_ino;
    e.attr_timeout = e.entry_timeout = 3600;
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    char name[NAME_MAX + 1];
    struct stat st;
    int rc = ino == FUSE_ROOT_ID ? stat_of(ino, NULL, &st) : name_of(ino, name, sizeof name);
    if (rc == 0 && ino != FUSE_ROOT_ID)
        rc = stat_of(ino, name, &st);
    if (rc)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, 3600);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    char name[NAME_MAX + 1];
    int rc = name_of(ino, name, sizeof name);
    int fd = rc == 0 ? openat(src_fd, name, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) {
        fuse_reply_err(req, rc ? -rc : errno);
        return;
    }
    fi->fh = (uint64_t)fd;
    fi->keep_cache = 1;
    if (fuse_reply_open(req, fi) != 0)
        close(fd);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    if (use_splice) {
        struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
        bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
        bv.buf[0].fd = (int)fi->fh;
        bv.buf[0].pos = off;
        fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
        return;
    }
    char *buf = malloc(size ? size : 1);
    ssize_t n = buf ? pread((int)fi->fh, buf, size, off) : -1;
    if (n < 0)
        fuse_reply_err(req, buf ? errno : ENOMEM);
    else
        fuse_reply_buf(req, buf, (size_t)n);
    free(buf);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    close((int)fi->fh);
    fuse_reply_err(req, 0);
}

static void *raise_readahead(void *mountpoint)
{
    struct stat st;
    char path[96];
    if (stat(mountpoint, &st) == 0) {
        snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", major(st.st_dev), minor(st.st_dev));
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "%u", READAHEAD / 1024);
            fclose(f);
        }
    }
    return NULL;
}

static const struct fuse_lowlevel_ops OPS = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .open = op_open,
    .read = op_read,
    .release = op_release,
};

int main(int argc, char **argv)
{
    int a = 1;
    if (a < argc && strcmp(argv[a], "--splice") == 0) {
        use_splice = 1;
        a++;
    }
    if (argc - a != 2) {
        fprintf(stderr, "usage: fuse_ceiling [--splice] SOURCE_DIR MOUNTPOINT\n");
        return 2;
    }
    src_fd = open(argv[a], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (src_fd < 0) {
        fprintf(stderr, "fuse_ceiling: %s: %s\n", argv[a], strerror(errno));
        return 1;
    }
    char opts[128];
    snprintf(opts, sizeof opts, "fsname=fuse_ceiling,ro,max_read=%u", IO_MAX);
    char *fargv[] = {argv[0], "-o", opts, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    struct fuse_session *se = fuse_session_new(&args, &OPS, sizeof OPS, NULL);
    if (se == NULL || fuse_session_mount(se, argv[a + 1]) != 0) {
        fprintf(stderr, "fuse_ceiling: cannot mount %s\n", argv[a + 1]);
        return 1;
    }
    /* The kernel's read-ahead for the mount, as Shoal's mount sets it (root only; else the
     * default), from a thread: the stat waits for the loop to answer INIT. */
    pthread_t t;
    if (pthread_create(&t, NULL, raise_readahead, argv[a + 1]) == 0)
        pthread_detach(t);
    struct fuse_loop_config lc = {.clone_fd = 0, .max_idle_threads = 16};
    int rc = fuse_session_loop_mt(se, &lc);
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return rc ? 1 : 0;
}
