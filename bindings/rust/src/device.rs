//! Typed views of the JSON the device and sync functions return.

use crate::error::{Error, ErrorKind, Result};
use crate::json::Value;

/// Parse JSON text the library produced; a failure is the library's bug.
pub(crate) fn parse_library_json(text: &str, what: &str) -> Result<Value> {
    Value::parse(text).map_err(|e| {
        Error::new(ErrorKind::Internal, format!("{} returned JSON this binding cannot read: {}", what, e.message()))
    })
}

fn string(v: &Value, name: &str) -> String {
    v.get(name).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn number(v: &Value, name: &str) -> u64 {
    v.get(name).and_then(Value::as_u64).unwrap_or(0)
}

fn boolean(v: &Value, name: &str) -> bool {
    v.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// A device: this one (`masq_device_info`), a paired one (`masq_devices`),
/// or the peer of a pairing (`masq_pairing_peer`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// The device's id.
    pub device_id: String,
    /// The name it gave itself.
    pub name: String,
    /// Ed25519 public key, hex.
    pub signing_key: String,
    /// X25519 public key, hex.
    pub agreement_key: String,
    /// 30 digits in groups of 5, to compare between devices.
    pub fingerprint: String,
    /// The same fingerprint as emoji.
    pub fingerprint_emoji: String,
    /// When it was paired (Unix ms); `None` for this device.
    pub paired_at: Option<u64>,
    /// The whole JSON object, members this version does not know included.
    pub json: Value,
}

impl DeviceInfo {
    pub(crate) fn from_json(v: Value) -> Result<DeviceInfo> {
        if v.get("device_id").and_then(Value::as_str).is_none() {
            return Err(Error::new(ErrorKind::Internal, format!("a device without a device_id: {}", v)));
        }
        Ok(DeviceInfo {
            device_id: string(&v, "device_id"),
            name: string(&v, "name"),
            signing_key: string(&v, "signing_key"),
            agreement_key: string(&v, "agreement_key"),
            fingerprint: string(&v, "fingerprint"),
            fingerprint_emoji: string(&v, "fingerprint_emoji"),
            paired_at: v.get("paired_at").and_then(Value::as_u64),
            json: v,
        })
    }

    pub(crate) fn parse(text: &str, what: &str) -> Result<DeviceInfo> {
        DeviceInfo::from_json(parse_library_json(text, what)?)
    }

    pub(crate) fn parse_list(text: &str, what: &str) -> Result<Vec<DeviceInfo>> {
        match parse_library_json(text, what)? {
            Value::Array(items) => items.into_iter().map(DeviceInfo::from_json).collect(),
            other => Err(Error::new(ErrorKind::Internal, format!("{} returned {} instead of an array", what, other))),
        }
    }
}

/// Whether a store has a passphrase, and whether it is locked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// The store has a passphrase (encryption at rest).
    pub protected: bool,
    /// Data calls fail with `ErrorKind::Denied` until [`crate::Store::unlock`].
    pub locked: bool,
}

/// Sync status (`masq_sync_status`).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncStatus {
    /// Background sync is running.
    pub running: bool,
    /// Connected through a transport.
    pub connected: bool,
    /// One entry per paired device.
    pub devices: Vec<PeerSyncStatus>,
    /// Room payloads received.
    pub frames_received: u64,
    /// Room payloads the kernel refused (malformed, unknown type, unpaired
    /// sender, failing to open).
    pub frames_rejected: u64,
    /// Each transport plugin's own counters.
    pub transports: Vec<TransportStatus>,
    /// The whole JSON object.
    pub json: Value,
}

/// Sync state with one paired device.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSyncStatus {
    /// The device's id.
    pub device_id: String,
    /// Its name.
    pub name: String,
    /// Reachable now.
    pub present: bool,
    /// Commits this device announced the other lacks.
    pub they_lack: u64,
    /// Commits the other announced this device lacks.
    pub we_lack: u64,
    /// When it last acknowledged a sync (Unix ms; 0 never).
    pub last_sync: u64,
    /// A problem with this device, if the library reports one (the header
    /// does not list this member yet; `None` when absent).
    pub problem: Option<String>,
}

/// One transport plugin's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportStatus {
    /// The plugin's name, e.g. `"relay"`.
    pub plugin: String,
    /// Its counters by name, e.g. `frames_sent`, `frames_rejected`.
    pub stats: Vec<(String, u64)>,
}

impl TransportStatus {
    /// The counter `name`, if the plugin reports it.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

impl SyncStatus {
    pub(crate) fn parse(text: &str) -> Result<SyncStatus> {
        let v = parse_library_json(text, "masq_sync_status")?;
        let devices = v
            .get("devices")
            .and_then(Value::as_array)
            .unwrap_or(&[])
            .iter()
            .map(|d| PeerSyncStatus {
                device_id: string(d, "device_id"),
                name: string(d, "name"),
                present: boolean(d, "present"),
                they_lack: number(d, "they_lack"),
                we_lack: number(d, "we_lack"),
                last_sync: number(d, "last_sync"),
                problem: d.get("problem").and_then(Value::as_str).map(str::to_string),
            })
            .collect();
        let transports = v
            .get("transports")
            .and_then(Value::as_array)
            .unwrap_or(&[])
            .iter()
            .map(|t| TransportStatus {
                plugin: string(t, "plugin"),
                stats: t
                    .get("stats")
                    .and_then(Value::as_object)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|(k, n)| n.as_u64().map(|n| (k.clone(), n)))
                    .collect(),
            })
            .collect();
        Ok(SyncStatus {
            running: boolean(&v, "running"),
            connected: boolean(&v, "connected"),
            devices,
            frames_received: number(&v, "frames_received"),
            frames_rejected: number(&v, "frames_rejected"),
            transports,
            json: v,
        })
    }
}
