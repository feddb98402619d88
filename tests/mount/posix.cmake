# POSIX conformance cases after pjdfstest's groups open, truncate, ftruncate, unlink, mkdir, rmdir
# and rename: real FUSE mounts over the in-memory backend table (a stand-in for the daemon, not
# an S3 mock). docs/semantics.md ("POSIX conformance") lists what S3 cannot do and its errno.
shoal_test(test_mount_posix SOURCES test_mount_posix.c mount_fx.c mem_backend.c LIBS shoal_mount TIMEOUT 60)

# Cases fuse/mount.c does not meet yet: built and runnable one by one
# (`build/tests/mount/test_mount_posix CASE`), kept out of the suite until the mount is fixed;
# delete a name here with the fix that makes it pass.
set_tests_properties(
  # A name whose key would pass S3's 1024 bytes is accepted (S3 then refuses it: EIO), not
  # refused with ENAMETOOLONG.
  test_posix_open_o_creat_of_a_key_over_1024_bytes_gives_enametoolong
  test_posix_mkdir_with_a_marker_key_over_1024_bytes_gives_enametoolong
  test_posix_rename_to_a_key_over_1024_bytes_gives_enametoolong
  # A size past the largest S3 object is staged (then refused by the store), not EFBIG.
  test_posix_truncate_beyond_the_largest_object_gives_efbig
  test_posix_ftruncate_beyond_the_largest_object_gives_efbig
  # A truncation (truncate, ftruncate, open with O_TRUNC) does not move mtime/ctime: only a write
  # touches the stored mtime, and setattr's reply carries the old times, which the kernel keeps
  # for --metadata-ttl.
  test_posix_open_o_trunc_empties_the_file_and_moves_mtime_and_ctime
  test_posix_truncate_moves_mtime_and_ctime
  test_posix_ftruncate_moves_mtime_and_ctime
  # fstat of an unlinked open file shows st_nlink 1.
  test_posix_unlink_of_an_open_file_leaves_it_no_links
  # open(O_RDONLY|O_TRUNC) of a running program fails with ETXTBSY after the mount's OPEN emptied
  # the stage, and RELEASE uploads the empty file.
  test_posix_open_o_rdonly_o_trunc_of_a_running_program_gives_etxtbsy_and_keeps_it
  # A rename that finds the closed writer's stage not yet released keeps the old object's ETag
  # for the new name: its first uncached read fails with ESTALE.
  test_posix_rename_right_after_close_reads_back_at_the_new_name
  PROPERTIES DISABLED TRUE)
