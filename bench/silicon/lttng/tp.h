/* The LTTng-UST tracepoint the silicon harness compares an appliance event
 * with: two 64-bit words of payload (the traced function and its parent, as
 * the appliance records), the timestamp added by LTTng. */
#undef TRACEPOINT_PROVIDER
#define TRACEPOINT_PROVIDER appliance_bench

#undef TRACEPOINT_INCLUDE
#define TRACEPOINT_INCLUDE "./tp.h"

#if !defined(APPLIANCE_BENCH_TP_H) || defined(TRACEPOINT_HEADER_MULTI_READ)
#define APPLIANCE_BENCH_TP_H

#include <stdint.h>
#include <lttng/tracepoint.h>

TRACEPOINT_EVENT(
    appliance_bench,
    call,
    TP_ARGS(uint64_t, ip, uint64_t, parent),
    TP_FIELDS(
        ctf_integer_hex(uint64_t, ip, ip)
        ctf_integer_hex(uint64_t, parent, parent)
    )
)

#endif

#include <lttng/tracepoint-event.h>
