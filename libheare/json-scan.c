/* json-scan: see json-scan.h. */
#include "json-scan.h"

int json_scan_flat_object(json_scanner *s, json_flat_member *m, size_t max)
{
    size_t n = 0;

    if (!json_scan_char(s, '{'))
        return -1;
    if (json_scan_char(s, '}'))
        return 0;
    do {
        if (n == max || !json_scan_string(s, &m[n].name, &m[n].name_len) ||
            !json_scan_char(s, ':') || !json_scan_string(s, &m[n].value, &m[n].value_len))
            return -1;
        /* A repeated name is for jansson to judge. */
        for (size_t i = 0; i < n; i++)
            if (json_same_name(m[i].name, m[i].name_len, m[n].name, m[n].name_len))
                return -1;
        n++;
    } while (json_scan_char(s, ','));
    if (!json_scan_char(s, '}'))
        return -1;
    return (int)n;
}
