@_exported import MasqConnectoidWire
