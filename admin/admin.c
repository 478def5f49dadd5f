/* admin.c - placeholder until the admin server lands (issue 4): no server. */
#include "admin.h"

#include "qx.h"

#include <stdlib.h>

int qx_admin_start(qx_admin_t **out, qx_runtime_t *rt, char *err, size_t errlen)
{
    (void)rt;
    (void)err;
    (void)errlen;
    *out = NULL;
    return 0;
}

void qx_admin_stop(qx_admin_t *a)
{
    (void)a;
}
