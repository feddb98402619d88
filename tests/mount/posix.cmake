# POSIX conformance cases after pjdfstest's groups open, truncate, ftruncate, unlink, mkdir, rmdir
# and rename: real FUSE mounts over the in-memory backend table (a stand-in for the daemon, not
# an S3 mock). docs/semantics.md ("POSIX conformance") lists what S3 cannot do and its errno.
shoal_test(test_mount_posix SOURCES test_mount_posix.c mount_fx.c mem_backend.c LIBS shoal_mount TIMEOUT 60)
