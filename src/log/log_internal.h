/* src/log/log_internal.h - what other subsystems use of the log channel's code. Internal. */
#ifndef MPX_LOG_INTERNAL_H
#define MPX_LOG_INTERNAL_H

#include "mpx/log.h"
#include "mpx/queue.h"

/* Encodes `rec` (on the stack when small) and puts it into `q`, going on after a signal.
 * 0, MPX_ETOOBIG (a field over its limit: nothing put), -ENOMEM, or the put's errors. */
int mpx__log_put(mpx_queue *q, const mpx_log_record *rec);

/* An unbounded queue, as log channels and inboxes use: a put never waits for the reader.
 * Creating: mpx_queue_create's errors. Attaching: mpx_queue_attach's, and MPX_EBADSEG for
 * a bounded queue (the handle is not kept). */
int mpx__unbounded_queue_create(mpx_queue **q);
int mpx__unbounded_queue_attach(mpx_queue **q, int fd);

#endif
