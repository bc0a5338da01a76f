//! Fuzz target: room paths (`parse_room_path`) and bus room keys (`RoomKey::parse`) on arbitrary strings.
//!
//! Checked: never a panic; a path that parses names a valid site and room
//! (per `is_valid_site`/`is_valid_room`), `RoomKey::new` accepts them, and the
//! parts put back together give the path; a key that parses prints back as
//! the same string.

#![no_main]

use chatty_shared::{is_valid_room, is_valid_site, parse_room_path, RoomKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };

    if let Some(p) = parse_room_path(s) {
        assert!(is_valid_site(p.site.as_bytes()), "site {:?} of {s:?}", p.site);
        assert!(is_valid_room(p.room.as_bytes()), "room {:?} of {s:?}", p.room);
        let key = RoomKey::new(p.site, p.room).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!((key.site(), key.room()), (p.site, p.room));
        assert_eq!(RoomKey::parse(&key.to_string()).as_ref(), Ok(&key));
        let mut back = format!("/v1/sites/{}/rooms/{}", p.site, p.room);
        if s.len() > back.len() {
            back.push('/');
            back.push_str(p.rest);
        }
        assert_eq!(back, s);
        for method in ["GET", "POST"] {
            let _ = p.resource(method);
        }
    }

    match RoomKey::parse(s) {
        Ok(key) => {
            assert!(is_valid_site(key.site().as_bytes()) && is_valid_room(key.room().as_bytes()));
            assert_eq!(key.to_string(), s);
        }
        Err(_) => {
            if let Some((site, room)) = s.split_once('/') {
                assert!(RoomKey::new(site, room).is_err(), "{s:?}");
            }
        }
    }
});
