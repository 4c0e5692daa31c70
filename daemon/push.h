/* push: the metrics push thread (SPEC §9): StatsD lines over UDP or HTTP(S). */
#pragma once

#include "conf.h"

/* Starts pushing to c->metrics_url every c->metrics_interval_ms, the first batch (with
 * "startup") at once. Nothing without a metrics-url. Returns 0, or -errno with *reterr. */
int push_start(const conf *c, char **reterr);
/* Sends the last batch (with "shutdown"), stops the thread and frees everything. */
void push_stop(void);
