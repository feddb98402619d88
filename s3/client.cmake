# The S3 client (s3_client.c, s3_multipart.c, s3_commit.c) and the XML it reads and writes (s3_xml.c):
# libcurl's multi interface on one worker thread, libxml2 for the documents, signing from
# shoal_s3_sign.
add_library(shoal_s3 STATIC
  ${CMAKE_CURRENT_LIST_DIR}/s3_client.c ${CMAKE_CURRENT_LIST_DIR}/s3_multipart.c
  ${CMAKE_CURRENT_LIST_DIR}/s3_commit.c ${CMAKE_CURRENT_LIST_DIR}/s3_xml.c)
target_include_directories(shoal_s3 PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_s3 PUBLIC shoal_s3_sign shoal_common shoal::curl shoal::xml2 shoal::crypto
                      Threads::Threads)
