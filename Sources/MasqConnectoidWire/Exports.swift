@_exported import MasqEncoding
