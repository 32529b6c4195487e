//! Cancel keys: each session gets a gateway-issued (pid, secret) pair mapped to its target's own
//! key, so a client can cancel only the query of the session whose key it was given.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use ring::rand::{SecureRandom, SystemRandom};

/// Where a gateway key sends its cancel request.
#[derive(Debug, Clone, Copy)]
pub struct CancelTarget {
    /// The target's address.
    pub addr: SocketAddr,
    /// The target's (pid, secret) for this session.
    pub key: (i32, i32),
}

/// Live sessions' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    keys: Mutex<HashMap<(i32, i32), CancelTarget>>,
}

impl CancelRegistry {
    /// Issues a fresh key for a session and remembers where it points.
    pub fn register(&self, target: CancelTarget) -> (i32, i32) {
        let rng = SystemRandom::new();
        loop {
            let mut raw = [0u8; 8];
            if rng.fill(&mut raw).is_err() {
                // Fall back to time-derived bits; keys still differ per session.
                let t = tollgate_core::now_micros();
                raw = t.to_be_bytes();
            }
            let pid = i32::from_be_bytes([raw[0] & 0x7f, raw[1], raw[2], raw[3]]).max(1);
            let secret = i32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
            let Ok(mut keys) = self.keys.lock() else {
                return (pid, secret);
            };
            if let std::collections::hash_map::Entry::Vacant(e) = keys.entry((pid, secret)) {
                e.insert(target);
                return (pid, secret);
            }
        }
    }

    /// Forgets a session's key.
    pub fn unregister(&self, key: (i32, i32)) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(&key);
        }
    }

    /// Looks a key up; both halves must match.
    pub fn lookup(&self, key: (i32, i32)) -> Option<CancelTarget> {
        self.keys.lock().ok().and_then(|k| k.get(&key).copied())
    }
}
