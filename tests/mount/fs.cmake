# Real FUSE mounts over the in-memory backend table (a stand-in for the daemon, not an S3 mock).
shoal_test(test_mount_fs SOURCES test_mount_fs.c mount_fx.c mem_backend.c LIBS shoal_mount TIMEOUT 60)
