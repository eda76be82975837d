// libmasq.so: the kernel linked as a shared library whose only exports are
// the masq_* functions of include/masq.h (see exports.map). The C API itself
// lives in MasqKernel (CAPI*.swift) and, for masq_share_* and masq_shares,
// in MasqSharing (CAPI+Sharing.swift); this target only carries the link.
@_exported import MasqKernel
import MasqSharing
