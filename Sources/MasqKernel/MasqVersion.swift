/// The library version; a test checks it against MASQ_VERSION_* in masq.h.
public enum MasqVersion {
    public static let string: StaticString = "0.1.0"
    public static let number = 100
}
