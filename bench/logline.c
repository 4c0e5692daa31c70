/* logline: the cost of one verification's JSON log line, as a serving loop writes it
 * (a buffered thread, flushed every 64 lines), into /dev/null so that only the building
 * is measured. Four lines in five are successes, one a failure, as bench/run's mix.
 * Prints ns a line for three rounds of 5 M lines. Run by hand: build-bench/bench/logline */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int main(void)
{
    enum { LINES = 5000000 };
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) {
        perror("/dev/null");
        return 1;
    }
    log_setup(LOG_TARGET_JSON, LOG_INFO);
    log_buffer_thread(true);

    log_fields ok = {.event = "verification_success", .key_id = "key_0001vDmow0000000000",
                     .key_name = "bench-0", .code = "VALID", .peer_uid = 0, .peer_pid = 23096,
                     .time_ns = 1795000000123456789};
    log_fields failed = {.event = "verification_failed", .key_prefix = "sec_0sio",
                         .code = "NOT_FOUND", .peer_uid = 0, .peer_pid = 23096};

    for (int round = 0; round < 3; round++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < LINES; i++) {
            ok.time_ns += 1000; /* a microsecond apart, as a busy loop's lines are */
            failed.time_ns = ok.time_ns;
            log_event_fields(LOG_INFO, i % 5 == 4 ? &failed : &ok);
            if (i % 64 == 63)
                log_flush();
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
        printf("%.1f ns a line\n", ns / LINES);
    }
    log_buffer_thread(false);
    return 0;
}
