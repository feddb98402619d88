/*
 * s3_endpoint: the service endpoints configured in the environment, as the AWS SDKs read them
 * ("service-specific endpoints"): AWS_ENDPOINT_URL_<SERVICE> (AWS_ENDPOINT_URL_S3,
 * AWS_ENDPOINT_URL_STS), then AWS_ENDPOINT_URL for every service; neither when
 * AWS_IGNORE_CONFIGURED_ENDPOINT_URLS is "true". The daemon's --endpoint takes precedence over
 * both; the credentials chain uses the STS one. Pure: no I/O beyond the getenv function.
 */
#ifndef SHOAL_S3_ENDPOINT_H
#define SHOAL_S3_ENDPOINT_H

/* The endpoint configured for `service` ("S3", "STS": the SDKs' service id, upper case) into
 * *out: a malloc'd http:// or https:// URL without trailing '/', owned by the caller; NULL when
 * none is configured. getenv_fn NULL means getenv. -1 with SHOAL_ERR_INVAL (the message names the
 * variable) when the value is not an http(s) URL with a host, or holds blanks or control bytes;
 * SHOAL_ERR_NOMEM. *out is NULL on failure. */
int s3_endpoint_from_env(const char *service, const char *(*getenv_fn)(const char *name), char **out);

#endif
