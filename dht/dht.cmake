# shoal_dht: placement (weighted rendezvous hashing). Pure: links only the basics and xxhash.
# FP contraction is off so the scores are the same bit for bit on every CPU (see dht.c).
add_library(shoal_dht STATIC ${CMAKE_CURRENT_LIST_DIR}/dht.c)
target_include_directories(shoal_dht PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_dht PUBLIC shoal_common PRIVATE shoal::xxhash)
target_compile_options(shoal_dht PRIVATE -ffp-contract=off)
