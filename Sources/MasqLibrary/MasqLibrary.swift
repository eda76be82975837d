// libmasq.so: the kernel linked as a shared library whose only exports are
// the masq_* functions of include/masq.h (see exports.map). The C API itself
// lives in MasqKernel/CAPI.swift; this target only exists to carry the link.
@_exported import MasqKernel
