/* Both public headers, together, compile cleanly as strict C11
 * (-std=c11 -Wall -Wextra -Werror -pedantic): identical macro definitions in
 * both are fine; any drift between them would be a redefinition error. */
#include "masq.h"
#include "masq_plugin.h"
#include "masq.h" /* include guards */

_Static_assert(MASQ_PLUGIN_KIND_STORAGE == MASQ_PLUGIN_STORAGE, "kinds agree");
_Static_assert(MASQ_PLUGIN_KIND_TRANSPORT == MASQ_PLUGIN_TRANSPORT, "kinds agree");
_Static_assert(MASQ_PLUGIN_KIND_WALLET == MASQ_PLUGIN_WALLET, "kinds agree");
_Static_assert(sizeof(((masq_storage_vtable *)0)->struct_size) == 4, "struct_size is 32-bit");

int main(void) {
    masq_entry e = {0, 0, 0, 0};
    masq_plugin_descriptor d = {sizeof d, MASQ_PLUGIN_ABI_VERSION, MASQ_PLUGIN_STORAGE, 0, "x", "1", 0, 0};
    return (int)(e.key_len + (d.abi_version == 1 ? 0 : 1));
}
