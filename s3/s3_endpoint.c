/*
 * s3_endpoint: AWS_ENDPOINT_URL_<SERVICE> and AWS_ENDPOINT_URL, in the SDKs' order (the
 * service's own variable first). Only the environment is read: the SDKs' endpoint_url keys in
 * ~/.aws/config (and its [services] sections) are not, which docs/s3-auth.md says. A value is
 * checked the way --endpoint is (scheme, host, no blanks) so a typo fails at start, naming the
 * variable, instead of sending requests somewhere unexpected.
 */
#include "s3_endpoint.h"

#include "shoal_error.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *endpoint_env(const char *(*getenv_fn)(const char *), const char *name)
{
    const char *v = getenv_fn ? getenv_fn(name) : getenv(name);
    return v && *v ? v : NULL;
}

int s3_endpoint_from_env(const char *service, const char *(*getenv_fn)(const char *name), char **out)
{
    char var[64];
    *out = NULL;
    const char *ignore = endpoint_env(getenv_fn, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    if (ignore && strcasecmp(ignore, "true") == 0)
        return 0;
    size_t n = strlen(service);
    if (n > sizeof var - sizeof "AWS_ENDPOINT_URL_")
        return shoal_error_set(SHOAL_ERR_INVAL, "service name '%s' is too long", service);
    memcpy(var, "AWS_ENDPOINT_URL_", sizeof "AWS_ENDPOINT_URL_");
    for (size_t i = 0; i < n; i++)
        var[sizeof "AWS_ENDPOINT_URL_" - 1 + i] = (char)toupper((unsigned char)service[i]);
    var[sizeof "AWS_ENDPOINT_URL_" - 1 + n] = '\0';
    const char *v = endpoint_env(getenv_fn, var);
    if (!v) {
        v = endpoint_env(getenv_fn, "AWS_ENDPOINT_URL");
        var[sizeof "AWS_ENDPOINT_URL" - 1] = '\0';
    }
    if (!v)
        return 0;
    const char *host = !strncmp(v, "http://", 7) ? v + 7 : !strncmp(v, "https://", 8) ? v + 8 : NULL;
    if (!host)
        return shoal_error_set(SHOAL_ERR_INVAL, "%s: '%s' is not an http:// or https:// URL", var, v);
    if (!*host || *host == '/' || *host == ':')
        return shoal_error_set(SHOAL_ERR_INVAL, "%s: '%s' has no host", var, v);
    for (const char *p = v; *p; p++)
        if (isspace((unsigned char)*p) || !isprint((unsigned char)*p))
            return shoal_error_set(SHOAL_ERR_INVAL, "%s: the value contains blanks or control bytes", var);
    char *url = strdup(v);
    if (!url)
        return shoal_error_set(SHOAL_ERR_NOMEM, "%s: out of memory", var);
    size_t len = strlen(url);
    while (len > (size_t)(host - v) + 1 && url[len - 1] == '/')
        url[--len] = '\0';
    *out = url;
    return 0;
}
