# The POSIX view (libfuse3 low-level). mount_names.c and mount_inodes.c are pure and unit-tested
# without a mount; mount.c and the rooms behind mount_internal.h are the FUSE edge.
add_library(shoal_mount STATIC mount.c mount_meta.c mount_lookup.c mount_file.c mount_stage.c mount_writeback.c mount_namespace.c mount_names.c mount_inodes.c)
target_include_directories(shoal_mount PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(shoal_mount PUBLIC shoal_common shoal::fuse3 Threads::Threads)
