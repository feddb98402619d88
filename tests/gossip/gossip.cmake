# Gossip behaviour in virtual time (sim/), the wire codec, and the fuzz corpus replay.
shoal_test(test_gossip SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gossip.c LIBS shoal_vt m TIMEOUT 300)
# 1,000 joins in virtual time: its verdict is decided in simulated seconds, so only CTest's wall
# clock can fail it on a busy machine. Measured 15 s of CPU (27 s under ASan) on gcc 12, and 190 s
# wall under ASan on 2 shared cores with `stress-ng --cpu 2` and ctest -j2 beside it: the timeout is
# 40 x the sanitized CPU time, six times that loaded wall time.
set_tests_properties(test_gossip_thousand_nodes_converge PROPERTIES TIMEOUT 1200 LABELS scale)
shoal_test(test_gossip_proto SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gossip_proto.c LIBS shoal_vt)

# The fuzz harness of the gossip decoder, and its corpus replayed as an ordinary test.
include(${PROJECT_SOURCE_DIR}/fuzz/gossip/gossip.cmake)

# Where views live: the shared member store against private views, and push-pull digests.
shoal_test(test_gossip_store SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gossip_store.c LIBS shoal_vt m TIMEOUT 120)

# The suspicion timeout, case by case (memberlist's suspicion_test.go table): milliseconds.
shoal_test(test_gossip_suspicion SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gossip_suspicion.c LIBS shoal_gossip)
