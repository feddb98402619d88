# Tests of the peer protocol: the codec (pure) and the transport over real loopback sockets.
shoal_test(test_node_peer_proto SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_node_peer_proto.c LIBS shoal_node_peer_proto)
shoal_test(test_node_peer SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_node_peer.c LIBS shoal_node_peer TIMEOUT 60)

# The fuzz harness of the peer-message decoder, and its corpus replayed as an ordinary test.
include(${PROJECT_SOURCE_DIR}/fuzz/peer/peer.cmake)
