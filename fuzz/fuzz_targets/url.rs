#![no_main]
//! Connection URL parsing: `upstream::PgTarget::from_url` on the input as a string.

use libfuzzer_sys::fuzz_target;
use tollgate_pg::upstream::PgTarget;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(target) = PgTarget::from_url(url, None) {
        assert!(!target.user.is_empty(), "accepted {url:?} without a user");
        assert!(target.password.is_none());
        let _ = target.address();
    }
});
