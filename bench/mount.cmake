# Mount benchmarks (bench/mount/run.py): shoald --mount beside local disk, s3fs and rclone mount,
# against the local S3 server; a script, because what it measures is whole daemons and the kernel.
# `cmake --build <dir> --target bench_mount` builds what it needs and runs it with that build.
add_custom_target(bench_mount
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/mount/run.py ${CMAKE_BINARY_DIR}
  DEPENDS shoald shoal
  USES_TERMINAL
  COMMENT "mount benchmark: warm and cold reads through the mount, beside local disk, s3fs and rclone")

# The comparison of issue-sized cases beside s3fs and rclone (bench/mount/compare.py, every case
# of docs/benchmarks.md "Mount beside s3fs and rclone" in one run). `--target bench_mount_compare`
# runs the full sizes; `bench/mount/compare.py --quick BUILD_DIR` the quick ones.
add_custom_target(bench_mount_compare
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/mount/compare.py ${CMAKE_BINARY_DIR}
  DEPENDS shoald shoal
  USES_TERMINAL
  COMMENT "mount comparison: Shoal, s3fs and rclone, cold and warm, with CPU per GiB and peak RSS")
