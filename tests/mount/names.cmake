# Key mapping and inode table, no mount needed.
shoal_test(test_mount_names SOURCES test_mount_names.c LIBS shoal_mount)
