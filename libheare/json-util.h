/* json-util: cleanup helpers for jansson values (jansson itself provides json_decrefp). */
#pragma once

#include <jansson.h>

#include "macro.h"

#define _cleanup_json_ _cleanup_(json_decrefp)
