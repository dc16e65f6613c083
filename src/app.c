#include "app.h"
#include "log.h"

/* Replaced by the event loop and the roles (TCP tunnel issue). */
int app_run(struct config *cfg, enum role role)
{
	log_error("the %s role is not implemented yet", role == ROLE_SERVER ? "server" : "client");
	config_free(cfg);
	return 2;
}
