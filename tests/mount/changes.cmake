# Changes reported as done reach the store (no fake success), attributes kept as object metadata:
# real FUSE mounts over the in-memory backend table (a stand-in for the daemon, not an S3 mock).
shoal_test(test_mount_changes SOURCES test_mount_changes.c mount_fx.c mem_backend.c LIBS shoal_mount TIMEOUT 120)
