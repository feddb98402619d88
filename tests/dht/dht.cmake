# Placement tests: pure, fast, one CTest entry per behaviour. xxhash and libm are linked for the
# plain reference implementation the optimized lookup is checked against.
shoal_test(test_dht SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_dht.c LIBS shoal_dht shoal::xxhash m)
