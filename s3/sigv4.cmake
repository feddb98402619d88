# SigV4 request signing and the credentials chain (s3_sigv4.c, s3_creds*.c, s3_endpoint.c): the
# part of s3/ that decides how a request is authenticated. OpenSSL for SHA-256/HMAC, libcurl for
# the metadata services and STS, libxml2 for STS's answers, libinih for the shared credentials
# and config files.
add_library(shoal_s3_sign STATIC
  ${CMAKE_CURRENT_LIST_DIR}/s3_sigv4.c ${CMAKE_CURRENT_LIST_DIR}/s3_endpoint.c
  ${CMAKE_CURRENT_LIST_DIR}/s3_creds.c ${CMAKE_CURRENT_LIST_DIR}/s3_creds_profile.c
  ${CMAKE_CURRENT_LIST_DIR}/s3_creds_fetch.c ${CMAKE_CURRENT_LIST_DIR}/s3_creds_process.c)
target_include_directories(shoal_s3_sign PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_s3_sign PUBLIC shoal_common shoal::crypto shoal::curl shoal::xml2 shoal::inih)
