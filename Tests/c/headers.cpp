// Both public headers compile as C++17 (-Wall -Wextra -Werror -pedantic).
#include "masq.h"
#include "masq_plugin.h"

static_assert(MASQ_OK == 0, "status codes are plain integers");

extern "C" int masq_cpp_probe(void) {
    masq_store *store = nullptr;
    masq_storage_vtable v{};
    v.struct_size = sizeof v;
    return store == nullptr && v.open == nullptr ? 0 : 1;
}

int main() { return masq_cpp_probe(); }
