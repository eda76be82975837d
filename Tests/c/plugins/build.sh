#!/usr/bin/env bash
# Build every broken-plugin variant into $1 (default Tests/c/build/bad-plugins),
# each as libmasq_storage_<name>.so, plus a file that is not a shared object.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../build/bad-plugins}
mkdir -p "$out"
build() { # variant name
    cc -std=c11 -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden -I"$here/../../../include" \
       -DVARIANT_"$1" -DPLUGIN_NAME="\"$2\"" -o "$out/libmasq_storage_$2.so" "$here/bad_plugin.c"
}
build ABI badabi
build KIND wrongkind
build NULL_VTABLE nullvtable
build SHORT_VTABLE shortvtable
build NULL_MEMBER nullmember
build NULL_DESCRIPTOR nulldescriptor
build NO_ENTRY noentry
build NONE namemismatch_real     # file says one name, descriptor another:
mv "$out/libmasq_storage_namemismatch_real.so" "$out/libmasq_storage_namemismatch.so"
echo "this is not a shared object" > "$out/libmasq_storage_notelf.so"
