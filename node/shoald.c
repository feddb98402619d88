/*
 * shoald: the Shoal daemon (SPEC §2). Parses the options, runs the daemon in the foreground and
 * turns the outcome into an exit status: 2 for a bad flag or value (one line, node_config_fail),
 * 0 after a signal or `shoal leave` ended it cleanly, 1 for a runtime failure (a part that did not
 * start, a refusal by the cluster). Everything else is node_daemon's.
 */
#include "node_config.h"
#include "node_daemon.h"
#include "shoal_error.h"
#include "shoal_log.h"

int main(int argc, char **argv)
{
    node_config cfg = {0};
    int rc = node_config_parse(argc, argv, &cfg);
    if (rc == 1)
        return 0;
    if (rc != 0)
        node_config_fail("shoald");
    shoal_log_set_level(cfg.log_level);
    shoal_log_set_format(cfg.log_format);
    shoal_log_detect_journal();

    int status = 1;
    node_daemon *d = node_daemon_new(&cfg);
    if (d == NULL) {
        LOG_ERROR("daemon", "start_failed", "code=%s error=\"%s\"", shoal_error_name(shoal_error_code()),
                  shoal_error_message());
        goto done;
    }
    if (node_daemon_run(d) == 0) {
        status = 0;
    } else {
        LOG_ERROR("daemon", "stopped", "code=%s error=\"%s\"", shoal_error_name(shoal_error_code()),
                  shoal_error_message());
    }
    node_daemon_delete(d);
    if (status == 0)
        LOG_INFO("daemon", "stopped", "status=0");
done:
    node_config_destroy(&cfg);
    return status;
}
