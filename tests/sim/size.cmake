# The size grammar shared by shoal-sim and (later) shoald: common/shoal_size.h. Milliseconds.
shoal_test(test_shoal_size SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_shoal_size.c LIBS shoal_common)
