/* idl: the Varlink interface descriptions, compiled in from the .varlink files. */
#pragma once

typedef struct idl_interface {
    const char *name; /* "io.heare.Auth" */
    const char *text; /* the whole IDL text */
} idl_interface;

/* NULL-terminated array of every interface this project defines. */
extern const idl_interface idl_interfaces[];

/* The description of an interface by name, or NULL. */
const char *idl_get(const char *name);
