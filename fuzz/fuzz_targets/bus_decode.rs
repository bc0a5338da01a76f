//! Fuzz target: `BusMessage::decode` on arbitrary bus lines.
//!
//! Checked: never a panic; a line that decodes encodes to a line that decodes
//! to the same message, and that encoding is stable.

#![no_main]

use chatty_shared::BusMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = BusMessage::decode(data) {
        let line = msg.encode();
        let again = BusMessage::decode(line.as_bytes())
            .unwrap_or_else(|_| panic!("{msg:?} encoded as {line:?} does not decode"));
        assert_eq!(again, msg, "{line:?}");
        assert_eq!(again.encode(), line);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
    }
});
