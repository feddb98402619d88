# Tests of the S3 client: XML parsing (pure), operations against the real local S3 server, and
# faults injected by tests/s3/faultproxy.py in front of it.
shoal_test(test_s3_xml SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_s3_xml.c LIBS shoal_s3)
shoal_test(test_s3_client SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_s3_client.c LIBS shoal_s3 LABELS s3rver)
shoal_test(test_s3_faults SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_s3_faults.c LIBS shoal_s3 LABELS s3rver)
