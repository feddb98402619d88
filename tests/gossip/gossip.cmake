# Gossip behaviour in virtual time (sim/), the wire codec, and the fuzz corpus replay.
shoal_test(test_gossip SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gossip.c LIBS shoal_vt m TIMEOUT 300)
