# Write-back (--upload-delay) and the PUT count of ftruncate: real FUSE mounts over the in-memory
# backend table (a stand-in for the daemon, not an S3 mock).
shoal_test(test_mount_writeback SOURCES test_mount_writeback.c mem_backend.c LIBS shoal_mount TIMEOUT 60)
