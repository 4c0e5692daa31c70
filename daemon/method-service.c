/* method-service: org.varlink.service (GetInfo, GetInterfaceDescription) and the table of
 * every interface with the sockets that offer it. */
#include <string.h>

#include "daemon.h"
#include "idl.h"
#include "json-util.h"

const interface_entry interfaces[] = {
    {"org.varlink.service", methods_service, 0},
    {"io.heare.Auth", methods_auth, 0},
    {"io.heare.AuthAdmin", methods_admin, METHOD_ADMIN},
    {NULL, NULL, 0},
};

bool interface_offered(const interface_entry *i, sock_kind kind)
{
    return !(i->flags & METHOD_ADMIN) || kind == SOCK_ADMIN;
}

static void method_get_info(call_ctx *ctx, const json_t *params)
{
    if (!call_read_string_params(ctx, params, NULL, 0))
        return;
    json_t *names = json_array();
    for (const interface_entry *i = interfaces; names && i->name; i++)
        if (interface_offered(i, call_socket_kind(ctx)))
            json_array_append_new(names, json_string(i->name));
    json_t *reply = names ? json_pack("{s:s,s:s,s:s,s:s,s:o}", "vendor", "heare", "product",
                                      "heare-auth", "version", HEARE_VERSION, "url",
                                      "man:heare-authd(8)", "interfaces", names)
                          : NULL;
    if (!reply) {
        call_error_oom(ctx);
        return;
    }
    call_reply(ctx, reply, false);
}

static void method_get_interface_description(call_ctx *ctx, const json_t *params)
{
    const char *name;
    const param_field fields[] = {{"interface", &name, true, NULL}};
    if (!call_read_string_params(ctx, params, fields, 1))
        return;

    for (const interface_entry *i = interfaces; i->name; i++) {
        if (strcmp(i->name, name) != 0 || !interface_offered(i, call_socket_kind(ctx)))
            continue;
        const char *text = idl_get(name);
        if (text) {
            call_reply(ctx, json_pack("{s:s}", "description", text), false);
            return;
        }
    }
    call_error(ctx, "org.varlink.service.InterfaceNotFound", json_pack("{s:s}", "interface", name));
}

const method_entry methods_service[] = {
    {"GetInfo", method_get_info, 0},
    {"GetInterfaceDescription", method_get_interface_description, 0},
    {NULL, NULL, 0},
};
