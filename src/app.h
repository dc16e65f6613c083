/* Runs a role (server or client) on the event loop until SIGINT/SIGTERM. */
#ifndef APP_H
#define APP_H

#include <stdint.h>

#include "config.h"

enum role { ROLE_SERVER, ROLE_CLIENT };

/* Takes ownership of cfg (it may be replaced by a reload). Returns the
 * process exit status: 0 after a clean shutdown. */
int app_run(struct config *cfg, enum role role);

/* Ends the run with this exit status (a fatal error found on the loop, such
 * as a bind_addr that cannot be listened on). */
void app_exit(int status);

/* Seconds since app_run() started (the API's status reports it). */
uint64_t app_uptime_seconds(void);

#endif
