/**
 * Peer mode rejects with masq.js's own MasqError (same class, same codes as
 * daemon mode): "invalid", "not_found", "denied", "busy", "quota",
 * "unavailable", "timeout", "closed", "io", "too_large", …
 * @module masq/peer/errors
 */
export { MasqError } from "../masq.js";
