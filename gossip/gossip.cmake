# shoal_gossip: SWIM + Lifeguard membership as a pure state machine (gossip.c) over its wire
# format and seal (gossip_proto.c). No sockets: node/ drives it, sim/ simulates it.
add_library(shoal_gossip STATIC ${CMAKE_CURRENT_LIST_DIR}/gossip.c ${CMAKE_CURRENT_LIST_DIR}/gossip_store.c
            ${CMAKE_CURRENT_LIST_DIR}/gossip_suspicion.c ${CMAKE_CURRENT_LIST_DIR}/gossip_proto.c)
target_include_directories(shoal_gossip PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_gossip PUBLIC shoal_common PRIVATE shoal::msgpack shoal::sodium m)
