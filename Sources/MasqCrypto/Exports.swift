// Base64url is used with keys everywhere (links, configs); it lives in a
// dependency-free module so plugins can use it without the crypto.
@_exported import MasqEncoding
