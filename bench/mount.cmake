# Mount benchmarks (bench/mount/run.py): shoald --mount beside local disk, s3fs and rclone mount,
# against the local S3 server; a script, because what it measures is whole daemons and the kernel.
# `cmake --build <dir> --target bench_mount` builds what it needs and runs it with that build.
add_custom_target(bench_mount
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/mount/run.py ${CMAKE_BINARY_DIR}
  DEPENDS shoald shoal
  USES_TERMINAL
  COMMENT "mount benchmark: warm and cold reads through the mount, beside local disk, s3fs and rclone")
