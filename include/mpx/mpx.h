/* mpx/mpx.h - the umbrella header of libmpx, the engine of mpservice.
 *
 * Link with -lmpx (pkg-config: mpx; CMake: find_package(mpx) and target mpx::mpx).
 */
#ifndef MPX_MPX_H
#define MPX_MPX_H

#include "common.h"
#include "error.h"
#include "errrec.h"
#include "frame.h"
#include "inbox.h"
#include "log.h"
#include "proc.h"
#include "queue.h"
#include "sync.h"

#endif /* MPX_MPX_H */
