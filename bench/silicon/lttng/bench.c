/* ns per call of a plain function and of the same function holding an
 * LTTng-UST tracepoint, REPS times over N calls each, run by the silicon
 * harness inside an LTTng session that records the event.
 * Usage: lttng-bench N REPS; prints "plain NS" and "tracepoint NS" per rep. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tp.h"

__attribute__((noinline)) static void plain(void)
{
    __asm__ volatile("");
}

__attribute__((noinline)) static void traced(void)
{
    tracepoint(appliance_bench, call, (uint64_t)(uintptr_t)__builtin_return_address(0),
               (uint64_t)(uintptr_t)__builtin_frame_address(0));
}

static double per_call(void (*volatile f)(void), long n)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        f();
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / (double)n;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s CALLS REPS\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]);
    int reps = atoi(argv[2]);
    per_call(plain, n / 10);
    per_call(traced, n / 10);
    for (int r = 0; r < reps; r++) {
        printf("plain %.3f\n", per_call(plain, n));
        printf("tracepoint %.3f\n", per_call(traced, n));
    }
    return 0;
}
