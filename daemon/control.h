/* Control requests (dnnfaultctl): answered from the store on a worker
 * thread; version and stats straight from the loop. One request per
 * connection at a time: the connection stops reading until it is answered. */
#ifndef DNNFAULT_CONTROL_H
#define DNNFAULT_CONTROL_H

#include "dnnfault.pb-c.h"

struct conn;

/* Takes ownership of `env` (a ControlRequest). */
void control__handle(struct conn *c, Dnnfault__Envelope *env);

#endif
