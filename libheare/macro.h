/* macro: ownership helpers (_cleanup_, TAKE_PTR, TAKE_FD) shared by every module. */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Hands a pointer out of a cleanup scope: returns it and leaves NULL behind. */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _took = (p);                                                                 \
        (p) = NULL;                                                                                \
        _took;                                                                                     \
    })

/* Same for file descriptors: leaves -1 behind. */
#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int _tookfd = (fd);                                                                        \
        (fd) = -1;                                                                                 \
        _tookfd;                                                                                   \
    })

static inline void freep(void *p)
{
    free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Closes fd if it is valid, keeping errno as it was; returns -1 for assignment. */
static inline int safe_close(int fd)
{
    if (fd >= 0) {
        int saved = errno;
        close(fd);
        errno = saved;
    }
    return -1;
}

static inline void closep(int *fd)
{
    safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

/* Frees p (NULL is fine) and returns NULL, for `p = x_free(p);`. */
static inline void *mfree(void *p)
{
    free(p);
    return NULL;
}

/* Negative errno from a libc call that sets errno; never 0 even if errno was left 0. */
static inline int negative_errno(void)
{
    return errno > 0 ? -errno : -EIO;
}
