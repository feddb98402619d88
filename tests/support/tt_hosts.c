/*
 * tt_hosts: see tt_hosts.h. The localhost lines are always present, since the daemons and the
 * test's own tools may look "localhost" up; the rest is the test's.
 */
#include "tt_hosts.h"

#include "tt.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

static const char LOCALHOST[] = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n";

void tt_hosts_write(const char *path, const char *text)
{
    char buf[4096];
    int len = snprintf(buf, sizeof buf, "%s%s", LOCALHOST, text);
    TT_CHECK(len > 0 && (size_t)len < sizeof buf, "hosts text too long for %s", path);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    TT_CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    /* Written first, truncated after: a lookup in between reads the new lines and, at worst, the
     * tail of the old ones, never a file cut short. */
    TT_CHECK(pwrite(fd, buf, (size_t)len, 0) == len && ftruncate(fd, len) == 0, "write %s: %s", path,
             strerror(errno));
    close(fd);
}

void tt_hosts_private(const char *path, const char *text)
{
    tt_hosts_write(path, text);
    if (unshare(CLONE_NEWNS) != 0) {
        if (errno == EPERM)
            TT_SKIP("a mount namespace of its own (for a private /etc/hosts) needs CAP_SYS_ADMIN: %s",
                    strerror(errno));
        TT_CHECK(0, "unshare(CLONE_NEWNS): %s", strerror(errno));
    }
    TT_CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0, "make / private in the new namespace: %s",
             strerror(errno));
    TT_CHECK(mount(path, "/etc/hosts", NULL, MS_BIND, NULL) == 0, "bind %s over /etc/hosts: %s", path,
             strerror(errno));
}
