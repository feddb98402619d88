/*
 * An /etc/hosts of the test's own, read by the real system resolver.
 *
 * tt_hosts_private gives the calling thread a mount namespace of its own in which a file of the
 * test is bind-mounted over /etc/hosts, which is what `ip netns exec NAME` does with
 * /etc/netns/NAME/hosts, without the network namespace: the daemons the test starts from then on
 * inherit the namespace and still reach each other and the S3 server on loopback. glibc's "files"
 * backend opens /etc/hosts at every lookup, so rewriting the file (tt_hosts_write) makes a name
 * resolve, or stop resolving, for getaddrinfo in every such process at once. Mount propagation is
 * made private first: the machine's /etc/hosts is never touched, and the namespace goes away with
 * the last process in it.
 */
#ifndef SHOAL_TT_HOSTS_H
#define SHOAL_TT_HOSTS_H

/* Creates `path` with `text` plus the localhost lines, and bind-mounts it over /etc/hosts in a new
 * mount namespace of the calling thread (call it before starting other threads whose lookups
 * should see it). Skips the test (77) when that is not permitted (it needs CAP_SYS_ADMIN, as
 * `ip netns exec` does); fails it on any other error. */
void tt_hosts_private(const char *path, const char *text);
/* Rewrites `path` in place with `text` plus the localhost lines, in one write (the bind mount
 * holds the file's inode, so a rename would not be seen). Fails the test on an error. */
void tt_hosts_write(const char *path, const char *text);

#endif
