/* The Linux peer's timing helper (xtask/src/peer.rs): write a value to a
 * file (a tracefs control file) and print how long the write(2) took, in
 * nanoseconds of CLOCK_MONOTONIC. Built with `gcc -static` into the peer's
 * initramfs. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int fd = open(argv[1], O_WRONLY | O_TRUNC);
    if (fd < 0) { perror(argv[1]); return 1; }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ssize_t n = write(fd, argv[2], strlen(argv[2]));
    clock_gettime(CLOCK_MONOTONIC, &b);
    close(fd);
    if (n < 0) { perror("write"); return 1; }
    printf("%lld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
    return 0;
}
