# The peer protocol: a pure codec (no sockets) and its ZeroMQ/CURVE transport.
add_library(shoal_node_peer_proto STATIC ${CMAKE_CURRENT_LIST_DIR}/node_peer_proto.c)
target_include_directories(shoal_node_peer_proto PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_node_peer_proto PUBLIC shoal_common shoal::msgpack)

add_library(shoal_node_peer STATIC ${CMAKE_CURRENT_LIST_DIR}/node_peer.c)
target_link_libraries(shoal_node_peer PUBLIC shoal_node_peer_proto shoal::zmq shoal::sodium Threads::Threads)
