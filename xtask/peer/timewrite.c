/* The Linux peer's timing helper (xtask/src/peer.rs), built with `gcc -static`
 * into the peer's initramfs. Prints nanoseconds of CLOCK_MONOTONIC:
 *   timewrite FILE VALUE     how long write(2) of VALUE to FILE took (a
 *                            tracefs control file such as current_tracer);
 *   timewrite --run CMD ...  how long CMD took, from fork to its exit. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long ns(const struct timespec *a, const struct timespec *b) {
    return (long long)(b->tv_sec - a->tv_sec) * 1000000000LL + (b->tv_nsec - a->tv_nsec);
}

int main(int argc, char **argv) {
    struct timespec a, b;
    if (argc >= 3 && strcmp(argv[1], "--run") == 0) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        pid_t pid = fork();
        if (pid == 0) {
            execvp(argv[2], argv + 2);
            perror(argv[2]);
            _exit(127);
        }
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) < 0) { perror("fork"); return 1; }
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { fprintf(stderr, "%s failed\n", argv[2]); return 1; }
        printf("%lld\n", ns(&a, &b));
        return 0;
    }
    if (argc != 3) return 2;
    int fd = open(argv[1], O_WRONLY | O_TRUNC);
    if (fd < 0) { perror(argv[1]); return 1; }
    clock_gettime(CLOCK_MONOTONIC, &a);
    ssize_t n = write(fd, argv[2], strlen(argv[2]));
    clock_gettime(CLOCK_MONOTONIC, &b);
    close(fd);
    if (n < 0) { perror("write"); return 1; }
    printf("%lld\n", ns(&a, &b));
    return 0;
}
